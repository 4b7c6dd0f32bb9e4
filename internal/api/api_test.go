package api

import (
	"bytes"
	"encoding/json"
	"net/url"
	"testing"

	"github.com/heraldhq/herald/internal/protocol"
)

// FuzzDecodePublish checks that a publish body either decodes to a valid
// channel and compact, valid data, or is refused with bad_request.
func FuzzDecodePublish(f *testing.F) {
	for _, seed := range []string{
		`{"channel":"news","data":{ "a" : [1, 2] },"event":"e"}`,
		`{"channel":"c","data":null,"extra":{}}`,
		`{"channel":"a b","data":1}`,
		`{"channel":"c"}`,
		`[1]`,
		`{"channel":"c","data":1,"event":5}`,
		``,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		req, perr := decodePublish(b)
		if perr != nil {
			if perr.Code != protocol.CodeBadRequest {
				t.Fatalf("error code %q, want bad_request", perr.Code)
			}
			return
		}
		if !protocol.ValidChannel(*req.Channel) || !json.Valid(req.Data) {
			t.Fatalf("accepted channel %q data %q", *req.Channel, req.Data)
		}
		var compact bytes.Buffer
		_ = json.Compact(&compact, req.Data)
		if !bytes.Equal(compact.Bytes(), req.Data) {
			t.Fatalf("data %q is not compact", req.Data)
		}
	})
}

// A publish field of the wrong type says which field and what it should
// be, as the JSON protocol does.
func TestDecodePublishTypeErrors(t *testing.T) {
	t.Parallel()
	tests := []struct{ body, want string }{
		{`{"channel":5,"data":1}`, `field "channel": want a string, got number`},
		{`{"channel":"c","data":1,"event":["x"]}`, `field "event": want a string, got array`},
	}
	for _, tt := range tests {
		_, err := decodePublish([]byte(tt.body))
		if err == nil || err.Code != protocol.CodeBadRequest || err.Message != tt.want {
			t.Errorf("decodePublish(%s) = %v, want bad_request: %s", tt.body, err, tt.want)
		}
	}
}

func TestRoute(t *testing.T) {
	t.Parallel()
	cases := []struct {
		path, method, channel string
		ok                    bool
	}{
		{"/api/publish", "POST", "", true},
		{"/api/channels", "GET", "", true},
		{"/api/channels/chat:lobby/history", "GET", "chat:lobby", true},
		{"/api/channels/a%2Fb/presence", "GET", "a/b", true},
		{"/api/channels//history", "GET", "", true},
		{"/api/", "", "", false},
		{"/api/publish/", "", "", false},
		{"/api/channels/c", "", "", false},
		{"/other/publish", "", "", false},
	}
	for _, tc := range cases {
		u, err := url.Parse(tc.path)
		if err != nil {
			t.Fatal(err)
		}
		e, channel, ok := route(u)
		if ok != tc.ok || (ok && (e.method != tc.method || channel != tc.channel)) {
			t.Errorf("%s: %v %q %v, want %v %q %v", tc.path, e.method, channel, ok, tc.method, tc.channel, tc.ok)
		}
	}
}

func TestLoopbackRemoteAddr(t *testing.T) {
	t.Parallel()
	for addr, want := range map[string]bool{
		"127.0.0.1:1": true, "127.255.0.1:1": true, "[::1]:1": true, "[::ffff:127.0.0.1]:1": true,
		"203.0.113.9:1234": false, "[2001:db8::1]:1": false, "0.0.0.0:1": false, "garbage": false, "": false,
	} {
		if got := loopbackHost(addr); got != want {
			t.Errorf("loopbackHost(%q) = %v, want %v", addr, got, want)
		}
	}
}
