package session_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/heraldhq/herald/internal/metrics"
	"github.com/heraldhq/herald/internal/protocol"
	"github.com/heraldhq/herald/internal/session"
	"github.com/heraldhq/herald/internal/wire"
)

// livePush is a live message push of channel numbered n, with key ("" for
// none), as the hub builds it for a conflating namespace (conflate) or
// another.
func livePush(channel, key string, n int, conflate bool) *wire.Payload {
	return &wire.Payload{
		Bytes: fmt.Appendf(nil, `{"channel":%q,"key":%q,"n":%d}`, channel, key, n),
		Push:  true, Channel: channel, Key: key, Conflate: conflate,
		Accepted: time.Now(),
	}
}

// deltaPush is livePush's delta form: its Whole is the push whole.
func deltaPush(channel, key string, n int) *wire.Payload {
	p := livePush(channel, key, n, true)
	p.Whole = livePush(channel, key, n, true)
	p.Bytes = fmt.Appendf(nil, `{"channel":%q,"key":%q,"n":%d,"delta":true}`, channel, key, n)
	return p
}

// stuckSession opens a session whose client does not read — its welcome
// stays in flight — with a live bound of queueMessages.
func stuckSession(t *testing.T, queueMessages int) (*fakeConn, *session.Session, *metrics.Metrics) {
	t.Helper()
	m := newMetrics()
	c := &fakeConn{held: true}
	s := open(t, newHub(t), c, session.Config{Shared: &session.Shared{QueueMessages: queueMessages, Metrics: m}})
	return c, s, m
}

// checkConflated fails the test if c was closed, or if, once drained, it
// did not get the message pushes want, with conflated of them dropped.
func checkConflated(t *testing.T, c *fakeConn, s *session.Session, m *metrics.Metrics, want []pushed, conflated float64) {
	t.Helper()
	if cl, closed := c.firstClose(); closed {
		t.Fatalf("closed with %+v", cl)
	}
	drain(t, c, s)
	if got := pushes(t, c); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("written %v, want %v", got, want)
	}
	if n := testutil.ToFloat64(m.Conflated); n != conflated {
		t.Errorf("%v conflated, want %v", n, conflated)
	}
}

// checkAccounting fails the test unless the session's counts of what it
// queued are exact: every queued payload live (the test queues nothing
// else behind the welcome in flight), and held all that is queued or in
// flight.
func checkAccounting(t *testing.T, s *session.Session) {
	t.Helper()
	q := s.QueueState()
	if q.Closing {
		t.Fatal("the session closed")
	}
	if q.LiveLen != q.Queued || q.LiveBytes != q.QueuedBytes || q.Held != q.QueuedBytes+q.InFlightBytes {
		t.Fatalf("queue accounting %+v: want live = queued and held = queued + in flight", q)
	}
}

// drain completes writes until none is in flight, then checks that the
// queue's accounting is back to zero.
func drain(t *testing.T, c *fakeConn, s *session.Session) {
	t.Helper()
	for {
		c.mu.Lock()
		n := len(c.pending)
		c.mu.Unlock()
		if n == 0 {
			break
		}
		c.release(nil)
	}
	if q := s.QueueState(); q != (session.QueueState{}) {
		t.Fatalf("drained, the queue's accounting is %+v, want all zero", q)
	}
}

// pushed is a message push as the fake connection got it.
type pushed struct {
	Channel string
	Key     string
	N       int
	Delta   bool
}

// pushes returns the message pushes written to c, in order.
func pushes(t *testing.T, c *fakeConn) []pushed {
	t.Helper()
	var out []pushed
	for _, m := range c.objects(t) {
		if _, ok := m["n"]; !ok {
			continue // the welcome
		}
		b, _ := json.Marshal(m)
		var p pushed
		if err := json.Unmarshal(b, &p); err != nil {
			t.Fatal(err)
		}
		out = append(out, p)
	}
	return out
}

// A conflating subscriber that does not read is kept: its queue holds
// the newest message of each key of each channel, and every unkeyed one.
// Once it reads, it has those, in the order they were published.
func TestConflationKeepsNewestOfEveryKey(t *testing.T) {
	c, s, m := stuckSession(t, 100)
	const total = 5000
	type chanKey struct{ channel, key string }
	newest := map[chanKey]int{}
	var unkeyed []int
	for n := 1; n <= total; n++ {
		// 50 keys: 25 names in each of two channels.
		ck := chanKey{[]string{"a", "b"}[n%2], fmt.Sprintf("k%d", n%25)}
		if n%250 == 0 {
			ck.key = ""
			unkeyed = append(unkeyed, n)
		} else {
			newest[ck] = n
		}
		s.DeliverLive(livePush(ck.channel, ck.key, n, true))
		if cl, closed := c.firstClose(); closed {
			t.Fatalf("closed with %+v at message %d", cl, n)
		}
		checkAccounting(t, s)
	}
	drain(t, c, s)

	got := pushes(t, c)
	written := map[int]bool{}
	for i, p := range got {
		if i > 0 && p.N <= got[i-1].N {
			t.Fatalf("message %d written after %d", p.N, got[i-1].N)
		}
		written[p.N] = true
	}
	for _, n := range unkeyed {
		if !written[n] {
			t.Errorf("unkeyed message %d was dropped", n)
		}
	}
	for ck, n := range newest {
		if !written[n] {
			t.Errorf("the newest message of %v, %d, was dropped", ck, n)
		}
	}
	conflated := int(testutil.ToFloat64(m.Conflated))
	if conflated == 0 || conflated+len(got) != total {
		t.Errorf("%d conflated and %d written, want some conflated and %d in all", conflated, len(got), total)
	}
	if n := testutil.ToFloat64(m.SlowConsumers); n != 0 {
		t.Errorf("%v slow consumers counted, want 0", n)
	}
}

// A delta whose predecessor was dropped is sent whole; a delta whose
// predecessor stays, or whose channel lost nothing, is sent as it is.
// Every dropped payload is reported to its trace as not written.
func TestConflationSendsDeltaWholeAfterDrop(t *testing.T) {
	c, s, m := stuckSession(t, 3)
	written := map[int]int{}
	queue := func(p *wire.Payload, n int) {
		t.Helper()
		tr := wire.NewTracker(func(_, w int, _ time.Time) { written[n] = w })
		p.Trace = tr
		if p.Whole != nil {
			p.Whole.Trace = tr
		}
		s.DeliverLive(p)
		tr.Dispatched(1)
		checkAccounting(t, s)
	}
	queue(livePush("c", "a", 1, true), 1)
	queue(deltaPush("c", "b", 2), 2)
	queue(deltaPush("y", "a", 3), 3)
	// Full: 1 goes (key a of c is newer in 4), so 2, next of c, goes whole.
	queue(deltaPush("c", "a", 4), 4)
	// Full: 2 goes (key b of c is newer in 5), so 4 goes whole.
	queue(deltaPush("c", "b", 5), 5)
	// Full: 5 goes (key b of c is newer in 6), so 6 itself goes whole.
	queue(deltaPush("c", "b", 6), 6)
	// Full: 4, queued whole by now, goes (key a of c is newer in 7); 6, next
	// of c, is whole already; 7 follows 6, which stays: it goes as a delta.
	queue(deltaPush("c", "a", 7), 7)
	checkConflated(t, c, s, m, []pushed{{"y", "a", 3, true}, {"c", "b", 6, false}, {"c", "a", 7, true}}, 4)
	if want := map[int]int{1: 0, 2: 0, 3: 1, 4: 0, 5: 0, 6: 1, 7: 1}; fmt.Sprint(written) != fmt.Sprint(want) {
		t.Errorf("traces finished with writes %v, want %v", written, want)
	}
}

// History catch-up is never conflated: a catch-up payload stays though a
// newer live one of its key is queued behind it.
func TestConflationLeavesCatchUp(t *testing.T) {
	c, s, m := stuckSession(t, 1)
	s.DeliverReplay(livePush("c", "k", 1, true))
	s.DeliverLive(livePush("c", "k", 2, true))
	s.DeliverLive(livePush("c", "k", 3, true)) // full: 2 goes, 1 stays
	checkConflated(t, c, s, m, []pushed{{"c", "k", 1, false}, {"c", "k", 3, false}}, 1)
}

// A session closes as a slow consumer, as without conflation, when its
// payloads do not conflate, or when dropping what conflates cannot bring
// it back under its bound.
func TestConflationCannotHelp(t *testing.T) {
	tests := []struct {
		name string
		push func(n int) *wire.Payload
	}{
		{"not conflating", func(n int) *wire.Payload { return livePush("c", "k", n, false) }},
		{"unkeyed", func(n int) *wire.Payload { return livePush("c", "", n, true) }},
		{"every key new", func(n int) *wire.Payload { return livePush("c", fmt.Sprint(n), n, true) }},
		{"same key, other channels", func(n int) *wire.Payload { return livePush(fmt.Sprint(n), "k", n, true) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, s, m := stuckSession(t, 4)
			for n := 1; n <= 4; n++ {
				s.DeliverLive(tt.push(n))
			}
			if cl, closed := c.firstClose(); closed {
				t.Fatalf("closed with %+v within the bound", cl)
			}
			s.DeliverLive(tt.push(5))
			if cl, ok := c.firstClose(); !ok || cl.code != protocol.ClosePolicy || cl.reason != "slow consumer" {
				t.Fatalf("past the bound closed with %+v (%v), want 1008 slow consumer", cl, ok)
			}
			c.release(nil)
			if got := pushes(t, c); len(got) != 0 {
				t.Errorf("written %v, want nothing but the welcome in flight", got)
			}
			if n := testutil.ToFloat64(m.SlowConsumers); n != 1 {
				t.Errorf("%v slow consumers counted, want 1", n)
			}
			if n := testutil.ToFloat64(m.Conflated); n != 0 {
				t.Errorf("%v conflated, want 0", n)
			}
		})
	}
}

// Queuing a live payload allocates nothing while the queue keeps up, with
// conflation or without.
func TestEnqueueAllocatesNothing(t *testing.T) {
	for _, conflate := range []bool{false, true} {
		s := newDiscardSession(t)
		p := livePush("c", "k", 1, conflate)
		if n := testing.AllocsPerRun(1000, func() { s.DeliverLive(p) }); n != 0 {
			t.Errorf("conflate %v: %v allocations a payload, want 0", conflate, n)
		}
	}
}
