package protocol

import (
	"encoding/json"
	"testing"
)

func TestSubscribedPushAndRPCReply(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		got  []byte
		want string
	}{
		{SubscribedPush("news", "7-ab", true), `{"op":"subscribed","channel":"news","offset":"7-ab","recovered":true}`},
		{SubscribedPush("chat:1", "", false), `{"op":"subscribed","channel":"chat:1","offset":"","recovered":false}`},
		{Reply(5, RPCReply{Data: json.RawMessage(`{"a":1}`)}), `{"id":5,"ok":true,"data":{"a":1}}`},
		{Reply(6, RPCReply{Data: json.RawMessage(`null`)}), `{"id":6,"ok":true,"data":null}`},
	} {
		if string(tt.got) != tt.want {
			t.Errorf("\n got %s\nwant %s", tt.got, tt.want)
		}
	}
}
