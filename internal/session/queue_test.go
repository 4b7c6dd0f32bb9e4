package session_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/internal/hub"
	"github.com/heraldhq/herald/internal/protocol"
	"github.com/heraldhq/herald/internal/session"
	"github.com/heraldhq/herald/internal/wire"
)

// publish publishes data to channel through the hub.
func publish(t *testing.T, h *hub.Hub, channel string, data any) {
	t.Helper()
	b, err := json.Marshal(data)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Publish(context.Background(), channel, broker.Publication{Data: b}); err != nil {
		t.Fatal(err)
	}
}

// counters returns the "n" of every message written to c, in order: the
// data itself in raw mode, the "data" of a message otherwise.
func counters(t *testing.T, c *fakeConn) []int {
	t.Helper()
	var ns []int
	for _, m := range c.objects(t) {
		if d, ok := m["data"].(map[string]any); ok {
			m = d
		}
		if n, ok := m["n"].(float64); ok {
			ns = append(ns, int(n))
		}
	}
	return ns
}

// A subscriber that stops reading is dropped as a slow consumer; another
// subscriber of the same channel gets every message, in order, meanwhile.
// (Moved from the root package's slow_test.go: the queue bound is the
// session's rule.)
func TestSlowConsumerIsDropped(t *testing.T) {
	for name, mode := range map[string]session.Mode{"json": session.ModeJSON, "raw": session.ModeRaw} {
		t.Run(name, func(t *testing.T) {
			h := newHub(t)
			m := newMetrics()
			healthy := &fakeConn{}
			hs := open(t, h, healthy, session.Config{Mode: mode, RawChannel: "flood", Shared: &session.Shared{QueueMessages: 16, Metrics: m}})
			stuck := &fakeConn{held: true}
			ss := open(t, h, stuck, session.Config{Mode: mode, RawChannel: "flood", Shared: &session.Shared{QueueMessages: 16, Metrics: m}})
			if mode == session.ModeJSON {
				command(hs, 1, `"op":"subscribe","channel":"flood"`)
				command(ss, 1, `"op":"subscribe","channel":"flood"`)
			}
			pad := make([]byte, 16<<10)
			n := 0
			publishOne := func() {
				t.Helper()
				n++
				_, _ = rand.Read(pad)
				want := healthy.frames() + 1
				publish(t, h, "flood", map[string]any{"n": n, "pad": hex.EncodeToString(pad)})
				waitFor(t, timeout, func() error {
					if got := healthy.frames(); got != want {
						return fmt.Errorf("healthy subscriber has %d frames, want %d", got, want)
					}
					return nil
				})
				if got := healthy.lastCounter(t); got != n {
					t.Fatalf("healthy subscriber got message %d, want %d", got, n)
				}
			}
			for testutil.ToFloat64(m.SlowConsumers) == 0 {
				if n == 5000 {
					t.Fatalf("no slow consumer in %d messages", n)
				}
				publishOne()
			}
			if cl, ok := stuck.firstClose(); !ok || cl.code != protocol.ClosePolicy || cl.reason != "slow consumer" {
				t.Fatalf("stuck subscriber closed with %+v (%v), want 1008 slow consumer", cl, ok)
			}
			for range 50 {
				publishOne()
			}
			if got := testutil.ToFloat64(m.SlowConsumers); got != 1 {
				t.Errorf("slow consumers counted %v, want 1: only the stuck peer is slow", got)
			}
			if _, ok := healthy.firstClose(); ok {
				t.Error("the healthy subscriber was closed")
			}
		})
	}
}

// The live queue is bounded by QueueMessages and by QueueBytes, beyond
// the batch in flight; one message larger than QueueBytes still reaches a
// reader that keeps up, and past either bound the session closes with
// 1008 once.
func TestLiveQueueBounds(t *testing.T) {
	msg := strings.Repeat("x", 100)
	size := len(msg) // raw mode sends a JSON string as its text
	tests := []struct {
		name     string
		messages int
		bytes    int
		data     string
		fit      int // live messages queued behind the one in flight
	}{
		{"messages", 4, 1 << 20, msg, 4},
		{"bytes", 1 << 20, 3*size + size/2, msg, 3},
		{"one larger than the bound", 1 << 20, 10, msg, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHub(t)
			m := newMetrics()
			c := &fakeConn{held: true}
			s := open(t, h, c, session.Config{Mode: session.ModeRaw, RawChannel: "q", Shared: &session.Shared{QueueMessages: tt.messages, QueueBytes: tt.bytes, Metrics: m}})
			for range 1 + tt.fit { // one in flight, then the queue
				publish(t, h, "q", tt.data)
			}
			if cl, ok := c.firstClose(); ok {
				t.Fatalf("closed with %+v after %d live messages, want open", cl, 1+tt.fit)
			}
			publish(t, h, "q", tt.data)
			if cl, ok := c.firstClose(); !ok || cl.code != protocol.ClosePolicy || cl.reason != "slow consumer" {
				t.Fatalf("after %d live messages closed with %+v (%v), want 1008 slow consumer", 2+tt.fit, cl, ok)
			}
			publish(t, h, "q", tt.data)
			c.release(nil)
			if got := testutil.ToFloat64(m.SlowConsumers); got != 1 {
				t.Errorf("slow consumers counted %v, want 1", got)
			}
			if n := c.frames(); n != 1 {
				t.Errorf("%d frames written, want only the one in flight when it closed", n)
			}
			_ = s
		})
	}
}

// Replies are what the client asked for: they never close the session as
// a slow consumer, but past QueueBytes held the session stops handling
// commands until the client reads (the root package's
// TestRepliesToAPeerThatDoesNotReadAreBounded watches the heap of a whole
// server for the same rule).
func TestRepliesThrottleCommands(t *testing.T) {
	h := newHub(t)
	c := &fakeConn{held: true}
	const commands = 40
	s := open(t, h, c, session.Config{Shared: &session.Shared{QueueMessages: 1, QueueBytes: 200}})
	handled := make(chan int, commands)
	go func() {
		for i := 1; i <= commands; i++ {
			command(s, i, `"op":"ping"`)
			handled <- i
		}
		close(handled)
	}()
	// The reader of commands blocks once the unread replies pass
	// QueueBytes (a ping reply is about 20 bytes).
	waitFor(t, timeout, func() error {
		if !blockedIn("session.(*Session).throttle") {
			return errors.New("the command reader never blocked in throttle")
		}
		return nil
	})
	if n := len(handled); n >= commands || n < 200/30 {
		t.Fatalf("%d of %d commands handled with nothing read, want about QueueBytes of replies", n, commands)
	}
	// Reading lets it go on, every reply in order, none closing it.
	last := 0
	waitFor(t, timeout, func() error {
		c.release(nil)
		for {
			select {
			case i, ok := <-handled:
				if !ok {
					return nil
				}
				last = i
				continue
			default:
			}
			return fmt.Errorf("%d of %d commands handled", last, commands)
		}
	})
	c.release(nil)
	replies := c.replies(t)
	for i := 1; i <= commands; i++ {
		if r := replies[uint64(i)]; r["ok"] != true {
			t.Fatalf("reply %d: %v", i, r)
		}
	}
	if cl, ok := c.firstClose(); ok {
		t.Fatalf("closed with %+v: replies must not close a session", cl)
	}
}

// blockedIn reports whether some goroutine waits for the queue to drain
// (waitLocked, which it reaches only when the queue is over its bound)
// on its way from fn. A goroutine merely passing through fn does not
// count.
func blockedIn(fn string) bool {
	buf := make([]byte, 1<<20)
	for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
		if strings.Contains(g, fn) && strings.Contains(g, "session.(*Session).waitLocked") {
			return true
		}
	}
	return false
}

// A failed write closes the connection (1000) and drops what is queued;
// later deliveries are not written.
func TestFailedWriteCloses(t *testing.T) {
	h := newHub(t)
	c := &fakeConn{held: true}
	open(t, h, c, session.Config{Mode: session.ModeRaw, RawChannel: "w"})
	publish(t, h, "w", map[string]any{"n": 1})
	publish(t, h, "w", map[string]any{"n": 2})
	c.release(errors.New("broken pipe"))
	if cl, ok := c.firstClose(); !ok || cl.code != protocol.CloseNormal {
		t.Fatalf("after a failed write closed with %+v (%v), want 1000", cl, ok)
	}
	publish(t, h, "w", map[string]any{"n": 3})
	c.release(nil)
	if got := counters(t, c); len(got) != 1 || got[0] != 1 {
		t.Fatalf("written %v, want only message 1 (in flight when it failed)", got)
	}
}

// lateConn is a session.Conn whose writes begin only when the test takes
// them: it keeps the Source of the write Send started.
type lateConn struct {
	sends int
	src   wire.Source
}

func (c *lateConn) Send(src wire.Source) { c.sends, c.src = c.sends+1, src }
func (c *lateConn) Close(int, string)    {}

// A write takes the queue when it begins, not when it is started: what
// is queued meanwhile goes out in the same write, counted by the live
// bounds until then; a write that fails before it took anything closes
// the session and drops the queue.
func TestWriteTakesWhatWasQueuedUntilItBegins(t *testing.T) {
	c := &lateConn{}
	s := session.New(session.Config{Conn: c, Shared: &session.Shared{QueueMessages: 16, QueueBytes: 1 << 20}})
	t.Cleanup(s.Close)
	ps := []*wire.Payload{wire.NewPayload([]byte("1")), wire.NewPayload([]byte("22")), wire.NewPayload([]byte("333"))}
	for _, p := range ps {
		s.DeliverLive(p)
	}
	if c.sends != 1 {
		t.Fatalf("%d writes started for 3 payloads queued before the first began, want 1", c.sends)
	}
	if q := s.QueueState(); q.LiveLen != 3 || q.LiveBytes != 6 || q.Held != 6 {
		t.Fatalf("before the write began the queue counted %+v, want 3 live payloads of 6 bytes", q)
	}
	got := c.src.Take()
	if !slices.Equal(got, ps) {
		t.Fatalf("the write took %d payloads, want the 3 queued, in order", len(got))
	}
	if q := s.QueueState(); q.Queued != 0 || q.LiveLen != 0 || q.InFlightBytes != 6 || q.Held != 6 {
		t.Fatalf("once taken the queue counted %+v, want empty with 6 bytes in flight", q)
	}
	c.src.Written(nil)
	if q := s.QueueState(); c.sends != 1 || q.Held != 0 || q.InFlightBytes != 0 {
		t.Fatalf("after the write: %d writes started, queue %+v; want 1 and nothing held", c.sends, q)
	}

	s.DeliverLive(wire.NewPayload([]byte("4444")))
	if c.sends != 2 {
		t.Fatalf("%d writes started after a payload reached an idle queue, want 2", c.sends)
	}
	c.src.Written(errors.New("broken pipe")) // fails before it took anything
	if q := s.QueueState(); !q.Closing || q.Queued != 0 || q.Held != 0 {
		t.Fatalf("after a write failed before it began the queue is %+v, want closing and empty", q)
	}
	s.DeliverLive(wire.NewPayload([]byte("5")))
	if c.sends != 2 {
		t.Fatalf("%d writes started after the session closed, want still 2", c.sends)
	}
}
