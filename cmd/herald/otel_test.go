package main

import (
	"context"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/heraldhq/herald/heraldtest"
)

// collector is an OTLP/HTTP trace receiver that keeps the spans' names
// and trace ids.
type collector struct {
	mu    sync.Mutex
	spans map[string]string // name → trace id (hex)
}

func (c *collector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var req coltrace.ExportTraceServiceRequest
	if r.URL.Path != "/v1/traces" || proto.Unmarshal(body, &req) != nil {
		http.Error(w, "bad export", http.StatusBadRequest)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				c.spans[s.Name] = hex.EncodeToString(s.TraceId)
			}
		}
	}
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(nil)
}

func (c *collector) traceOf(name string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.spans[name]
}

// herald serve --otel-endpoint sends its spans to an OTLP collector, and
// what it still holds when it stops.
func TestServeSendsTraces(t *testing.T) {
	col := &collector{spans: map[string]string{}}
	hs := httptest.NewServer(col)
	defer hs.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--addr", addr, "--otel-endpoint", hs.URL}, nil, io.Discard, io.Discard)
	}()
	waitHealthy(t, addr)
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/api/publish", strings.NewReader(`{"channel":"otel","data":1}`))
	req.Header.Set("Traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve: %v", err)
		}
	case <-time.After(heraldtest.Timeout):
		t.Fatal("serve did not stop")
	}
	if got := col.traceOf("publish otel"); got != "0af7651916cd43dd8448eb211c80319c" {
		t.Fatalf("the collector got the publish span in trace %q, want the caller's", got)
	}
}

// Without an endpoint, flag or OTEL_EXPORTER_OTLP_ENDPOINT, there is no
// tracing; a bad one is refused before anything starts.
func TestTracingOffByDefault(t *testing.T) {
	t.Parallel()
	tp, err := newTracerProvider(context.Background(), "", "--otel-endpoint", map[string]string{}, nil)
	if tp != nil || err != nil {
		t.Fatalf("tracing on without an endpoint: %v, %v", tp, err)
	}
	tp, err = newTracerProvider(context.Background(), "", "--otel-endpoint", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}, nil)
	if tp == nil || err != nil {
		t.Fatalf("OTEL_EXPORTER_OTLP_ENDPOINT did not turn tracing on: %v", err)
	}
	_ = tp.Shutdown(context.Background())
	err = run(context.Background(), []string{"--addr", "127.0.0.1:0", "--otel-endpoint", "collector:4318"}, nil, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "--otel-endpoint") {
		t.Fatalf("a bad --otel-endpoint: %v", err)
	}
}
