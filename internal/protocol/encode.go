package protocol

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"strconv"

	"github.com/heraldhq/herald/broker"
)

// Subprotocols herald speaks on /ws, first preferred.
const (
	SubprotocolJSON  = "herald.v1"
	SubprotocolJSONL = "herald.v1.jsonl"
)

// WireMessage is a message as the contract shows it: in pushes (with Op),
// history replies and the server API.
type WireMessage struct {
	Op      string          `json:"op,omitempty"`
	Channel string          `json:"channel"`
	Offset  string          `json:"offset"`
	Data    json.RawMessage `json:"data"`
	Event   string          `json:"event,omitempty"`
	User    string          `json:"user,omitempty"`
	Client  string          `json:"client,omitempty"`
	// Binary marks data that was published as a binary frame; Data is then
	// its base64 as a JSON string.
	Binary bool `json:"binary,omitempty"`
	// Tags and Key are the publisher's (v1.1), when it gave them.
	Tags map[string]string `json:"tags,omitempty"`
	Key  string            `json:"key,omitempty"`
}

// ToWire converts a broker message to its contract shape.
func ToWire(m broker.Message) WireMessage {
	w := WireMessage{
		Channel: m.Channel,
		Offset:  m.Offset.String(),
		Data:    m.Data,
		Event:   m.Event,
		User:    m.User,
		Client:  m.Client,
		Tags:    m.Tags,
		Key:     m.Key,
	}
	if m.Binary {
		w.Binary = true
		w.Data = json.RawMessage(strconv.Quote(base64.StdEncoding.EncodeToString(m.Data)))
	}
	return w
}

// MessagePush encodes m as a "message" push. The data, compact and valid
// already, is copied in as it is rather than re-scanned by encoding/json.
func MessagePush(m broker.Message) []byte {
	w := ToWire(m)
	return appendPush(w, w.Data, false)
}

// MessageDeltaPush encodes m as a "message" push whose data is delta, a
// Fossil delta from the channel's previous message's data to m's, as a
// JSON string with "delta":true. delta must be valid UTF-8 (a JSON string
// cannot carry other bytes unchanged).
func MessageDeltaPush(m broker.Message, delta []byte) []byte {
	w := ToWire(m)
	return appendPush(w, appendString(make([]byte, 0, len(delta)+len(delta)/8+2), string(delta)), true)
}

// appendPush encodes w as a "message" push with data as its data.
func appendPush(w WireMessage, data []byte, delta bool) []byte {
	b := make([]byte, 0, len(data)+len(w.Channel)+len(w.Offset)+len(w.Event)+len(w.User)+len(w.Client)+len(w.Key)+96)
	b = append(b, `{"op":"message","channel":`...)
	b = appendString(b, w.Channel)
	b = append(b, `,"offset":`...)
	b = appendString(b, w.Offset)
	b = append(b, `,"data":`...)
	b = append(b, data...)
	for _, f := range [...]struct{ key, val string }{{`,"event":`, w.Event}, {`,"user":`, w.User}, {`,"client":`, w.Client}, {`,"key":`, w.Key}} {
		if f.val != "" {
			b = append(b, f.key...)
			b = appendString(b, f.val)
		}
	}
	if len(w.Tags) > 0 {
		b = append(b, `,"tags":`...)
		b = append(b, mustMarshal(w.Tags)...)
	}
	if w.Binary {
		b = append(b, `,"binary":true`...)
	}
	if delta {
		b = append(b, `,"delta":true`...)
	}
	return append(b, '}')
}

// appendString appends s as a JSON string, escaped as Marshal does. Plain
// ASCII, what channel names, offsets and client ids are, is copied as it
// is.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x80 || c == '"' || c == '\\' {
			return append(b, mustMarshal(s)...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// PresencePush encodes a "join" or "leave" push.
func PresencePush(op, channel string, c broker.ClientInfo) []byte {
	return mustMarshal(struct {
		Op      string `json:"op"`
		Channel string `json:"channel"`
		broker.ClientInfo
	}{op, channel, c})
}

// Welcome encodes the "welcome" push.
func Welcome(client, user string) []byte {
	return mustMarshal(struct {
		Op     string `json:"op"`
		Client string `json:"client"`
		User   string `json:"user"`
	}{"welcome", client, user})
}

// RawUnrecovered is the one frame raw mode sends that is not a message: a
// client that resumed with ?since= gets it first when history no longer
// reaches back that far. Only clients that ask to resume can receive it.
func RawUnrecovered(channel, latest string) []byte {
	return mustMarshal(struct {
		Herald  string `json:"herald"`
		Channel string `json:"channel"`
		Offset  string `json:"offset"`
	}{"unrecovered", channel, latest})
}

// RawPayload is a message as raw mode sends it: the data itself when it is a
// JSON string, its compact JSON otherwise, or the bytes of a binary publish.
func RawPayload(m broker.Message) (payload []byte, binary bool) {
	if m.Binary {
		return m.Data, true
	}
	if len(m.Data) > 0 && m.Data[0] == '"' {
		var s string
		if json.Unmarshal(m.Data, &s) == nil {
			return []byte(s), false
		}
	}
	return m.Data, false
}

// Reply encodes a successful reply to command id; fields are merged into
// the object after "id" and "ok" (nil for none).
func Reply(id uint64, fields any) []byte {
	head := `{"id":` + strconv.FormatUint(id, 10) + `,"ok":true`
	if fields == nil {
		return []byte(head + "}")
	}
	body := mustMarshal(fields)
	if len(body) <= 2 { // "{}"
		return []byte(head + "}")
	}
	return append([]byte(head+","), body[1:]...)
}

// ErrorReply encodes a failed reply to command id (0 when the command had
// no readable id).
func ErrorReply(id uint64, e *Error) []byte {
	return mustMarshal(struct {
		ID    uint64 `json:"id"`
		OK    bool   `json:"ok"`
		Error *Error `json:"error"`
	}{id, false, e})
}

// SubscribeReply is the body of a subscribe reply.
type SubscribeReply struct {
	Offset    string `json:"offset"`
	Recovered bool   `json:"recovered"`
	// Receipts tells the client that the channel's namespace keeps
	// delivery receipts: it acknowledges what it handled (op ack).
	Receipts bool `json:"receipts,omitempty"`
}

// PublishReply is the body of a publish reply.
type PublishReply struct {
	Offset string `json:"offset"`
}

// HistoryReply is the body of a history reply.
type HistoryReply struct {
	Messages []WireMessage `json:"messages"`
}

// PresenceReply is the body of a presence reply.
type PresenceReply struct {
	Clients []broker.ClientInfo `json:"clients"`
}

// Marshal is json.Marshal without HTML escaping: herald's JSON is read by
// programs and people, never pasted into HTML, so a "<" in a message or in
// data stays "<" instead of becoming \u003c (and "&", ">" likewise).
func Marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte{'\n'}), nil
}

// mustMarshal encodes values whose types cannot fail to encode.
func mustMarshal(v any) []byte {
	b, err := Marshal(v)
	if err != nil {
		panic("protocol: encoding a fixed shape failed: " + err.Error())
	}
	return b
}
