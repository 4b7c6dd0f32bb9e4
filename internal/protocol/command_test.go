package protocol

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/heraldhq/herald/broker"
)

func TestDecodeCommand(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		frame string
		want  Command
	}{
		{"ping", `{"id":1,"op":"ping"}`,
			Command{ID: 1, Op: OpPing, Limit: -1}},
		{"surrounding white space", " \t{\"id\":2,\"op\":\"ping\"}\r\n",
			Command{ID: 2, Op: OpPing, Limit: -1}},
		{"largest id", `{"id":18446744073709551615,"op":"ping"}`,
			Command{ID: 18446744073709551615, Op: OpPing, Limit: -1}},
		{"unknown fields are ignored", `{"id":3,"op":"ping","x":{"y":[1]}}`,
			Command{ID: 3, Op: OpPing, Limit: -1}},
		{"subscribe", `{"id":4,"op":"subscribe","channel":"chat:room-1"}`,
			Command{ID: 4, Op: OpSubscribe, Channel: "chat:room-1", Limit: -1}},
		{"subscribe since empty", `{"id":5,"op":"subscribe","channel":"a","since":""}`,
			Command{ID: 5, Op: OpSubscribe, Channel: "a", HasSince: true, Limit: -1}},
		{"subscribe since", `{"id":6,"op":"subscribe","channel":"a","since":"12-abcd"}`,
			Command{ID: 6, Op: OpSubscribe, Channel: "a", Since: "12-abcd", HasSince: true, Limit: -1}},
		{"since null is no since", `{"id":7,"op":"subscribe","channel":"a","since":null}`,
			Command{ID: 7, Op: OpSubscribe, Channel: "a", Limit: -1}},
		{"unsubscribe", `{"id":8,"op":"unsubscribe","channel":"A_z.0:@=,-"}`,
			Command{ID: 8, Op: OpUnsubscribe, Channel: "A_z.0:@=,-", Limit: -1}},
		{"publish compacts data", `{"id":9,"op":"publish","channel":"a","data":{ "x" : [ 1, 2 ] }}`,
			Command{ID: 9, Op: OpPublish, Channel: "a", Data: json.RawMessage(`{"x":[1,2]}`), Limit: -1}},
		{"publish with event", `{"id":10,"op":"publish","channel":"a","data":"hi","event":"greet"}`,
			Command{ID: 10, Op: OpPublish, Channel: "a", Data: json.RawMessage(`"hi"`), Event: "greet", Limit: -1}},
		{"publish null", `{"id":11,"op":"publish","channel":"a","data":null}`,
			Command{ID: 11, Op: OpPublish, Channel: "a", Data: json.RawMessage(`null`), Limit: -1}},
		{"publish with traceparent", `{"id":11,"op":"publish","channel":"a","data":1,"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}`,
			Command{ID: 11, Op: OpPublish, Channel: "a", Data: json.RawMessage(`1`), Limit: -1, Traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}},
		{"refresh", `{"id":12,"op":"refresh","token":"a.b.c"}`,
			Command{ID: 12, Op: OpRefresh, Token: "a.b.c", Limit: -1}},
		{"field order does not matter", `{"data":[true],"channel":"a","op":"publish","id":12}`,
			Command{ID: 12, Op: OpPublish, Channel: "a", Data: json.RawMessage(`[true]`), Limit: -1}},
		{"history", `{"id":13,"op":"history","channel":"a"}`,
			Command{ID: 13, Op: OpHistory, Channel: "a", Limit: -1}},
		{"history limit 0", `{"id":14,"op":"history","channel":"a","limit":0}`,
			Command{ID: 14, Op: OpHistory, Channel: "a", Limit: 0}},
		{"history since and limit", `{"id":15,"op":"history","channel":"a","since":"3-e","limit":10}`,
			Command{ID: 15, Op: OpHistory, Channel: "a", Since: "3-e", HasSince: true, Limit: 10}},
		{"presence", `{"id":16,"op":"presence","channel":"a"}`,
			Command{ID: 16, Op: OpPresence, Channel: "a", Limit: -1}},
		{"rpc", `{"id":18,"op":"rpc","method":"get_user","data":{ "id" : 7 }}`,
			Command{ID: 18, Op: OpRPC, Method: "get_user", Data: json.RawMessage(`{"id":7}`), Limit: -1}},
		{"rpc without data", `{"id":19,"op":"rpc","method":"now"}`,
			Command{ID: 19, Op: OpRPC, Method: "now", Data: json.RawMessage(`null`), Limit: -1}},
		{"rpc with null data", `{"id":20,"op":"rpc","method":"m","data":null}`,
			Command{ID: 20, Op: OpRPC, Method: "m", Data: json.RawMessage(`null`), Limit: -1}},
		{"publish with tags and key", `{"id":21,"op":"publish","channel":"a","data":1,"tags":{"sym":"AAPL","x":""},"key":"AAPL"}`,
			Command{ID: 21, Op: OpPublish, Channel: "a", Data: json.RawMessage(`1`), Limit: -1, Tags: map[string]string{"sym": "AAPL", "x": ""}, Key: "AAPL"}},
		{"subscribe with a filter", `{"id":22,"op":"subscribe","channel":"a","filter":{"tag":"sym","eq":"AAPL"}}`,
			Command{ID: 22, Op: OpSubscribe, Channel: "a", Limit: -1, Filter: json.RawMessage(`{"tag":"sym","eq":"AAPL"}`)}},
		{"subscribe with delta", `{"id":23,"op":"subscribe","channel":"a","delta":"fossil"}`,
			Command{ID: 23, Op: OpSubscribe, Channel: "a", Limit: -1, Delta: DeltaFossil}},
		{"history with a filter", `{"id":24,"op":"history","channel":"a","filter":{"not":{"tag":"k","exists":true}},"limit":2}`,
			Command{ID: 24, Op: OpHistory, Channel: "a", Limit: 2, Filter: json.RawMessage(`{"not":{"tag":"k","exists":true}}`)}},
		{"ack", `{"id":25,"op":"ack","channel":"a","offset":"9-e1"}`,
			Command{ID: 25, Op: OpAck, Channel: "a", Limit: -1, Offset: broker.Offset{Epoch: "e1", Seq: 9}}},
		{"longest channel", `{"id":17,"op":"subscribe","channel":"` + strings.Repeat("x", 255) + `"}`,
			Command{ID: 17, Op: OpSubscribe, Channel: strings.Repeat("x", 255), Limit: -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := DecodeCommand([]byte(tt.frame))
			if err != nil {
				t.Fatalf("DecodeCommand(%s): %v", tt.frame, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("DecodeCommand(%s)\n got %+v\nwant %+v", tt.frame, got, tt.want)
			}
		})
	}
}

func TestDecodeCommandErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		frame  string
		wantID uint64 // the id the error reply must carry
	}{
		{"empty", ``, 0},
		{"blank", " \n ", 0},
		{"array", `[1]`, 0},
		{"string", `"x"`, 0},
		{"number", `42`, 0},
		{"null", `null`, 0},
		{"truncated", `{"id":1,"op":`, 0},
		{"trailing garbage", `{"id":1,"op":"ping"} x`, 0},
		{"two objects", `{"id":1,"op":"ping"}{"id":2,"op":"ping"}`, 0},
		{"missing id", `{"op":"ping"}`, 0},
		{"zero id", `{"id":0,"op":"ping"}`, 0},
		{"negative id", `{"id":-1,"op":"ping"}`, 0},
		{"fractional id", `{"id":1.5,"op":"ping"}`, 0},
		{"exponent id", `{"id":1e3,"op":"ping"}`, 0},
		{"string id", `{"id":"1","op":"ping"}`, 0},
		{"null id", `{"id":null,"op":"ping"}`, 0},
		{"id too large", `{"id":18446744073709551616,"op":"ping"}`, 0},
		{"missing op", `{"id":3}`, 3},
		{"unknown op", `{"id":4,"op":"dance"}`, 4},
		{"op is case sensitive", `{"id":5,"op":"PING"}`, 5},
		{"op not a string", `{"id":6,"op":7}`, 6},
		{"missing channel", `{"id":7,"op":"subscribe"}`, 7},
		{"null channel", `{"id":8,"op":"subscribe","channel":null}`, 8},
		{"empty channel", `{"id":9,"op":"subscribe","channel":""}`, 9},
		{"channel of 256 bytes", `{"id":10,"op":"subscribe","channel":"` + strings.Repeat("x", 256) + `"}`, 10},
		{"channel with a space", `{"id":11,"op":"publish","channel":"a b","data":1}`, 11},
		{"channel with a slash", `{"id":12,"op":"history","channel":"a/b"}`, 12},
		{"channel with unicode", `{"id":13,"op":"presence","channel":"café"}`, 13},
		{"channel with a NUL", `{"id":14,"op":"unsubscribe","channel":"a\u0000"}`, 14},
		{"channel not a string", `{"id":15,"op":"subscribe","channel":5}`, 15},
		{"since on publish", `{"id":16,"op":"publish","channel":"a","data":1,"since":"1-e"}`, 16},
		{"since not a string", `{"id":17,"op":"subscribe","channel":"a","since":5}`, 17},
		{"negative limit", `{"id":18,"op":"history","channel":"a","limit":-1}`, 18},
		{"fractional limit", `{"id":19,"op":"history","channel":"a","limit":1.5}`, 19},
		{"string limit", `{"id":20,"op":"history","channel":"a","limit":"3"}`, 20},
		{"limit on subscribe", `{"id":21,"op":"subscribe","channel":"a","limit":3}`, 21},
		{"event on subscribe", `{"id":22,"op":"subscribe","channel":"a","event":"x"}`, 22},
		{"event not a string", `{"id":23,"op":"publish","channel":"a","data":1,"event":1}`, 23},
		{"traceparent on subscribe", `{"id":23,"op":"subscribe","channel":"a","traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}`, 23},
		{"traceparent not a string", `{"id":23,"op":"publish","channel":"a","data":1,"traceparent":1}`, 23},
		{"publish without data", `{"id":24,"op":"publish","channel":"a"}`, 24},
		{"wrong type before the id", `{"channel":["a"],"op":"subscribe","id":25}`, 25},
		{"wrong type and a bad id", `{"id":"26","op":"subscribe","channel":5}`, 0},
		{"refresh without token", `{"id":27,"op":"refresh"}`, 27},
		{"refresh with empty token", `{"id":28,"op":"refresh","token":""}`, 28},
		{"refresh token not a string", `{"id":29,"op":"refresh","token":7}`, 29},
		{"rpc without method", `{"id":30,"op":"rpc"}`, 30},
		{"rpc with empty method", `{"id":31,"op":"rpc","method":""}`, 31},
		{"rpc method not a string", `{"id":32,"op":"rpc","method":7}`, 32},
		{"rpc with a channel", `{"id":33,"op":"rpc","method":"m","channel":"a"}`, 33},
		{"rpc with an event", `{"id":34,"op":"rpc","method":"m","event":"e"}`, 34},
		{"rpc with since", `{"id":35,"op":"rpc","method":"m","since":""}`, 35},
		{"method on publish", `{"id":36,"op":"publish","channel":"a","data":1,"method":"m"}`, 36},
		{"tags on subscribe", `{"id":37,"op":"subscribe","channel":"a","tags":{"a":"b"}}`, 37},
		{"tags not strings", `{"id":38,"op":"publish","channel":"a","data":1,"tags":{"a":1}}`, 38},
		{"tags an array", `{"id":39,"op":"publish","channel":"a","data":1,"tags":["a"]}`, 39},
		{"key on history", `{"id":40,"op":"history","channel":"a","key":"k"}`, 40},
		{"key not a string", `{"id":41,"op":"publish","channel":"a","data":1,"key":5}`, 41},
		{"filter on publish", `{"id":42,"op":"publish","channel":"a","data":1,"filter":{"tag":"a","eq":"b"}}`, 42},
		{"delta on history", `{"id":43,"op":"history","channel":"a","delta":"fossil"}`, 43},
		{"unknown delta", `{"id":44,"op":"subscribe","channel":"a","delta":"xdelta"}`, 44},
		{"delta with a filter", `{"id":45,"op":"subscribe","channel":"a","delta":"fossil","filter":{"tag":"a","eq":"b"}}`, 45},
		{"ack without offset", `{"id":46,"op":"ack","channel":"a"}`, 46},
		{"ack with an empty offset", `{"id":47,"op":"ack","channel":"a","offset":""}`, 47},
		{"ack with a bad offset", `{"id":48,"op":"ack","channel":"a","offset":"x"}`, 48},
		{"ack without channel", `{"id":49,"op":"ack","offset":"1-e"}`, 49},
		{"offset on subscribe", `{"id":50,"op":"subscribe","channel":"a","offset":"1-e"}`, 50},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := DecodeCommand([]byte(tt.frame))
			if err == nil {
				t.Fatalf("DecodeCommand(%s) = %+v, want an error", tt.frame, got)
			}
			if err.Code != CodeBadRequest {
				t.Errorf("DecodeCommand(%s): code %q, want %q", tt.frame, err.Code, CodeBadRequest)
			}
			if err.Message == "" {
				t.Errorf("DecodeCommand(%s): empty error message", tt.frame)
			}
			if got.ID != tt.wantID {
				t.Errorf("DecodeCommand(%s): id %d, want %d (%v)", tt.frame, got.ID, tt.wantID, err)
			}
		})
	}
}

// A field of the wrong type says which field and what it should be.
func TestDecodeCommandTypeErrors(t *testing.T) {
	t.Parallel()
	tests := []struct{ frame, want string }{
		{`{"id":1,"op":7}`, `field "op": want a string, got number`},
		{`{"id":2,"op":"subscribe","channel":5}`, `field "channel": want a string, got number`},
		{`{"channel":["a"],"op":"subscribe","id":3}`, `field "channel": want a string, got array`},
		{`{"id":4,"op":"subscribe","channel":{"a":1}}`, `field "channel": want a string, got object`},
		{`{"id":5,"op":"subscribe","channel":"a","since":true}`, `field "since": want a string, got boolean`},
		{`{"id":6,"op":"history","channel":"a","limit":"3"}`, `field "limit": want an integer, got string`},
		{`{"id":7,"op":"history","channel":"a","limit":1.5}`, `field "limit": want an integer, got number 1.5`},
		{`{"id":8,"op":"history","channel":"a","limit":1e99}`, `field "limit": want an integer, got number 1e99`},
		{`{"id":9,"op":"history","channel":"a","limit":1` + strings.Repeat("0", 100) + `}`, `field "limit": want an integer, got number`},
		{`{"id":10,"op":"publish","channel":"a","data":1,"event":1}`, `field "event": want a string, got number`},
		{`{"id":11,"op":"refresh","token":7}`, `field "token": want a string, got number`},
	}
	for _, tt := range tests {
		_, err := DecodeCommand([]byte(tt.frame))
		if err == nil || err.Code != CodeBadRequest || err.Message != tt.want {
			t.Errorf("DecodeCommand(%.60s) = %v, want bad_request: %s", tt.frame, err, tt.want)
		}
	}
}

func TestSplitLines(t *testing.T) {
	t.Parallel()
	tests := []struct {
		frame string
		want  []string
	}{
		{"", nil},
		{"\n\n  \n", nil},
		{`{"id":1}`, []string{`{"id":1}`}},
		{"{\"id\":1}\n{\"id\":2}\n", []string{`{"id":1}`, `{"id":2}`}},
		{"a\n\n \t\nb\r\n", []string{"a", "b\r"}},
	}
	for _, tt := range tests {
		var got []string
		SplitLines([]byte(tt.frame), func(line []byte) { got = append(got, string(line)) })
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("SplitLines(%q) = %q, want %q", tt.frame, got, tt.want)
		}
	}
}
