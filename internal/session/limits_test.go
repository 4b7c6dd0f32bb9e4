package session_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/heraldhq/herald/internal/protocol"
	"github.com/heraldhq/herald/internal/session"
)

// The per-connection limits, moved from the root package's limits_test.go
// and attack_test.go: the session enforces them. The root keeps a test
// that the server's Config reaches them and that the refusals show in
// its metrics.

// call sends one command and returns its reply.
func call(t *testing.T, s *session.Session, c *fakeConn, id int, fields string) map[string]any {
	t.Helper()
	before := c.frames()
	command(s, id, fields)
	objs := c.objects(t)
	if len(objs) != before+1 {
		t.Fatalf("command %d (%s) wrote %d frames, want its reply", id, fields, len(objs)-before)
	}
	r := objs[before]
	if r["id"] != float64(id) {
		t.Fatalf("command %d (%s) got %v, want its reply", id, fields, r)
	}
	return r
}

// errorOf returns a failed reply's error code and message ("" for a
// successful one).
func errorOf(r map[string]any) (code, message string) {
	e, _ := r["error"].(map[string]any)
	code, _ = e["code"].(string)
	message, _ = e["message"].(string)
	return code, message
}

// A connection over its publish rate gets rate_limited and stays open;
// the bucket refills with time.
func TestPublishRateLimit(t *testing.T) {
	h := newHub(t)
	m := newMetrics()
	c := &fakeConn{}
	s := open(t, h, c, session.Config{Shared: &session.Shared{Limits: session.Limits{PublishRate: 2, PublishBurst: 5}, Metrics: m}})
	ok, limited := 0, 0
	for i := 1; i <= 12; i++ {
		r := call(t, s, c, i, fmt.Sprintf(`"op":"publish","channel":"r","data":%d`, i))
		switch code, _ := errorOf(r); {
		case r["ok"] == true:
			ok++
		case code == "rate_limited":
			limited++
		default:
			t.Fatalf("publish %d: %v", i, r)
		}
	}
	// 12 publishes within well under a second: the burst of 5, perhaps one
	// more refilled, and the rest refused.
	if ok < 5 || ok > 6 || ok+limited != 12 {
		t.Fatalf("%d accepted and %d rate limited, want 5 (or 6) accepted", ok, limited)
	}
	if got := testutil.ToFloat64(m.Refusals.WithLabelValues("rate_limited")); got != float64(limited) {
		t.Errorf("rate_limited counted %v, want %d", got, limited)
	}
	if _, ok := c.firstClose(); ok {
		t.Fatal("a JSON connection over its publish rate was closed")
	}
	id := 100
	waitFor(t, timeout, func() error {
		id++
		if r := call(t, s, c, id, `"op":"publish","channel":"r","data":"later"`); r["ok"] != true {
			return fmt.Errorf("publish after a pause: %v", r)
		}
		return nil
	})
	// Subscribing is not publishing: it is not limited by the rate.
	if r := call(t, s, c, 1000, `"op":"subscribe","channel":"r"`); r["ok"] != true {
		t.Fatalf("subscribe: %v", r)
	}
}

// Raw mode has no error replies: a raw client over its rate is closed
// with 1008.
func TestRawPublishRateLimitCloses(t *testing.T) {
	h := newHub(t)
	m := newMetrics()
	c := &fakeConn{}
	s := open(t, h, c, session.Config{Mode: session.ModeRaw, RawChannel: "rr", Shared: &session.Shared{Limits: session.Limits{PublishRate: 1, PublishBurst: 3}, Metrics: m}})
	for i := range 10 {
		s.HandleText(fmt.Appendf(nil, "m%d", i))
	}
	if cl, ok := c.firstClose(); !ok || cl.code != protocol.ClosePolicy || !strings.Contains(cl.reason, "rate limit") {
		t.Fatalf("raw flood closed with %+v (%v), want 1008 naming the rate limit", cl, ok)
	}
	if got := testutil.ToFloat64(m.Refusals.WithLabelValues("rate_limited")); got < 1 {
		t.Errorf("rate_limited counted %v, want at least 1", got)
	}
}

func TestPublishRateUnlimited(t *testing.T) {
	h := newHub(t)
	c := &fakeConn{}
	s := open(t, h, c, session.Config{Shared: &session.Shared{Limits: session.Limits{PublishRate: -1}}})
	for i := 1; i <= 300; i++ {
		if r := call(t, s, c, i, fmt.Sprintf(`"op":"publish","channel":"u","data":%d`, i)); r["ok"] != true {
			t.Fatalf("publish %d: %v", i, r)
		}
	}
}

func TestSubscriptionLimit(t *testing.T) {
	h := newHub(t)
	m := newMetrics()
	c := &fakeConn{}
	s := open(t, h, c, session.Config{Shared: &session.Shared{Limits: session.Limits{MaxSubscriptions: 2}, Metrics: m}})
	mustOK := func(id int, fields string) {
		t.Helper()
		if r := call(t, s, c, id, fields); r["ok"] != true {
			t.Fatalf("%s: %v", fields, r)
		}
	}
	mustOK(1, `"op":"subscribe","channel":"a"`)
	mustOK(2, `"op":"subscribe","channel":"b"`)
	r := call(t, s, c, 3, `"op":"subscribe","channel":"c"`)
	if code, msg := errorOf(r); code != "rate_limited" || !strings.Contains(msg, "at most 2") {
		t.Fatalf("third subscription: %v, want rate_limited naming the limit", r)
	}
	mustOK(4, `"op":"unsubscribe","channel":"a"`)
	mustOK(5, `"op":"subscribe","channel":"c"`)
	if got := testutil.ToFloat64(m.Refusals.WithLabelValues("subscription_limit")); got != 1 {
		t.Errorf("subscription_limit counted %v, want 1", got)
	}
	if got := testutil.ToFloat64(m.Subscriptions); got != 2 {
		t.Errorf("subscriptions gauge %v, want 2", got)
	}
}

// Commands of every kind are rate limited per connection, not only
// publishes: past the burst a client gets rate_limited replies, and
// another connection is not affected.
func TestCommandRateLimit(t *testing.T) {
	h := newHub(t)
	m := newMetrics()
	limits := session.Limits{CommandRate: 5, CommandBurst: 20}
	c := &fakeConn{}
	s := open(t, h, c, session.Config{Shared: &session.Shared{Limits: limits, Metrics: m}})
	limited := 0
	for i := range 60 {
		op := []string{"ping", "presence", "history", "unsubscribe"}[i%4]
		r := call(t, s, c, i+1, fmt.Sprintf(`"op":%q,"channel":"rl"`, op))
		if code, _ := errorOf(r); code == "rate_limited" {
			limited++
		} else if r["ok"] != true {
			t.Fatalf("%s: %v", op, r)
		}
	}
	if limited < 30 {
		t.Fatalf("%d of 60 commands were rate limited, want most past the burst of 20", limited)
	}
	other := &fakeConn{}
	so := open(t, h, other, session.Config{Shared: &session.Shared{Limits: limits, Metrics: m}})
	if r := call(t, so, other, 1, `"op":"ping"`); r["ok"] != true {
		t.Fatalf("another connection's ping: %v", r)
	}
	if got := testutil.ToFloat64(m.Refusals.WithLabelValues("rate_limited")); got < float64(limited) {
		t.Errorf("rate_limited refusals counted %v, want %d", got, limited)
	}
}
