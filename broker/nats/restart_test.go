package nats_test

import (
	"context"
	"net"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/nats"
)

// ownServer is a nats-server process of the test's own, on a fixed port
// and a store directory that outlives its restarts.
type ownServer struct {
	t    *testing.T
	port int
	dir  string
	args []string // more nats-server arguments
	cmd  *exec.Cmd
}

// newOwnServer starts a nats-server with JetStream, and args.
func newOwnServer(t *testing.T, args ...string) *ownServer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &ownServer{t: t, port: l.Addr().(*net.TCPAddr).Port, dir: t.TempDir(), args: args}
	_ = l.Close()
	s.start()
	t.Cleanup(s.kill)
	return s
}

func (s *ownServer) url() string { return "nats://127.0.0.1:" + strconv.Itoa(s.port) }

func (s *ownServer) start() {
	s.t.Helper()
	s.cmd = exec.Command("nats-server", append([]string{"-a", "127.0.0.1", "-p", strconv.Itoa(s.port), "-js", "-sd", s.dir}, s.args...)...)
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("start nats-server (it must be on PATH): %v", err)
	}
	waitUntil(s.t, "nats-server accepts connections", func() bool {
		c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(s.port))
		if err == nil {
			_ = c.Close()
		}
		return err == nil
	})
}

func (s *ownServer) kill() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}

// waitUntil polls cond for up to 10 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// startBroker starts a broker on cfg, closed when t ends.
func startBroker(t *testing.T, cfg nats.Config) *nats.Broker {
	t.Helper()
	b, err := nats.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background(), &handler{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// A server restarted with an empty store has neither the stream, the
// presence bucket nor the queue streams: the broker makes them again once
// it reconnects (the queue streams when a queue is next used), and
// publishing, history, presence and queues work without a restart of the
// node.
func TestServerRestartedEmpty(t *testing.T) {
	s := newOwnServer(t)
	b := startBroker(t, nats.Config{URL: s.url(), Prefix: "empty", DialTimeout: time.Second, ReconnectWait: 50 * time.Millisecond})
	ctx := context.Background()
	opts := broker.HistoryOptions{Size: 10}
	if _, err := b.Publish(ctx, "c", broker.Publication{Data: []byte(`1`)}, opts); err != nil {
		t.Fatal(err)
	}
	if err := b.Push(ctx, "q", "k", []byte("lost")); err != nil {
		t.Fatal(err)
	}

	s.kill()
	if err := os.RemoveAll(s.dir); err != nil {
		t.Fatal(err)
	}
	s.start()

	var off broker.Offset
	waitUntil(t, "a publish succeeds after the restart", func() bool {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		var err error
		off, err = b.Publish(pctx, "c", broker.Publication{Data: []byte(`2`)}, opts)
		return err == nil
	})
	h, err := b.History(ctx, "c", broker.HistoryQuery{Limit: -1})
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Messages) != 1 || h.Messages[0].Offset != off || string(h.Messages[0].Data) != "2" {
		t.Fatalf("history after the restart: %v, want only the message published since at %v", h.Messages, off)
	}
	c := broker.ClientInfo{Client: "x", User: "u"}
	if err := b.AddPresence(ctx, "c", c); err != nil {
		t.Fatalf("presence after the restart: %v", err)
	}
	waitUntil(t, "a push succeeds after the restart", func() bool {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		return b.Push(pctx, "q", "k", []byte("kept")) == nil
	})
	items, err := b.Take(ctx, "q", 10, time.Minute)
	if err != nil {
		t.Fatalf("Take after the restart: %v", err)
	}
	if len(items) != 1 || string(items[0].Data) != "kept" {
		t.Fatalf("Take after the restart: %+v, want only the item pushed since", items)
	}
}
