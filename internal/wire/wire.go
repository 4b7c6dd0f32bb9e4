// Package wire holds what goes out to a client, on its way down the flow
// transport ← session ← hub: a Payload is one frame's content, encoded
// once (by the hub for pushes, by a session for its replies), queued by
// the session, and written by a transport, which may keep the frame it
// makes of a push with it (Prepared) so that a broadcast is framed — and
// compressed — once for every connection.
package wire

import (
	"sync"
	"time"

	"github.com/heraldhq/herald/broker"
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
