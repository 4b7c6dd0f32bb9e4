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
	start := !s.writing
	s.writing = true
	s.qmu.Unlock()
	if start {
		go s.writeLoop()
	}
}

// queued is one payload waiting to be written.
type queued struct {
	p    *hub.Payload
	live bool
}

// writeLoop writes what is queued, batch by batch, and exits when the queue
// is empty.
func (s *Session) writeLoop() {
	var spare []queued
	var batch []*hub.Payload
	for {
		s.qmu.Lock()
		q := s.queue
		if len(q) == 0 || s.closing {
			s.writing = false
			s.queue, s.liveLen, s.liveBytes = nil, 0, 0
			s.qmu.Unlock()
			return
		}
		s.queue, s.liveLen, s.liveBytes = spare[:0], 0, 0
		s.qmu.Unlock()

		batch = batch[:0]
		messages := 0
		for _, e := range q {
			batch = append(batch, e.p)
			if e.p.Shared {
				messages++
			}
		}
		err := s.cfg.Conn.WriteBatch(batch)
		if s.cfg.Metrics != nil {
			s.cfg.Metrics.MessagesOut.Add(float64(messages))
		}
		if err != nil {
			s.qmu.Lock()
			s.closing = true
			s.qmu.Unlock()
			s.cfg.Conn.Close(protocol.CloseNormal, "")
			continue // the loop exits at the top, clearing the queue
		}
		clear(q)
		clear(batch)
		spare = q
	}
}
