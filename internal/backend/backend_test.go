package backend

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/heraldhq/herald"
)

// The proxies' behaviour is tested through real HTTP from the herald
// package (ask_test.go, proxy_test.go); this is what New checks.
func TestNewChecksConfig(t *testing.T) {
	t.Parallel()
	for _, cfg := range []Config{
		{Connect: "localhost:3000/connect"},
		{Subscribe: "ftp://app/subscribe"},
		{RPC: "http:///rpc"},
		{Refresh: "http://app/refresh", Timeout: -time.Second},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) succeeded, want an error", cfg)
		}
	}
	p, err := New(Config{Connect: "http://127.0.0.1:3000/connect", Publish: "https://app.example/publish"})
	if err != nil {
		t.Fatal(err)
	}
	h := p.Hooks()
	if h.Connect == nil || h.AuthorizePublish == nil || h.AuthorizeSubscribe != nil || h.RPC != nil || h.Refresh != nil {
		t.Fatalf("Hooks() = %+v, want only Connect and AuthorizePublish", h)
	}
	if p.cfg.Timeout != DefaultTimeout {
		t.Fatalf("Timeout %v, want the default %v", p.cfg.Timeout, DefaultTimeout)
	}
}

func TestUnixTime(t *testing.T) {
	t.Parallel()
	if !unixTime(0).IsZero() || !unixTime(-5).IsZero() {
		t.Fatal("0 and negative expire_at must mean never")
	}
	if got := unixTime(1700000000.5); !got.Equal(time.Unix(1700000000, 5e8)) {
		t.Fatalf("unixTime(1700000000.5) = %v", got)
	}
}

// BenchmarkConnect is one connect proxy call over loopback HTTP to an
// application that answers at once: the herald side and the application
// side together, in one process.
func BenchmarkConnect(b *testing.B) {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = w.Write([]byte(`{"result":{"user":"bench"}}`))
	}))
	defer app.Close()
	p, err := New(Config{Connect: app.URL + "/connect", Headers: []string{"Cookie", "Authorization", "X-Request-Id"}})
	if err != nil {
		b.Fatal(err)
	}
	r := httptest.NewRequest(http.MethodGet, "http://herald.example/ws", nil)
	r.Header.Set("Cookie", "session=abc")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.connect(context.Background(), herald.ConnectRequest{Request: r, Client: "N-1", Transport: herald.TransportWebSocket}); err != nil {
			b.Fatal(err)
		}
	}
}
