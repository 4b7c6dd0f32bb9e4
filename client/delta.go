package client

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/centrifugal/fdelta"
)

// errNoBase fails a delta that came with no whole message before it.
var errNoBase = errors.New("herald client: a delta without the message before it")

// applyDelta returns the data of a delta push: data is a JSON string whose
// UTF-8 bytes are a Fossil delta that turns base, the channel's previous
// data as the subscription received or rebuilt it, into this message's.
// It fails, rather than return other data, when the delta is malformed, its
// checksum or length does not match, or the result is not JSON.
func applyDelta(base []byte, data json.RawMessage) (json.RawMessage, error) {
	if base == nil {
		return nil, errNoBase
	}
	var delta string
	if err := json.Unmarshal(data, &delta); err != nil {
		return nil, fmt.Errorf("herald client: delta is not a JSON string: %w", err)
	}
	out, err := fdelta.Apply(base, []byte(delta))
	if err != nil {
		return nil, fmt.Errorf("herald client: apply delta: %w", err)
	}
	if !json.Valid(out) {
		return nil, errors.New("herald client: a delta made data that is not JSON")
	}
	return out, nil
}

// resubscribe subscribes s again after the last offset it delivered, on
// the current connection: an unsubscribe and a subscribe, which the server
// handles in order. The unsubscribe belongs to this connection only: the
// next connection subscribes s anew by itself.
func (c *Client) resubscribe(s *Subscription) {
	c.mu.Lock()
	current := c.subs[s.channel] == s
	c.mu.Unlock()
	if !current {
		return
	}
	unsubscribe := &call{op: "unsubscribe", once: true, done: func(json.RawMessage, error) {}}
	if _, err := c.sendCall(unsubscribe, map[string]any{"channel": s.channel}); err != nil {
		return // closed
	}
	c.subscribeCmd(s)
}
