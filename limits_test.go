package herald_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/heraldtest"
)

// The Config's per-connection limits reach every connection's session
// (internal/session pins their rules: bursts, refill, what each one
// counts), and the refusals show in the server's metrics. An SSE stream
// of more channels than MaxSubscriptions is refused with 429.
func TestLimitsReachTheSession(t *testing.T) {
	t.Parallel()
	_, base := newServer(t, herald.Config{PublishRate: 1, PublishBurst: 1, CommandRate: 1, CommandBurst: 2, MaxSubscriptions: 1})
	c := dial(t, base)
	c.MustOK(map[string]any{"op": "publish", "channel": "r", "data": 1})
	refused := func(cmd map[string]any, want string) {
		t.Helper()
		r := c.Call(cmd, nil)
		if heraldtest.ErrorCode(r) != "rate_limited" || !strings.Contains(errorMessage(r), want) {
			t.Fatalf("%v: %v, want rate_limited naming %q", cmd, r, want)
		}
	}
	refused(map[string]any{"op": "publish", "channel": "r", "data": 2}, "publish rate limit")
	c.MustOK(map[string]any{"op": "subscribe", "channel": "a"})
	refused(map[string]any{"op": "subscribe", "channel": "b"}, "at most 1")
	refused(map[string]any{"op": "ping"}, "command rate limit")
	if got := metric(t, base, `herald_refusals_total{reason="rate_limited"}`); got != 2 {
		t.Errorf("rate_limited counted %v, want 2", got)
	}
	if got := metric(t, base, `herald_refusals_total{reason="subscription_limit"}`); got != 1 {
		t.Errorf("subscription_limit counted %v, want 1", got)
	}

	// Raw mode has no error replies: a raw client over its rate is closed
	// with 1008.
	r := dialRaw(t, base, "rr")
	for i := range 10 {
		if err := r.Conn.Write(t.Context(), websocket.MessageText, fmt.Appendf(nil, "m%d", i)); err != nil {
			break // closed already
		}
	}
	if code := r.closed(); code != websocket.StatusPolicyViolation {
		t.Fatalf("raw flood closed with %v, want 1008", code)
	}

	resp, cancel := getSSE(t, nil, base+"/sse?channel=a&channel=b", nil)
	defer cancel()
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("SSE stream of 2 channels: %s, want 429", resp.Status)
	}
}

// Past MaxConnections, WebSocket and SSE are refused with 503 before the
// upgrade; a closed connection frees its place.
func TestConnectionLimit(t *testing.T) {
	t.Parallel()
	_, base := newServer(t, herald.Config{MaxConnections: 2})
	a := dial(t, base)
	s := openSSE(t, nil, base+"/sse?channel=x", nil)
	if status, body := dialStatus(t, heraldtest.WSURL(base, "/ws")); status != http.StatusServiceUnavailable || !strings.Contains(body, "connection limit") {
		t.Fatalf("third connection: %d %s, want 503", status, body)
	}
	resp, cancel := getSSE(t, nil, base+"/sse?channel=x", nil)
	cancel()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("third connection over SSE: %s, want 503", resp.Status)
	}
	if got := metric(t, base, `herald_refusals_total{reason="connection_limit"}`); got != 2 {
		t.Errorf("connection_limit counted %v, want 2", got)
	}
	s.Close()
	_ = a.Conn.CloseNow()
	heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
		status, body := dialStatus(t, heraldtest.WSURL(base, "/ws"))
		if status != http.StatusSwitchingProtocols {
			return fmt.Errorf("dial after the others closed: status %d %q, want 101", status, body)
		}
		return nil
	})
}

func TestConnectionLimitPerAddress(t *testing.T) {
	t.Parallel()
	_, base := newServer(t, herald.Config{MaxConnectionsPerIP: 2})
	dial(t, base)
	dial(t, base)
	if status, body := dialStatus(t, heraldtest.WSURL(base, "/ws")); status != http.StatusTooManyRequests || !strings.Contains(body, "too many connections from this address") {
		t.Fatalf("third connection from one address: %d %s, want 429", status, body)
	}
	if got := metric(t, base, `herald_refusals_total{reason="ip_limit"}`); got != 1 {
		t.Errorf("ip_limit counted %v, want 1", got)
	}
}

// WebSocket checks Origin like SSE and the API: a page of another site is
// refused before the upgrade (cross-site WebSocket hijacking), the
// server's own pages and listed origins are let in.
func TestWebSocketOrigin(t *testing.T) {
	t.Parallel()
	_, base := newServer(t, herald.Config{Origins: []string{"https://app.example"}})
	host := strings.TrimPrefix(base, "http://")
	for origin, want := range map[string]int{
		"https://evil.example": http.StatusForbidden,
		"https://app.example":  http.StatusSwitchingProtocols,
		"http://" + host:       http.StatusSwitchingProtocols,
	} {
		for _, u := range []string{heraldtest.WSURL(base, "/ws"), rawURL(base, "o")} {
			if status, body := dialStatusHeader(t, u, http.Header{"Origin": {origin}}); status != want {
				t.Errorf("%s from %s: %d %s, want %d", u, origin, status, body, want)
			}
		}
	}
	if got := metric(t, base, `herald_refusals_total{reason="origin"}`); got != 2 {
		t.Errorf("origin refusals counted %v, want 2", got)
	}
}

// Namespace rules: who may publish and subscribe where.
func TestNamespaceRules(t *testing.T) {
	t.Parallel()
	_, base := newServer(t, herald.Config{
		TokenSecret:    tokenSecret,
		AllowAnonymous: true,
		Namespaces: map[string]herald.Namespace{
			"news":    {NoClientPublish: true},
			"members": {NoAnonymousSubscribe: true, NoAnonymousPublish: true},
			"board":   {NoAnonymousPublish: true},
		},
	})
	anon := dial(t, base)
	ann := heraldtest.Dial(t, wsWithToken(base, mint(t, "ann", time.Hour, nil)))
	check := func(c *heraldtest.Client, who string, cmd map[string]any, want string) {
		t.Helper()
		r := c.Call(cmd, nil)
		got := "ok"
		if r["ok"] != true {
			got = heraldtest.ErrorCode(r)
		}
		if got != want {
			t.Errorf("%s %v: %v, want %s", who, cmd, r, want)
		}
	}
	pub := func(ch string) map[string]any { return map[string]any{"op": "publish", "channel": ch, "data": 1} }
	sub := func(ch string) map[string]any { return map[string]any{"op": "subscribe", "channel": ch} }
	hist := func(ch string) map[string]any { return map[string]any{"op": "history", "channel": ch} }

	check(anon, "anonymous", sub("news:today"), "ok")
	check(anon, "anonymous", pub("news:today"), "forbidden")
	check(ann, "ann", pub("news:today"), "forbidden")
	check(anon, "anonymous", sub("members:x"), "forbidden")
	check(anon, "anonymous", hist("members:x"), "forbidden")
	check(anon, "anonymous", pub("members:x"), "forbidden")
	check(ann, "ann", sub("members:x"), "ok")
	check(ann, "ann", pub("members:x"), "ok")
	check(anon, "anonymous", sub("board:x"), "ok")
	check(anon, "anonymous", pub("board:x"), "forbidden")
	check(ann, "ann", pub("board:x"), "ok")
	check(anon, "anonymous", pub("other"), "ok")

	// The server API still publishes where clients may not.
	apiPublish(t, base, `{"channel":"news:today","data":"from the backend"}`)
	if m := nextMessage(t, anon); m["data"] != "from the backend" {
		t.Fatalf("news subscriber got %v", m)
	}
}
