package client

import (
	"context"
	"encoding/json"
)

// acks coalesces a subscription's acknowledgements: at most one is in
// flight, and the next one names the newest offset the reader was done with
// meanwhile (an ack covers every earlier message). Its methods need the
// Subscription's mu held.
type acks struct {
	last     string // the offset Next returned last, until the reader is done with it
	hasLast  bool
	want     string // the newest offset to acknowledge once none is in flight
	hasWant  bool
	inFlight bool
}

// returned records the offset of the message Next returns.
func (a *acks) returned(offset string) { a.last, a.hasLast = offset, true }

// done records that the reader is done with the message Next returned last:
// it is to be acknowledged when ack is true, and forgotten either way.
func (a *acks) done(ack bool) {
	if a.hasLast && ack {
		a.want, a.hasWant = a.last, true
	}
	a.hasLast = false
}

// acked records that offset was acknowledged otherwise (Ack): when it is
// the offset Next returned last, Next does not acknowledge it again.
func (a *acks) acked(offset string) {
	if a.hasLast && a.last == offset {
		a.hasLast = false
	}
}

// next returns the offset to acknowledge now, if any, and marks it in
// flight.
func (a *acks) next() (string, bool) {
	if a.inFlight || !a.hasWant {
		return "", false
	}
	a.inFlight, a.hasWant = true, false
	return a.want, true
}

// answered records that the ack in flight was answered (or will never be).
func (a *acks) answered() { a.inFlight = false }

// ackReturned acknowledges the message Next returned last, where the
// namespace keeps receipts and the subscription lasts: the reader is done
// with it, since it asks for the next one.
func (s *Subscription) ackReturned() {
	s.mu.Lock()
	s.acks.done(s.receipts && s.err == nil)
	offset, ok := s.acks.next()
	s.mu.Unlock()
	if ok {
		go s.sendAck(offset)
	}
}

// sendAck sends the ack in flight, then the next one, if any came meanwhile.
func (s *Subscription) sendAck(offset string) {
	fields := map[string]any{"channel": s.channel, "offset": offset}
	_, err := s.c.send("ack", fields, func(_ json.RawMessage, err error) {
		if err != nil {
			s.c.log.Warn("herald client: ack", "channel", s.channel, "offset", offset, "err", err)
		}
		s.mu.Lock()
		s.acks.answered()
		next, ok := s.acks.next()
		s.mu.Unlock()
		if ok {
			go s.sendAck(next)
		}
	})
	if err != nil { // the Client is closed: nothing more goes out
		s.mu.Lock()
		s.acks.answered()
		s.mu.Unlock()
	}
}

// Ack acknowledges the message at offset and every earlier one of the
// subscription, and waits for the server's reply. Next acknowledges by
// itself the message it returned before; Ack is for a reader that is done
// with a message and does not call Next again soon. On a subscription
// whose namespace keeps no receipts (Receipts is false) it sends nothing
// and returns nil.
func (s *Subscription) Ack(ctx context.Context, offset string) error {
	s.mu.Lock()
	receipts := s.receipts
	if receipts {
		s.acks.acked(offset)
	}
	s.mu.Unlock()
	if !receipts {
		return nil
	}
	_, err := s.c.do(ctx, "ack", map[string]any{"channel": s.channel, "offset": offset})
	return err
}
