package session_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldhq/herald/internal/metrics"
	"github.com/heraldhq/herald/internal/session"
	"github.com/heraldhq/herald/internal/wire"
)

// discardConn writes every batch at once and keeps nothing.
type discardConn struct{}

func (discardConn) Send(src wire.Source) { src.Take(); src.Written(nil) }
func (discardConn) Close(int, string)    {}

// newDiscardSession returns a session over a discardConn, closed when the
// test ends.
func newDiscardSession(tb testing.TB) *session.Session {
	s := session.New(session.Config{Conn: discardConn{}, Shared: &session.Shared{QueueMessages: 1024, QueueBytes: 1 << 20}})
	tb.Cleanup(s.Close)
	return s
}

// BenchmarkEnqueue is a live payload's way through a queue that keeps up:
// queued, taken as a batch and written. A conflating payload costs what
// any other does until its queue overflows.
func BenchmarkEnqueue(b *testing.B) {
	for _, conflate := range []bool{false, true} {
		name := "conflate=false"
		if conflate {
			name = "conflate=true"
		}
		b.Run(name, func(b *testing.B) {
			s := newDiscardSession(b)
			p := &wire.Payload{Bytes: []byte(`{"channel":"c","data":{"n":1}}`), Push: true, Channel: "c", Key: "k", Conflate: conflate}
			b.ReportAllocs()
			for b.Loop() {
				s.DeliverLive(p)
			}
		})
	}
}

// BenchmarkConflate is a conflating subscriber that stopped reading, its
// queue of 1024 full: each payload that does not fit compacts the queue.
// With few keys a compaction frees most of it; with about as many keys
// as the queue holds, nearly every payload compacts it.
func BenchmarkConflate(b *testing.B) {
	for _, keys := range []int{16, 1000} {
		b.Run(fmt.Sprintf("queue=1024/keys=%d", keys), func(b *testing.B) {
			s := session.New(session.Config{Conn: &fakeConn{held: true}, Shared: &session.Shared{QueueMessages: 1024, QueueBytes: 1 << 30}})
			b.Cleanup(s.Close)
			ps := make([]*wire.Payload, keys)
			for i := range ps {
				ps[i] = livePush("c", fmt.Sprint(i), i, true)
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				s.DeliverLive(ps[i%keys])
				i++
			}
			if s.QueueState().Closing {
				b.Fatal("the session closed")
			}
		})
	}
}

// burstConn holds each write until release completes it, and keeps nothing
// of what it is sent.
type burstConn struct{ src wire.Source }

func (c *burstConn) Send(src wire.Source) { c.src = src }
func (c *burstConn) Close(int, string)    {}

// release takes and completes the write in flight, and those it starts in
// turn.
func (c *burstConn) release() {
	for c.src != nil {
		src := c.src
		c.src = nil
		src.Take()
		src.Written(nil)
	}
}

// BenchmarkBurst is a subscriber under load: a burst of 32 payloads
// arrives while a write is in flight, so the queue grows past what an
// idle session keeps, then drains and the session falls idle. The grown
// slices come from the server's pool and go back to it: a burst allocates
// nothing. With metrics, each write also records its messages' delivery
// latency.
func BenchmarkBurst(b *testing.B) {
	for _, measured := range []bool{false, true} {
		b.Run(fmt.Sprintf("metrics=%v", measured), func(b *testing.B) {
			c := &burstConn{}
			cfg := session.Config{Conn: c, Shared: &session.Shared{QueueMessages: 1024, QueueBytes: 1 << 20}}
			p := &wire.Payload{Bytes: []byte(`{"channel":"c","data":{"n":1}}`), Push: true, Channel: "c"}
			if measured {
				cfg.Metrics = metrics.New(prometheus.NewRegistry())
				p.Accepted = time.Now()
			}
			s := session.New(cfg)
			b.Cleanup(s.Close)
			b.ReportAllocs()
			for b.Loop() {
				for range 32 {
					s.DeliverLive(p)
				}
				c.release()
			}
		})
	}
}
