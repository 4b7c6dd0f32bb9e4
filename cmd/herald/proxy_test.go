package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/heraldtest"
)

// The proxy flags: their defaults, and URLs checked before anything starts.
func TestProxySettings(t *testing.T) {
	t.Parallel()
	d, err := loadSettings(nil, nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if d.proxy.Connect != "" || d.proxy.Timeout != 2*time.Second || !slices.Equal(d.proxy.Headers, []string{"Cookie", "Authorization", "X-Request-Id"}) {
		t.Fatalf("proxy defaults %+v, want no proxy, a 2s timeout and Cookie, Authorization, X-Request-Id", d.proxy)
	}
	s, err := loadSettings([]string{"--proxy-connect", "http://app/c", "--proxy-headers", "Cookie,X-Tenant", "--proxy-timeout", "500ms"},
		[]string{"HERALD_PROXY_RPC=https://app/rpc"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if p := s.proxy; p.Connect != "http://app/c" || p.RPC != "https://app/rpc" || p.Timeout != 500*time.Millisecond || !slices.Equal(p.Headers, []string{"Cookie", "X-Tenant"}) {
		t.Fatalf("proxy settings %+v", p)
	}
	var out strings.Builder
	if err := run(context.Background(), []string{"config", "--proxy-publish", "https://herald:s3cret@app/publish"}, nil, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "s3cret") || !strings.Contains(out.String(), "proxy-publish: https://herald:xxxxx@app/publish # --proxy-publish") {
		t.Fatalf("herald config shows the proxy URL as\n%s\nwant its password masked", out.String())
	}
	for _, flag := range []string{"--proxy-connect", "--proxy-subscribe", "--proxy-publish", "--proxy-rpc", "--proxy-refresh"} {
		if _, err := loadSettings([]string{flag, "app:3000/x"}, nil, io.Discard); err == nil || !strings.Contains(err.Error(), flag) {
			t.Errorf("%s without a scheme: %v, want an error naming the flag", flag, err)
		}
	}
}

// herald serve asks the application named by the proxy flags.
func TestServeProxies(t *testing.T) {
	t.Parallel()
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body map[string]any
		_ = json.NewDecoder(r.Body).Decode(&body)
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/connect":
			c, err := r.Cookie("session")
			if err != nil {
				_, _ = w.Write([]byte(`{"error":{"code":"unauthorized","message":"sign in"}}`))
				return
			}
			_ = json.NewEncoder(w).Encode(map[string]any{"result": map[string]any{"user": c.Value}})
		case "/rpc":
			_ = json.NewEncoder(w).Encode(map[string]any{"result": map[string]any{"data": map[string]any{"hello": body["user"]}}})
		}
	}))
	defer app.Close()
	addr, stop := serveInBackground(t, "--proxy-connect", app.URL+"/connect", "--proxy-rpc", app.URL+"/rpc")
	defer func() {
		if err := stop(); err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	c := heraldtest.DialHeader(t, "ws://"+addr+"/ws", http.Header{"Cookie": {"session=ann"}})
	if c.Welcome["user"] != "ann" {
		t.Fatalf("welcome %v, want the app's user", c.Welcome)
	}
	r := c.MustOK(map[string]any{"op": "rpc", "method": "hi"})
	if d, _ := r["data"].(map[string]any); d["hello"] != "ann" {
		t.Fatalf("rpc reply %v, want the app's data", r)
	}
	resp, err := http.Get("http://" + addr + "/sse?channel=news")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("SSE without a session: HTTP %d, want the app's 401", resp.StatusCode)
	}
}
