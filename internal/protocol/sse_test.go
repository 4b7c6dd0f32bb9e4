package protocol

import (
	"encoding/base64"
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/heraldhq/herald/broker"
)

func TestSSEEvent(t *testing.T) {
	t.Parallel()
	msg := func(data, event string) broker.Message {
		return broker.Message{Channel: "c", Offset: broker.Offset{Seq: 1, Epoch: "e"}, Data: json.RawMessage(data), Event: event}
	}
	tests := []struct {
		name string
		m    broker.Message
		want string
	}{
		{"string", msg(`"hi"`, ""), "event: message\ndata: hi\n\n"},
		{"event name", msg(`"hi"`, "note"), "event: note\ndata: hi\n\n"},
		{"event name with a line break", msg(`1`, "a\r\nb"), "event: a  b\ndata: 1\n\n"},
		{"empty string", msg(`""`, ""), "event: message\ndata: \n\n"},
		{"lines", msg(`"a\nb\r\nc\rd"`, ""), "event: message\ndata: a\ndata: b\ndata: c\ndata: d\n\n"},
		{"trailing newline", msg(`"a\n"`, ""), "event: message\ndata: a\ndata: \n\n"},
		{"leading space kept", msg(`" a"`, ""), "event: message\ndata:  a\n\n"},
		{"escapes", msg(`"\u00e9 \"q\" \\"`, ""), "event: message\ndata: é \"q\" \\\n\n"},
		{"object", msg(`{"a":[1,null]}`, ""), "event: message\ndata: {\"a\":[1,null]}\n\n"},
		{"object with newlines", msg("{\n \"a\":\r\n\"x\\ny\"}", ""), "event: message\ndata: {\"a\":\"x\\ny\"}\n\n"},
		{"number", msg(`4.5`, ""), "event: message\ndata: 4.5\n\n"},
		{"binary", broker.Message{Data: []byte{0, 1, 0xff}, Binary: true, Event: "x"}, "event: herald.binary\ndata: AAH/\n\n"},
	}
	for _, tt := range tests {
		if got := string(SSEEvent(tt.m)); got != tt.want {
			t.Errorf("%s: %q, want %q", tt.name, got, tt.want)
		}
	}
	if got, want := string(SSEUnrecovered("chat:a")), "event: herald.unrecovered\ndata: {\"channel\":\"chat:a\"}\n\n"; got != want {
		t.Errorf("unrecovered: %q, want %q", got, want)
	}
	if got := string(SSEOpening(2000, nil)); got != "retry: 2000\n\n" {
		t.Errorf("opening without channels: %q", got)
	}
	start := SSECursor{{Channel: "a", Offset: broker.Offset{Epoch: "e", Seq: 3}}}
	if got, want := string(SSEOpening(2000, start)), "retry: 2000\nid: "+start.String()+"\n\n"; got != want {
		t.Errorf("opening: %q, want %q", got, want)
	}
}

// seedCursors are cursors as streams write them.
var seedCursors = []SSECursor{
	{},
	{{Channel: "news"}},
	{{Channel: "news", Offset: broker.Offset{Seq: 17, Epoch: "a1b2c3d4"}}},
	{
		{Channel: "chat:room-1", Offset: broker.Offset{Seq: 1 << 40, Epoch: "9f3a01bc"}},
		{Channel: "a", Offset: broker.Offset{Seq: 0, Epoch: "x-y"}},
		{Channel: strings.Repeat("z", 255), Offset: broker.Offset{Seq: 18446744073709551615, Epoch: strings.Repeat("e", 64)}},
	},
}

func TestSSECursorRoundTrip(t *testing.T) {
	t.Parallel()
	for _, c := range seedCursors {
		s := c.String()
		if strings.Trim(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") != "" {
			t.Errorf("cursor %q is not header and URL safe", s)
		}
		got, err := ParseSSECursor(s)
		if err != nil {
			t.Fatalf("ParseSSECursor(%q): %v", s, err)
		}
		if len(got) != len(c) || (len(c) > 0 && !reflect.DeepEqual(got, c)) {
			t.Errorf("round trip of %v: %v", c, got)
		}
	}
	if s := seedCursors[2].String(); len(s) > 24 {
		t.Errorf("one channel's cursor %q is %d bytes; want it compact", s, len(s))
	}
}

func TestParseSSECursorRefuses(t *testing.T) {
	t.Parallel()
	many := make(SSECursor, MaxSSEChannels+1)
	for i := range many {
		many[i].Channel = "c" + strings.Repeat("x", i)
	}
	dup := SSECursor{{Channel: "a"}, {Channel: "a"}}
	raw := func(b ...byte) string { return "1" + base64.RawURLEncoding.EncodeToString(b) }
	valid := raw(1, 'a', 0, 0)
	for _, s := range []string{
		"",
		"2",
		"1!",
		"1A",                        // not a whole byte
		raw(0),                      // a zero-length channel name
		raw(3, 'a', ' ', 'b', 0, 0), // a bad channel name
		raw(1, 'a', 5, 0),           // sequence 5 without an epoch
		raw(1, 'a', 5),              // truncated
		raw(1, 'a', 1, 4, 'x'),      // epoch longer than the bytes left
		raw(1, 'a', 0x80),           // a sequence cut short
		raw(1, 'a', 1, 65),          // epoch over 64 bytes
		valid[:len(valid)-1] + "B",  // trailing bits set (not canonical)
		valid + "=",                 // padding
		many.String(),               // too many channels
		dup.String(),                // a channel twice
		"1" + strings.Repeat("_", 10),
	} {
		if c, err := ParseSSECursor(s); err == nil {
			t.Errorf("ParseSSECursor(%q) = %v, want an error", s, c)
		}
	}
}

func FuzzSSECursor(f *testing.F) {
	for _, c := range seedCursors {
		f.Add(c.String())
	}
	for _, s := range []string{"", "1", "2abc", "1AWEAQQ", "1BGEgYg", "1AWEFAA", "1////"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseSSECursor(s)
		if err != nil {
			return
		}
		if len(c) > MaxSSEChannels {
			t.Fatalf("%q: %d channels", s, len(c))
		}
		for _, p := range c {
			if !ValidChannel(p.Channel) {
				t.Fatalf("%q: bad channel %q", s, p.Channel)
			}
			if _, err := broker.ParseOffset(p.Offset.String()); err != nil {
				t.Fatalf("%q: offset %+v does not survive its wire form: %v", s, p.Offset, err)
			}
		}
		again := c.String()
		c2, err := ParseSSECursor(again)
		if err != nil {
			t.Fatalf("re-encoded %q of %q does not parse: %v", again, s, err)
		}
		if len(c) != len(c2) || (len(c) > 0 && !reflect.DeepEqual(c, c2)) {
			t.Fatalf("round trip of %q: %v then %v", s, c, c2)
		}
		if c2.String() != again {
			t.Fatalf("encoding of %v is not stable", c)
		}
	})
}
