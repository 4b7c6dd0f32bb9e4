package herald_test

import (
	"net/http"
	"testing"

	"github.com/heraldhq/herald"
)

func TestAPIPublishReachesSubscribers(t *testing.T) {
	t.Parallel()
	_, base := newServer(t, herald.Config{})
	c := dial(t, base)
	wsSubscribe(t, c, "news")
	raw := dialRaw(t, base, "news")
	waitPresent(t, c, "news", 2)
	before := scrape(t, base)

	// Unknown fields are ignored; data is compacted.
	off := apiPublish(t, base, `{"channel":"news","data":{ "a" : [1, 2] },"event":"note","extra":true}`)
	m := nextMessage(t, c)
	want := map[string]any{"op": "message", "channel": "news", "offset": off, "data": map[string]any{"a": []any{1.0, 2.0}}, "event": "note"}
	if !equalJSON(m, want) { // no user, no client
		t.Fatalf("push %v, want %v", m, want)
	}
	if got := raw.nextText(); got != `{"a":[1,2]}` {
		t.Fatalf("raw client got %q, want the compact data", got)
	}

	apiPublish(t, base, `{"channel":"news","data":"hi"}`)
	m = nextMessage(t, c)
	if _, has := m["event"]; has || m["data"] != "hi" {
		t.Fatalf("push without event: %v", m)
	}

	after := scrape(t, base)
	const inAPI, inServer = `herald_messages_in_total{source="api"}`, `herald_messages_in_total{source="server"}`
	if d := after[inAPI] - before[inAPI]; d != 2 {
		t.Errorf("%s moved by %v, want 2", inAPI, d)
	}
	if d := after[inServer] - before[inServer]; d != 0 {
		t.Errorf("%s moved by %v, want 0", inServer, d)
	}
}

func TestAPIPublishAnswersJSON(t *testing.T) {
	t.Parallel()
	_, base := newServer(t, herald.Config{})
	r := apiCall(t, http.MethodPost, base+"/api/publish", `{"channel":"x","data":null}`)
	if r.status != http.StatusOK || r.header.Get("Content-Type") != "application/json" {
		t.Fatalf("publish of null data: %d %q %s", r.status, r.header.Get("Content-Type"), r.raw)
	}
}
