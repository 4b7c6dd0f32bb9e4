package herald_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/memory"
)

func TestAPIErrors(t *testing.T) {
	t.Parallel()
	_, base := newServer(t, herald.Config{})
	cases := []struct {
		name, method, path, body string
		status                   int
		code                     string
	}{
		{"malformed JSON", "POST", "/api/publish", `{"channel":`, 400, "bad_request"},
		{"not an object", "POST", "/api/publish", `[1]`, 400, "bad_request"},
		{"empty body", "POST", "/api/publish", ``, 400, "bad_request"},
		{"trailing data", "POST", "/api/publish", `{"channel":"c","data":1} x`, 400, "bad_request"},
		{"no channel", "POST", "/api/publish", `{"data":1}`, 400, "bad_request"},
		{"bad channel", "POST", "/api/publish", `{"channel":"a b","data":1}`, 400, "bad_request"},
		{"no data", "POST", "/api/publish", `{"channel":"c"}`, 400, "bad_request"},
		{"event not a string", "POST", "/api/publish", `{"channel":"c","data":1,"event":5}`, 400, "bad_request"},
		{"bad channel in path", "GET", "/api/channels/a%20b/history", ``, 400, "bad_request"},
		{"slash in channel", "GET", "/api/channels/a%2Fb/presence", ``, 400, "bad_request"},
		{"negative limit", "GET", "/api/channels/c/history?limit=-1", ``, 400, "bad_request"},
		{"limit not a number", "GET", "/api/channels/c/history?limit=x", ``, 400, "bad_request"},
		{"bad since", "GET", "/api/channels/c/history?since=nope", ``, 400, "bad_request"},
		{"unknown path", "GET", "/api/nope", ``, 404, "not_found"},
		{"unknown channel path", "GET", "/api/channels/c/nope", ``, 404, "not_found"},
		{"too many segments", "GET", "/api/channels/c/history/x", ``, 404, "not_found"},
		{"GET publish", "GET", "/api/publish", ``, 405, "bad_request"},
		{"POST channels", "POST", "/api/channels", `{}`, 405, "bad_request"},
		{"POST history", "POST", "/api/channels/c/history", `{}`, 405, "bad_request"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := apiCall(t, tc.method, base+tc.path, tc.body)
			wantAPIError(t, r, tc.status, tc.code)
			if tc.status == 405 && !strings.Contains(r.header.Get("Allow"), map[string]string{"GET": "POST", "POST": "GET"}[tc.method]) {
				t.Errorf("405 with Allow %q", r.header.Get("Allow"))
			}
		})
	}
}

// Error messages are plain text: what is for people reads as it was
// written, with no \u003c for a "<".
func TestAPIErrorMessagesArePlain(t *testing.T) {
	t.Parallel()
	_, base := newServer(t, herald.Config{APIKey: "k"})
	r := apiCall(t, "POST", base+"/api/publish", `{"channel":"c","data":1}`)
	wantAPIError(t, r, http.StatusUnauthorized, "unauthorized")
	if want := `"message":"missing API key: send Authorization: Bearer <key>"`; !strings.Contains(r.raw, want) {
		t.Errorf("body %s, want it to hold %s", r.raw, want)
	}
	r = apiCall(t, "POST", base+"/api/publish", `{"channel":5,"data":1}`, "Authorization", "Bearer k")
	wantAPIError(t, r, http.StatusBadRequest, "bad_request")
	if want := `field "channel": want a string, got number`; r.body["error"].(map[string]any)["message"] != want {
		t.Errorf("body %s, want the message %s", r.raw, want)
	}
}

func TestAPIKey(t *testing.T) {
	t.Parallel()
	const key = "s3cret-key"
	_, base := newServer(t, herald.Config{APIKey: key})
	body := `{"channel":"k","data":1}`
	for _, auth := range []string{"", "Bearer", "Bearer ", "Bearer wrong", "Bearer " + key[:4], "Bearer " + key + "x", "Basic " + key, key} {
		r := apiCall(t, "POST", base+"/api/publish", body, "Authorization", auth)
		wantAPIError(t, r, http.StatusUnauthorized, "unauthorized")
		if !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("Authorization %q: WWW-Authenticate %q", auth, r.header.Get("WWW-Authenticate"))
		}
	}
	// Only Authorization carries the key.
	wantAPIError(t, apiCall(t, "POST", base+"/api/publish", body, "X-Api-Key", key), http.StatusUnauthorized, "unauthorized")
	wantAPIError(t, apiCall(t, "GET", base+"/api/channels", ""), http.StatusUnauthorized, "unauthorized")

	apiPublish(t, base, body, "Authorization", "Bearer "+key)
	apiPublish(t, base, body, "Authorization", "bearer "+key)
	if r := apiCall(t, "GET", base+"/api/channels/k/history", "", "Authorization", "Bearer "+key); r.status != http.StatusOK {
		t.Fatalf("history with the key: %d %s", r.status, r.raw)
	}
}

// TestAPINoKeyLoopbackOnly calls the handler directly, since a test
// server is always on loopback.
func TestAPINoKeyLoopbackOnly(t *testing.T) {
	t.Parallel()
	srv, _ := newServer(t, herald.Config{})
	h := srv.APIHandler()
	for addr, want := range map[string]int{
		"203.0.113.9:1234":     http.StatusUnauthorized,
		"[2001:db8::1]:1234":   http.StatusUnauthorized,
		"10.0.0.1:80":          http.StatusUnauthorized,
		"127.0.0.1:1234":       http.StatusOK,
		"127.9.9.9:1234":       http.StatusOK,
		"[::1]:1234":           http.StatusOK,
		"[::ffff:127.0.0.1]:1": http.StatusOK,
	} {
		req := httptest.NewRequest("GET", "http://localhost/api/channels", nil)
		req.RemoteAddr = addr
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != want {
			t.Errorf("from %s: %d %s, want %d", addr, rec.Code, rec.Body, want)
		}
		if want == http.StatusUnauthorized {
			var body struct{ Error herald.Error }
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || body.Error.Code != herald.CodeUnauthorized || !strings.Contains(body.Error.Message, "--api-key") {
				t.Errorf("from %s: body %s, want unauthorized naming --api-key", addr, rec.Body)
			}
		}
	}
}

func TestAPIBodyTooLarge(t *testing.T) {
	t.Parallel()
	_, base := newServer(t, herald.Config{MaxMessageSize: 100})
	fits := fmt.Sprintf(`{"channel":"c","data":"%s"}`, strings.Repeat("x", 100-25))
	if len(fits) != 100 {
		t.Fatalf("test body is %d bytes", len(fits))
	}
	apiPublish(t, base, fits)
	r := apiCall(t, "POST", base+"/api/publish", fmt.Sprintf(`{"channel":"c","data":"%s"}`, strings.Repeat("x", 76)))
	wantAPIError(t, r, http.StatusRequestEntityTooLarge, "too_large")
	r = apiCall(t, "POST", base+"/api/publish", fmt.Sprintf(`{"channel":"c","data":"%s"}`, strings.Repeat("x", 1<<20)))
	wantAPIError(t, r, http.StatusRequestEntityTooLarge, "too_large")
}

// downBroker is a memory broker whose Publish and History fail as an
// unreachable broker's do while down is set.
type downBroker struct {
	broker.Broker
	down atomic.Bool
}

func (b *downBroker) Publish(ctx context.Context, channel string, p broker.Publication, o broker.HistoryOptions) (broker.Offset, error) {
	if b.down.Load() {
		return broker.Offset{}, fmt.Errorf("dial broker: %w", broker.ErrUnavailable)
	}
	return b.Broker.Publish(ctx, channel, p, o)
}

func (b *downBroker) History(ctx context.Context, channel string, q broker.HistoryQuery) (broker.HistoryResult, error) {
	if b.down.Load() {
		return broker.HistoryResult{}, fmt.Errorf("dial broker: %w", broker.ErrUnavailable)
	}
	return b.Broker.History(ctx, channel, q)
}

func TestAPIBrokerUnavailable(t *testing.T) {
	t.Parallel()
	br := &downBroker{Broker: memory.New()}
	_, base := newServer(t, herald.Config{Broker: br})
	apiPublish(t, base, `{"channel":"c","data":1}`)
	br.down.Store(true)
	wantAPIError(t, apiCall(t, "POST", base+"/api/publish", `{"channel":"c","data":1}`), http.StatusServiceUnavailable, "unavailable")
	wantAPIError(t, apiCall(t, "GET", base+"/api/channels/c/history", ""), http.StatusServiceUnavailable, "unavailable")
	br.down.Store(false)
	apiPublish(t, base, `{"channel":"c","data":2}`)
}

// Web pages reach the API only with a key (TestAPINoKeyRefusesWebPages):
// the browser asks with a preflight, which needs no key, and sends the key
// with the request.
func TestAPICORS(t *testing.T) {
	t.Parallel()
	const app, key = "https://app.example", "k"
	_, base := newServer(t, herald.Config{Origins: []string{app}, APIKey: key})

	r := apiCall(t, "OPTIONS", base+"/api/publish", "",
		"Origin", app, "Access-Control-Request-Method", "POST", "Access-Control-Request-Headers", "authorization, content-type")
	if r.status != http.StatusNoContent || r.header.Get("Access-Control-Allow-Origin") != app ||
		!strings.Contains(r.header.Get("Access-Control-Allow-Methods"), "POST") ||
		r.header.Get("Access-Control-Allow-Headers") != "Authorization, Content-Type, Traceparent" {
		t.Fatalf("preflight: %d %v", r.status, r.header)
	}

	r = apiCall(t, "POST", base+"/api/publish", `{"channel":"c","data":1}`, "Origin", app, "Content-Type", "application/json", "Authorization", "Bearer "+key)
	if r.status != http.StatusOK || r.header.Get("Access-Control-Allow-Origin") != app || !strings.Contains(r.header.Get("Vary"), "Origin") {
		t.Fatalf("publish from %s: %d %v", app, r.status, r.header)
	}
	// The request's own host needs no CORS.
	self := "http://" + strings.TrimPrefix(base, "http://")
	if r := apiCall(t, "GET", base+"/api/channels", "", "Origin", self, "Authorization", "Bearer "+key); r.status != http.StatusOK {
		t.Fatalf("same-origin request: %d %s", r.status, r.raw)
	}
	// Any other origin is refused, preflight or not: a page elsewhere
	// cannot publish through a browser on the server's machine.
	for _, method := range []string{"OPTIONS", "POST"} {
		r = apiCall(t, method, base+"/api/publish", `{"channel":"c","data":1}`, "Origin", "https://evil.example", "Authorization", "Bearer "+key)
		wantAPIError(t, r, http.StatusForbidden, "forbidden")
		if r.header.Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("%s from a foreign origin got Access-Control-Allow-Origin", method)
		}
	}

	_, anyBase := newServer(t, herald.Config{Origins: []string{"*"}, APIKey: key})
	r = apiCall(t, "OPTIONS", anyBase+"/api/channels", "", "Origin", "https://elsewhere.example", "Access-Control-Request-Method", "GET")
	if r.status != http.StatusNoContent || r.header.Get("Access-Control-Allow-Origin") != "https://elsewhere.example" {
		t.Fatalf("preflight with origins *: %d %v", r.status, r.header)
	}
}

// Without an API key, the API serves only requests addressed to a
// loopback name and sent by no web page but a loopback one: a page of
// another site that rebinds its name to 127.0.0.1 sends its own name as
// Host (and as Origin), and a file:// page sends Origin: null. --origins
// '*' opens none of that. With a key, Host and Origin play no part.
func TestAPINoKeyRefusesWebPages(t *testing.T) {
	t.Parallel()
	_, base := newServer(t, herald.Config{})
	_, anyBase := newServer(t, herald.Config{Origins: []string{"*"}})
	_, keyBase := newServer(t, herald.Config{APIKey: "k", Origins: []string{"*"}})
	port := func(base string) string { return base[strings.LastIndexByte(base, ':')+1:] }
	for _, b := range []string{base, anyBase} {
		p := port(b)
		for _, h := range [][]string{
			{"Host", "evil.example"},
			{"Host", "evil.example:" + p},
			{"Host", "evil.example:" + p, "Origin", "http://evil.example:" + p}, // DNS rebinding: same origin to the browser
			{"Host", "127.0.0.1.evil.example:" + p},
			{"Host", "localhost.evil.example:" + p},
			{"Origin", "http://evil.example"},
			{"Origin", "null"},
			{"Origin", "http://localhost.evil.example:" + p},
		} {
			for _, method := range []string{"GET", "OPTIONS"} {
				r := apiCall(t, method, b+"/api/channels", "", h...)
				wantAPIError(t, r, http.StatusForbidden, "forbidden")
				if !strings.Contains(r.raw, "--api-key") {
					t.Errorf("%s %v on %s: %s, want a refusal naming --api-key", method, h, b, r.raw)
				}
				if r.header.Get("Access-Control-Allow-Origin") != "" {
					t.Errorf("%s %v on %s: refused but Access-Control-Allow-Origin %q", method, h, b, r.header.Get("Access-Control-Allow-Origin"))
				}
			}
		}
		if r := apiCall(t, "POST", b+"/api/publish", `{"channel":"c","data":1}`, "Origin", "null"); r.status != http.StatusForbidden {
			t.Errorf("publish with Origin: null on %s: %d %s, want 403", b, r.status, r.raw)
		}
		for _, h := range [][]string{
			nil, // Host 127.0.0.1:port, as curl sends it
			{"Host", "localhost:" + p},
			{"Host", "LocalHost"},
			{"Host", "[::1]:" + p},
			{"Host", "127.0.0.2:" + p},
			{"Host", "localhost:" + p, "Origin", "http://localhost:" + p},
			{"Origin", "http://127.0.0.1:" + p},
		} {
			if r := apiCall(t, "GET", b+"/api/channels", "", h...); r.status != http.StatusOK {
				t.Errorf("GET %v on %s: %d %s, want 200", h, b, r.status, r.raw)
			}
		}
	}
	// With a key, the key decides.
	for _, h := range [][]string{
		{"Host", "evil.example", "Authorization", "Bearer k"},
		{"Origin", "null", "Authorization", "Bearer k"},
		{"Origin", "https://app.example", "Authorization", "Bearer k"},
	} {
		if r := apiCall(t, "GET", keyBase+"/api/channels", "", h...); r.status != http.StatusOK {
			t.Errorf("GET %v with the key: %d %s, want 200", h, r.status, r.raw)
		}
	}
	wantAPIError(t, apiCall(t, "GET", keyBase+"/api/channels", ""), http.StatusUnauthorized, "unauthorized")
}
