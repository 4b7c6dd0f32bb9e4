package herald_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/coder/websocket"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/heraldtest"
)

func TestHookAuthorizeSubscribe(t *testing.T) {
	t.Parallel()
	_, base := newServer(t, herald.Config{Hooks: herald.Hooks{
		AuthorizeSubscribe: func(_ context.Context, _ herald.Client, channel string) error {
			switch channel {
			case "secret":
				return herald.Errorf(herald.CodeForbidden, "members only")
			case "broken":
				return errors.New("database down: password=hunter2")
			}
			return nil
		},
	}})
	c := dial(t, base)
	for _, op := range []string{"subscribe", "history", "presence"} {
		r := c.Call(map[string]any{"op": op, "channel": "secret"}, nil)
		if r["ok"] != false || heraldtest.ErrorCode(r) != "forbidden" || errorMessage(r) != "members only" {
			t.Errorf("%s secret: %v, want forbidden \"members only\"", op, r)
		}
		r = c.Call(map[string]any{"op": op, "channel": "broken"}, nil)
		if r["ok"] != false || heraldtest.ErrorCode(r) != "internal" {
			t.Errorf("%s with a hook failing with a plain error: %v, want internal", op, r)
		}
		if strings.Contains(errorMessage(r), "hunter2") {
			t.Errorf("the hook's error text reached the client: %v", r)
		}
		c.MustOK(map[string]any{"op": op, "channel": "open"})
	}
	// A refused subscription is not made.
	p := dial(t, base)
	publish(t, p, "secret", "psst")
	if before := fence(t, c); len(before) != 0 {
		t.Fatalf("refused subscriber got %v", before)
	}

	// A raw client refused its channel sees its connection open and close
	// with the refusal: raw mode has no other way to tell it why.
	if code, reason := dialRaw(t, base, "secret").closedWith(); code != websocket.StatusPolicyViolation || reason != "members only" {
		t.Fatalf("raw client on a refused channel: closed %d %q, want 1008 \"members only\"", code, reason)
	}
	if code, reason := dialRaw(t, base, "broken").closedWith(); code != websocket.StatusInternalError || strings.Contains(reason, "hunter2") {
		t.Fatalf("raw client on a channel whose hook fails: closed %d %q, want 1011 without the hook's text", code, reason)
	}
}

func TestHookAuthorizePublish(t *testing.T) {
	t.Parallel()
	_, base := newServer(t, herald.Config{Hooks: herald.Hooks{
		AuthorizePublish: func(_ context.Context, c herald.Client, channel string, p *herald.Publication) error {
			switch channel {
			case "ro":
				return herald.Errorf(herald.CodeForbidden, "read only")
			case "broken":
				return errors.New("boom: secret detail")
			case "corrupt":
				p.Data = json.RawMessage(`{not json`)
				return nil
			}
			if p.Binary {
				return nil
			}
			p.Data = json.RawMessage(`{"by":` + string(mustJSON(c.ID)) + `,"original":` + string(p.Data) + `}`)
			p.Event = "rewritten"
			return nil
		},
	}})
	pub, sub := dial(t, base), dial(t, base)
	sub.MustOK(map[string]any{"op": "subscribe", "channel": "rw"})
	off := publish(t, pub, "rw", []any{1, "two"})
	m := nextMessage(t, sub)
	want := map[string]any{"by": clientID(pub), "original": []any{1.0, "two"}}
	if !equalJSON(m["data"], want) || m["event"] != "rewritten" || m["offset"] != off {
		t.Fatalf("subscriber got %v, want the hook's data %v and event", m, want)
	}
	r := sub.MustOK(map[string]any{"op": "history", "channel": "rw"})
	if h := r["messages"].([]any)[0].(map[string]any); !equalJSON(h["data"], want) {
		t.Fatalf("history keeps %v, want the rewritten data", h)
	}

	// Raw publishes go through the hook too.
	raw := dialRaw(t, base, "rw")
	waitPresent(t, sub, "rw", 2)
	raw.send(websocket.MessageText, "from raw")
	if got := raw.nextText(); !strings.Contains(got, `"original":"from raw"`) {
		t.Fatalf("raw client got %q, want the rewritten message", got)
	}

	// A refused raw publish closes the connection: 1008 for a refusal,
	// 1011 for a failure.
	for _, tt := range []struct {
		channel string
		code    websocket.StatusCode
	}{{"ro", websocket.StatusPolicyViolation}, {"broken", websocket.StatusInternalError}} {
		r := dialRaw(t, base, tt.channel)
		r.send(websocket.MessageText, "x")
		if code, reason := r.closedWith(); code != tt.code || strings.Contains(reason, "secret detail") {
			t.Errorf("raw publish to %s: closed %d %q, want %d", tt.channel, code, reason, tt.code)
		}
	}

	for _, tt := range []struct{ channel, code string }{
		{"ro", "forbidden"},
		{"broken", "internal"},
		{"corrupt", "internal"},
	} {
		r := pub.Call(map[string]any{"op": "publish", "channel": tt.channel, "data": 1}, nil)
		if r["ok"] != false || heraldtest.ErrorCode(r) != tt.code {
			t.Errorf("publish to %s: %v, want %s", tt.channel, r, tt.code)
		}
		if strings.Contains(errorMessage(r), "secret detail") {
			t.Errorf("the hook's error text reached the client: %v", r)
		}
		h := pub.MustOK(map[string]any{"op": "history", "channel": tt.channel})
		if len(h["messages"].([]any)) != 0 {
			t.Errorf("refused publish to %s was stored: %v", tt.channel, h)
		}
	}
}

func TestHookConnect(t *testing.T) {
	t.Parallel()
	_, base := newServer(t, herald.Config{Hooks: herald.Hooks{
		Connect: func(_ context.Context, req herald.ConnectRequest) (herald.ConnectResult, error) {
			as := req.Request.URL.Query().Get("as")
			switch as {
			case "nobody":
				return herald.ConnectResult{}, herald.Errorf(herald.CodeUnauthorized, "who are you")
			case "banned":
				return herald.ConnectResult{}, herald.Errorf(herald.CodeForbidden, "go away")
			case "flood":
				return herald.ConnectResult{}, herald.Errorf(herald.CodeRateLimited, "slow down")
			case "crash":
				return herald.ConnectResult{}, errors.New("auth backend: connection refused")
			}
			return herald.ConnectResult{User: as}, nil
		},
	}})
	tests := []struct {
		as     string
		status int
		code   string
	}{
		{"nobody", 401, "unauthorized"},
		{"banned", 403, "forbidden"},
		{"flood", 429, "rate_limited"},
		{"crash", 500, "internal"},
	}
	for _, tt := range tests {
		for _, path := range []string{"/ws?as=", "/ws/room?as="} {
			status, body := dialStatus(t, heraldtest.WSURL(base, path+tt.as))
			var e struct {
				Error struct{ Code, Message string }
			}
			_ = json.Unmarshal([]byte(body), &e)
			if status != tt.status || e.Error.Code != tt.code {
				t.Errorf("%s%s: HTTP %d %s, want %d with code %s", path, tt.as, status, body, tt.status, tt.code)
			}
			if strings.Contains(body, "backend") {
				t.Errorf("the hook's error text reached the client: %s", body)
			}
		}
	}

	// The user Connect names is the connection's user everywhere.
	alice := heraldtest.Dial(t, heraldtest.WSURL(base, "/ws?as=alice"))
	if alice.Welcome["user"] != "alice" {
		t.Fatalf("welcome %v, want user alice", alice.Welcome)
	}
	anon := dial(t, base)
	anon.MustOK(map[string]any{"op": "subscribe", "channel": "who"})
	alice.MustOK(map[string]any{"op": "subscribe", "channel": "who"})
	publish(t, alice, "who", "hello")
	if m := nextMessage(t, anon); m["user"] != "alice" || m["client"] != clientID(alice) {
		t.Fatalf("push %v, want user alice and her client id", m)
	}
	r := anon.MustOK(map[string]any{"op": "presence", "channel": "who"})
	users := map[any]any{}
	for _, c := range r["clients"].([]any) {
		users[c.(map[string]any)["client"]] = c.(map[string]any)["user"]
	}
	if users[clientID(alice)] != "alice" || users[clientID(anon)] != "" {
		t.Fatalf("presence %v, want alice and an anonymous client", r)
	}
}

func TestHookConnectedDisconnected(t *testing.T) {
	t.Parallel()
	var (
		mu          sync.Mutex
		connected   []herald.Client
		disconnects []herald.Client
	)
	_, base := newServer(t, herald.Config{Hooks: herald.Hooks{
		Headers: []string{"X-Session"},
		Connect: func(_ context.Context, req herald.ConnectRequest) (herald.ConnectResult, error) {
			return herald.ConnectResult{User: req.Request.URL.Query().Get("as")}, nil
		},
		Connected: func(c herald.Client) {
			mu.Lock()
			connected = append(connected, c)
			mu.Unlock()
		},
		Disconnected: func(c herald.Client) {
			mu.Lock()
			disconnects = append(disconnects, c)
			mu.Unlock()
		},
	}})
	snapshot := func() (conn, disc []herald.Client) {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(connected), slices.Clone(disconnects)
	}
	c := heraldtest.DialHeader(t, heraldtest.WSURL(base, "/ws?as=bob"), http.Header{"X-Session": {"s1"}, "X-Other": {"no"}})
	want := herald.Client{ID: clientID(c), User: "bob", Transport: "websocket", Header: http.Header{"X-Session": {"s1"}}}
	heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
		conn, _ := snapshot()
		if len(conn) != 1 {
			return fmt.Errorf("Connected calls so far %v, want 1", conn)
		}
		return nil
	})
	if conn, disc := snapshot(); !reflect.DeepEqual(conn[0], want) || len(disc) != 0 {
		t.Fatalf("Connected %v, Disconnected %v; want Connected %v only", conn, disc, want)
	}
	r := dialRaw(t, base, "room?as=carol")
	heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
		conn, _ := snapshot()
		if len(conn) != 2 {
			return fmt.Errorf("Connected calls so far %v, want 2", conn)
		}
		return nil
	})
	rawClient, _ := snapshot()
	if rawClient[1].User != "carol" || rawClient[1].ID == "" || rawClient[1].ID == want.ID || rawClient[1].Transport != "raw" || len(rawClient[1].Header) != 0 {
		t.Fatalf("Connected for the raw client: %v", rawClient[1])
	}

	_ = c.Conn.Close(websocket.StatusNormalClosure, "")
	heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
		_, disc := snapshot()
		if len(disc) != 1 {
			return fmt.Errorf("Disconnected calls so far %v, want 1", disc)
		}
		return nil
	})
	if _, disc := snapshot(); !reflect.DeepEqual(disc[0], want) {
		t.Fatalf("Disconnected %v, want %v", disc, want)
	}
	_ = r.Conn.CloseNow()
	heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
		_, disc := snapshot()
		if len(disc) != 2 {
			return fmt.Errorf("Disconnected calls so far %v, want 2", disc)
		}
		return nil
	})
	if _, disc := snapshot(); !reflect.DeepEqual(disc[1], rawClient[1]) {
		t.Fatalf("Disconnected %v, want %v", disc[1], rawClient[1])
	}
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
