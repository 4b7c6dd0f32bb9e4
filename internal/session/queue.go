package session

import (
	"context"
	"errors"
	"math"
	"time"

	"github.com/heraldhq/herald/internal/metrics"
	"github.com/heraldhq/herald/internal/protocol"
	"github.com/heraldhq/herald/internal/wire"
)

// kind says what a queued payload is, for the queue's limits.
type kind int

const (
	// live is fan-out the client did not ask for: the slow-consumer
	// limits apply.
	live kind = iota
	// asked is what the client asked for — replies, and history catch-up —
	// counted in the bound, which paces it: past QueueBytes held the
	// session stops handling commands until the client reads (throttle),
	// and catch-up is read a page at a time as the queue drains (WaitRoom).
	asked
)

// queued is a payload of the outgoing queue, and whether it is live
// fan-out, which the live bounds count and conflation may drop, or what
// the client asked for.
type queued struct {
	p    *wire.Payload
	live bool
}

// enqueue adds p to the outgoing queue without blocking and starts a write
// when none is in flight: an idle session has no writer goroutine. The
// Conn takes the queue when the write begins (Take), so what is queued
// until then goes out in the same write.
//
// A live delivery that finds the client further behind than QueueMessages
// or QueueBytes of live messages closes the session as a slow consumer —
// unless p is of a conflating channel (Payload.Conflate) and dropping the
// queued messages that a newer one of the same key replaces makes room
// for it (conflateLocked). Replies and history catch-up are what the
// client asked for: they do not close it, but they count toward
// QueueBytes, which paces them (throttle, WaitRoom).
func (s *Session) enqueue(p *wire.Payload, k kind) {
	s.qmu.Lock()
	if s.closing {
		s.qmu.Unlock()
		dropped(p)
		return
	}
	if k == live {
		if !s.roomLocked(len(p.Bytes)) {
			fits := false
			if p.Conflate {
				p, fits = s.conflateLocked(p)
			}
			if !fits {
				s.qmu.Unlock()
				dropped(p)
				s.closeSlow()
				return
			}
		}
		s.liveLen++
		s.liveBytes += len(p.Bytes)
	}
	s.held += len(p.Bytes)
	if len(s.queue) == cap(s.queue) && len(s.queue) >= keptSlots {
		// Past what an idle session keeps, the queue grows through the
		// pool; below, append's own growth costs as little.
		s.queue = s.growQueueLocked()
	}
	s.queue = append(s.queue, queued{p: p, live: k == live})
	if s.writing {
		s.qmu.Unlock()
		return
	}
	s.writing = true
	s.qmu.Unlock()
	s.cfg.Conn.Send(s)
}

// roomLocked reports whether a live payload of n bytes fits the live
// bounds. Any one payload fits when nothing live waits, so a message
// larger than the byte limit still reaches a reader that keeps up.
func (s *Session) roomLocked(n int) bool {
	return s.liveLen == 0 || (s.liveLen < s.cfg.QueueMessages && s.liveBytes+n <= s.cfg.QueueBytes)
}

// isClosing reports whether the session is closing.
func (s *Session) isClosing() bool {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	return s.closing
}

// closeSlow closes the session as a slow consumer.
func (s *Session) closeSlow() {
	if s.closeOnce(protocol.ClosePolicy, "slow consumer") && s.cfg.Metrics != nil {
		s.cfg.Metrics.SlowConsumers.Inc()
	}
}

// closeOnce drops the queue and closes the connection with code and
// reason, unless the session was closing already; it reports whether it
// closed it.
func (s *Session) closeOnce(code int, reason string) bool {
	s.qmu.Lock()
	already := s.closing
	s.closeLocked()
	if !already {
		s.causeLocked(code, reason)
	}
	s.qmu.Unlock()
	if !already {
		s.cfg.Conn.Close(code, reason)
	}
	return !already
}

// Cause is a close the session made: its code and reason.
type Cause struct {
	Code   int
	Reason string
}

// WriteFailed is the Reason of a Cause when a write to the connection
// failed — the peer went away, or the server closed the connection while
// the session was writing to it.
const WriteFailed = "write failed"

// closeConn closes the connection with code and reason, and keeps them as
// the session's Cause unless it has one.
func (s *Session) closeConn(code int, reason string) {
	s.qmu.Lock()
	s.causeLocked(code, reason)
	s.qmu.Unlock()
	s.cfg.Conn.Close(code, reason)
}

func (s *Session) causeLocked(code int, reason string) {
	if s.cause == nil {
		s.cause = &Cause{Code: code, Reason: reason}
	}
}

// Cause returns the first close the session made of its connection
// (slow consumer, token expired, a disconnect order, a failed write, a
// refused raw publish); the zero Cause when it made none — the client
// left, or the transport cut the connection.
func (s *Session) Cause() Cause {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	if s.cause == nil {
		return Cause{}
	}
	return *s.cause
}

// FellBehind closes the session as a slow consumer: the hub can no
// longer give it every message in order (history moved past the
// catch-up it was reading).
func (s *Session) FellBehind() { s.closeSlow() }

// MissedMessages closes the session with 1001, which tells the client to
// reconnect: messages of a channel it is subscribed to were lost on their
// way to this node and are no longer in history, and a client that
// resumes from the last offset it had is told recovered:false. The
// protocol has no push for it on an open connection.
func (s *Session) MissedMessages() { s.closeOnce(protocol.CloseGoingAway, "messages lost, resume") }

// errClosing is WaitRoom's answer once the session closes.
var errClosing = errors.New("session: closing")

// TryRoom reserves the session's next catch-up page when no other page
// is being read and at most half the queue bound is held, and returns the
// room there is; zero when it cannot (nothing reserved then).
func (s *Session) TryRoom() int {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	if s.closing || s.paging || s.queuedLocked() > s.cfg.QueueBytes/2 {
		return 0
	}
	s.paging = true
	return s.cfg.QueueBytes - s.held
}

// WaitRoom blocks until TryRoom would reserve a page, reserves it, and
// returns the room there is; it fails once the session closes or ctx
// ends. The hub reads history catch-up a page at a time between these
// reservations, one page of the session at a time.
func (s *Session) WaitRoom(ctx context.Context) (int, error) {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	for !s.closing && (s.paging || s.queuedLocked() > s.cfg.QueueBytes/2) {
		if err := s.waitLocked(ctx); err != nil {
			return 0, err
		}
	}
	if s.closing {
		return 0, errClosing
	}
	s.paging = true
	return s.cfg.QueueBytes - s.held, nil
}

// queuedLocked is what is held for the writer: held without the hub's
// buffered live messages (Hold), which wait for the very pages that
// TryRoom and WaitRoom let through, so waiting for them to drain would
// never end.
func (s *Session) queuedLocked() int { return s.held - int(s.holds) }

// PageDone ends the reservation of TryRoom or WaitRoom.
func (s *Session) PageDone() {
	s.qmu.Lock()
	s.paging = false
	s.wakeLocked()
	s.qmu.Unlock()
}

// Hold counts n bytes the hub buffers for the session (live messages
// that wait for its catch-up) against the queue bound, and reports false
// when they do not fit.
func (s *Session) Hold(n int) bool {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	if s.closing || s.held+n > s.cfg.QueueBytes || int64(s.holds)+int64(n) > math.MaxInt32 {
		return false
	}
	s.held += n
	s.holds += int32(n)
	return true
}

// Unhold gives back n bytes of Hold.
func (s *Session) Unhold(n int) {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	if !s.closing {
		s.held -= n
		s.holds -= int32(n)
		s.wakeLocked()
	}
}

// waitHeld blocks while more than limit bytes are held, until the session
// closes or ctx ends.
func (s *Session) waitHeld(ctx context.Context, limit int) error {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	for s.held > limit && !s.closing {
		if err := s.waitLocked(ctx); err != nil {
			return err
		}
	}
	if s.closing {
		return errClosing
	}
	return nil
}

// waitLocked waits, with qmu unlocked, for the next wake (held falls, a
// page reservation ends, the session closes) or for ctx to end.
func (s *Session) waitLocked(ctx context.Context) error {
	if s.drained == nil {
		s.drained = make(chan struct{})
	}
	ch := s.drained
	s.qmu.Unlock()
	defer s.qmu.Lock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// keptSlots is the largest queue an idle session keeps for the next
// message.
const keptSlots = 4

// throttle blocks the session's command handling while more than
// QueueBytes wait to be written or are being written: a peer that sends
// commands without reading what they produce meets TCP backpressure, not
// unbounded server memory. The wait ends when the writer drains the queue,
// or when the session closes (a write stuck past WriteTimeout closes it).
func (s *Session) throttle() { _ = s.waitHeld(context.Background(), s.cfg.QueueBytes) }

// growQueueLocked returns the queue moved to a pooled slice of twice its
// room, and gives the old one back to the pool.
func (s *Session) growQueueLocked() []queued {
	bigger := append(s.cfg.queues.get(2*cap(s.queue)), s.queue...)
	s.cfg.queues.put(s.queue)
	return bigger
}

// Take moves the whole queue to the batch the Conn writes now; called by
// the Conn when its write begins (wire.Source).
func (s *Session) Take() []*wire.Payload {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	return s.takeLocked()
}

// takeLocked moves the whole queue to the batch to send; both slices
// keep their room for the next payloads.
func (s *Session) takeLocked() []*wire.Payload {
	if len(s.queue) > cap(s.batch) && len(s.queue) > keptSlots {
		s.cfg.batches.put(s.batch)
		s.batch = s.cfg.batches.get(len(s.queue))
	}
	s.batch = s.batch[:0]
	for _, q := range s.queue {
		s.batch = append(s.batch, q.p)
	}
	clear(s.queue)
	s.queue = s.queue[:0]
	s.liveLen, s.liveBytes = 0, 0
	return s.batch
}

// dropped tells a traced payload's fan-out it will not be written.
func dropped(p *wire.Payload) {
	if p.Trace != nil {
		p.Trace.Done(false, time.Time{})
	}
}

// closeLocked marks the session closing and drops what is queued.
func (s *Session) closeLocked() {
	for _, q := range s.queue {
		dropped(q.p)
	}
	s.closing = true
	s.queue, s.liveLen, s.liveBytes, s.held, s.holds = nil, 0, 0, 0, 0
	s.wakeLocked()
}

// wakeLocked releases whoever waits for the queue to drain.
func (s *Session) wakeLocked() {
	if s.drained != nil {
		close(s.drained)
		s.drained = nil
	}
}

// Written is called by the Conn when the batch it took is written, or
// the write failed (wire.Source); it starts the next write when more was
// queued meanwhile, or ends the write cycle.
func (s *Session) Written(err error) {
	measure := s.cfg.Metrics != nil && err == nil
	now, written, messages := time.Now(), 0, 0
	var latency metrics.LatencyTally // one add to the histogram per write, not per message
	if measure {
		latency = s.cfg.Metrics.DeliveryLatency.Tally()
	}
	for _, p := range s.batch {
		written += len(p.Bytes)
		if p.Push {
			messages++ // the rest are replies
		}
		if measure && !p.Accepted.IsZero() {
			latency.Observe(now.Sub(p.Accepted))
		}
		if p.Trace != nil {
			p.Trace.Done(err == nil, now)
		}
	}
	if measure {
		latency.Add()
		s.cfg.Metrics.MessagesOut.Add(float64(messages))
	}
	s.qmu.Lock()
	clear(s.batch)
	s.batch = s.batch[:0] // empty should the next write fail before Take
	if !s.closing {
		s.held -= written
	}
	s.wakeLocked()
	if err != nil {
		s.closeLocked()
	}
	if len(s.queue) == 0 || s.closing {
		s.writing = false
		// An idle session keeps two small slices, so that the next
		// message allocates nothing; larger ones go back to the pool,
		// which has small ones to give.
		if cap(s.queue) > keptSlots || s.closing {
			s.cfg.queues.put(s.queue)
			s.queue = nil
			if !s.closing {
				s.queue = s.cfg.queues.get(keptSlots)
			}
		}
		if cap(s.batch) > keptSlots || s.closing {
			s.cfg.batches.put(s.batch)
			s.batch = nil
			if !s.closing {
				s.batch = s.cfg.batches.get(keptSlots)
			}
		}
		if err != nil {
			s.causeLocked(protocol.CloseNormal, WriteFailed)
		}
		s.qmu.Unlock()
		if err != nil {
			s.cfg.Conn.Close(protocol.CloseNormal, "")
		}
		return
	}
	s.qmu.Unlock()
	s.cfg.Conn.Send(s)
}
