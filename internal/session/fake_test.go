package session_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/memory"
	"github.com/heraldhq/herald/internal/hub"
	"github.com/heraldhq/herald/internal/metrics"
	"github.com/heraldhq/herald/internal/session"
	"github.com/heraldhq/herald/internal/wire"
)

// fakeConn is a session.Conn that records what the session writes and
// how it closes the connection. A held fakeConn completes a write only
// when the test calls release, like a peer that stops reading; otherwise
// every write completes at once.
type fakeConn struct {
	held bool

	mu      sync.Mutex
	written [][]byte      // every payload sent, in order
	pending []wire.Source // writes not yet completed (held)
	closes  []closeCall
}

type closeCall struct {
	code   int
	reason string
}

func (c *fakeConn) Send(src wire.Source) {
	ps := src.Take()
	c.mu.Lock()
	for _, p := range ps {
		c.written = append(c.written, append([]byte(nil), p.Bytes...))
	}
	if c.held {
		c.pending = append(c.pending, src)
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	src.Written(nil)
}

func (c *fakeConn) Close(code int, reason string) {
	c.mu.Lock()
	c.closes = append(c.closes, closeCall{code, reason})
	c.mu.Unlock()
}

// release completes every write in flight with err.
func (c *fakeConn) release(err error) {
	c.mu.Lock()
	p := c.pending
	c.pending = nil
	c.mu.Unlock()
	for _, src := range p {
		src.Written(err)
	}
}

// firstClose returns the first Close call, and whether there was one.
func (c *fakeConn) firstClose() (closeCall, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.closes) == 0 {
		return closeCall{}, false
	}
	return c.closes[0], true
}

// frames returns how many payloads were written.
func (c *fakeConn) frames() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.written)
}

// objects decodes every payload written, each one JSON object.
func (c *fakeConn) objects(t *testing.T) []map[string]any {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]map[string]any, 0, len(c.written))
	for _, b := range c.written {
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("payload %q is not a JSON object: %v", b, err)
		}
		out = append(out, m)
	}
	return out
}

// lastCounter returns the "n" of the last message written: the data
// itself in raw mode, the "data" of a message otherwise.
func (c *fakeConn) lastCounter(t *testing.T) int {
	t.Helper()
	c.mu.Lock()
	b := c.written[len(c.written)-1]
	c.mu.Unlock()
	var m struct {
		N    *int `json:"n"`
		Data struct {
			N *int `json:"n"`
		} `json:"data"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("payload %.80q is not a JSON object: %v", b, err)
	}
	switch {
	case m.N != nil:
		return *m.N
	case m.Data.N != nil:
		return *m.Data.N
	}
	t.Fatalf("payload %.80q carries no counter", b)
	return 0
}

// replies returns the replies written to command ids, by id.
func (c *fakeConn) replies(t *testing.T) map[uint64]map[string]any {
	t.Helper()
	out := map[uint64]map[string]any{}
	for _, m := range c.objects(t) {
		if id, ok := m["id"].(float64); ok {
			out[uint64(id)] = m
		}
	}
	return out
}

// newHub returns a started hub over the memory broker, stopped when the
// test ends.
func newHub(t *testing.T) *hub.Hub {
	t.Helper()
	b := memory.New()
	h := hub.New(hub.Config{Broker: b, Options: func(string) hub.ChannelOptions {
		return hub.ChannelOptions{History: broker.HistoryOptions{Size: 1000}}
	}})
	if err := h.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Stop(); _ = b.Close() })
	return h
}

// newMetrics returns metrics on a registry of the test's own.
func newMetrics() *metrics.Metrics { return metrics.New(prometheus.NewRegistry()) }

// open returns an open session on h over c, closed when the test ends.
func open(t *testing.T, h *hub.Hub, c *fakeConn, cfg session.Config) *session.Session {
	t.Helper()
	if cfg.Shared == nil {
		cfg.Shared = &session.Shared{}
	}
	cfg.Conn = c
	cfg.Hub = h
	if cfg.Client.Client == "" {
		cfg.Client = broker.ClientInfo{Client: fmt.Sprintf("c%p", c)}
	}
	if cfg.QueueMessages == 0 {
		cfg.QueueMessages = 1024
	}
	if cfg.QueueBytes == 0 {
		cfg.QueueBytes = 1 << 20
	}
	s := session.New(cfg)
	t.Cleanup(s.Close)
	if err := s.Open(nil, time.Time{}); err != nil {
		t.Fatal(err)
	}
	return s
}

// command sends one JSON command as a text frame.
func command(s *session.Session, id int, fields string) {
	s.HandleText(fmt.Appendf(nil, `{"id":%d,%s}`, id, fields))
}

// waitFor polls cond until it returns nil, failing the test with cond's
// last error after d.
func waitFor(t *testing.T, d time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", d, err)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// timeout bounds every wait of these tests.
const timeout = 5 * time.Second
