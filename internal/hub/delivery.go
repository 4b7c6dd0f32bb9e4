package hub

import (
	"sync"
	"time"
	"unicode/utf8"

	"github.com/centrifugal/fdelta"

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
	conflate                   bool          // the channel conflates (wire.Payload.Conflate)
	jsonOnce, rawOnce, sseOnce sync.Once
	json, raw, sse             *wire.Payload

	// A delta delivery (deltaFrom) is its message as a Fossil delta
	// against the channel's previous message, and whole is the delivery
	// it was made from.
	delta []byte
	whole *Delivery
}

// deltaFrom returns d as a delta against prev, the data of the channel's
// previous message, or d itself when the delta push would not be smaller
// than the whole one, or could not travel in a JSON string.
func (d *Delivery) deltaFrom(prev []byte) *Delivery {
	delta := fdelta.Create(prev, d.Message.Data)
	if len(delta) >= len(d.Message.Data) || !utf8.Valid(delta) {
		return d
	}
	dd := &Delivery{Message: d.Message, trace: d.trace, conflate: d.conflate, delta: delta, whole: d}
	if len(dd.JSON().Bytes) >= len(d.JSON().Bytes) {
		return d // escaping made it larger
	}
	return dd
}

// Delta reports whether the delivery is a delta push.
func (d *Delivery) Delta() bool { return d.whole != nil }

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
		if d.Presence != nil {
			b := protocol.PresencePush(d.Presence.Op, d.Presence.Channel, d.Presence.Client)
			d.json = &wire.Payload{Bytes: b, Push: true}
			return
		}
		p := d.messagePayload()
		if d.whole != nil {
			p.Bytes = protocol.MessageDeltaPush(d.Message, d.delta)
			p.Whole = d.whole.JSON()
		} else {
			p.Bytes = protocol.MessagePush(d.Message)
		}
		d.json = p
	})
	return d.json
}

// messagePayload returns a payload for d's message without its bytes.
func (d *Delivery) messagePayload() *wire.Payload {
	return &wire.Payload{
		Push:     true,
		Channel:  d.Message.Channel,
		Offset:   d.Message.Offset,
		Key:      d.Message.Key,
		Conflate: d.conflate,
		Accepted: d.accepted(),
		Trace:    d.trace,
	}
}

// Raw returns the delivery as raw mode sends it, or nil for a join or leave
// (raw mode carries messages only).
func (d *Delivery) Raw() *wire.Payload {
	if d.Presence != nil {
		return nil
	}
	d.rawOnce.Do(func() {
		p := d.messagePayload()
		p.Bytes, p.Binary = protocol.RawPayload(d.Message)
		d.raw = p
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
		p := d.messagePayload()
		p.Bytes = protocol.SSEEvent(d.Message)
		d.sse = p
	})
	return d.sse
}
