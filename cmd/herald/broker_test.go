package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/memory"
	"github.com/heraldhq/herald/broker/redis"
	"github.com/heraldhq/herald/heraldtest"
)

// TestBrokerLimitsFollowSettings checks that the brokers herald serve makes
// keep no more history than the settings ask for, whichever namespace asks
// the most: the NATS stream's caps, and the memory broker's budget.
func TestBrokerLimitsFollowSettings(t *testing.T) {
	t.Parallel()
	file := writeFile(t, "history-size: 20\nhistory-ttl: 2m\nnamespaces:\n  long:\n    history-ttl: 30m\n  big:\n    history-size: 500\n  none:\n    history-size: -1\n")
	s, err := loadSettings([]string{"--config", file, "--history-bytes", "1048576"}, nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	nc := natsConfig(s, "nats://127.0.0.1:4222", nil)
	if nc.MaxHistory != 500 || nc.MaxAge != 31*time.Minute || nc.MaxBytes != 1<<20 {
		t.Fatalf("NATS stream caps: %d per channel, age %v, %d bytes; want 500, 31m (the longest TTL and a minute), %d",
			nc.MaxHistory, nc.MaxAge, nc.MaxBytes, 1<<20)
	}

	b, err := newBroker(s, nil)
	if err != nil {
		t.Fatal(err)
	}
	mb, ok := b.(*memory.Broker)
	if !ok {
		t.Fatalf("newBroker for memory made a %T", b)
	}
	ctx := context.Background()
	if err := mb.Start(ctx, nopHandler{}); err != nil {
		t.Fatal(err)
	}
	defer mb.Close()
	data := json.RawMessage(`"` + strings.Repeat("x", 1000) + `"`)
	for c := range 2000 { // 2 MB of history
		if _, err := mb.Publish(ctx, fmt.Sprint("c", c), broker.Publication{Data: data}, broker.HistoryOptions{Size: 10}); err != nil {
			t.Fatal(err)
		}
	}
	if used := mb.HistoryBytes(); used > 1<<20 {
		t.Fatalf("memory broker holds %d bytes of history with --history-bytes 1048576", used)
	}
}

func TestHistoryBytesZeroIsNoBound(t *testing.T) {
	t.Parallel()
	s, err := loadSettings([]string{"--history-bytes", "0"}, nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if nc := natsConfig(s, "nats://x", nil); nc.MaxBytes >= 0 {
		t.Fatalf("--history-bytes 0: NATS MaxBytes %d, want no cap (negative)", nc.MaxBytes)
	}
	if _, err := loadSettings([]string{"--history-bytes", "-5"}, nil, io.Discard); err == nil {
		t.Fatal("--history-bytes -5 accepted")
	}
}

type nopHandler struct{}

func (nopHandler) HandleMessage(broker.Message)          {}
func (nopHandler) HandleJoin(string, broker.ClientInfo)  {}
func (nopHandler) HandleLeave(string, broker.ClientInfo) {}
func (nopHandler) HandleReconnect()                      {}

// herald serve sends go-redis's own log lines (here, its pool failing to
// dial) to herald's logger, in its format. Not parallel: go-redis has one
// logger for the whole process.
func TestRedisLibraryLogsToHeraldsLogger(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close() // a port nothing listens on
	s, err := loadSettings([]string{"--broker", "redis://" + addr + "/0"}, nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var out syncBuffer
	b, err := newBroker(s, newLogger(&out, "json", slog.LevelInfo))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	t.Cleanup(func() { redis.SetLibraryLogger(slog.New(slog.NewTextHandler(os.Stderr, nil))) })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Start(ctx, nopHandler{}); err == nil {
		t.Fatal("Start on a closed port succeeded")
	}
	heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
		if got := out.String(); !strings.Contains(got, `"lib":"go-redis"`) || !strings.Contains(got, "failed to dial") {
			return errors.New("herald's log holds no go-redis dial failure:\n" + got)
		}
		return nil
	})
}
