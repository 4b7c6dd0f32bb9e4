package herald_test

import (
	"fmt"
	"net/http"
	"net/url"
	"testing"

	"github.com/heraldhq/herald"
)

func TestAPIChannels(t *testing.T) {
	t.Parallel()
	_, base := newServer(t, herald.Config{})
	r := apiCall(t, http.MethodGet, base+"/api/channels", "")
	if r.status != http.StatusOK || r.raw != "{\"channels\":[]}\n" {
		t.Fatalf("no channels: %d %s", r.status, r.raw)
	}
	a, b := dial(t, base), dial(t, base)
	wsSubscribe(t, a, "room:a")
	wsSubscribe(t, b, "room:a")
	wsSubscribe(t, b, "b")
	r = apiCall(t, http.MethodGet, base+"/api/channels", "")
	want := map[string]any{"channels": []any{
		map[string]any{"channel": "b", "subscribers": 1.0},
		map[string]any{"channel": "room:a", "subscribers": 2.0},
	}}
	if r.status != http.StatusOK || !equalJSON(r.body, want) {
		t.Fatalf("channels: %d %s, want %v", r.status, r.raw, want)
	}
}

// TestAPIHistory checks that the API's history answers what the JSON
// protocol's history command does, for each combination of since and limit.
func TestAPIHistory(t *testing.T) {
	t.Parallel()
	_, base := newServer(t, herald.Config{})
	c := dial(t, base)
	r := apiCall(t, http.MethodGet, base+"/api/channels/h/history", "")
	if r.status != http.StatusOK || r.raw != "{\"messages\":[]}\n" {
		t.Fatalf("empty history: %d %s", r.status, r.raw)
	}
	var offs []string
	for i := 1; i <= 5; i++ {
		offs = append(offs, apiPublish(t, base, fmt.Sprintf(`{"channel":"h","data":{"n":%d},"event":"e"}`, i)))
	}
	cases := []struct {
		query string
		cmd   map[string]any
		want  []int
	}{
		{"", map[string]any{}, []int{1, 2, 3, 4, 5}},
		{"limit=2", map[string]any{"limit": 2}, []int{4, 5}},
		{"limit=0", map[string]any{"limit": 0}, nil},
		{"since=", map[string]any{"since": ""}, []int{1, 2, 3, 4, 5}},
		{"since=" + url.QueryEscape(offs[1]), map[string]any{"since": offs[1]}, []int{3, 4, 5}},
		{"since=" + url.QueryEscape(offs[1]) + "&limit=1", map[string]any{"since": offs[1], "limit": 1}, []int{3}},
		{"since=" + url.QueryEscape(offs[4]), map[string]any{"since": offs[4]}, nil},
	}
	for _, tc := range cases {
		r := apiCall(t, http.MethodGet, base+"/api/channels/h/history?"+tc.query, "")
		msgs, ok := r.body["messages"].([]any)
		if r.status != http.StatusOK || !ok || len(r.body) != 1 {
			t.Fatalf("?%s: %d %s", tc.query, r.status, r.raw)
		}
		var got []int
		for _, m := range msgs {
			got = append(got, counter(t, m.(map[string]any)))
		}
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("?%s: messages %v, want %v", tc.query, got, tc.want)
		}
		cmd := map[string]any{"op": "history", "channel": "h"}
		for k, v := range tc.cmd {
			cmd[k] = v
		}
		ws := c.MustOK(cmd)["messages"]
		if ws == nil {
			ws = []any{}
		}
		if !equalJSON(msgs, ws) {
			t.Errorf("?%s: API %v, JSON protocol %v", tc.query, msgs, ws)
		}
	}
	first := apiCall(t, http.MethodGet, base+"/api/channels/h/history?limit=1", "").body["messages"].([]any)[0]
	want := map[string]any{"channel": "h", "offset": offs[4], "data": map[string]any{"n": 5.0}, "event": "e"}
	if !equalJSON(first, want) {
		t.Fatalf("history message %v, want %v", first, want)
	}
}

func TestAPIPresence(t *testing.T) {
	t.Parallel()
	_, base := newServer(t, herald.Config{})
	r := apiCall(t, http.MethodGet, base+"/api/channels/p/presence", "")
	if r.status != http.StatusOK || r.raw != "{\"clients\":[]}\n" {
		t.Fatalf("nobody present: %d %s", r.status, r.raw)
	}
	a, b := dial(t, base), dial(t, base)
	wsSubscribe(t, a, "p")
	wsSubscribe(t, b, "p")
	ids := []string{clientID(a), clientID(b)}
	if ids[0] > ids[1] {
		ids[0], ids[1] = ids[1], ids[0]
	}
	want := map[string]any{"clients": []any{
		map[string]any{"client": ids[0], "user": "", "transport": "websocket"},
		map[string]any{"client": ids[1], "user": "", "transport": "websocket"},
	}}
	r = apiCall(t, http.MethodGet, base+"/api/channels/p/presence", "")
	if r.status != http.StatusOK || !equalJSON(r.body, want) {
		t.Fatalf("presence: %d %s, want %v", r.status, r.raw, want)
	}
}
