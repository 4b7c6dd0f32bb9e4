package herald_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/heraldhq/herald/heraldtest"
)

// apiResponse is an answer of the server API.
type apiResponse struct {
	status int
	header http.Header
	raw    string
	body   map[string]any // nil when the body is not a JSON object
}

// apiCall sends one request to the server API; header holds name, value
// pairs ("Host" sets the request's Host).
func apiCall(t testing.TB, method, url, body string, header ...string) apiResponse {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		if header[i] == "Host" {
			req.Host = header[i+1]
			continue
		}
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	r := apiResponse{status: resp.StatusCode, header: resp.Header, raw: string(b)}
	_ = json.Unmarshal(b, &r.body)
	return r
}

// apiPublish publishes through the API and returns the offset.
func apiPublish(t *testing.T, base, body string, header ...string) string {
	t.Helper()
	r := apiCall(t, http.MethodPost, base+"/api/publish", body, header...)
	if r.status != http.StatusOK {
		t.Fatalf("publish %s: %d %s", body, r.status, r.raw)
	}
	off, _ := r.body["offset"].(string)
	if off == "" || len(r.body) != 1 {
		t.Fatalf("publish answered %s, want {\"offset\":\"…\"}", r.raw)
	}
	return off
}

// wantAPIError fails unless r is the contract's error shape, exactly
// {"error":{"code","message"}}, with status and code.
func wantAPIError(t *testing.T, r apiResponse, status int, code string) {
	t.Helper()
	if r.status != status {
		t.Errorf("status %d, want %d (body %s)", r.status, status, r.raw)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	e, _ := r.body["error"].(map[string]any)
	msg, _ := e["message"].(string)
	if len(r.body) != 1 || len(e) != 2 || e["code"] != code || msg == "" {
		t.Errorf("body %s, want {\"error\":{\"code\":%q,\"message\":\"…\"}}", r.raw, code)
	}
}

// wsSubscribe subscribes c to channel.
func wsSubscribe(t *testing.T, c *heraldtest.Client, channel string) {
	t.Helper()
	c.MustOK(map[string]any{"op": "subscribe", "channel": channel})
}
