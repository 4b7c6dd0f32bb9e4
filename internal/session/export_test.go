package session

import "github.com/heraldhq/herald/internal/wire"

// DeliverLive queues p as the hub's live fan-out does (Deliver), for a
// payload the test builds itself.
func (s *Session) DeliverLive(p *wire.Payload) { s.enqueue(p, live) }

// DeliverReplay queues p as the hub's history catch-up does.
func (s *Session) DeliverReplay(p *wire.Payload) { s.enqueue(p, asked) }

// QueueState is the outgoing queue's accounting, and what it counts.
type QueueState struct {
	Queued, QueuedBytes int // payloads queued, and their bytes
	LiveLen, LiveBytes  int // the live ones, as the session counts them
	InFlightBytes       int // bytes of the batch being written
	Held                int // as the session counts them
	Closing             bool
}

// QueueState returns the queue's accounting.
func (s *Session) QueueState() QueueState {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	q := QueueState{Queued: len(s.queue), LiveLen: s.liveLen, LiveBytes: s.liveBytes, Held: s.held, Closing: s.closing}
	for _, e := range s.queue {
		q.QueuedBytes += len(e.p.Bytes)
	}
	if s.writing {
		for _, p := range s.batch {
			q.InFlightBytes += len(p.Bytes)
		}
	}
	return q
}
