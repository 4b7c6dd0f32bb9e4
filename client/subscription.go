package client

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
)

// Subscription is one channel subscribed by Client.Subscribe, or by the
// server (Options.OnServerSubscribe). Its messages wait in an unbounded
// queue until Next takes them: read them promptly.
type Subscription struct {
	c       *Client
	channel string

	mu        sync.Mutex
	queue     []Message
	wake      chan struct{} // holds a token while the queue or err is new
	last      string        // the last offset seen; resubscribes start after it
	haveLast  bool
	recovered bool
	server    bool  // made by the server: it makes it again on reconnection
	err       error // why the subscription ended; nil while it lasts

	filter json.RawMessage // sent with every subscribe; nil for none
	delta  bool            // subscribed with "delta":"fossil"
	base   []byte          // the channel's previous data, what the next delta applies to; nil after a (re)subscribe
	broken bool            // a delta failed: pushes are dropped until the resubscribe's reply

	receipts bool // the last subscribe reply said the namespace keeps receipts
	acks     acks

	ready    chan struct{} // closed at the first reply
	readyErr error
}

// SubscribeOption changes how Subscribe starts.
type SubscribeOption func(*Subscription)

// Since starts the subscription after offset: every message after it that
// history holds comes first, then live ones. "" starts from the beginning
// of history.
func Since(offset string) SubscribeOption {
	return func(s *Subscription) { s.last, s.haveLast = offset, true }
}

// Filter makes the subscription receive only the messages whose tags match
// filter, a JSON filter object of the protocol: {"tag":K,"eq":V},
// {"tag":K,"in":[V…]}, {"tag":K,"exists":true|false}, {"all":[F…]},
// {"any":[F…]}, {"not":F}. The server refuses a malformed filter, and one
// together with Delta, with bad_request.
func Filter(filter json.RawMessage) SubscribeOption {
	return func(s *Subscription) { s.filter = filter }
}

// Delta asks the server to send each message as a Fossil delta against the
// channel's previous one where that is smaller ("delta":"fossil"). The
// Subscription applies the deltas: Next returns whole data all the same.
// When a delta does not apply (a bad checksum, say), the messages from it on
// are dropped and the subscription resubscribes after the last good offset,
// so they come again, whole first.
func Delta() SubscribeOption {
	return func(s *Subscription) { s.delta = true }
}

// Subscribe subscribes to channel and returns once the server accepted it.
// Without Since, the subscription gets the messages published after that.
// The Client resubscribes after every reconnection from the last offset it
// saw, so Next returns every message once, in order, while history holds
// them.
func (c *Client) Subscribe(ctx context.Context, channel string, opts ...SubscribeOption) (*Subscription, error) {
	s := newSubscription(c, channel)
	for _, o := range opts {
		o(s)
	}
	c.mu.Lock()
	switch {
	case c.closed:
		c.mu.Unlock()
		return nil, c.err
	case c.subs[channel] != nil:
		c.mu.Unlock()
		return nil, &Error{Code: "bad_request", Message: "already subscribed to " + channel}
	}
	c.subs[channel] = s
	connected := c.conn != nil
	c.mu.Unlock()
	if connected {
		c.subscribeCmd(s)
	} // else the next connection subscribes it
	select {
	case <-s.ready:
		if s.readyErr != nil {
			return nil, s.readyErr
		}
		return s, nil
	case <-ctx.Done():
		c.drop(s)
		return nil, ctx.Err()
	case <-c.stop:
		return nil, c.closedErr()
	}
}

func newSubscription(c *Client, channel string) *Subscription {
	return &Subscription{c: c, channel: channel, wake: make(chan struct{}, 1), ready: make(chan struct{})}
}

// madeByServer records that the server subscribed s (again), starting
// after offset.
func (s *Subscription) madeByServer(offset string, recovered, receipts bool) {
	s.mu.Lock()
	s.server = true
	if !s.haveLast {
		s.last, s.haveLast = offset, true
	}
	s.recovered, s.receipts = recovered, receipts
	s.base, s.broken = nil, false
	s.mu.Unlock()
	select {
	case <-s.ready:
	default:
		close(s.ready)
	}
}

// isServer reports whether the server made s.
func (s *Subscription) isServer() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.server
}

// lastOffset is the last offset s saw, if any.
func (s *Subscription) lastOffset() (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last, s.haveLast
}

// subscribeCmd sends s's subscribe, resuming after the last offset seen.
// The first push after it is whole: s forgets its delta base.
func (c *Client) subscribeCmd(s *Subscription) {
	fields := map[string]any{"channel": s.channel}
	s.mu.Lock()
	if s.haveLast {
		fields["since"] = s.last
	}
	if len(s.filter) > 0 {
		fields["filter"] = s.filter
	}
	if s.delta {
		fields["delta"] = "fossil"
	}
	s.base = nil
	s.mu.Unlock()
	if _, err := c.send("subscribe", fields, s.subscribed); err != nil {
		s.subscribed(nil, err)
	}
}

// subscribed handles a subscribe reply.
func (s *Subscription) subscribed(raw json.RawMessage, err error) {
	first := false
	select {
	case <-s.ready:
	default:
		first = true
	}
	if err != nil && s.isServer() {
		// The server made this subscription itself meanwhile (it came
		// back as a server-side one): the refusal of ours changes nothing.
		return
	}
	if err != nil {
		s.c.drop(s)
		if first {
			s.readyErr = err
			close(s.ready)
		} else {
			s.end(fmt.Errorf("herald client: resubscribe %s: %w", s.channel, err))
		}
		return
	}
	var r struct {
		Offset    string `json:"offset"`
		Recovered bool   `json:"recovered"`
		Receipts  bool   `json:"receipts"`
	}
	_ = json.Unmarshal(raw, &r)
	s.mu.Lock()
	if !s.haveLast {
		s.last, s.haveLast = r.Offset, true
	}
	s.recovered, s.receipts = r.Recovered, r.Receipts
	s.broken = false // what follows the reply is the new subscription's
	s.mu.Unlock()
	if first {
		close(s.ready)
	}
}

// drop forgets s, if it is still the channel's subscription.
func (c *Client) drop(s *Subscription) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.subs[s.channel] == s {
		delete(c.subs, s.channel)
	}
}

// push queues a message of the channel; delta says its Data is a Fossil
// delta against the previous message's. A delta that does not apply breaks
// the subscription: it resubscribes after the last good offset.
func (s *Subscription) push(m Message, delta bool) {
	s.mu.Lock()
	if s.err != nil || s.broken {
		s.mu.Unlock()
		return
	}
	if s.delta || delta {
		if delta {
			data, err := applyDelta(s.base, m.Data)
			if err != nil {
				s.broken, s.base = true, nil
				s.mu.Unlock()
				s.c.log.Warn("herald client: resubscribing after a delta that does not apply", "channel", s.channel, "offset", m.Offset, "err", err)
				go s.c.resubscribe(s)
				return
			}
			m.Data = data
		}
		s.base = m.Data
	}
	if s.haveLast && m.Offset == s.last {
		s.mu.Unlock()
		return
	}
	s.last, s.haveLast = m.Offset, true
	s.queue = append(s.queue, m)
	s.mu.Unlock()
	s.signal()
}

func (s *Subscription) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// end finishes the subscription: Next returns err once the queue is empty.
func (s *Subscription) end(err error) {
	s.mu.Lock()
	if s.err == nil {
		s.err = err
	}
	s.mu.Unlock()
	s.signal()
}

// Next returns the subscription's next message, waiting for one until ctx
// is done. After Unsubscribe, Close or a kick (ErrKicked) it returns the
// messages still queued, then the error that ended the subscription.
//
// Where the channel's namespace keeps receipts (Receipts), calling Next
// again acknowledges the message it returned before: the reader is done
// with it. Acks are cumulative and coalesced, one in flight at a time, and
// go out in the background; Ack acknowledges without waiting for Next.
func (s *Subscription) Next(ctx context.Context) (Message, error) {
	s.ackReturned()
	for {
		s.mu.Lock()
		if len(s.queue) > 0 {
			m := s.queue[0]
			s.queue[0] = Message{}
			s.queue = s.queue[1:]
			s.acks.returned(m.Offset)
			s.mu.Unlock()
			return m, nil
		}
		err := s.err
		s.mu.Unlock()
		if err != nil {
			return Message{}, err
		}
		select {
		case <-s.wake:
		case <-ctx.Done():
			return Message{}, ctx.Err()
		}
	}
}

// Channel is the subscription's channel.
func (s *Subscription) Channel() string { return s.channel }

// Offset is the last offset the subscription saw: its last message's, or
// where the subscription started.
func (s *Subscription) Offset() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

// Receipts reports whether the channel's namespace keeps receipts (the last
// subscribe reply said so): only then does the subscription acknowledge
// messages.
func (s *Subscription) Receipts() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.receipts
}

// Recovered reports whether the last (re)subscribe found everything after
// the offset it asked for still in history; false means messages were
// missed.
func (s *Subscription) Recovered() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.recovered
}

// ErrUnsubscribed ends a subscription that was unsubscribed.
var ErrUnsubscribed = fmt.Errorf("herald client: unsubscribed")

// Unsubscribe stops the subscription; Next returns what is queued, then
// ErrUnsubscribed.
func (s *Subscription) Unsubscribe(ctx context.Context) error {
	s.c.drop(s)
	s.end(ErrUnsubscribed)
	_, err := s.c.do(ctx, "unsubscribe", map[string]any{"channel": s.channel})
	return err
}
