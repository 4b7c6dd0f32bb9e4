package outbox_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/redis"
	"github.com/heraldhq/herald/heraldtest"
	"github.com/heraldhq/herald/outbox"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// reader is a running outbox.Reader with its own metrics.
type reader struct {
	*outbox.Reader
	reg  *prometheus.Registry
	logs *syncBuffer
	stop func()
}

// startReader runs a reader with cfg (URL and Publisher set by the
// caller) until t ends or stop is called.
func startReader(t testing.TB, cfg outbox.Config) *reader {
	t.Helper()
	reg := prometheus.NewRegistry()
	logs := &syncBuffer{}
	cfg.Registerer = reg
	cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	r, err := outbox.New(cfg)
	if err != nil {
		t.Fatalf("outbox.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(heraldtest.Timeout):
				t.Errorf("Run did not return within %v of its context's end", heraldtest.Timeout)
			}
		})
	}
	t.Cleanup(stop)
	return &reader{Reader: r, reg: reg, logs: logs, stop: stop}
}

// metric returns the value of one of the reader's metrics.
func (r *reader) metric(t testing.TB, name string) float64 {
	t.Helper()
	mfs, err := r.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			m := mf.GetMetric()[0]
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// newServer starts a herald server on the memory broker whose queues hold
// a large burst, and a subscriber to channels.
func newServer(t testing.TB, cfg herald.Config, channels ...string) (*herald.Server, *heraldtest.Client) {
	t.Helper()
	cfg.QueueMessages, cfg.QueueBytes = 100000, 64<<20
	srv, hs := heraldtest.NewServer(t, cfg)
	return srv, subscriber(t, hs.URL, channels...)
}

// subscriber dials a herald server at base and subscribes to channels.
func subscriber(t testing.TB, base string, channels ...string) *heraldtest.Client {
	t.Helper()
	c := heraldtest.Dial(t, heraldtest.WSURL(base, "/ws"))
	for _, ch := range channels {
		c.MustOK(map[string]any{"op": "subscribe", "channel": ch})
	}
	return c
}

// message is one message a subscriber received.
type message struct {
	Channel string
	Offset  broker.Offset
	N       int // data's "n"
	Data    json.RawMessage
	Event   string
	At      time.Time
}

// receive reads messages from c until done says it has what it wants,
// failing t after heraldtest.Timeout.
func receive(t testing.TB, c *heraldtest.Client, done func([]message) bool) []message {
	t.Helper()
	var got []message
	deadline := time.Now().Add(heraldtest.Timeout)
	for !done(got) {
		f, err := c.Poll(time.Until(deadline))
		if err != nil {
			t.Fatalf("after %d messages: %v", len(got), err)
		}
		if f == nil {
			t.Fatalf("after %d messages: no more within %v", len(got), heraldtest.Timeout)
		}
		if f["op"] != "message" {
			continue
		}
		got = append(got, parseMessage(t, f))
	}
	return got
}

func parseMessage(t testing.TB, f map[string]any) message {
	t.Helper()
	m := message{At: time.Now()}
	m.Channel, _ = f["channel"].(string)
	m.Event, _ = f["event"].(string)
	off, _ := f["offset"].(string)
	var err error
	if m.Offset, err = broker.ParseOffset(off); err != nil {
		t.Fatalf("message %v: %v", f, err)
	}
	m.Data, _ = json.Marshal(f["data"])
	if d, ok := f["data"].(map[string]any); ok {
		if n, ok := d["n"].(float64); ok {
			m.N = int(n)
		}
	}
	return m
}

// distinct counts the distinct n among msgs.
func distinct(msgs []message) int {
	seen := map[int]bool{}
	for _, m := range msgs {
		seen[m.N] = true
	}
	return len(seen)
}

// checkFirstSeenOrder fails t unless the n of msgs, each taken where it
// first appears, are from…to in order, and each channel's offsets only
// grow (a message published again comes at a new offset).
func checkFirstSeenOrder(t testing.TB, msgs []message, from, to int) {
	t.Helper()
	seen := map[int]bool{}
	next := from
	last := map[string]broker.Offset{}
	for i, m := range msgs {
		if prev, ok := last[m.Channel]; ok && (m.Offset.Epoch != prev.Epoch || m.Offset.Seq <= prev.Seq) {
			t.Fatalf("message %d (n=%d) at offset %s after %s", i, m.N, m.Offset, prev)
		}
		last[m.Channel] = m.Offset
		if seen[m.N] {
			continue
		}
		if m.N != next {
			t.Fatalf("message %d: n=%d first seen where %d was due", i, m.N, next)
		}
		seen[m.N] = true
		next++
	}
	if next != to+1 {
		t.Fatalf("saw %d…%d, want %d…%d", from, next-1, from, to)
	}
}

// syncBuffer is a bytes.Buffer safe for a logger and a test at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// redisPrefix returns a Redis key prefix of t's own: its keys expire
// with the history's TTL.
func redisPrefix(t testing.TB) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "herald-outbox-test:" + hex.EncodeToString(b[:]) + ":"
}

// redisServer starts a herald node on the Redis at HERALD_TEST_REDIS
// (host:port, default 127.0.0.1:6379) with key prefix.
func redisServer(t testing.TB, prefix string) (*herald.Server, *httptest.Server) {
	t.Helper()
	addr := os.Getenv("HERALD_TEST_REDIS")
	if addr == "" {
		addr = "127.0.0.1:6379"
	}
	b, err := redis.New(redis.Config{URL: "redis://" + addr + "/0", Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	return heraldtest.NewServer(t, herald.Config{Broker: b, HistoryTTL: time.Minute, QueueMessages: 100000, QueueBytes: 64 << 20})
}
