package protocol

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/heraldhq/herald/broker"
)

func TestEncoders(t *testing.T) {
	t.Parallel()
	off := broker.Offset{Epoch: "ab12", Seq: 7}
	tests := []struct {
		name string
		got  []byte
		want string
	}{
		{"reply without fields", Reply(7, nil),
			`{"id":7,"ok":true}`},
		{"reply with empty fields", Reply(7, struct{}{}),
			`{"id":7,"ok":true}`},
		{"subscribe reply on an empty channel", Reply(1, SubscribeReply{Offset: "", Recovered: true}),
			`{"id":1,"ok":true,"offset":"","recovered":true}`},
		{"subscribe reply", Reply(2, SubscribeReply{Offset: off.String(), Recovered: false}),
			`{"id":2,"ok":true,"offset":"7-ab12","recovered":false}`},
		{"publish reply", Reply(3, PublishReply{Offset: "1-e"}),
			`{"id":3,"ok":true,"offset":"1-e"}`},
		{"empty history reply", Reply(4, HistoryReply{Messages: []WireMessage{}}),
			`{"id":4,"ok":true,"messages":[]}`},
		{"history reply", Reply(5, HistoryReply{Messages: []WireMessage{ToWire(broker.Message{Channel: "c", Offset: off, Data: json.RawMessage(`1`)})}}),
			`{"id":5,"ok":true,"messages":[{"channel":"c","offset":"7-ab12","data":1}]}`},
		{"presence reply", Reply(6, PresenceReply{Clients: []broker.ClientInfo{{Client: "c1", User: ""}, {Client: "c2", User: "bob"}}}),
			`{"id":6,"ok":true,"clients":[{"client":"c1","user":""},{"client":"c2","user":"bob"}]}`},
		{"subscribe reply with receipts", Reply(2, SubscribeReply{Offset: off.String(), Recovered: true, Receipts: true}),
			`{"id":2,"ok":true,"offset":"7-ab12","recovered":true,"receipts":true}`},
		{"message push with tags and key", MessagePush(broker.Message{Channel: "c", Offset: off, Data: json.RawMessage(`{"p":1}`), Key: "AAPL", Tags: map[string]string{"sym": "AAPL", "ex": "<N>"}}),
			`{"op":"message","channel":"c","offset":"7-ab12","data":{"p":1},"key":"AAPL","tags":{"ex":"<N>","sym":"AAPL"}}`},
		{"delta push", MessageDeltaPush(broker.Message{Channel: "c", Offset: off, Data: json.RawMessage(`{"p":2}`), User: "u"}, []byte("7\n5@0,2:2}\"q\n1;")),
			`{"op":"message","channel":"c","offset":"7-ab12","data":"7\n5@0,2:2}\"q\n1;","user":"u","delta":true}`},
		{"history entry with tags", Reply(5, HistoryReply{Messages: []WireMessage{ToWire(broker.Message{Channel: "c", Offset: off, Data: json.RawMessage(`1`), Tags: map[string]string{"a": "b"}, Key: "k"})}}),
			`{"id":5,"ok":true,"messages":[{"channel":"c","offset":"7-ab12","data":1,"tags":{"a":"b"},"key":"k"}]}`},
		{"largest id", Reply(18446744073709551615, nil),
			`{"id":18446744073709551615,"ok":true}`},
		{"error reply", ErrorReply(9, Errorf(CodeForbidden, "no")),
			`{"id":9,"ok":false,"error":{"code":"forbidden","message":"no"}}`},
		{"error reply without id", ErrorReply(0, Errorf(CodeBadRequest, "not \"json\"")),
			`{"id":0,"ok":false,"error":{"code":"bad_request","message":"not \"json\""}}`},
		{"message push, all fields", MessagePush(broker.Message{Channel: "chat:1", Offset: off, Data: json.RawMessage(`{"a":[1,"x"]}`), Event: "ev", User: "u", Client: "c"}),
			`{"op":"message","channel":"chat:1","offset":"7-ab12","data":{"a":[1,"x"]},"event":"ev","user":"u","client":"c"}`},
		{"message push leaves out what the publisher did not give", MessagePush(broker.Message{Channel: "c", Offset: off, Data: json.RawMessage(`"s"`)}),
			`{"op":"message","channel":"c","offset":"7-ab12","data":"s"}`},
		{"message push of null", MessagePush(broker.Message{Channel: "c", Offset: off, Data: json.RawMessage(`null`)}),
			`{"op":"message","channel":"c","offset":"7-ab12","data":null}`},
		{"message push of binary data", MessagePush(broker.Message{Channel: "c", Offset: off, Data: []byte{0, 1, 0xff}, Binary: true}),
			`{"op":"message","channel":"c","offset":"7-ab12","data":"AAH/","binary":true}`},
		{"join", PresencePush("join", "room:1", broker.ClientInfo{Client: "c1", User: ""}),
			`{"op":"join","channel":"room:1","client":"c1","user":""}`},
		{"leave", PresencePush("leave", "room:1", broker.ClientInfo{Client: "c1", User: "ann"}),
			`{"op":"leave","channel":"room:1","client":"c1","user":"ann"}`},
		{"join of an SSE stream", PresencePush("join", "room:1", broker.ClientInfo{Client: "c2", User: "", Transport: "sse"}),
			`{"op":"join","channel":"room:1","client":"c2","user":"","transport":"sse"}`},
		{"presence reply with transports", Reply(12, PresenceReply{Clients: []broker.ClientInfo{{Client: "c1", Transport: "ws"}, {Client: "c2", User: "bob", Transport: "sse"}}}),
			`{"id":12,"ok":true,"clients":[{"client":"c1","user":"","transport":"ws"},{"client":"c2","user":"bob","transport":"sse"}]}`},
		{"welcome, anonymous", Welcome("n1-1", ""),
			`{"op":"welcome","client":"n1-1","user":""}`},
		{"welcome", Welcome("n1-2", "ann"),
			`{"op":"welcome","client":"n1-2","user":"ann"}`},
		// Messages are for people, not for HTML: < > & are written as
		// they are, not as \u003c \u003e \u0026.
		{"error reply with < > &", ErrorReply(10, Errorf(CodeUnauthorized, "send Authorization: Bearer <key> & retry")),
			`{"id":10,"ok":false,"error":{"code":"unauthorized","message":"send Authorization: Bearer <key> & retry"}}`},
		{"history reply with < in data and user", Reply(11, HistoryReply{Messages: []WireMessage{ToWire(broker.Message{Channel: "c", Offset: off, Data: json.RawMessage(`"<b>&"`), User: "<u>"})}}),
			`{"id":11,"ok":true,"messages":[{"channel":"c","offset":"7-ab12","data":"<b>&","user":"<u>"}]}`},
		{"message push with < in event and user", MessagePush(broker.Message{Channel: "c", Offset: off, Data: json.RawMessage(`"<i>"`), Event: "<e>", User: "a&b"}),
			`{"op":"message","channel":"c","offset":"7-ab12","data":"<i>","event":"<e>","user":"a&b"}`},
		{"welcome with < in the user", Welcome("n1-3", "<ann>"),
			`{"op":"welcome","client":"n1-3","user":"<ann>"}`},
		{"error body", ErrorBody(Errorf(CodeBadRequest, "a <b> & c")),
			`{"error":{"code":"bad_request","message":"a <b> & c"}}` + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if string(tt.got) != tt.want {
				t.Fatalf("\n got %s\nwant %s", tt.got, tt.want)
			}
			if !json.Valid(tt.got) {
				t.Fatalf("%s is not valid JSON", tt.got)
			}
		})
	}
}

func TestRawPayload(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		m          broker.Message
		want       string
		wantBinary bool
	}{
		{"string is the text itself", broker.Message{Data: json.RawMessage(`"hello"`)}, "hello", false},
		{"escapes are decoded", broker.Message{Data: json.RawMessage(`"a\"b\n\u00e9\t\\"`)}, "a\"b\né\t\\", false},
		{"empty string", broker.Message{Data: json.RawMessage(`""`)}, "", false},
		{"object is its JSON", broker.Message{Data: json.RawMessage(`{"b":[1,2],"a":"x"}`)}, `{"b":[1,2],"a":"x"}`, false},
		{"number", broker.Message{Data: json.RawMessage(`42.5`)}, "42.5", false},
		{"null", broker.Message{Data: json.RawMessage(`null`)}, "null", false},
		{"array of strings", broker.Message{Data: json.RawMessage(`["x"]`)}, `["x"]`, false},
		{"binary", broker.Message{Data: []byte{0, 0xff, '"'}, Binary: true}, "\x00\xff\"", true},
		{"binary that looks like a JSON string", broker.Message{Data: []byte(`"x"`), Binary: true}, `"x"`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, bin := RawPayload(tt.m)
			if string(got) != tt.want || bin != tt.wantBinary {
				t.Fatalf("RawPayload(%s) = %q, %v; want %q, %v", tt.m.Data, got, bin, tt.want, tt.wantBinary)
			}
		})
	}
}

func TestToWire(t *testing.T) {
	t.Parallel()
	m := broker.Message{Channel: "c", Offset: broker.Offset{Epoch: "e", Seq: 3}, Data: json.RawMessage(`[1]`), Event: "ev", User: "u", Client: "cl"}
	got := ToWire(m)
	want := WireMessage{Channel: "c", Offset: "3-e", Data: json.RawMessage(`[1]`), Event: "ev", User: "u", Client: "cl"}
	if string(got.Data) != string(want.Data) || got.Channel != want.Channel || got.Offset != want.Offset ||
		got.Event != want.Event || got.User != want.User || got.Client != want.Client || got.Op != "" || got.Binary {
		t.Fatalf("ToWire = %+v, want %+v", got, want)
	}
}

func TestHTTPStatus(t *testing.T) {
	t.Parallel()
	tests := []struct {
		code Code
		want int
	}{
		{CodeBadRequest, http.StatusBadRequest},
		{CodeUnauthorized, http.StatusUnauthorized},
		{CodeForbidden, http.StatusForbidden},
		{CodeNotFound, http.StatusNotFound},
		{CodeTooLarge, http.StatusRequestEntityTooLarge},
		{CodeRateLimited, http.StatusTooManyRequests},
		{CodeUnavailable, http.StatusServiceUnavailable},
		{CodeInternal, http.StatusInternalServerError},
		{Code("made_up"), http.StatusInternalServerError},
	}
	for _, tt := range tests {
		if got := tt.code.HTTPStatus(); got != tt.want {
			t.Errorf("%q.HTTPStatus() = %d, want %d", tt.code, got, tt.want)
		}
	}
}

func TestErrorString(t *testing.T) {
	t.Parallel()
	if got := Errorf(CodeNotFound, "no such channel").Error(); got != "not_found: no such channel" {
		t.Fatalf("Error() = %q", got)
	}
}

func TestCloseReason(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, in string
	}{
		{"short", "slow consumer"},
		{"exactly the limit", strings.Repeat("a", 123)},
		{"too long", strings.Repeat("a", 300)},
		{"multi-byte runes across the limit", strings.Repeat("é", 100)},
		{"three-byte runes across the limit", "a" + strings.Repeat("€", 60)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := CloseReason(tt.in)
			if len(got) > 123 {
				t.Fatalf("CloseReason: %d bytes, a close frame holds 123", len(got))
			}
			if !utf8.ValidString(got) {
				t.Fatalf("CloseReason(%q) = %q is not valid UTF-8, which RFC 6455 requires of a close reason", tt.in, got)
			}
			if !strings.HasPrefix(tt.in, got) {
				t.Fatalf("CloseReason(%q) = %q is not a prefix", tt.in, got)
			}
			if len(tt.in) <= 123 && got != tt.in {
				t.Fatalf("CloseReason(%q) = %q, want it unchanged", tt.in, got)
			}
			if len(tt.in) > 123 && len(got) < 120 {
				t.Fatalf("CloseReason cut %d bytes to %d, more than a rune needs", len(tt.in), len(got))
			}
		})
	}
}

// appendString writes every string as Marshal does, on its fast path for
// plain ASCII and off it.
func TestAppendString(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"", "chat:lobby", "7-ab12", "a b~", `q"uote`, `back\slash`, "tab\there", "nl\n", "\x00\x1f\x7f",
		"<b>&</b>", "café", "\u2028\u2029", "bad \xff utf-8", "emoji 🙂"} {
		want, err := Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendString([]byte("x"), s); string(got) != "x"+string(want) {
			t.Errorf("appendString(%q) = %s, want x%s", s, got, want)
		}
	}
}
