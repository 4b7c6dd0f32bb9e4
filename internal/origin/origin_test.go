package origin

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestAllow(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		origins []string
		origin  string
		ok      bool
		allow   string
	}{
		{"no origin header", nil, "", true, ""},
		{"same host", nil, "http://herald.example:8080", true, ""},
		{"foreign, nothing allowed", nil, "https://evil.example", false, ""},
		{"listed", []string{"https://app.example/"}, "https://app.example", true, "https://app.example"},
		{"listed, other case", []string{"https://App.example"}, "https://app.example", true, "https://app.example"},
		{"not listed", []string{"https://app.example"}, "https://evil.example", false, ""},
		{"any", []string{"*"}, "https://else.example", true, "https://else.example"},
		{"garbage origin", nil, "::not a url", false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := httptest.NewRequest(http.MethodGet, "http://herald.example:8080/sse", nil)
			if tt.origin != "" {
				r.Header.Set("Origin", tt.origin)
			}
			w := httptest.NewRecorder()
			if got := New(tt.origins).Allow(w, r); got != tt.ok {
				t.Fatalf("Allow = %v, want %v", got, tt.ok)
			}
			if got := w.Header().Get("Access-Control-Allow-Origin"); got != tt.allow {
				t.Fatalf("Access-Control-Allow-Origin %q, want %q", got, tt.allow)
			}
			if w.Header().Get("Vary") != "Origin" {
				t.Fatal("no Vary: Origin")
			}
		})
	}
}
