package session_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/memory"
	"github.com/heraldhq/herald/internal/hub"
	"github.com/heraldhq/herald/internal/session"
	"github.com/heraldhq/herald/internal/wire"
)

// heldConn is a Conn whose writes complete only when the test says so.
type heldConn struct {
	mu      sync.Mutex
	pending []wire.Source
	out     int
}

func (c *heldConn) Send(src wire.Source) {
	ps := src.Take()
	c.mu.Lock()
	c.out += len(ps)
	c.pending = append(c.pending, src)
	c.mu.Unlock()
}

func (c *heldConn) Close(int, string) {}

// release completes every write so far and returns how many payloads
// were sent in all.
func (c *heldConn) release() int {
	c.mu.Lock()
	p, n := c.pending, c.out
	c.pending = nil
	c.mu.Unlock()
	for _, src := range p {
		src.Written(nil)
	}
	return n
}

// Live messages that the hub buffers for a catch-up count against the
// session's bound, but the catch-up does not wait for them to drain —
// they wait for the catch-up. Before, a buffer past half the bound
// stalled the catch-up for good: 17 of 51 messages arrived.
func TestCatchUpGoesOnPastBufferedLiveMessages(t *testing.T) {
	b := memory.New()
	h := hub.New(hub.Config{Broker: b, MaxMessageSize: 100, Options: func(string) hub.ChannelOptions {
		return hub.ChannelOptions{History: broker.HistoryOptions{Size: 1000}}
	}})
	if err := h.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Stop(); _ = b.Close() })
	data := json.RawMessage(`"` + strings.Repeat("x", 50) + `"`)
	var first broker.Offset
	for i := range 40 {
		off, err := h.Publish(context.Background(), "c", broker.Publication{Data: data})
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = off
		}
	}
	c := &heldConn{}
	s := session.New(session.Config{Conn: c, Mode: session.ModeSSE, Shared: &session.Shared{Hub: h, QueueMessages: 1000, QueueBytes: 4000}})
	t.Cleanup(s.Close)
	since := first.String()
	if _, err := s.SubscribeStream("c", &since, false, nil); err != nil {
		t.Fatal(err)
	}
	for range 12 { // live, buffered while the catch-up waits for room
		if _, err := h.Publish(context.Background(), "c", broker.Publication{Data: data}); err != nil {
			t.Fatal(err)
		}
	}
	const want = 39 + 12
	deadline := time.Now().Add(5 * time.Second)
	for n := c.release(); n != want; n = c.release() {
		if n > want || time.Now().After(deadline) {
			t.Fatalf("got %d of %d messages", n, want)
		}
		time.Sleep(time.Millisecond) // poll: the catch-up goes on as writes complete
	}
}
