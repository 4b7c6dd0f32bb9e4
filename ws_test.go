package herald_test

import (
	"testing"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/heraldtest"
)

func TestSmokePublishSubscribe(t *testing.T) {
	_, hs := heraldtest.NewServer(t, herald.Config{})
	a := heraldtest.Dial(t, heraldtest.WSURL(hs.URL, "/ws"))
	b := heraldtest.Dial(t, heraldtest.WSURL(hs.URL, "/ws"), "herald.v1.jsonl")
	b.MustOK(map[string]any{"op": "subscribe", "channel": "news"})
	r := a.MustOK(map[string]any{"op": "publish", "channel": "news", "data": map[string]any{"x": 1}})
	m := b.Next()
	if m["op"] != "message" || m["offset"] != r["offset"] {
		t.Fatalf("push %v, publish reply %v", m, r)
	}
}
