package herald_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/coder/websocket"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/heraldtest"
)

// dialUser connects a JSON client whose user is user (through a Connect hook
// that takes it from ?as=).
func dialUser(t *testing.T, base, user string) *heraldtest.Client {
	t.Helper()
	return heraldtest.Dial(t, heraldtest.WSURL(base, "/ws?as="+url.QueryEscape(user)))
}

// asUser is a Config whose clients are who ?as= says.
func asUser(cfg herald.Config) herald.Config {
	cfg.Hooks.Connect = func(_ context.Context, req herald.ConnectRequest) (herald.ConnectResult, error) {
		return herald.ConnectResult{User: req.Request.URL.Query().Get("as")}, nil
	}
	return cfg
}

// nextOp returns the client's next push of op, skipping others.
func nextOp(t *testing.T, c *heraldtest.Client, op string) map[string]any {
	t.Helper()
	for {
		m := c.Next()
		if m == nil {
			t.Fatalf("connection ended before a %q push", op)
		}
		if m["op"] == op {
			return m
		}
	}
}

// An order through one node's API acts on the connections of another
// node: subscribe (a "subscribed" push, then the channel's messages),
// connections (listed with their node), unsubscribe, and disconnect
// (4000 with the reason, reported to webhooks as kicked). Others are left
// alone.
func TestOrdersAcrossNodes(t *testing.T) {
	t.Parallel()
	app, hookURL := newHookApp(t)
	newBroker := redisBrokers(t)
	cfgA := asUser(hookConfig(hookURL))
	cfgA.Broker = newBroker()
	cfgB := asUser(hookConfig(hookURL))
	cfgB.Broker = newBroker()
	_, nodeA := newServer(t, cfgA)
	_, nodeB := newServer(t, cfgB)

	ann := dialUser(t, nodeB, "ann")
	ann2 := dialUser(t, nodeB, "ann")
	bob := dialUser(t, nodeB, "bob")
	annID, bobID := clientID(ann), clientID(bob)

	if r := apiCall(t, http.MethodPost, nodeA+"/api/subscribe", `{"user":"ann","channel":"news"}`); r.status != http.StatusOK || r.raw != "{}\n" && r.raw != "{}" {
		t.Fatalf("subscribe order: %d %s", r.status, r.raw)
	}
	for _, c := range []*heraldtest.Client{ann, ann2} {
		if m := nextOp(t, c, "subscribed"); m["channel"] != "news" || m["recovered"] != true {
			t.Fatalf("subscribed push %v", m)
		}
	}
	off := apiPublish(t, nodeA, `{"channel":"news","data":"hello ann"}`)
	if m := nextOp(t, ann, "message"); m["data"] != "hello ann" || m["offset"] != off {
		t.Fatalf("ann got %v", m)
	}

	// The listing, from node A, shows node B's connections.
	var listed map[string]any
	heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
		r := apiCall(t, http.MethodGet, nodeA+"/api/connections?user=ann", "")
		list, _ := r.body["connections"].([]any)
		if r.status != http.StatusOK || len(list) != 2 {
			return fmt.Errorf("connections of ann: %d %s", r.status, r.raw)
		}
		for _, c := range list {
			if m := c.(map[string]any); m["client"] == annID {
				listed = m
			}
		}
		return nil
	})
	if listed["user"] != "ann" || listed["transport"] != "websocket" || fmt.Sprint(listed["channels"]) != "[news]" || listed["node"] == "" {
		t.Fatalf("ann's connection listed as %v", listed)
	}
	if r := apiCall(t, http.MethodGet, nodeA+"/api/connections", ""); len(r.body["connections"].([]any)) != 3 {
		t.Fatalf("all connections: %s", r.raw)
	}

	if r := apiCall(t, http.MethodPost, nodeA+"/api/unsubscribe", `{"client":"`+annID+`","channel":"news"}`); r.status != http.StatusOK {
		t.Fatalf("unsubscribe order: %d %s", r.status, r.raw)
	}
	if m := nextOp(t, ann, "unsubscribed"); m["channel"] != "news" {
		t.Fatalf("unsubscribed push %v", m)
	}

	if r := apiCall(t, http.MethodPost, nodeA+"/api/disconnect", `{"user":"ann","reason":"account closed"}`); r.status != http.StatusOK {
		t.Fatalf("disconnect order: %d %s", r.status, r.raw)
	}
	for _, c := range []*heraldtest.Client{ann, ann2} {
		if code, reason := c.ClosedWith(); code != 4000 || reason != "account closed" {
			t.Fatalf("ann's connection closed with %d %q, want 4000 and the reason", code, reason)
		}
	}
	bob.MustOK(map[string]any{"op": "ping"}) // bob is still here
	app.waitEvents(t, annID, "connect websocket", "subscribe news", "unsubscribe news", "disconnect kicked")
	app.waitEvents(t, bobID, "connect websocket")
}

// Broadcast publishes once to each channel and answers every offset.
func TestOrderBroadcast(t *testing.T) {
	t.Parallel()
	_, base := newServer(t, herald.Config{})
	a, b := dial(t, base), dial(t, base)
	wsSubscribe(t, a, "a")
	wsSubscribe(t, b, "b")
	r := apiCall(t, http.MethodPost, base+"/api/broadcast", `{"channels":["a","b"],"data":{"n":1},"event":"tick"}`)
	offsets, _ := r.body["offsets"].(map[string]any)
	if r.status != http.StatusOK || len(offsets) != 2 {
		t.Fatalf("broadcast: %d %s", r.status, r.raw)
	}
	for ch, c := range map[string]*heraldtest.Client{"a": a, "b": b} {
		if m := nextMessage(t, c); m["channel"] != ch || m["offset"] != offsets[ch] || m["event"] != "tick" {
			t.Fatalf("%s got %v, want the broadcast at %v", ch, m, offsets[ch])
		}
	}
}

// Bad orders are refused, naming what is wrong, and change nothing.
func TestOrdersRefused(t *testing.T) {
	t.Parallel()
	_, base := newServer(t, herald.Config{})
	c := dial(t, base)
	for _, tc := range []struct {
		path, body string
		status     int
		want       string
	}{
		{"/api/disconnect", `{}`, 400, "exactly one of user and client"},
		{"/api/disconnect", `{"user":"a","client":"b"}`, 400, "exactly one of user and client"},
		{"/api/disconnect", `{"user":5}`, 400, `want a string`},
		{"/api/subscribe", `{"user":"a"}`, 400, "channel is required"},
		{"/api/subscribe", `{"user":"a","channel":"a b"}`, 400, "channel"},
		{"/api/subscribe", `{"user":"a","channel":"herald-admin:x"}`, 403, "herald"},
		{"/api/subscribe", `{"user":"a","channel":"x","since":"nope"}`, 400, "since"},
		{"/api/unsubscribe", `{"client":"","channel":"x"}`, 400, "client"},
		{"/api/broadcast", `{"channels":[],"data":1}`, 400, "channels"},
		{"/api/broadcast", `{"channels":["a","a"],"data":1}`, 400, "twice"},
		{"/api/broadcast", `{"channels":["herald-admin:nodes"],"data":1}`, 403, "herald"},
		{"/api/broadcast", `{"channels":["a"]}`, 400, "data"},
	} {
		r := apiCall(t, http.MethodPost, base+tc.path, tc.body)
		if r.status != tc.status || !strings.Contains(r.raw, tc.want) {
			t.Errorf("POST %s %s: %d %s, want %d naming %q", tc.path, tc.body, r.status, r.raw, tc.status, tc.want)
		}
	}
	c.MustOK(map[string]any{"op": "ping"}) // still connected
}

// An SSE stream takes a subscribe order (the channel joins the stream);
// a raw connection is left alone.
func TestOrderSubscribeSSEAndRaw(t *testing.T) {
	t.Parallel()
	srv, base := newServer(t, herald.Config{})
	sse := openSSE(t, nil, base+"/sse?channel=first", nil)
	raw := dialRaw(t, base, "raw-only")
	if err := srv.Subscribe(context.Background(), herald.ByUser(""), "second", nil); err != nil {
		t.Fatal(err)
	}
	heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
		r := apiCall(t, http.MethodGet, base+"/api/connections", "")
		list, _ := r.body["connections"].([]any)
		channels := map[string][]string{}
		for _, c := range list {
			m := c.(map[string]any)
			for _, ch := range m["channels"].([]any) {
				channels[m["transport"].(string)] = append(channels[m["transport"].(string)], ch.(string))
			}
		}
		slices.Sort(channels["sse"])
		if fmt.Sprint(channels["sse"]) != "[first second]" || fmt.Sprint(channels["raw"]) != "[raw-only]" {
			return fmt.Errorf("channels by transport %v, want the order's on the SSE stream only", channels)
		}
		return nil
	})
	if _, err := srv.Publish(context.Background(), "second", "via order"); err != nil {
		t.Fatal(err)
	}
	if ev := sse.nextEvent(); ev.Data != "via order" {
		t.Fatalf("the stream got %+v", ev)
	}
	_ = raw.Conn.Close(websocket.StatusNormalClosure, "")
}

// In library mode Broadcast checks every channel first.
func TestServerBroadcast(t *testing.T) {
	t.Parallel()
	srv, base := newServer(t, herald.Config{})
	c := dial(t, base)
	wsSubscribe(t, c, "x")
	if _, err := srv.Broadcast(context.Background(), []string{"x", "herald-admin:nodes"}, 1); err == nil {
		t.Fatal("a broadcast naming herald's own channel was accepted")
	}
	offs, err := srv.Broadcast(context.Background(), []string{"x", "y"}, map[string]int{"n": 2}, herald.WithEvent("e"))
	if err != nil || len(offs) != 2 {
		t.Fatalf("Broadcast: %v %v", offs, err)
	}
	if m := nextMessage(t, c); m["offset"] != offs["x"] || m["event"] != "e" {
		t.Fatalf("x got %v, want the broadcast (and not the refused one)", m)
	}
}

// An order that acts on connections needs a user or a client: library
// callers cannot act on every connection by leaving both out.
func TestOrdersNeedATarget(t *testing.T) {
	t.Parallel()
	srv, base := newServer(t, herald.Config{})
	c := dial(t, base)
	for name, err := range map[string]error{
		"disconnect":  srv.Disconnect(context.Background(), herald.AllClients(), "all"),
		"subscribe":   srv.Subscribe(context.Background(), herald.AllClients(), "x", nil),
		"unsubscribe": srv.Unsubscribe(context.Background(), herald.AllClients(), "x"),
	} {
		if err == nil {
			t.Errorf("%s of every connection was accepted", name)
		}
	}
	c.MustOK(map[string]any{"op": "ping"}) // untouched
}
