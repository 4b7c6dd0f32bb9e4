package session

import (
	"github.com/heraldhq/herald/internal/hub"
	"github.com/heraldhq/herald/internal/protocol"
)

// enqueue adds p to the outgoing queue without blocking. A queue past its
// limits closes the session as a slow consumer. It starts the write loop
// when none runs: an idle session has no writer goroutine.
func (s *Session) enqueue(p *hub.Payload) {
	s.qmu.Lock()
	if s.closing {
		s.qmu.Unlock()
		return
	}
	// An empty queue takes any one payload, so a message larger than the
	// byte limit still reaches a reader that keeps up.
	if len(s.queue) > 0 && (len(s.queue) >= s.cfg.QueueMessages || s.queueBytes+len(p.Bytes) > s.cfg.QueueBytes) {
		s.closing = true
		s.queue, s.queueBytes = nil, 0
		s.qmu.Unlock()
		if s.cfg.Metrics != nil {
			s.cfg.Metrics.SlowConsumers.Inc()
		}
		s.cfg.Conn.Close(protocol.ClosePolicy, "slow consumer")
		return
	}
	s.queue = append(s.queue, p)
	s.queueBytes += len(p.Bytes)
	start := !s.writing
	s.writing = true
	s.qmu.Unlock()
	if start {
		go s.writeLoop()
	}
}

// writeLoop writes what is queued, batch by batch, and exits when the queue
// is empty.
func (s *Session) writeLoop() {
	var spare []*hub.Payload
	for {
		s.qmu.Lock()
		batch := s.queue
		if len(batch) == 0 || s.closing {
			s.writing = false
			s.queue, s.queueBytes = nil, 0
			s.qmu.Unlock()
			return
		}
		s.queue, s.queueBytes = spare[:0], 0
		s.qmu.Unlock()

		err := s.cfg.Conn.WriteBatch(batch)
		if s.cfg.Metrics != nil {
			s.cfg.Metrics.MessagesOut.Add(float64(countShared(batch)))
		}
		if err != nil {
			s.qmu.Lock()
			s.closing = true
			s.qmu.Unlock()
			s.cfg.Conn.Close(protocol.CloseNormal, "")
			continue // the loop exits at the top, clearing the queue
		}
		clear(batch)
		spare = batch
	}
}

// countShared counts the payloads of a batch that are fanned-out messages,
// not replies.
func countShared(batch []*hub.Payload) int {
	n := 0
	for _, p := range batch {
		if p.Shared {
			n++
		}
	}
	return n
}
