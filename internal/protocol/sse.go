package protocol

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/heraldhq/herald/broker"
)

// MaxSSEChannels is how many channels one SSE stream, and so one cursor,
// may name.
const MaxSSEChannels = 32

// SSE event names herald sends besides the messages' own.
const (
	// SSEEventMessage names a message published without an event name.
	SSEEventMessage = "message"
	// SSEEventBinary names a message published as a binary frame (raw
	// mode); its data is the bytes in standard base64.
	SSEEventBinary = "herald.binary"
	// SSEEventUnrecovered tells a resuming stream that history no longer
	// reaches back to its cursor on one channel; data is {"channel":"…"}.
	SSEEventUnrecovered = "herald.unrecovered"
)

// sseCursorVersion prefixes every cursor, so that the format can change.
const sseCursorVersion = "1"

// SSEPosition is one channel's place in an SSE stream: the offset of the
// last message of the channel the stream sent (or where it started).
type SSEPosition struct {
	Channel string
	Offset  broker.Offset
}

// SSECursor is an SSE stream's `id:`: the position of every channel of the
// stream, in the stream's order, each channel once.
//
// Its wire form is "1" followed by the unpadded base64url of, per channel:
// uvarint length and bytes of the name, uvarint sequence, uvarint length and
// bytes of the epoch. It uses only A–Z a–z 0–9 - _, so it is safe in a
// header and a URL query.
type SSECursor []SSEPosition

// String returns the cursor's wire form.
func (c SSECursor) String() string { return string(c.AppendTo(nil)) }

// AppendTo appends the cursor's wire form to dst: a stream writes one per
// message, so it does so without building a string.
func (c SSECursor) AppendTo(dst []byte) []byte {
	var b []byte
	for _, p := range c {
		b = binary.AppendUvarint(b, uint64(len(p.Channel)))
		b = append(b, p.Channel...)
		b = binary.AppendUvarint(b, p.Offset.Seq)
		b = binary.AppendUvarint(b, uint64(len(p.Offset.Epoch)))
		b = append(b, p.Offset.Epoch...)
	}
	dst = append(dst, sseCursorVersion...)
	return base64.RawURLEncoding.AppendEncode(dst, b)
}

// ParseSSECursor parses the wire form made by SSECursor.String. It refuses
// an unknown version, a bad channel name, a channel named twice, an offset
// that ParseOffset would refuse, and more than MaxSSEChannels channels.
func ParseSSECursor(s string) (SSECursor, error) {
	body, ok := strings.CutPrefix(s, sseCursorVersion)
	if !ok {
		return nil, errors.New("cursor: unknown version")
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(body)
	if err != nil {
		return nil, errors.New("cursor: not base64url")
	}
	var c SSECursor
	for len(b) > 0 {
		if len(c) == MaxSSEChannels {
			return nil, fmt.Errorf("cursor: more than %d channels", MaxSSEChannels)
		}
		var p SSEPosition
		var name, epoch []byte
		if name, b, err = readBytes(b, 255); err != nil {
			return nil, fmt.Errorf("cursor: channel: %w", err)
		}
		p.Channel = string(name)
		if !ValidChannel(p.Channel) {
			return nil, errors.New("cursor: bad channel name")
		}
		seq, n := binary.Uvarint(b)
		if n <= 0 {
			return nil, errors.New("cursor: bad sequence")
		}
		b = b[n:]
		if epoch, b, err = readBytes(b, 64); err != nil {
			return nil, fmt.Errorf("cursor: epoch: %w", err)
		}
		p.Offset = broker.Offset{Seq: seq, Epoch: string(epoch)}
		if p.Offset.Epoch == "" && seq != 0 {
			return nil, errors.New("cursor: offset without epoch")
		}
		for _, q := range c {
			if q.Channel == p.Channel {
				return nil, errors.New("cursor: channel named twice")
			}
		}
		c = append(c, p)
	}
	return c, nil
}

// readBytes reads a uvarint length, at most max, and that many bytes.
func readBytes(b []byte, max int) (field, rest []byte, err error) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(max) || n > uint64(len(b)-k) {
		return nil, nil, errors.New("bad length")
	}
	b = b[k:]
	return b[:n], b[n:], nil
}

// SSEEvent encodes m as an SSE event without its `id:` line, which is the
// stream's own (SSECursor): an `event:` line, `data:` lines and the blank
// line that ends the event.
//
// The event is m.Event, or "message" without one; line breaks in it become
// spaces. The data is the message's data itself when it is a JSON string,
// one `data:` line per line of it (\r\n, \r and \n all break lines), and
// its compact JSON otherwise. A binary message is the event
// "herald.binary" with the bytes in standard base64.
func SSEEvent(m broker.Message) []byte {
	event, data := m.Event, []byte(m.Data)
	switch {
	case m.Binary:
		event = SSEEventBinary
		data = []byte(base64.StdEncoding.EncodeToString(m.Data))
	case len(data) > 0 && data[0] == '"':
		var s string
		if json.Unmarshal(data, &s) == nil {
			data = []byte(s)
		}
	case bytes.ContainsAny(data, "\r\n"):
		var buf bytes.Buffer
		if json.Compact(&buf, data) == nil {
			data = buf.Bytes()
		}
	}
	if event == "" {
		event = SSEEventMessage
	}
	if strings.ContainsAny(event, "\r\n") {
		event = strings.NewReplacer("\r", " ", "\n", " ").Replace(event)
	}
	b := make([]byte, 0, len(data)+len(event)+24)
	b = append(b, "event: "...)
	b = append(b, event...)
	b = append(b, '\n')
	b = appendSSEData(b, data)
	return append(b, '\n')
}

// appendSSEData appends data as `data:` lines, one per line of it.
func appendSSEData(b, data []byte) []byte {
	for {
		i := bytes.IndexAny(data, "\r\n")
		b = append(b, "data: "...)
		if i < 0 {
			b = append(b, data...)
			return append(b, '\n')
		}
		b = append(b, data[:i]...)
		b = append(b, '\n')
		if data[i] == '\r' && i+1 < len(data) && data[i+1] == '\n' {
			i++
		}
		data = data[i+1:]
	}
}

// SSEUnrecovered encodes the "herald.unrecovered" event for channel: sent
// to a resuming stream, before the channel's replayed messages, when history
// no longer reaches back to the stream's cursor on that channel. It has no
// `id:`, so it leaves the client's last event id as it is.
func SSEUnrecovered(channel string) []byte {
	b := []byte("event: " + SSEEventUnrecovered + "\ndata: ")
	b = append(b, mustMarshal(struct {
		Channel string `json:"channel"`
	}{channel})...)
	return append(b, "\n\n"...)
}

// SSEOpening is a stream's first block: the `retry:` line (how many
// milliseconds an EventSource waits before it reconnects) and, when the
// stream has channels, an `id:` line with its starting cursor. With no
// `data:` the block dispatches no event, but it sets EventSource's
// lastEventId, so a stream that breaks before its first message resumes
// from where it started rather than from whatever is latest then.
func SSEOpening(ms int64, start SSECursor) []byte {
	b := []byte("retry: " + strconv.FormatInt(ms, 10) + "\n")
	if len(start) > 0 {
		b = append(b, "id: "...)
		b = append(b, start.String()...)
		b = append(b, '\n')
	}
	return append(b, '\n')
}

// SSEHeartbeat is the comment line an idle stream gets now and then.
const SSEHeartbeat = ": ping\n\n"
