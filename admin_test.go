package herald_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/heraldtest"
)

// Without an admin token there is no admin page at all: not its sign-in
// form, which could never work, nor its script, nor its data.
func TestAdminOffWithoutToken(t *testing.T) {
	t.Parallel()
	_, base := newServer(t, herald.Config{})
	for _, c := range []struct{ method, path string }{
		{"GET", "/admin"}, {"GET", "/admin/"}, {"GET", "/admin/admin.js"}, {"GET", "/admin/stream"},
		{"GET", "/admin/channels"}, {"POST", "/admin/publish"}, {"GET", "/admin/nope"},
		{"GET", "/admin.html"}, {"GET", "/admin.js"},
	} {
		if r := apiCall(t, c.method, base+c.path, `{"channel":"c","data":1}`, "Authorization", "Bearer x"); r.status != http.StatusNotFound {
			t.Errorf("%s %s without an admin token configured: %d, want 404", c.method, c.path, r.status)
		}
	}
	// The demo page is still there.
	if r := apiCall(t, "GET", base+"/", ""); r.status != http.StatusOK {
		t.Fatalf("GET /: %d", r.status)
	}
}

// The admin stream carries every node's snapshot once a second; its data
// need the admin token, and clients cannot reach the reserved namespace.
func TestAdmin(t *testing.T) {
	t.Parallel()
	_, base := newServer(t, herald.Config{AdminToken: "admin-secret"})
	if r := apiCall(t, http.MethodGet, base+"/admin/channels", ""); r.status != http.StatusUnauthorized {
		t.Fatalf("/admin/channels without the token: %d, want 401", r.status)
	}
	page := apiCall(t, http.MethodGet, base+"/admin", "")
	if page.status != http.StatusOK || !strings.Contains(page.raw, "herald admin") {
		t.Fatalf("/admin: %d", page.status)
	}

	c := dial(t, base)
	c.MustOK(map[string]any{"op": "subscribe", "channel": "room"})
	for _, cmd := range []map[string]any{
		{"op": "subscribe", "channel": "herald-admin:nodes"},
		{"op": "publish", "channel": "herald-admin:nodes", "data": 1},
	} {
		if r := c.Call(cmd, nil); heraldtest.ErrorCode(r) != "forbidden" {
			t.Fatalf("%v: %v, want forbidden", cmd, r)
		}
	}

	s := openSSE(t, nil, base+"/admin/stream?token="+url.QueryEscape("admin-secret"), nil)
	s.next() // the opening block
	ev := s.next()
	var st struct {
		Node        string  `json:"node"`
		Connections float64 `json:"connections"`
		Channels    float64 `json:"channels"`
		BrokerUp    bool    `json:"broker_up"`
	}
	if ev.Event != "node" || json.Unmarshal([]byte(ev.Data), &st) != nil || st.Node == "" || !st.BrokerUp {
		t.Fatalf("admin event %+v", ev)
	}
	// One WebSocket, and the admin stream itself.
	if st.Connections != 2 || st.Channels != 1 {
		t.Fatalf("snapshot %+v, want 2 connections and 1 channel", st)
	}

	r := apiCall(t, http.MethodPost, base+"/admin/publish", `{"channel":"room","data":"hello from admin"}`, "Authorization", "Bearer admin-secret")
	if r.status != http.StatusOK {
		t.Fatalf("/admin/publish: %d %s", r.status, r.raw)
	}
	if m := nextMessage(t, c); m["data"] != "hello from admin" {
		t.Fatalf("subscriber got %v", m)
	}
	ch := apiCall(t, http.MethodGet, base+"/admin/channels", "", "Authorization", "Bearer admin-secret")
	if ch.status != http.StatusOK || !strings.Contains(ch.raw, `{"channel":"room","subscribers":1}`) || strings.Contains(ch.raw, "herald-admin") {
		t.Fatalf("/admin/channels: %d %s", ch.status, ch.raw)
	}
}

// On a shared broker the admin stream of any node carries every node's
// snapshots: the page shows the whole cluster.
func TestAdminShowsEveryNodeOnRedis(t *testing.T) {
	t.Parallel()
	newBroker := redisBrokers(t)
	var bases []string
	for range 2 {
		_, hs := heraldtest.NewServer(t, herald.Config{Broker: newBroker(), AdminToken: "admin-secret"})
		bases = append(bases, hs.URL)
	}
	s := openSSE(t, nil, bases[0]+"/admin/stream?token=admin-secret", nil)
	nodes := map[string]bool{}
	for len(nodes) < 2 {
		ev := s.next()
		if ev.Event != "node" {
			continue
		}
		var st struct{ Node string }
		if err := json.Unmarshal([]byte(ev.Data), &st); err != nil {
			t.Fatal(err)
		}
		nodes[st.Node] = true
	}
}

// The herald-admin namespace carries the nodes' own snapshots: the server
// API, like clients and the admin page's publish form, cannot publish
// there, or forged numbers would show on the admin page.
func TestAPICannotPublishToAdminNamespace(t *testing.T) {
	t.Parallel()
	srv, base := newServer(t, herald.Config{AdminToken: "admin-secret"})
	_, keyBase := newServer(t, herald.Config{AdminToken: "admin-secret", APIKey: "k"})
	s := openSSE(t, nil, base+"/admin/stream?token=admin-secret", nil)
	s.next() // the opening block
	for _, ch := range []string{"herald-admin:nodes", "herald-admin:other"} {
		body := `{"channel":"` + ch + `","data":{"node":"forged","connections":1e9},"event":"node"}`
		r := apiCall(t, http.MethodPost, base+"/api/publish", body)
		wantAPIError(t, r, http.StatusForbidden, "forbidden")
		if !strings.Contains(r.raw, "herald-admin") {
			t.Errorf("refusal %s does not name the namespace", r.raw)
		}
		wantAPIError(t, apiCall(t, http.MethodPost, keyBase+"/api/publish", body, "Authorization", "Bearer k"), http.StatusForbidden, "forbidden")
		if _, err := srv.Publish(t.Context(), ch, map[string]any{"node": "forged"}); err == nil {
			t.Errorf("Server.Publish to %s went through", ch)
		} else if e, ok := err.(*herald.Error); !ok || e.Code != herald.CodeForbidden {
			t.Errorf("Server.Publish to %s: %v, want forbidden", ch, err)
		}
	}
	// A forged snapshot would have come before the next real one.
	for range 2 {
		if ev := s.next(); strings.Contains(ev.Data, "forged") {
			t.Fatalf("the admin stream carried a forged snapshot: %+v", ev)
		}
	}
}
