package protocol

import (
	"bytes"
	"encoding/json"
)

// decodeRPC checks the fields of an rpc command: a method, and data (null
// when it is left out); nothing else.
func decodeRPC(c Command, w wireCommand) (Command, *Error) {
	if w.Channel != nil || w.Since != nil || w.Limit != nil || w.Event != nil || w.Traceparent != nil || w.Token != nil {
		return c, Errorf(CodeBadRequest, "rpc takes method and data only")
	}
	if w.Method == nil || *w.Method == "" {
		return c, Errorf(CodeBadRequest, "method is required")
	}
	c.Method = *w.Method
	c.Data = json.RawMessage("null")
	if w.Data != nil {
		var buf bytes.Buffer
		if err := json.Compact(&buf, w.Data); err != nil {
			return c, Errorf(CodeBadRequest, "malformed data")
		}
		c.Data = buf.Bytes()
	}
	return c, nil
}

// RPCReply is the body of an rpc reply: the application's answer.
type RPCReply struct {
	Data json.RawMessage `json:"data"`
}

// SubscribedPush encodes the "subscribed" push: the server subscribed the
// connection to channel (a server-side subscription), starting after
// offset; recovered is false when a resume found history no longer
// reaching back to the offset the client passed.
func SubscribedPush(channel, offset string, recovered bool) []byte {
	return mustMarshal(struct {
		Op        string `json:"op"`
		Channel   string `json:"channel"`
		Offset    string `json:"offset"`
		Recovered bool   `json:"recovered"`
	}{"subscribed", channel, offset, recovered})
}

// UnsubscribedPush encodes the "unsubscribed" push: the server ended the
// connection's subscription to channel.
func UnsubscribedPush(channel string) []byte {
	return mustMarshal(struct {
		Op      string `json:"op"`
		Channel string `json:"channel"`
	}{"unsubscribed", channel})
}
