package herald_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/heraldtest"
	"github.com/heraldhq/herald/internal/protocol"
)

// The server's SSE settings reach the transport (internal/transport/sse
// pins the stream's headers, its opening block and heartbeats), the
// opening id starts the stream's channels at the zero offset, and the
// stream shows in the metrics while it is open.
func TestSSEHeadersAndRetry(t *testing.T) {
	t.Parallel()
	_, base := newServer(t, herald.Config{SSERetry: 1500 * time.Millisecond, SSEHeartbeat: 50 * time.Millisecond})
	s := openSSE(t, nil, base+"/sse?channel=news", nil)
	if got := s.Resp.Header.Get("Content-Type"); got != "text/event-stream; charset=utf-8" {
		t.Errorf("Content-Type: %q", got)
	}
	ev := s.next()
	if ev.Retry != "1500" || !ev.HasID || ev.Data != "" {
		t.Fatalf("opening block %+v, want retry: 1500 and an id without data", ev)
	}
	if c, err := protocol.ParseSSECursor(ev.ID); err != nil || len(c) != 1 || c[0].Channel != "news" || !c[0].Offset.IsZero() {
		t.Fatalf("opening id %q: %v %v, want news at the zero offset", ev.ID, c, err)
	}
	if ev := s.next(); ev.Comment != "ping" {
		t.Fatalf("got %+v on an idle stream, want a heartbeat", ev)
	}
	if got := metric(t, base, `herald_connections{transport="sse"}`); got != 1 {
		t.Fatalf("herald_connections{transport=\"sse\"} = %v, want 1", got)
	}
	if got := metric(t, base, `herald_bytes_out_total{transport="sse"}`); got < float64(len("retry: 1500\n")) {
		t.Fatalf("herald_bytes_out_total{transport=\"sse\"} = %v after the opening block", got)
	}
	s.Close()
	heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
		if got := metric(t, base, `herald_connections{transport="sse"}`); got != 0 {
			return fmt.Errorf("%v SSE connections open after the stream closed, want 0", got)
		}
		return nil
	})
}

func TestSSEEvents(t *testing.T) {
	t.Parallel()
	srv, base := newServer(t, herald.Config{})
	s := openSSE(t, nil, base+"/sse?channel=news&channel=chat:a", nil)
	ctx := context.Background()
	tests := []struct {
		channel string
		data    any
		opts    []herald.PublishOption
		event   string
		want    string
	}{
		{"news", "plain", nil, "message", "plain"},
		{"news", "one\ntwo\r\nthree\rfour\n", nil, "message", "one\ntwo\nthree\nfour\n"},
		{"chat:a", "", nil, "message", ""},
		{"chat:a", "  leading spaces", nil, "message", "  leading spaces"},
		{"news", map[string]any{"a": 1, "b": []any{"x\ny", nil}}, nil, "message", `{"a":1,"b":["x\ny",null]}`},
		{"news", json.RawMessage("{\n  \"k\" : [1,\r\n 2]\n}"), nil, "message", `{"k":[1,2]}`},
		{"news", 42.5, []herald.PublishOption{herald.WithEvent("score")}, "score", "42.5"},
		{"chat:a", true, []herald.PublishOption{herald.WithEvent("a\nb")}, "a b", "true"},
	}
	positions := map[string]string{}
	for _, tt := range tests {
		off, err := srv.Publish(ctx, tt.channel, tt.data, tt.opts...)
		if err != nil {
			t.Fatal(err)
		}
		positions[tt.channel] = off
		ev := s.nextEvent()
		if ev.Event != tt.event || ev.Data != tt.want {
			t.Fatalf("published %#v: got event %q data %q, want %q %q", tt.data, ev.Event, ev.Data, tt.event, tt.want)
		}
		// The id covers both channels: each one's latest offset.
		cur, err := protocol.ParseSSECursor(ev.ID)
		if err != nil {
			t.Fatalf("id %q: %v", ev.ID, err)
		}
		got := map[string]string{}
		for _, p := range cur {
			got[p.Channel] = p.Offset.String()
		}
		if len(cur) != 2 || got["news"] != positions["news"] || got["chat:a"] != positions["chat:a"] {
			t.Fatalf("id %q holds %v, want %v", ev.ID, got, positions)
		}
	}

	// A binary publish in raw mode arrives as herald.binary in base64.
	r := dialRaw(t, base, "news")
	r.send(websocket.MessageBinary, "\x00\x01bin\xff")
	ev := s.nextEvent()
	if ev.Event != protocol.SSEEventBinary || ev.Data != base64.StdEncoding.EncodeToString([]byte("\x00\x01bin\xff")) {
		t.Fatalf("binary publish arrived as %+v", ev)
	}
}

func TestSSECORS(t *testing.T) {
	t.Parallel()
	_, base := newServer(t, herald.Config{Origins: []string{"https://app.example"}})
	_, anyBase := newServer(t, herald.Config{Origins: []string{"*"}})
	u, _ := url.Parse(base)

	do := func(method, u, origin string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(method, u, nil)
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		if method == http.MethodOptions {
			req.Header.Set("Access-Control-Request-Method", "GET")
			req.Header.Set("Access-Control-Request-Headers", "last-event-id")
		}
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		resp, err := http.DefaultClient.Do(req.WithContext(ctx))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	tests := []struct {
		name, method, base, origin string
		status                     int
		allow                      string
	}{
		{"preflight allowed", http.MethodOptions, base, "https://app.example", 204, "https://app.example"},
		{"preflight any", http.MethodOptions, anyBase, "https://else.example", 204, "https://else.example"},
		{"preflight disallowed", http.MethodOptions, base, "https://evil.example", 403, ""},
		{"stream allowed", http.MethodGet, base, "https://app.example", 200, "https://app.example"},
		{"stream any", http.MethodGet, anyBase, "https://else.example", 200, "https://else.example"},
		{"stream disallowed", http.MethodGet, base, "https://evil.example", 403, ""},
		{"stream same host", http.MethodGet, base, "http://" + u.Host, 200, ""},
		{"stream without origin", http.MethodGet, base, "", 200, ""},
	}
	for _, tt := range tests {
		resp := do(tt.method, tt.base+"/sse?channel=a", tt.origin)
		if resp.StatusCode != tt.status {
			t.Errorf("%s: status %d, want %d", tt.name, resp.StatusCode, tt.status)
		}
		if got := resp.Header.Get("Access-Control-Allow-Origin"); got != tt.allow {
			t.Errorf("%s: Access-Control-Allow-Origin %q, want %q", tt.name, got, tt.allow)
		}
		if got := resp.Header.Get("Vary"); got != "Origin" {
			t.Errorf("%s: Vary %q, want Origin", tt.name, got)
		}
		if tt.status == 403 && httpError(t, resp) != "forbidden" {
			t.Errorf("%s: error code is not forbidden", tt.name)
		}
		if tt.method == http.MethodOptions && tt.status == 204 {
			if m := resp.Header.Get("Access-Control-Allow-Methods"); !strings.Contains(m, "GET") {
				t.Errorf("%s: Access-Control-Allow-Methods %q", tt.name, m)
			}
			if h := resp.Header.Get("Access-Control-Allow-Headers"); !strings.Contains(strings.ToLower(h), "last-event-id") {
				t.Errorf("%s: Access-Control-Allow-Headers %q", tt.name, h)
			}
		}
	}
}

func TestSSEOverHTTP2(t *testing.T) {
	t.Parallel()
	srv, hs := newUnstartedServer(t, herald.Config{})
	hs.EnableHTTP2 = true
	hs.StartTLS()
	client := hs.Client()
	client.Transport.(*http.Transport).ForceAttemptHTTP2 = true

	s := openSSE(t, client, hs.URL+"/sse?channel=h2", nil)
	if s.Resp.ProtoMajor != 2 {
		t.Fatalf("protocol %s, want HTTP/2", s.Resp.Proto)
	}
	if ev := s.next(); ev.Retry == "" {
		t.Fatalf("first line %+v, want retry", ev)
	}
	for i := 0; i < 3; i++ {
		if _, err := srv.Publish(context.Background(), "h2", "line 1\nline 2"); err != nil {
			t.Fatal(err)
		}
		if ev := s.nextEvent(); ev.Data != "line 1\nline 2" || ev.ID == "" {
			t.Fatalf("got %+v", ev)
		}
	}
	// Resume over HTTP/2 too.
	if _, err := srv.Publish(context.Background(), "h2", "after"); err != nil {
		t.Fatal(err)
	}
	last := s.nextEvent().ID
	s.Close()
	if _, err := srv.Publish(context.Background(), "h2", "missed"); err != nil {
		t.Fatal(err)
	}
	s2 := openSSE(t, client, hs.URL+"/sse?channel=h2", http.Header{"Last-Event-Id": {last}})
	if ev := s2.nextEvent(); ev.Data != "missed" {
		t.Fatalf("resumed with %+v, want the missed message", ev)
	}
	// Shutdown ends HTTP/2 streams too.
	ctx, cancel := context.WithTimeout(context.Background(), heraldtest.Timeout)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	s2.ended()
}

func TestSSERefusals(t *testing.T) {
	t.Parallel()
	_, base := newServer(t, herald.Config{Hooks: herald.Hooks{
		AuthorizeSubscribe: func(_ context.Context, _ herald.Client, channel string) error {
			if strings.HasPrefix(channel, "secret") {
				return herald.Errorf(herald.CodeForbidden, "not yours")
			}
			return nil
		},
	}})
	many := "channel=a"
	for i := 0; i < protocol.MaxSSEChannels; i++ {
		many += "&channel=c" + string(rune('a'+i%26)) + string(rune('a'+i/26))
	}
	tests := []struct {
		name, query string
		header      http.Header
		status      int
		code        string
	}{
		{"no channel", "", nil, 400, "bad_request"},
		{"bad channel", "channel=a&channel=b%20c", nil, 400, "bad_request"},
		{"too many channels", many, nil, 400, "bad_request"},
		{"bad cursor header", "channel=a", http.Header{"Last-Event-Id": {"nonsense"}}, 400, "bad_request"},
		{"bad cursor query", "channel=a&lastEventId=1!!", nil, 400, "bad_request"},
		{"forbidden channel", "channel=a&channel=secret:x", nil, 403, "forbidden"},
	}
	for _, tt := range tests {
		resp, cancel := getSSE(t, nil, base+"/sse?"+tt.query, tt.header)
		if resp.StatusCode != tt.status {
			t.Errorf("%s: status %d, want %d", tt.name, resp.StatusCode, tt.status)
		} else if code := httpError(t, resp); code != tt.code {
			t.Errorf("%s: code %q, want %q", tt.name, code, tt.code)
		}
		cancel()
	}
	// 32 channels, a channel named twice, are fine.
	s := openSSE(t, nil, base+"/sse?"+strings.TrimPrefix(many, "channel=a&")+"&channel=caa", nil)
	s.next()
	// A refused stream left no subscription behind.
	if got := metric(t, base, "herald_subscriptions"); got != float64(protocol.MaxSSEChannels) {
		t.Fatalf("herald_subscriptions = %v, want %d", got, protocol.MaxSSEChannels)
	}
}

func TestSSEShutdownEndsStreams(t *testing.T) {
	t.Parallel()
	srv, base := newServer(t, herald.Config{})
	var streams []*sseStream
	for i := 0; i < 3; i++ {
		s := openSSE(t, nil, base+"/sse?channel=a&channel=b", nil)
		s.next()
		streams = append(streams, s)
	}
	ctx, cancel := context.WithTimeout(context.Background(), heraldtest.Timeout)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	for _, s := range streams {
		s.ended()
	}
	resp, done := getSSE(t, nil, base+"/sse?channel=a", nil)
	defer done()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("a stream opened while draining: %s, want 503", resp.Status)
	}
}

// TestSSEHTTPServerShutdown: http.Server.Shutdown ends SSE streams instead
// of waiting for them (they never finish by themselves).
func TestSSEHTTPServerShutdown(t *testing.T) {
	t.Parallel()
	srv, err := herald.New(herald.Config{Logger: panicWatcher(t)})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	s := openSSE(t, nil, hs.URL+"/sse?channel=a", nil)
	s.next()
	ctx, cancel := context.WithTimeout(context.Background(), heraldtest.Timeout)
	defer cancel()
	if err := hs.Config.Shutdown(ctx); err != nil {
		t.Fatalf("http.Server.Shutdown: %v", err)
	}
	s.ended()
	if err := srv.Shutdown(ctx); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	hs.Close()
}

// TestSSESlowConsumer: a stream whose reader stops reading is ended by the
// same bounded queue as a WebSocket session; a write stuck on the full
// socket gives up after WriteTimeout.
func TestSSESlowConsumer(t *testing.T) {
	t.Parallel()
	srv, base := newServer(t, herald.Config{QueueMessages: 8, QueueBytes: 1 << 20, WriteTimeout: 300 * time.Millisecond})
	u, _ := url.Parse(base)
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Ask for a stream, then never read it.
	if _, err := conn.Write([]byte("GET /sse?channel=slow HTTP/1.1\r\nHost: " + u.Host + "\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
		if got := metric(t, base, `herald_connections{transport="sse"}`); got != 1 {
			return fmt.Errorf("%v SSE connections open, want 1", got)
		}
		return nil
	})
	// The stream ends either as a slow consumer (its queue overflows) or
	// because a write blocked past WriteTimeout, whichever comes first on
	// a given machine: both are the same promise to everyone else.
	big := strings.Repeat("x", 64<<10)
	for i := 0; metric(t, base, `herald_connections{transport="sse"}`) != 0; i++ {
		if i == 500 {
			t.Fatal("the stream was not ended after 10,000 unread messages")
		}
		for range 20 {
			if _, err := srv.Publish(context.Background(), "slow", big); err != nil {
				t.Fatal(err)
			}
		}
	}
}
