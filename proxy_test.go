package herald_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/coder/websocket"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/heraldtest"
)

// What only the HTTP proxies can get wrong: the exact requests, the
// forwarded headers, and answers that are no answer. The behaviour they
// share with Go hooks is in ask_test.go.

// proxyServer starts a server whose proxies ask an app that decides with
// decide.
func proxyServer(t *testing.T, decide func(question) answer) (*herald.Server, string, *app) {
	t.Helper()
	a := &app{decide: decide}
	var cfg herald.Config
	installProxy(t, a, &cfg, true)
	srv, base := newServer(t, cfg)
	return srv, base, a
}

// Every proxy request is a POST of the contract's JSON body, carrying the
// client's own headers named by --proxy-headers, and only those.
func TestProxyRequests(t *testing.T) {
	t.Parallel()
	_, base, a := proxyServer(t, demoApp)
	header := http.Header{
		"Cookie":        {"session=alice"},
		"X-Request-Id":  {"r-1"},
		"Authorization": {"Basic YWxpY2U6cHc="},
		"X-Private":     {"not for the app"},
	}
	c := heraldtest.DialHeader(t, heraldtest.WSURL(base, "/ws"), header)
	id := clientID(c)
	c.MustOK(map[string]any{"op": "subscribe", "channel": "room"})
	c.MustOK(map[string]any{"op": "publish", "channel": "room", "data": map[string]any{"a": 1}, "event": "e"})
	c.MustOK(map[string]any{"op": "rpc", "method": "whoami", "data": []any{1}})

	want := map[string]map[string]any{
		"connect":   {"client": id, "transport": "websocket"},
		"subscribe": {"client": id, "user": "alice", "channel": "room", "transport": "websocket"},
		"publish":   {"client": id, "user": "alice", "channel": "room", "data": map[string]any{"a": 1.0}, "event": "e"},
		"rpc":       {"client": id, "user": "alice", "method": "whoami", "data": []any{1.0}},
	}
	for kind, body := range want {
		q := a.questions(kind)
		if len(q) != 1 {
			t.Fatalf("%s questions: %v, want one", kind, q)
		}
		got := q[0].body
		if kind == "connect" {
			if addr, _ := got["remote_addr"].(string); !strings.HasPrefix(addr, "127.0.0.1:") {
				t.Errorf("connect remote_addr %v, want the client's address", got["remote_addr"])
			}
			delete(got, "remote_addr")
		}
		if !reflect.DeepEqual(got, body) {
			t.Errorf("%s body %v, want %v", kind, got, body)
		}
		checkForwarded(t, kind, q[0].header, header)
	}

	// A raw binary frame goes as base64, marked binary.
	raw := dialRawHeader(t, base, "bin", header)
	raw.send(websocket.MessageBinary, "\x00\x01\xff")
	if f := raw.next(); f.typ != websocket.MessageBinary || f.data != "\x00\x01\xff" {
		t.Fatalf("raw client got %v %q, want its binary frame back", f.typ, f.data)
	}
	q := a.questions("publish")
	if got := q[len(q)-1].body; got["channel"] != "bin" || got["data"] != "AAH/" || got["binary"] != true {
		t.Fatalf("publish body of a binary frame %v, want data AAH/ and binary true", got)
	}

	// The refresh of a connection carries its own headers.
	short := http.Header{"Cookie": {"session=short-renewed"}, "X-Request-Id": {"r-2"}}
	s := heraldtest.DialHeader(t, heraldtest.WSURL(base, "/ws"), short)
	heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
		if len(a.questions("refresh")) == 0 {
			return fmt.Errorf("no refresh yet")
		}
		return nil
	})
	r := a.questions("refresh")[0]
	if want := map[string]any{"client": clientID(s), "user": "renewed"}; !reflect.DeepEqual(r.body, want) {
		t.Fatalf("refresh body %v, want %v", r.body, want)
	}
	checkForwarded(t, "refresh", r.header, short)

	stream := openSSE(t, nil, base+"/sse?channel=news", header)
	stream.next()
	q = a.questions("connect")
	if got := q[len(q)-1].body; got["transport"] != "sse" {
		t.Fatalf("connect body of an SSE stream %v, want transport sse", got)
	}
}

// checkForwarded fails unless got carries exactly the forwarded headers of
// sent.
func checkForwarded(t *testing.T, kind string, got, sent http.Header) {
	t.Helper()
	for _, name := range proxyHeaders {
		if !reflect.DeepEqual(got.Values(name), sent.Values(name)) {
			t.Errorf("%s request header %s: %q, want %q", kind, name, got.Values(name), sent.Values(name))
		}
	}
	if v := got.Get("X-Private"); v != "" {
		t.Errorf("%s request carries X-Private %q, which --proxy-headers does not name", kind, v)
	}
}

// failures are the ways an application can fail to answer, by the name a
// test gives them ("fail-<name>" as the session, channel or method).
var failures = map[string]answer{
	"late":    {delay: 3 * askTimeout},
	"garbage": {raw: "<html>oops"},
	"status":  {status: http.StatusInternalServerError, raw: `{"result":{}}`},
	"refused": {status: http.StatusForbidden, raw: `{"error":{"code":"forbidden","message":"no"}}`},
	"empty":   {raw: `{}`},
	"null":    {raw: `{"result":null}`},
	"both":    {raw: `{"result":{},"error":{"code":"forbidden","message":"no"}}`},
	"list":    {raw: `{"result":[1]}`},
}

// failingApp fails as its questions ask it to, and is demoApp otherwise;
// it refuses "fail-unknown" with a code the contract does not know, and
// answers connect "fail-shape" and "fail-channel" with unusable results.
func failingApp(q question) answer {
	how := session(q)
	switch q.kind {
	case "subscribe", "publish":
		how, _ = q.body["channel"].(string)
	case "rpc":
		how, _ = q.body["method"].(string)
	}
	name, ok := strings.CutPrefix(how, "fail-")
	switch {
	case !ok:
		return demoApp(q)
	case name == "unknown":
		return answer{raw: `{"error":{"code":"teapot","message":"short and stout"}}`}
	case name == "shape":
		return answer{raw: `{"result":{"user":7}}`}
	case name == "channel":
		return answer{result: map[string]any{"channels": []string{"no spaces"}}}
	}
	return failures[name]
}

// Whatever is not an answer — late, not the contract's JSON, another
// status — lets nothing through: the client sees unavailable (HTTP 503, an
// error reply, raw mode's 1011). A code the contract does not know is a
// refusal: forbidden, with the application's message.
func TestProxyFailsClosed(t *testing.T) {
	t.Parallel()
	_, base, _ := proxyServer(t, failingApp)
	names := []string{"unknown", "shape", "channel"}
	for name := range failures {
		names = append(names, name)
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			how := "fail-" + name
			code, status, close := "unavailable", http.StatusServiceUnavailable, websocket.StatusInternalError
			if name == "unknown" {
				code, status, close = "forbidden", http.StatusForbidden, websocket.StatusPolicyViolation
			}
			st, body := dialStatusHeader(t, heraldtest.WSURL(base, "/ws"), as(how))
			if st != status || !strings.Contains(body, `"`+code+`"`) || (name == "unknown" && !strings.Contains(body, "short and stout")) {
				t.Errorf("connect: HTTP %d %s, want %d %s", st, body, status, code)
			}
			if name == "shape" || name == "channel" {
				return // only connect has fields to get wrong
			}
			c := dialAs(t, base, "/ws", "alice")
			for _, cmd := range []map[string]any{
				{"op": "subscribe", "channel": how},
				{"op": "history", "channel": how},
				{"op": "publish", "channel": how, "data": 1},
				{"op": "rpc", "method": how},
			} {
				if r := c.Call(cmd, nil); heraldtest.ErrorCode(r) != code {
					t.Errorf("%v: %v, want %s", cmd, r, code)
				}
			}
			if got, reason := dialRawAs(t, base, how, "alice").closedWith(); got != close {
				t.Errorf("raw on %s: closed %d %q, want %d", how, got, reason, close)
			}
			// Nothing of the refused publishes was stored.
			if msgs := apiHistory(t, base, how); len(msgs) != 0 {
				t.Errorf("history of %s: %v, want nothing", how, msgs)
			}
		})
	}
}

// apiHistory reads channel's history with the server API.
func apiHistory(t *testing.T, base, channel string) []any {
	t.Helper()
	resp, err := http.Get(base + "/api/channels/" + channel + "/history")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var h struct {
		Messages []any `json:"messages"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &h) != nil {
		t.Fatalf("history of %s: %s %s", channel, resp.Status, b)
	}
	return h.Messages
}
