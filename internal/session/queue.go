package session

import (
	"github.com/heraldhq/herald/internal/hub"
	"github.com/heraldhq/herald/internal/protocol"
)

// enqueue adds p to the outgoing queue without blocking and starts the
// write loop when none runs: an idle session has no writer goroutine.
//
// Only live fan-out (live set) counts against the queue's limits: replies
// and history catch-up are what the client asked for, bounded by its own
// commands and by history. A live delivery that finds the client further
// behind than the limits allow closes the session as a slow consumer.
func (s *Session) enqueue(p *hub.Payload, live bool) {
	s.qmu.Lock()
	if s.closing {
		s.qmu.Unlock()
		return
	}
	if live {
		// Any one payload is taken when nothing live waits, so a message
		// larger than the byte limit still reaches a reader that keeps up.
		if s.liveLen > 0 && (s.liveLen >= s.cfg.QueueMessages || s.liveBytes+len(p.Bytes) > s.cfg.QueueBytes) {
			s.closing = true
			s.queue, s.liveLen, s.liveBytes = nil, 0, 0
			s.qmu.Unlock()
			if s.cfg.Metrics != nil {
				s.cfg.Metrics.SlowConsumers.Inc()
			}
			s.cfg.Conn.Close(protocol.ClosePolicy, "slow consumer")
			return
		}
		s.liveLen++
		s.liveBytes += len(p.Bytes)
	}
	s.queue = append(s.queue, queued{p: p, live: live})
	if s.writing {
		s.qmu.Unlock()
		return
	}
	s.writing = true
	batch := s.takeLocked()
	s.qmu.Unlock()
	s.cfg.Conn.Send(batch, s.sentFn)
}

// queued is one payload waiting to be written.
type queued struct {
	p    *hub.Payload
	live bool
}

// takeLocked moves the whole queue into the batch to send.
func (s *Session) takeLocked() []*hub.Payload {
	s.batch = s.batch[:0]
	s.batchMessages = 0
	for _, e := range s.queue {
		s.batch = append(s.batch, e.p)
		if e.p.Shared {
			s.batchMessages++
		}
	}
	clear(s.queue)
	s.queue, s.liveLen, s.liveBytes = s.queue[:0], 0, 0
	return s.batch
}

// sent is called by the Conn when a batch is written; it sends what was
// queued meanwhile, or ends the write cycle.
func (s *Session) sent(err error) {
	if s.cfg.Metrics != nil && err == nil {
		s.cfg.Metrics.MessagesOut.Add(float64(s.batchMessages))
	}
	clear(s.batch)
	s.qmu.Lock()
	if err != nil {
		s.closing = true
	}
	if len(s.queue) == 0 || s.closing {
		s.writing = false
		// An idle session keeps no buffers.
		s.queue, s.batch, s.liveLen, s.liveBytes = nil, nil, 0, 0
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
