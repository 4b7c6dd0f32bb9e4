package hub

import (
	"sync"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/internal/protocol"
)

// Payload is one frame's content, encoded once and shared by every
// subscriber that speaks the same wire format. It is immutable once built.
type Payload struct {
	Bytes  []byte
	Binary bool
	// Push is true for what a Delivery encodes — a message, a join or a
	// leave pushed to the client — and false for a reply to one client.
	// A push is encoded once and may go to many connections (live fan-out)
	// or to one (history catch-up): a transport may prepare its frame once
	// (Prepared), and the session counts pushes as messages out.
	Push bool
	// Channel and Offset name the message an SSE payload carries (SSE);
	// the SSE transport writes the stream's cursor from them. They are
	// empty for other payloads.
	Channel string
	Offset  broker.Offset
	// Accepted is when the broker accepted the message a live payload
	// carries (zero for replies, joins and leaves): the delivery latency
	// metric runs from it to the write.
	Accepted time.Time

	once     sync.Once
	prepared any
}

// NewPayload returns a payload for one connection only.
func NewPayload(b []byte) *Payload { return &Payload{Bytes: b} }

// Prepared returns the transport's frame for p, building it with build on
// the first call only. Every caller must pass an equivalent build.
func (p *Payload) Prepared(build func(*Payload) any) any {
	p.once.Do(func() { p.prepared = build(p) })
	return p.prepared
}

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

	jsonOnce, rawOnce, sseOnce sync.Once
	json, raw, sse             *Payload
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
func (d *Delivery) JSON() *Payload {
	d.jsonOnce.Do(func() {
		var b []byte
		if d.Presence != nil {
			b = protocol.PresencePush(d.Presence.Op, d.Presence.Channel, d.Presence.Client)
		} else {
			b = protocol.MessagePush(d.Message)
		}
		d.json = &Payload{Bytes: b, Push: true, Accepted: d.accepted()}
	})
	return d.json
}

// Raw returns the delivery as raw mode sends it, or nil for a join or leave
// (raw mode carries messages only).
func (d *Delivery) Raw() *Payload {
	if d.Presence != nil {
		return nil
	}
	d.rawOnce.Do(func() {
		b, bin := protocol.RawPayload(d.Message)
		d.raw = &Payload{Bytes: b, Binary: bin, Push: true, Accepted: d.accepted()}
	})
	return d.raw
}

// SSE returns the delivery as an SSE event without its `id:` line (the
// stream's cursor, written per stream by the transport), or nil for a join
// or leave (SSE streams carry messages only).
func (d *Delivery) SSE() *Payload {
	if d.Presence != nil {
		return nil
	}
	d.sseOnce.Do(func() {
		d.sse = &Payload{
			Bytes:    protocol.SSEEvent(d.Message),
			Push:     true,
			Channel:  d.Message.Channel,
			Offset:   d.Message.Offset,
			Accepted: d.accepted(),
		}
	})
	return d.sse
}
