package protocol

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// seedFrames are frames as clients send them, valid and not.
var seedFrames = []string{
	`{"id":1,"op":"ping"}`,
	`{"id":2,"op":"subscribe","channel":"chat:room-1"}`,
	`{"id":3,"op":"subscribe","channel":"news","since":""}`,
	`{"id":4,"op":"subscribe","channel":"news","since":"12-9f3a01bc"}`,
	`{"id":5,"op":"unsubscribe","channel":"news"}`,
	`{"id":6,"op":"publish","channel":"chat:room-1","data":{"text":"hi","at":[1,2.5e3,null,true]},"event":"msg"}`,
	`{"id":7,"op":"publish","channel":"a","data":"caf\u00e9 \"quoted\" <b>"}`,
	`{"id":8,"op":"history","channel":"news","since":"3-abcd","limit":10}`,
	`{"id":9,"op":"history","channel":"news","limit":0}`,
	`{"id":10,"op":"presence","channel":"chat:room-1"}`,
	`{"id":18446744073709551615,"op":"ping"}`,
	`{"id":11,"op":"subscribe","channel":5}`,
	`{"id":12,"op":"history","channel":"a","limit":-1}`,
	`{"id":0,"op":"ping"}`,
	`{"op":"ping"}`,
	`{"id":1.5,"op":"ping"}`,
	`{"id":13,"op":"dance"}`,
	`{"id":14,"op":"subscribe","channel":"a b"}`,
	`{"id":1,"op":`,
	`[1]`,
	`"x"`,
	`null`,
	``,
	"{\"id\":15,\"op\":\"ping\"}\n{\"id\":16,\"op\":\"ping\"}",
	`{"id":17,"op":"refresh","token":"a.b.c"}`,
	`{"id":18,"op":"rpc","method":"get_user","data":{"id":7}}`,
	`{"id":19,"op":"rpc","method":"now"}`,
	`{"id":20,"op":"publish","channel":"p","data":1,"tags":{"sym":"AAPL","x":""},"key":"AAPL"}`,
	`{"id":21,"op":"subscribe","channel":"p","filter":{"any":[{"tag":"sym","in":["A","B"]},{"not":{"tag":"x","exists":true}}]}}`,
	`{"id":22,"op":"subscribe","channel":"doc","delta":"fossil","since":""}`,
	`{"id":23,"op":"history","channel":"p","filter":{"tag":"a","eq":"b"},"limit":2}`,
	`{"id":24,"op":"ack","channel":"orders:1","offset":"7-e1"}`,
	`{"id":25,"op":"publish","channel":"a","data":1,"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}`,
}

func FuzzDecodeCommand(f *testing.F) {
	for _, s := range seedFrames {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		c, err := DecodeCommand(frame)
		if again, err2 := DecodeCommand(frame); !reflect.DeepEqual(again, c) || !reflect.DeepEqual(err, err2) {
			t.Fatalf("decoding %q twice differs: %+v, %v then %+v, %v", frame, c, err, again, err2)
		}
		if err != nil {
			if err.Code != CodeBadRequest || err.Message == "" {
				t.Fatalf("DecodeCommand(%q): error %+v, want bad_request with a message", frame, err)
			}
			return
		}
		checkCommand(t, frame, c)
		enc := encodeCommand(c)
		c2, err := DecodeCommand(enc)
		if err != nil {
			t.Fatalf("re-encoded command %s of %q does not decode: %v", enc, frame, err)
		}
		if !reflect.DeepEqual(c2, c) {
			t.Fatalf("re-decoding is not stable for %q:\n first %+v\nsecond %+v", frame, c, c2)
		}
	})
}

// checkCommand checks what DecodeCommand promises of a command it accepts.
func checkCommand(t *testing.T, frame []byte, c Command) {
	t.Helper()
	if c.ID == 0 {
		t.Fatalf("DecodeCommand(%q) accepted id 0", frame)
	}
	switch c.Op {
	case OpPing, OpRefresh:
		if c.Channel != "" {
			t.Fatalf("%s with channel %q", c.Op, c.Channel)
		}
		if (c.Op == OpRefresh) != (c.Token != "") {
			t.Fatalf("%s with token %q", c.Op, c.Token)
		}
	case OpSubscribe, OpUnsubscribe, OpPublish, OpHistory, OpPresence, OpAck:
		if !ValidChannel(c.Channel) {
			t.Fatalf("DecodeCommand(%q) accepted channel %q", frame, c.Channel)
		}
		if (c.Op == OpAck) == c.Offset.IsZero() {
			t.Fatalf("%s with offset %q", c.Op, c.Offset.String())
		}
	case OpRPC:
		if c.Method == "" || c.Channel != "" || c.Data == nil {
			t.Fatalf("DecodeCommand(%q) accepted rpc %+v", frame, c)
		}
	default:
		t.Fatalf("DecodeCommand(%q) accepted op %q", frame, c.Op)
	}
	if c.Method != "" && c.Op != OpRPC {
		t.Fatalf("%s carries method %q", c.Op, c.Method)
	}
	if c.Op == OpPublish || c.Op == OpRPC {
		var buf bytes.Buffer
		if err := json.Compact(&buf, c.Data); err != nil || !bytes.Equal(buf.Bytes(), c.Data) {
			t.Fatalf("publish data %q is not compact JSON (%v)", c.Data, err)
		}
	} else if c.Data != nil {
		t.Fatalf("%s carries data %q", c.Op, c.Data)
	}
	if c.Event != "" && c.Op != OpPublish {
		t.Fatalf("%s carries event %q", c.Op, c.Event)
	}
	if c.HasSince && c.Op != OpSubscribe && c.Op != OpHistory {
		t.Fatalf("%s carries since", c.Op)
	}
	if !c.HasSince && c.Since != "" {
		t.Fatalf("since %q without HasSince", c.Since)
	}
	if c.Limit < -1 || (c.Limit >= 0 && c.Op != OpHistory) {
		t.Fatalf("%s has limit %d", c.Op, c.Limit)
	}
	if (c.Tags != nil || c.Key != "") && c.Op != OpPublish {
		t.Fatalf("%s carries tags or a key", c.Op)
	}
	if c.Filter != nil && c.Op != OpSubscribe && c.Op != OpHistory {
		t.Fatalf("%s carries a filter", c.Op)
	}
	if c.Delta != "" && (c.Op != OpSubscribe || c.Delta != DeltaFossil || c.Filter != nil) {
		t.Fatalf("%s carries delta %q (filter %s)", c.Op, c.Delta, c.Filter)
	}
}

// encodeCommand writes c back as a frame. Data goes out byte for byte, so
// that re-decoding sees exactly what the first decoding produced.
func encodeCommand(c Command) []byte {
	q := func(s string) string {
		b, _ := json.Marshal(s)
		return string(b)
	}
	var b strings.Builder
	b.WriteString(`{"id":` + strconv.FormatUint(c.ID, 10) + `,"op":` + q(string(c.Op)))
	switch c.Op {
	case OpPing:
	case OpRefresh:
		b.WriteString(`,"token":` + q(c.Token))
	case OpRPC:
		b.WriteString(`,"method":` + q(c.Method))
	default:
		b.WriteString(`,"channel":` + q(c.Channel))
	}
	if c.HasSince {
		b.WriteString(`,"since":` + q(c.Since))
	}
	if c.Limit >= 0 {
		b.WriteString(`,"limit":` + strconv.Itoa(c.Limit))
	}
	if c.Event != "" {
		b.WriteString(`,"event":` + q(c.Event))
	}
	if c.Data != nil {
		b.WriteString(`,"data":`)
		b.Write(c.Data)
	}
	if c.Traceparent != "" {
		b.WriteString(`,"traceparent":` + q(c.Traceparent))
	}
	if c.Tags != nil {
		tags, _ := json.Marshal(c.Tags)
		b.WriteString(`,"tags":`)
		b.Write(tags)
	}
	if c.Key != "" {
		b.WriteString(`,"key":` + q(c.Key))
	}
	if c.Filter != nil {
		b.WriteString(`,"filter":`)
		b.Write(c.Filter)
	}
	if c.Delta != "" {
		b.WriteString(`,"delta":` + q(c.Delta))
	}
	if !c.Offset.IsZero() {
		b.WriteString(`,"offset":` + q(c.Offset.String()))
	}
	b.WriteByte('}')
	return []byte(b.String())
}

// validChannelRef is the contract's rule for channel names, written out
// the obvious way.
func validChannelRef(name string) bool {
	const allowed = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.:@=,"
	if len(name) < 1 || len(name) > 255 {
		return false
	}
	for i := 0; i < len(name); i++ {
		if !strings.ContainsRune(allowed, rune(name[i])) {
			return false
		}
	}
	return true
}

func FuzzValidChannel(f *testing.F) {
	for _, s := range []string{"", "a", "chat:room-1", "A_z.0:@=,-", "a b", "a/b", "café", "\x00", "\xff", "a*", strings.Repeat("x", 255), strings.Repeat("x", 256)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if got, want := ValidChannel(name), validChannelRef(name); got != want {
			t.Fatalf("ValidChannel(%q) = %v, the contract says %v", name, got, want)
		}
		ns := Namespace(name)
		if !strings.HasPrefix(name, ns) || strings.Contains(ns, ":") {
			t.Fatalf("Namespace(%q) = %q", name, ns)
		}
		if ns != "" && !strings.HasPrefix(name, ns+":") {
			t.Fatalf("Namespace(%q) = %q, but the name does not continue with ':'", name, ns)
		}
	})
}
