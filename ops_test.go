package herald_test

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/coder/websocket"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/heraldtest"
	"github.com/heraldhq/herald/internal/logtest"
)

func TestHealthz(t *testing.T) {
	t.Parallel()
	_, base := newServer(t, herald.Config{})
	resp, err := http.Get(base + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(body)) != "ok" {
		t.Fatalf("/healthz: %d %q, want 200 ok", resp.StatusCode, body)
	}
	if status, body := ready(t, base); status != http.StatusOK || strings.TrimSpace(body) != "ok" {
		t.Fatalf("/readyz: %d %q, want 200 ok", status, body)
	}
}

// ready returns the status and body of /readyz.
func ready(t *testing.T, base string) (int, string) {
	t.Helper()
	resp, err := http.Get(base + "/readyz")
	if err != nil {
		t.Fatalf("GET /readyz: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func TestMetricsMove(t *testing.T) {
	t.Parallel()
	_, base := newServer(t, herald.Config{})
	const (
		wsConns  = `herald_connections{transport="ws"}`
		rawConns = `herald_connections{transport="raw"}`
		inClient = `herald_messages_in_total{source="client"}`
		inServer = `herald_messages_in_total{source="server"}`
		out      = `herald_messages_out_total`
	)
	text := func() string {
		resp, err := http.Get(base + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
			t.Errorf("/metrics Content-Type %q, want the text format", ct)
		}
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	for _, name := range []string{"herald_connections", "herald_messages_in_total", "herald_messages_out_total", "herald_slow_consumer_disconnects_total"} {
		if !strings.Contains(text(), "# TYPE "+name+" ") {
			t.Errorf("/metrics does not describe %s", name)
		}
	}
	before := scrape(t, base)
	// Every series exists from the start, at zero.
	for _, series := range []string{wsConns, rawConns, inClient, inServer, out, "herald_slow_consumer_disconnects_total"} {
		if v, ok := before[series]; !ok || v != 0 {
			t.Errorf("fresh server: %s = %v (present %v), want 0", series, v, ok)
		}
	}

	a, b := dial(t, base), dial(t, base)
	r := dialRaw(t, base, "m")
	heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
		m := scrape(t, base)
		ws, raw := m[wsConns]-before[wsConns], m[rawConns]-before[rawConns]
		if ws != 2 || raw != 1 {
			return fmt.Errorf("connections opened: ws %v, raw %v; want ws 2, raw 1", ws, raw)
		}
		return nil
	})

	b.MustOK(map[string]any{"op": "subscribe", "channel": "m"})
	waitPresent(t, b, "m", 2)
	for range 3 {
		publish(t, a, "m", "x")
	}
	for range 3 {
		nextMessage(t, b)
		r.nextText()
	}
	// 3 messages in from a client; out: 3 to b and 3 to the raw client.
	// Replies are not messages.
	heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
		m := scrape(t, base)
		in, sent := m[inClient]-before[inClient], m[out]-before[out]
		if in != 3 || sent != 6 {
			return fmt.Errorf("%s moved by %v, %s by %v; want 3 and 6", inClient, in, out, sent)
		}
		return nil
	})
	if m := scrape(t, base); m[inServer] != before[inServer] {
		t.Errorf("%s moved without a server publish: %v → %v", inServer, before[inServer], m[inServer])
	}
	// Each of the 6 deliveries has its latency observed; the broker saw 3
	// publishes; one channel has subscribers; bytes moved both ways.
	heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
		const latencies = "herald_delivery_latency_seconds_count"
		if got := scrape(t, base)[latencies] - before[latencies]; got != 6 {
			return fmt.Errorf("%s moved by %v, want 6", latencies, got)
		}
		return nil
	})
	m := scrape(t, base)
	if got := m[`herald_broker_operations_total{op="publish"}`] - before[`herald_broker_operations_total{op="publish"}`]; got != 3 {
		t.Errorf("broker publish operations: %v, want 3", got)
	}
	if got := m[`herald_broker_operation_seconds_count{op="publish"}`]; got < 3 {
		t.Errorf("broker publish latencies observed: %v, want at least 3", got)
	}
	if m["herald_channels"] != 1 {
		t.Errorf("herald_channels = %v, want 1", m["herald_channels"])
	}
	for _, series := range []string{`herald_bytes_in_total{transport="ws"}`, `herald_bytes_out_total{transport="ws"}`} {
		if m[series] <= before[series] {
			t.Errorf("%s did not move: %v → %v", series, before[series], m[series])
		}
	}

	_ = a.Conn.Close(websocket.StatusNormalClosure, "")
	_ = r.Conn.Close(websocket.StatusNormalClosure, "")
	heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
		m := scrape(t, base)
		ws, raw := m[wsConns]-before[wsConns], m[rawConns]-before[rawConns]
		if ws != 1 || raw != 0 {
			return fmt.Errorf("connections still open after two closed: ws %v, raw %v; want ws 1, raw 0", ws, raw)
		}
		return nil
	})
}

// refusals returns the attributes of every "refused" line logged at info,
// one map per line.
func refusals(h *logtest.Recorder) []map[string]string {
	var out []map[string]string
	for _, r := range h.Records() {
		if r.Message == "refused" && r.Level == slog.LevelInfo {
			out = append(out, logtest.Attrs(r))
		}
	}
	return out
}

// refusalReasons returns the reason of every "refused" line logged at info.
func refusalReasons(h *logtest.Recorder) []string {
	var out []string
	for _, a := range refusals(h) {
		out = append(out, a["reason"])
	}
	return out
}

// Every refusal is one info line with its reason; messages log nothing.
func TestRefusalsAreLogged(t *testing.T) {
	t.Parallel()
	h := logtest.New()
	_, base := newServer(t, herald.Config{Logger: h.Logger(), TokenSecret: tokenSecret, AllowAnonymous: true, MaxSubscriptions: 1})
	dialStatusHeader(t, heraldtest.WSURL(base, "/ws"), http.Header{"Origin": {"https://evil.example"}})
	dialStatus(t, wsWithToken(base, "bad.token.here"))
	c := dial(t, base)
	c.MustOK(map[string]any{"op": "subscribe", "channel": "a"})
	c.Call(map[string]any{"op": "subscribe", "channel": "b"}, nil)
	for range 5 {
		publish(t, c, "a", "x")
	}
	want := []string{"origin", "unauthorized", "subscription_limit"}
	heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
		if got := refusalReasons(h); len(got) < len(want) {
			return fmt.Errorf("refusals logged %v, want at least %d", got, len(want))
		}
		return nil
	})
	if got := refusalReasons(h); !slices.Equal(got, want) {
		t.Fatalf("refusals logged %v, want %v", got, want)
	}
	for _, r := range h.Records() {
		if r.Level >= slog.LevelInfo && r.Message != "refused" {
			t.Errorf("unexpected info line: %s", r.Message)
		}
	}
}

// A refusal for the origin names the Origin header and the host it was
// not the same as, for WebSocket, SSE and SSE's preflight alike: the
// operator sees what to add to --origins.
func TestOriginRefusalNamesOrigin(t *testing.T) {
	t.Parallel()
	h := logtest.New()
	_, base := newServer(t, herald.Config{Logger: h.Logger(), Origins: []string{"https://app.example"}})
	host := strings.TrimPrefix(base, "http://")
	dialStatusHeader(t, heraldtest.WSURL(base, "/ws"), http.Header{"Origin": {"https://ws.example"}})
	for method, origin := range map[string]string{http.MethodGet: "https://sse.example", http.MethodOptions: "https://preflight.example"} {
		resp := apiCall(t, method, base+"/sse?channel=a", "", "Origin", origin)
		if resp.status != http.StatusForbidden {
			t.Fatalf("%s /sse from %s: %d %s, want 403", method, origin, resp.status, resp.raw)
		}
	}
	var got []string
	for _, a := range refusals(h) {
		if a["reason"] != "origin" {
			continue
		}
		if a["host"] != host {
			t.Errorf("refusal of %s logged host %q, want %q", a["origin"], a["host"], host)
		}
		got = append(got, a["origin"])
	}
	slices.Sort(got)
	if want := []string{"https://preflight.example", "https://sse.example", "https://ws.example"}; !slices.Equal(got, want) {
		t.Fatalf("origin refusals logged with origins %q, want %q", got, want)
	}
}
