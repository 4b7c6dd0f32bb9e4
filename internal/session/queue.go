package session

import (
	"time"

	"github.com/heraldhq/herald/internal/hub"
	"github.com/heraldhq/herald/internal/protocol"
)

// kind says what a queued payload is, for the queue's limits.
type kind int

const (
	// live is fan-out the client did not ask for: the slow-consumer
	// limits apply.
	live kind = iota
	// reply answers a command: replies waiting past QueueBytes stop the
	// session from handling further commands until they drain (throttle).
	reply
	// replay is history catch-up the client asked for, bounded by history.
	replay
)

// enqueue adds p to the outgoing queue without blocking and starts a write
// when none is in flight: an idle session has no writer goroutine.
//
// A live delivery that finds the client further behind than QueueMessages
// or QueueBytes of live messages closes the session as a slow consumer.
// Replies and history catch-up are what the client asked for and do not
// count as falling behind.
func (s *Session) enqueue(p *hub.Payload, k kind) {
	s.qmu.Lock()
	if s.closing {
		s.qmu.Unlock()
		return
	}
	switch k {
	case live:
		// Any one payload is taken when nothing live waits, so a message
		// larger than the byte limit still reaches a reader that keeps up.
		if s.liveLen > 0 && (s.liveLen >= s.cfg.QueueMessages || s.liveBytes+len(p.Bytes) > s.cfg.QueueBytes) {
			s.closeLocked()
			s.qmu.Unlock()
			if s.cfg.Metrics != nil {
				s.cfg.Metrics.SlowConsumers.Inc()
			}
			s.cfg.Conn.Close(protocol.ClosePolicy, "slow consumer")
			return
		}
		s.liveLen++
		s.liveBytes += len(p.Bytes)
	case reply:
		s.replyBytes += len(p.Bytes)
	}
	s.queue = append(s.queue, p)
	if s.writing {
		s.qmu.Unlock()
		return
	}
	s.writing = true
	batch := s.takeLocked()
	s.qmu.Unlock()
	s.cfg.Conn.Send(batch, s.sentFn)
}

// keptSlots is the largest queue an idle session keeps for the next
// message.
const keptSlots = 4

// throttle blocks the session's command handling while more than
// QueueBytes of replies wait behind the batch in flight: a peer that sends
// commands without reading the replies meets TCP backpressure, not
// unbounded server memory. The wait ends when the writer takes the replies,
// or when the session closes (a write stuck past WriteTimeout closes it).
func (s *Session) throttle() {
	s.qmu.Lock()
	for s.replyBytes > s.cfg.QueueBytes && !s.closing {
		if s.drained == nil {
			s.drained = make(chan struct{})
		}
		ch := s.drained
		s.qmu.Unlock()
		<-ch
		s.qmu.Lock()
	}
	s.qmu.Unlock()
}

// takeLocked makes the whole queue the batch to send; the emptied slice
// of the last batch takes new payloads.
func (s *Session) takeLocked() []*hub.Payload {
	s.batch, s.queue = s.queue, s.batch[:0]
	s.batchMessages = 0
	for _, p := range s.batch {
		if p.Shared {
			s.batchMessages++
		}
	}
	s.liveLen, s.liveBytes, s.replyBytes = 0, 0, 0
	s.wakeLocked()
	return s.batch
}

// closeLocked marks the session closing and drops what is queued.
func (s *Session) closeLocked() {
	s.closing = true
	s.queue, s.liveLen, s.liveBytes, s.replyBytes = nil, 0, 0, 0
	s.wakeLocked()
}

// wakeLocked releases a throttled command handler.
func (s *Session) wakeLocked() {
	if s.drained != nil {
		close(s.drained)
		s.drained = nil
	}
}

// sent is called by the Conn when a batch is written; it sends what was
// queued meanwhile, or ends the write cycle.
func (s *Session) sent(err error) {
	if s.cfg.Metrics != nil && err == nil {
		s.cfg.Metrics.MessagesOut.Add(float64(s.batchMessages))
		now := time.Now()
		for _, p := range s.batch {
			if !p.Accepted.IsZero() {
				s.cfg.Metrics.DeliveryLatency.Observe(now.Sub(p.Accepted).Seconds())
			}
		}
	}
	clear(s.batch)
	s.qmu.Lock()
	if err != nil {
		s.closeLocked()
	}
	if len(s.queue) == 0 || s.closing {
		s.writing = false
		// An idle session keeps its two slices only while they are
		// small: then the next message allocates nothing.
		if cap(s.queue) > keptSlots || s.closing {
			s.queue = nil
		}
		if cap(s.batch) > keptSlots || s.closing {
			s.batch = nil
		}
		s.qmu.Unlock()
		if err != nil {
			s.cfg.Conn.Close(protocol.CloseNormal, "")
		}
		return
	}
	batch := s.takeLocked()
	s.qmu.Unlock()
	s.cfg.Conn.Send(batch, s.sentFn)
}
