package backend

import (
	"testing"
	"time"
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
