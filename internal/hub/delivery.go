package hub

import (
	"sync"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/internal/protocol"
	"github.com/heraldhq/herald/internal/wire"
)

// Delivery is one event for the subscribers of a channel: a message, a join
// or a leave. Its wire encodings are made on first use and shared.
type Delivery struct {
	// Message is set for a message; Presence for a join or leave.
	Message  broker.Message
	Presence *PresenceEvent
	// Replay marks a message delivered to one subscriber catching up from
	// history, not a live fan-out: the subscriber asked for it, so it does
	// not count as falling behind.
	Replay bool

	trace                      *wire.Tracker // a traced live message's, else nil
	jsonOnce, rawOnce, sseOnce sync.Once
	json, raw, sse             *wire.Payload
}

// accepted is the message's acceptance time for a live delivery, zero
// otherwise (history catch-up measures nothing about delivery).
func (d *Delivery) accepted() time.Time {
	if d.Presence != nil || d.Replay {
		return time.Time{}
	}
	return d.Message.Time
}

// PresenceEvent is a join or leave.
type PresenceEvent struct {
	Op      string // "join" or "leave"
	Channel string
	Client  broker.ClientInfo
}

// JSON returns the delivery as a push of the JSON protocol.
func (d *Delivery) JSON() *wire.Payload {
	d.jsonOnce.Do(func() {
		var b []byte
		if d.Presence != nil {
			b = protocol.PresencePush(d.Presence.Op, d.Presence.Channel, d.Presence.Client)
		} else {
			b = protocol.MessagePush(d.Message)
		}
		d.json = &wire.Payload{Bytes: b, Push: true, Accepted: d.accepted(), Trace: d.trace}
	})
	return d.json
}

// Raw returns the delivery as raw mode sends it, or nil for a join or leave
// (raw mode carries messages only).
func (d *Delivery) Raw() *wire.Payload {
	if d.Presence != nil {
		return nil
	}
	d.rawOnce.Do(func() {
		b, bin := protocol.RawPayload(d.Message)
		d.raw = &wire.Payload{Bytes: b, Binary: bin, Push: true, Accepted: d.accepted(), Trace: d.trace}
	})
	return d.raw
}

// SSE returns the delivery as an SSE event without its `id:` line (the
// stream's cursor, written per stream by the transport), or nil for a join
// or leave (SSE streams carry messages only).
func (d *Delivery) SSE() *wire.Payload {
	if d.Presence != nil {
		return nil
	}
	d.sseOnce.Do(func() {
		d.sse = &wire.Payload{
			Bytes:    protocol.SSEEvent(d.Message),
			Push:     true,
			Channel:  d.Message.Channel,
			Offset:   d.Message.Offset,
			Accepted: d.accepted(),
			Trace:    d.trace,
		}
	})
	return d.sse
}
