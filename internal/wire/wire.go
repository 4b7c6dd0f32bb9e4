// Package wire holds what goes out to a client, on its way down the flow
// transport ← session ← hub: a Payload is one frame's content, encoded
// once (by the hub for pushes, by a session for its replies), queued by
// the session, and written by a transport, which may keep the frame it
// makes of a push with it (Prepared) so that a broadcast is framed — and
// compressed — once for every connection.
package wire

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldhq/herald/broker"
)

// Source is where a connection's writes come from: a session's queue of
// payloads. The connection takes them when its write begins rather than
// when it is told they wait, so that whatever was queued meanwhile goes
// out in the same write.
type Source interface {
	// Take returns the payloads to write, in order; the connection calls
	// it once per write, when the write begins, and does not keep the
	// slice after calling Written.
	Take() []*Payload
	// Written reports that what Take returned is written, or that the
	// write failed (err); on failure Take may not have been called. It
	// may hand the connection its next write.
	Written(err error)
}

// Payload is one frame's content, encoded once and shared by every
// subscriber that speaks the same wire format. It is immutable once built.
type Payload struct {
	Bytes  []byte
	Binary bool
	// Push is true for what a Delivery encodes — a message, a join or a
	// leave pushed to the client — and false for a reply to one client.
	// A push is encoded once and may go to many connections (live fan-out)
	// or to one (history catch-up): a transport may prepare its frame once
	// (Prepared), and the session counts pushes as messages out.
	Push bool
	// Channel and Offset name the message a message push carries: the SSE
	// transport writes the stream's cursor from them, and a conflating
	// session matches keys within a channel. They are empty for replies,
	// joins and leaves.
	Channel string
	Offset  broker.Offset
	// Key is the message's conflation key ("" for none); Conflate is set
	// when its channel's overflow policy is conflate: a session whose
	// queue is full may drop this payload when a newer one of the same
	// Channel and Key is queued behind it. Unkeyed payloads are never
	// dropped.
	Key      string
	Conflate bool
	// Whole is set on a delta push (a Fossil delta against the channel's
	// previous message): the same message sent whole, for a session that
	// dropped the previous message of the channel before writing it.
	Whole *Payload
	// Accepted is when the broker accepted the message a live payload
	// carries (zero for replies, joins and leaves): the delivery latency
	// metric runs from it to the write.
	Accepted time.Time
	// Trace follows a traced message's writes on this node; nil for
	// everything else.
	Trace *Tracker

	once     sync.Once
	prepared any
}

// NewPayload returns a payload for one connection only.
func NewPayload(b []byte) *Payload { return &Payload{Bytes: b} }

// Prepared returns the transport's frame for p, building it with build on
// the first call only. Every caller must pass an equivalent build.
func (p *Payload) Prepared(build func(*Payload) any) any {
	p.once.Do(func() { p.prepared = build(p) })
	return p.prepared
}

// Tracker follows one traced message's payloads on this node from the
// hub's fan-out to the socket writes, so that the node's fan-out span
// ends at the last write and says how many were written. The hub makes
// one for a traced message only: an untraced payload's Tracker is nil,
// and the session's write path pays one nil check for it.
//
// The hub calls Dispatched once it has handed the message to every
// subscriber; each session calls Done once per payload it was given:
// written, failed or dropped. When all are done, finish runs once.
type Tracker struct {
	// pending counts payloads not yet done, plus dispatchBias until
	// Dispatched: a write that completes while the fan-out still runs
	// cannot bring it to zero early.
	pending   atomic.Int64
	written   atomic.Int64
	lastWrite atomic.Int64 // Unix nanoseconds of the newest write
	delivered atomic.Int64
	once      sync.Once
	finish    func(delivered, written int, lastWrite time.Time)
}

const dispatchBias = 1 << 40

// NewTracker returns a Tracker that calls finish once every payload is
// done (or Finish is called): with the number handed out, the number
// written and the time of the last write (zero when none was).
func NewTracker(finish func(delivered, written int, lastWrite time.Time)) *Tracker {
	t := &Tracker{finish: finish}
	t.pending.Store(dispatchBias)
	return t
}

// Dispatched records that n payloads were handed to sessions.
func (t *Tracker) Dispatched(n int) {
	t.delivered.Store(int64(n))
	if t.pending.Add(int64(n)-dispatchBias) == 0 {
		t.Finish()
	}
}

// Done records one payload written (or, when written is false, dropped or
// failed) at at.
func (t *Tracker) Done(written bool, at time.Time) {
	if written {
		t.written.Add(1)
		ns := at.UnixNano()
		for {
			last := t.lastWrite.Load()
			if ns <= last || t.lastWrite.CompareAndSwap(last, ns) {
				break
			}
		}
	}
	if t.pending.Add(-1) == 0 {
		t.Finish()
	}
}

// Finish calls finish now, if it has not run: for payloads that will
// never be reported (a connection that went away mid-write), the hub
// finishes a tracker after a while.
func (t *Tracker) Finish() {
	t.once.Do(func() {
		var last time.Time
		if ns := t.lastWrite.Load(); ns != 0 {
			last = time.Unix(0, ns)
		}
		t.finish(int(t.delivered.Load()), int(t.written.Load()), last)
	})
}
