package session

import "github.com/heraldhq/herald/internal/wire"

// conflateLocked makes room for p, a live payload of a conflating channel
// that does not fit the live bounds. It drops every queued live payload
// that conflates (Conflate, with a Key) and has a newer payload of the
// same Channel and Key behind it in the queue, p included; payloads
// without a key, replies and catch-up stay, and so does the batch in
// flight. The next payload of a channel it dropped from is a delta
// against what was dropped, when it has a Whole: that goes instead.
//
// It returns what to queue for p (p, or p.Whole when p itself follows a
// dropped payload) and whether that fits the bounds now. The counts of
// the queue (liveLen, liveBytes, held) stay exact; each dropped payload
// is reported to its trace and counted in Metrics.Conflated.
//
// It walks the queue once from the newest payload to the oldest, then
// once more to close the gaps: one map, sized for the queue, is its one
// allocation. A session whose queue fits never calls it.
func (s *Session) conflateLocked(p *wire.Payload) (*wire.Payload, bool) {
	type slot struct{ channel, key string }
	n := len(s.queue) // p's index, were it queued
	// Walking from p to the oldest payload, behind[{C, K}] is set once a
	// payload of channel C with key K is met, and behind[{C, ""}] is the
	// index of the oldest payload of channel C kept so far: the one after
	// the payload at hand.
	behind := make(map[slot]int, n+1)
	mark := func(q *wire.Payload, i int) {
		if q.Channel == "" {
			return // a reply, a join or a leave
		}
		behind[slot{q.Channel, ""}] = i
		if q.Key != "" {
			behind[slot{q.Channel, q.Key}] = i
		}
	}
	mark(p, n)
	drops := 0
	for i := n - 1; i >= 0; i-- {
		q := s.queue[i]
		_, newer := behind[slot{q.p.Channel, q.p.Key}]
		if !q.live || !q.p.Conflate || q.p.Key == "" || !newer {
			mark(q.p, i)
			continue
		}
		s.queue[i] = queued{}
		s.liveLen--
		s.liveBytes -= len(q.p.Bytes)
		s.held -= len(q.p.Bytes)
		dropped(q.p)
		drops++
		// The next payload of the channel loses its predecessor.
		if next := behind[slot{q.p.Channel, ""}]; next == n {
			p = whole(p)
		} else {
			s.wholeLocked(next)
		}
	}
	kept := s.queue[:0]
	for _, q := range s.queue {
		if q.p != nil {
			kept = append(kept, q)
		}
	}
	clear(s.queue[len(kept):])
	s.queue = kept
	if drops > 0 {
		s.wakeLocked() // held fell
		if s.cfg.Metrics != nil {
			s.cfg.Metrics.Conflated.Add(float64(drops))
		}
	}
	return p, s.roomLocked(len(p.Bytes))
}

// wholeLocked replaces the queued payload at i by its whole form, when it
// is a delta, keeping the queue's byte counts exact.
func (s *Session) wholeLocked(i int) {
	q := s.queue[i]
	w := whole(q.p)
	grown := len(w.Bytes) - len(q.p.Bytes)
	s.held += grown
	if q.live {
		s.liveBytes += grown
	}
	s.queue[i].p = w
}

// whole returns p's whole form: p.Whole for a delta, p itself otherwise.
func whole(p *wire.Payload) *wire.Payload {
	if p.Whole != nil {
		return p.Whole
	}
	return p
}
