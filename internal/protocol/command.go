// Package protocol is herald's wire format: the JSON commands, replies and
// pushes of /ws, the raw-mode payloads, channel names and error codes. It is
// pure: no I/O, no state, safe for concurrent use.
package protocol

import (
	"bytes"
	"encoding/json"
	"strconv"

	"github.com/heraldhq/herald/broker"
)

// Op names a client command.
type Op string

// The contract's commands.
const (
	OpSubscribe   Op = "subscribe"
	OpUnsubscribe Op = "unsubscribe"
	OpPublish     Op = "publish"
	OpHistory     Op = "history"
	OpPresence    Op = "presence"
	OpPing        Op = "ping"
	// OpRefresh replaces the connection's token before it expires (herald's
	// addition to the contract).
	OpRefresh Op = "refresh"
	// OpRPC asks the application (the RPC hook, or the rpc proxy) and
	// replies with its answer.
	OpRPC Op = "rpc"
	// OpAck acknowledges a channel's messages up to an offset, in a
	// namespace with receipts (v1.1).
	OpAck Op = "ack"
)

// DeltaFossil is the one delta encoding a subscription may ask for.
const DeltaFossil = "fossil"

// Command is one decoded client command. Fields an op does not use are zero.
type Command struct {
	ID      uint64
	Op      Op
	Channel string
	// Since is the offset to resume after; HasSince tells "since": "" (from
	// the start of history) apart from no since at all.
	Since    string
	HasSince bool
	Data     json.RawMessage // compact JSON
	Event    string
	// Limit is the history limit; -1 when not given.
	Limit int
	// Token is the new token of a refresh.
	Token string
	// Traceparent is the W3C trace context a publish continues (optional:
	// herald records its spans under the publisher's trace).
	Traceparent string
	// Method is what an rpc asks the application; its Data is the rpc's
	// data (null when it has none).
	Method string
	// Tags and Key are a publish's tags and conflation key (v1.1); nil
	// and "" when not given. Their limits are checked by whoever
	// publishes (hub.Publish), as for the server API.
	Tags map[string]string
	Key  string
	// Filter is a subscribe's or history's tag filter, as sent (nil when
	// not given); it is parsed by whoever applies it.
	Filter json.RawMessage
	// Delta is a subscribe's delta encoding: "" or DeltaFossil.
	Delta string
	// Offset is what an ack acknowledges.
	Offset broker.Offset
}

// wireCommand is the JSON shape of a command.
type wireCommand struct {
	ID      json.RawMessage `json:"id"`
	Op      string          `json:"op"`
	Channel *string         `json:"channel"`
	Since   *string         `json:"since"`
	Data    json.RawMessage `json:"data"`
	Event   *string         `json:"event"`
	Limit   *int            `json:"limit"`
	Token   *string         `json:"token"`
	// Traceparent is optional, on publish only.
	Traceparent *string `json:"traceparent"`
	// Method is on rpc only.
	Method *string `json:"method"`
	// Delivery options (v1.1).
	Tags   json.RawMessage `json:"tags"`
	Key    *string         `json:"key"`
	Filter json.RawMessage `json:"filter"`
	Delta  *string         `json:"delta"`
	Offset *string         `json:"offset"`
}

// DecodeCommand decodes and checks one command. On error it returns the
// command's id when one could be read (0 otherwise) and a bad_request
// *Error naming the problem.
func DecodeCommand(b []byte) (Command, *Error) {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || b[0] != '{' {
		return Command{}, Errorf(CodeBadRequest, "a command is a JSON object")
	}
	var w wireCommand
	if err := json.Unmarshal(b, &w); err != nil {
		// A field of the wrong type leaves the rest decoded: answer with
		// the command's id when it is readable, so the client is not left
		// waiting for a reply.
		var c Command
		if _, ok := err.(*json.UnmarshalTypeError); ok {
			c.ID, _ = parseID(w.ID)
		}
		return c, BadJSON(err)
	}
	var c Command
	if w.ID == nil {
		return c, Errorf(CodeBadRequest, "id is required")
	}
	id, ok := parseID(w.ID)
	if !ok {
		return c, Errorf(CodeBadRequest, "id must be a positive integer")
	}
	c.ID = id
	c.Op = Op(w.Op)
	c.Limit = -1
	switch c.Op {
	case OpPing:
		return c, nil
	case OpRefresh:
		if w.Token == nil || *w.Token == "" {
			return c, Errorf(CodeBadRequest, "token is required")
		}
		c.Token = *w.Token
		return c, nil
	case OpRPC:
		return decodeRPC(c, w)
	case OpSubscribe, OpUnsubscribe, OpPublish, OpHistory, OpPresence, OpAck:
	case "":
		return c, Errorf(CodeBadRequest, "op is required")
	default:
		return c, Errorf(CodeBadRequest, "unknown op "+strconv.Quote(w.Op))
	}
	if w.Method != nil {
		return c, Errorf(CodeBadRequest, "method is only for rpc")
	}
	if w.Channel == nil {
		return c, Errorf(CodeBadRequest, "channel is required")
	}
	if !ValidChannel(*w.Channel) {
		return c, BadChannel()
	}
	c.Channel = *w.Channel
	if w.Since != nil {
		if c.Op != OpSubscribe && c.Op != OpHistory {
			return c, Errorf(CodeBadRequest, "since is only for subscribe and history")
		}
		c.Since, c.HasSince = *w.Since, true
	}
	if w.Limit != nil {
		if c.Op != OpHistory || *w.Limit < 0 {
			return c, Errorf(CodeBadRequest, "limit must be a non-negative integer, on history")
		}
		c.Limit = *w.Limit
	}
	if w.Event != nil {
		if c.Op != OpPublish {
			return c, Errorf(CodeBadRequest, "event is only for publish")
		}
		c.Event = *w.Event
	}
	if w.Traceparent != nil {
		if c.Op != OpPublish {
			return c, Errorf(CodeBadRequest, "traceparent is only for publish")
		}
		c.Traceparent = *w.Traceparent
	}
	if perr := decodeOptions(&c, w); perr != nil {
		return c, perr
	}
	if c.Op == OpPublish {
		if w.Data == nil {
			return c, Errorf(CodeBadRequest, "data is required")
		}
		var buf bytes.Buffer
		if err := json.Compact(&buf, w.Data); err != nil {
			return c, Errorf(CodeBadRequest, "malformed data")
		}
		c.Data = buf.Bytes()
	}
	return c, nil
}

// decodeOptions reads the delivery options (v1.1) of a command: each is
// refused on an op it is not for.
func decodeOptions(c *Command, w wireCommand) *Error {
	if w.Tags != nil {
		if c.Op != OpPublish {
			return Errorf(CodeBadRequest, "tags are only for publish")
		}
		if err := json.Unmarshal(w.Tags, &c.Tags); err != nil {
			return Errorf(CodeBadRequest, "tags must be an object of strings")
		}
	}
	if w.Key != nil {
		if c.Op != OpPublish {
			return Errorf(CodeBadRequest, "key is only for publish")
		}
		c.Key = *w.Key
	}
	if w.Filter != nil {
		if c.Op != OpSubscribe && c.Op != OpHistory {
			return Errorf(CodeBadRequest, "filter is only for subscribe and history")
		}
		c.Filter = w.Filter
	}
	if w.Delta != nil {
		switch {
		case c.Op != OpSubscribe:
			return Errorf(CodeBadRequest, "delta is only for subscribe")
		case *w.Delta != DeltaFossil:
			return Errorf(CodeBadRequest, `delta must be "fossil"`)
		case c.Filter != nil:
			return Errorf(CodeBadRequest, "delta and filter cannot be used together")
		}
		c.Delta = *w.Delta
	}
	if c.Op == OpAck {
		if w.Offset == nil || *w.Offset == "" {
			return Errorf(CodeBadRequest, "offset is required")
		}
		off, err := broker.ParseOffset(*w.Offset)
		if err != nil {
			return Errorf(CodeBadRequest, "bad offset: "+err.Error())
		}
		c.Offset = off
	} else if w.Offset != nil {
		return Errorf(CodeBadRequest, "offset is only for ack")
	}
	return nil
}

// parseID parses a command id: a positive integer that fits a uint64.
func parseID(raw json.RawMessage) (uint64, bool) {
	id, err := strconv.ParseUint(string(raw), 10, 64)
	return id, err == nil && id != 0
}

// SplitLines calls fn for each non-blank line of a herald.v1.jsonl frame.
func SplitLines(frame []byte, fn func(line []byte)) {
	for len(frame) > 0 {
		line, rest, _ := bytes.Cut(frame, []byte{'\n'})
		frame = rest
		if len(bytes.TrimSpace(line)) > 0 {
			fn(line)
		}
	}
}
