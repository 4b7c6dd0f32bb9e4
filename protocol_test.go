package herald_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/heraldtest"
)

func TestWelcome(t *testing.T) {
	t.Parallel()
	_, base := newServer(t, herald.Config{})
	a, b := dial(t, base), dial(t, base)
	for _, c := range []*heraldtest.Client{a, b} {
		if id, ok := c.Welcome["client"].(string); !ok || id == "" {
			t.Errorf("welcome %v: want a non-empty client id", c.Welcome)
		}
		if u, ok := c.Welcome["user"]; !ok || u != "" {
			t.Errorf("welcome %v: want user \"\" for an anonymous client", c.Welcome)
		}
		if _, ok := c.Welcome["id"]; ok {
			t.Errorf("welcome %v is a push: it has no id", c.Welcome)
		}
	}
	if clientID(a) == clientID(b) {
		t.Errorf("two connections share client id %q", clientID(a))
	}
	// Once: nothing but the reply follows.
	if before := fence(t, a); len(before) != 0 {
		t.Errorf("frames after the welcome: %v", before)
	}
}

func TestSubscribeReply(t *testing.T) {
	t.Parallel()
	_, base := newServer(t, herald.Config{})
	c := dial(t, base)
	r := c.MustOK(map[string]any{"op": "subscribe", "channel": "empty"})
	if off, ok := r["offset"]; !ok || off != "" {
		t.Errorf("subscribe to an empty channel: reply %v, want offset \"\"", r)
	}
	if r["recovered"] != true {
		t.Errorf("subscribe without since: reply %v, want recovered true", r)
	}

	p := dial(t, base)
	publish(t, p, "busy", 1)
	last := publish(t, p, "busy", 2)
	r = c.MustOK(map[string]any{"op": "subscribe", "channel": "busy"})
	if r["offset"] != last || r["recovered"] != true {
		t.Errorf("subscribe after two publishes: reply %v, want offset %q recovered true", r, last)
	}
	// Without since, nothing from history is pushed.
	if before := fence(t, c); len(before) != 0 {
		t.Errorf("subscribe without since pushed %v", before)
	}
	dup := c.Call(map[string]any{"op": "subscribe", "channel": "busy"}, nil)
	if dup["ok"] != false || heraldtest.ErrorCode(dup) != "bad_request" {
		t.Errorf("second subscribe to one channel: %v, want bad_request", dup)
	}
}

func TestSubscribeSince(t *testing.T) {
	t.Parallel()
	_, base := newServer(t, herald.Config{})
	p, c := dial(t, base), dial(t, base)
	var offs []string
	for i := 1; i <= 10; i++ {
		offs = append(offs, publish(t, p, "feed", map[string]any{"n": i}))
	}
	id := c.Send(map[string]any{"op": "subscribe", "channel": "feed", "since": offs[3]})
	r := c.Next()
	if r["id"] != float64(id) || r["ok"] != true || r["offset"] != offs[9] || r["recovered"] != true {
		t.Fatalf("first frame after subscribe with since: %v, want the reply (offset %q, recovered true)", r, offs[9])
	}
	for i := 5; i <= 10; i++ {
		m := nextMessage(t, c)
		if counter(t, m) != i || m["offset"] != offs[i-1] || m["channel"] != "feed" {
			t.Fatalf("missed message %d: got %v", i, m)
		}
	}
	live := publish(t, p, "feed", map[string]any{"n": 11})
	if m := nextMessage(t, c); counter(t, m) != 11 || m["offset"] != live {
		t.Fatalf("live message: got %v", m)
	}
	if before := fence(t, c); len(before) != 0 {
		t.Fatalf("after the live message: %v (duplicates?)", before)
	}

	// since "" is the start of history.
	c2 := dial(t, base)
	c2.MustOK(map[string]any{"op": "subscribe", "channel": "feed", "since": ""})
	for i := 1; i <= 11; i++ {
		if n := counter(t, nextMessage(t, c2)); n != i {
			t.Fatalf("since \"\": message %d, want %d", n, i)
		}
	}
	// since the latest offset: nothing missed.
	c3 := dial(t, base)
	r = c3.MustOK(map[string]any{"op": "subscribe", "channel": "feed", "since": live})
	if r["recovered"] != true {
		t.Fatalf("since the latest offset: %v, want recovered true", r)
	}
	if before := fence(t, c3); len(before) != 0 {
		t.Fatalf("since the latest offset pushed %v", before)
	}
}

// A publisher runs while a client subscribes with since: history and live
// messages must join with no gap and no duplicate. The publisher starts
// before the subscribe is sent and stops only after its reply has arrived
// (and 2,000 messages), so it publishes throughout the subscription.
func TestSubscribeSinceWhilePublishing(t *testing.T) {
	t.Parallel()
	const atLeast, atMost = 2000, 50000
	srv, base := newServer(t, herald.Config{
		HistorySize: atMost,
		// The catch-up and the publisher's burst both come faster than a
		// socket drains: let the queue hold them.
		QueueMessages: atMost,
		QueueBytes:    256 << 20,
	})
	ctx := context.Background()
	offsets := make([]string, 0, atMost+1) // by counter; the publisher's until done
	offsets = append(offsets, "")
	for i := 1; i <= 10; i++ {
		off, err := srv.Publish(ctx, "race", map[string]any{"n": i})
		if err != nil {
			t.Fatal(err)
		}
		offsets = append(offsets, off)
	}
	since := offsets[3]
	c := dial(t, base)

	var replied atomic.Bool
	started := make(chan struct{})
	last := make(chan int, 1)
	go func() {
		defer close(last)
		for i := 11; i <= atMost; i++ {
			if i == 100 {
				close(started)
			}
			off, err := srv.Publish(ctx, "race", map[string]any{"n": i})
			if err != nil {
				t.Error(err)
				return
			}
			offsets = append(offsets, off)
			if i >= atLeast && replied.Load() {
				last <- i
				return
			}
		}
	}()
	<-started
	id := c.Send(map[string]any{"op": "subscribe", "channel": "race", "since": since})
	r := c.Next()
	replied.Store(true)
	if r["id"] != float64(id) || r["ok"] != true || r["recovered"] != true {
		t.Fatalf("first frame: %v, want the subscribe reply with recovered true", r)
	}
	final, ok := <-last
	if !ok {
		t.Fatalf("the publisher stopped without a last message (%d published)", len(offsets)-1)
	}
	for want := 4; want <= final; want++ {
		if n := counter(t, nextMessage(t, c)); n != want {
			t.Fatalf("got message %d, want %d", n, want)
		}
	}
	if before := fence(t, c); len(before) != 0 {
		t.Fatalf("frames after the last message: %d more, first %v", len(before), before[0])
	}
	// The reply's offset is the latest when the server read history.
	at := slices.Index(offsets, r["offset"].(string))
	if at < 10 || at >= final {
		t.Fatalf("reply offset %v is message %d; the subscription did not happen while publishing (..%d)", r["offset"], at, final)
	}
	t.Logf("subscribed at message %d; %d more came while subscribing or live", at, final-at)
}

// A catch-up longer than the outgoing queue's limits is what the client
// asked for: it is not taken for falling behind.
func TestSubscribeSinceLongCatchUp(t *testing.T) {
	t.Parallel()
	const n = 5000
	srv, base := newServer(t, herald.Config{HistorySize: n}) // queue limits at their defaults
	pad := strings.Repeat("p", 512)
	var first string
	for i := 1; i <= n; i++ {
		off, err := srv.Publish(context.Background(), "deep", map[string]any{"n": i, "pad": pad})
		if err != nil {
			t.Fatal(err)
		}
		if i == 1 {
			first = off
		}
	}
	c := dial(t, base)
	r := c.MustOK(map[string]any{"op": "subscribe", "channel": "deep", "since": first})
	if r["recovered"] != true {
		t.Fatalf("reply %v, want recovered true", r)
	}
	for want := 2; want <= n; want++ {
		if got := counter(t, nextMessage(t, c)); got != want {
			t.Fatalf("got message %d, want %d", got, want)
		}
	}
	if m := metric(t, base, "herald_slow_consumer_disconnects_total"); m != 0 {
		t.Fatalf("herald_slow_consumer_disconnects_total = %v after a catch-up", m)
	}
}

func TestSubscribeSinceOlderThanHistory(t *testing.T) {
	t.Parallel()
	_, base := newServer(t, herald.Config{HistorySize: 3})
	p, c := dial(t, base), dial(t, base)
	var offs []string
	for i := 1; i <= 6; i++ {
		offs = append(offs, publish(t, p, "short", map[string]any{"n": i}))
	}
	r := c.MustOK(map[string]any{"op": "subscribe", "channel": "short", "since": offs[0]})
	if r["recovered"] != false || r["offset"] != offs[5] {
		t.Fatalf("since an offset history no longer reaches: %v, want recovered false, offset %q", r, offs[5])
	}
	for i := 4; i <= 6; i++ {
		if n := counter(t, nextMessage(t, c)); n != i {
			t.Fatalf("got message %d, want %d (what history still holds)", n, i)
		}
	}
	// Still subscribed and live.
	publish(t, p, "short", map[string]any{"n": 7})
	if n := counter(t, nextMessage(t, c)); n != 7 {
		t.Fatalf("live message %d, want 7", n)
	}
	// since the oldest kept offset reaches back: recovered.
	c2 := dial(t, base)
	r = c2.MustOK(map[string]any{"op": "subscribe", "channel": "short", "since": offs[4]})
	if r["recovered"] != true {
		t.Fatalf("since an offset still in history: %v, want recovered true", r)
	}
}

func TestSubscribeSinceOtherEpoch(t *testing.T) {
	t.Parallel()
	_, base := newServer(t, herald.Config{})
	p, c := dial(t, base), dial(t, base)
	publish(t, p, "epochs", 1)
	last := publish(t, p, "epochs", 2)
	for _, since := range []string{"5-deadbeef", "1-" + strings.Repeat("0", 64)} {
		cc := dial(t, base)
		r := cc.MustOK(map[string]any{"op": "subscribe", "channel": "epochs", "since": since})
		if r["recovered"] != false || r["offset"] != last {
			t.Fatalf("since %q from another epoch: %v, want recovered false, offset %q", since, r, last)
		}
		// The history is gone: everything the current one holds follows.
		for want := 1.0; want <= 2; want++ {
			if m := nextMessage(t, cc); m["data"] != want {
				t.Fatalf("since %q: push %v, want data %v", since, m, want)
			}
		}
		if before := fence(t, cc); len(before) != 0 {
			t.Fatalf("since %q: more pushes %v", since, before)
		}
	}
	// A channel never used: an offset into it cannot be resumed either.
	r := c.MustOK(map[string]any{"op": "subscribe", "channel": "never-used", "since": "3-deadbeef"})
	if r["recovered"] != false || r["offset"] != "" {
		t.Fatalf("since into a channel never used: %v, want recovered false, offset \"\"", r)
	}
	if before := fence(t, c); len(before) != 0 {
		t.Fatalf("since into a channel never used pushed %v", before)
	}
}

func TestUnsubscribe(t *testing.T) {
	t.Parallel()
	_, base := newServer(t, herald.Config{})
	p, c := dial(t, base), dial(t, base)
	c.MustOK(map[string]any{"op": "subscribe", "channel": "u"})
	publish(t, p, "u", "one")
	if m := nextMessage(t, c); m["data"] != "one" {
		t.Fatalf("got %v", m)
	}
	r := c.MustOK(map[string]any{"op": "unsubscribe", "channel": "u"})
	if len(r) != 2 {
		t.Errorf("unsubscribe reply %v, want just id and ok", r)
	}
	publish(t, p, "u", "two")
	if before := fence(t, c); len(before) != 0 {
		t.Fatalf("pushes after unsubscribe: %v", before)
	}
	// Unsubscribing a channel one is not subscribed to is fine.
	c.MustOK(map[string]any{"op": "unsubscribe", "channel": "never"})
	// And one can subscribe again.
	c.MustOK(map[string]any{"op": "subscribe", "channel": "u"})
	publish(t, p, "u", "three")
	if m := nextMessage(t, c); m["data"] != "three" {
		t.Fatalf("after subscribing again: %v", m)
	}
}

func TestPublishAndPush(t *testing.T) {
	t.Parallel()
	_, base := newServer(t, herald.Config{})
	pub, sub := dial(t, base), dial(t, base)
	sub.MustOK(map[string]any{"op": "subscribe", "channel": "news"})

	r := pub.MustOK(map[string]any{"op": "publish", "channel": "news", "data": map[string]any{"x": 1.0}, "event": "greet"})
	if off, _ := r["offset"].(string); off == "" || len(r) != 3 {
		t.Fatalf("publish ack %v, want id, ok and an offset", r)
	}
	m := nextMessage(t, sub)
	want := map[string]any{"op": "message", "channel": "news", "offset": r["offset"],
		"data": map[string]any{"x": 1.0}, "event": "greet", "client": clientID(pub)}
	if u, ok := m["user"]; ok && u != "" {
		t.Errorf("anonymous publisher, but user %v", u)
	}
	delete(m, "user")
	if !equalJSON(m, want) {
		t.Fatalf("push\n got %v\nwant %v", m, want)
	}

	// No event given: no event field.
	publish(t, pub, "news", "plain")
	if m := nextMessage(t, sub); m["data"] != "plain" {
		t.Fatalf("got %v", m)
	} else if _, ok := m["event"]; ok {
		t.Fatalf("push %v has an event the publisher did not give", m)
	}

	// Any JSON value goes through unchanged, in publish order.
	values := []any{nil, true, 0.0, -1.5e300, "", "ünïcødé \"quoted\" <tag> & \n", []any{}, []any{1.0, "a", nil},
		map[string]any{}, map[string]any{"deep": map[string]any{"deeper": []any{map[string]any{"k": "v"}}}}}
	var offs []string
	for _, v := range values {
		offs = append(offs, publish(t, pub, "news", v))
	}
	for i, v := range values {
		m := nextMessage(t, sub)
		if d, ok := m["data"]; !ok || !equalJSON(d, v) || m["offset"] != offs[i] {
			t.Fatalf("value %d: push %v, want data %#v at %s", i, m, v, offs[i])
		}
	}
	if len(slices.Compact(slices.Clone(offs))) != len(offs) {
		t.Fatalf("offsets repeat: %v", offs)
	}

	// The publisher gets its own message when it is subscribed too.
	pub.MustOK(map[string]any{"op": "subscribe", "channel": "news"})
	var own []map[string]any
	ack := pub.Call(map[string]any{"op": "publish", "channel": "news", "data": "mine"}, func(m map[string]any) { own = append(own, m) })
	own = append(own, fence(t, pub)...)
	if len(own) != 1 || own[0]["data"] != "mine" || own[0]["client"] != clientID(pub) || own[0]["offset"] != ack["offset"] {
		t.Fatalf("publisher subscribed to its channel got %v, want its own message once", own)
	}
}

func TestPublishFromServer(t *testing.T) {
	t.Parallel()
	srv, base := newServer(t, herald.Config{})
	c := dial(t, base)
	c.MustOK(map[string]any{"op": "subscribe", "channel": "srv"})
	off, err := srv.Publish(context.Background(), "srv", map[string]any{"a": "b"}, herald.WithEvent("note"))
	if err != nil || off == "" {
		t.Fatalf("Publish: %q, %v", off, err)
	}
	m := nextMessage(t, c)
	want := map[string]any{"op": "message", "channel": "srv", "offset": off, "data": map[string]any{"a": "b"}, "event": "note"}
	if !equalJSON(m, want) {
		t.Fatalf("push\n got %v\nwant %v (no client or user for the server)", m, want)
	}
	if _, err := srv.Publish(context.Background(), "bad name", 1); err == nil {
		t.Fatalf("Publish to a bad channel name succeeded")
	}
}

func TestHistory(t *testing.T) {
	t.Parallel()
	_, base := newServer(t, herald.Config{})
	c := dial(t, base)
	r := c.MustOK(map[string]any{"op": "history", "channel": "h"})
	if msgs, ok := r["messages"].([]any); !ok || len(msgs) != 0 {
		t.Fatalf("history of an empty channel: %v, want messages []", r)
	}
	var offs []string
	for i := 1; i <= 5; i++ {
		f := map[string]any{"op": "publish", "channel": "h", "data": map[string]any{"n": i}}
		if i == 2 {
			f["event"] = "second"
		}
		offs = append(offs, c.MustOK(f)["offset"].(string))
	}
	history := func(fields map[string]any) []map[string]any {
		t.Helper()
		fields["op"], fields["channel"] = "history", "h"
		r := c.MustOK(fields)
		raw, ok := r["messages"].([]any)
		if !ok {
			t.Fatalf("history reply %v has no messages list", r)
		}
		out := make([]map[string]any, len(raw))
		for i, m := range raw {
			out[i] = m.(map[string]any)
		}
		return out
	}
	ns := func(ms []map[string]any) []int {
		var out []int
		for _, m := range ms {
			out = append(out, counter(t, m))
		}
		return out
	}

	all := history(map[string]any{})
	if got := ns(all); !slices.Equal(got, []int{1, 2, 3, 4, 5}) {
		t.Fatalf("history = %v, want 1..5 oldest first", got)
	}
	for i, m := range all {
		if m["offset"] != offs[i] || m["channel"] != "h" || m["client"] != clientID(c) {
			t.Errorf("history message %d: %v, want offset %s, channel h, client %s", i, m, offs[i], clientID(c))
		}
		if _, ok := m["op"]; ok {
			t.Errorf("history message %d has an op: %v", i, m)
		}
	}
	if all[1]["event"] != "second" {
		t.Errorf("history message 2 lost its event: %v", all[1])
	}
	if _, ok := all[0]["event"]; ok {
		t.Errorf("history message 1 has an event it was not given: %v", all[0])
	}
	tests := []struct {
		fields map[string]any
		want   []int
	}{
		// Without since: the newest limit, oldest first.
		{map[string]any{"limit": 2}, []int{4, 5}},
		{map[string]any{"since": "", "limit": 2}, []int{4, 5}},
		{map[string]any{"limit": 0}, nil},
		{map[string]any{"limit": 100}, []int{1, 2, 3, 4, 5}},
		{map[string]any{"since": offs[1]}, []int{3, 4, 5}},
		// With since: the first limit after it.
		{map[string]any{"since": offs[1], "limit": 1}, []int{3}},
		{map[string]any{"since": offs[4]}, nil},
		{map[string]any{"since": ""}, []int{1, 2, 3, 4, 5}},
	}
	for _, tt := range tests {
		if got := ns(history(tt.fields)); !slices.Equal(got, tt.want) {
			t.Errorf("history %v = %v, want %v", tt.fields, got, tt.want)
		}
	}
}

func TestPresence(t *testing.T) {
	t.Parallel()
	_, base := newServer(t, herald.Config{Namespaces: map[string]herald.Namespace{
		"quiet": {NoPresence: true},
		"room":  {JoinLeave: true},
	}})
	a, b, watcher := dial(t, base), dial(t, base), dial(t, base)
	list := func(channel string) []map[string]any {
		t.Helper()
		r := watcher.MustOK(map[string]any{"op": "presence", "channel": channel})
		raw, ok := r["clients"].([]any)
		if !ok {
			t.Fatalf("presence reply %v has no clients list", r)
		}
		out := make([]map[string]any, len(raw))
		for i, c := range raw {
			out[i] = c.(map[string]any)
		}
		sort.Slice(out, func(i, j int) bool { return fmt.Sprint(out[i]["client"]) < fmt.Sprint(out[j]["client"]) })
		return out
	}
	entry := func(c *heraldtest.Client) map[string]any {
		return map[string]any{"client": clientID(c), "user": "", "transport": "websocket"}
	}
	sorted := func(cs ...*heraldtest.Client) []map[string]any {
		var out []map[string]any
		for _, c := range cs {
			out = append(out, entry(c))
		}
		sort.Slice(out, func(i, j int) bool { return fmt.Sprint(out[i]["client"]) < fmt.Sprint(out[j]["client"]) })
		return out
	}

	if got := list("lobby"); len(got) != 0 {
		t.Fatalf("presence of an unused channel: %v", got)
	}
	for _, ch := range []string{"lobby", "room:1", "quiet:1"} {
		a.MustOK(map[string]any{"op": "subscribe", "channel": ch})
		b.MustOK(map[string]any{"op": "subscribe", "channel": ch})
	}
	for _, ch := range []string{"lobby", "room:1"} {
		if got, want := list(ch), sorted(a, b); !equalJSON(got, want) {
			t.Errorf("presence of %s = %v, want %v", ch, got, want)
		}
	}
	if got := list("quiet:1"); len(got) != 0 {
		t.Errorf("presence of a channel whose namespace keeps none = %v, want []", got)
	}
	b.MustOK(map[string]any{"op": "unsubscribe", "channel": "lobby"})
	if got, want := list("lobby"), sorted(a); !equalJSON(got, want) {
		t.Errorf("presence after b unsubscribed = %v, want %v", got, want)
	}
	// A closed connection leaves each of its channels in turn: wait for
	// both, not one and then look at the other.
	_ = a.Conn.Close(websocket.StatusNormalClosure, "")
	heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
		if got := list("lobby"); len(got) != 0 {
			return fmt.Errorf("presence of lobby after a closed: %v, want none", got)
		}
		if got, want := list("room:1"), sorted(b); !equalJSON(got, want) {
			return fmt.Errorf("presence of room:1 after a left = %v, want %v", got, want)
		}
		return nil
	})
}

// Presence and joins say how each client is connected, so that a page can
// tell a reader of an SSE stream from someone in the conversation.
func TestPresenceNamesTransport(t *testing.T) {
	t.Parallel()
	_, base := newServer(t, herald.Config{Namespaces: map[string]herald.Namespace{"room": {JoinLeave: true}}})
	watcher := dial(t, base)
	watcher.MustOK(map[string]any{"op": "subscribe", "channel": "room:1"})
	dialRaw(t, base, "room:1")
	waitPresent(t, watcher, "room:1", 2)
	openSSE(t, nil, base+"/sse?channel=room:1", nil)
	clients := waitPresent(t, watcher, "room:1", 3)

	byTransport := map[string]int{}
	for _, c := range clients {
		byTransport[fmt.Sprint(c.(map[string]any)["transport"])]++
	}
	if want := map[string]int{"websocket": 1, "raw": 1, "sse": 1}; !maps.Equal(byTransport, want) {
		t.Fatalf("presence %v: transports %v, want %v", clients, byTransport, want)
	}
	var joined []string
	for len(joined) < 2 {
		if m := watcher.Next(); m["op"] == "join" && m["client"] != clientID(watcher) {
			joined = append(joined, fmt.Sprint(m["transport"]))
		}
	}
	if slices.Sort(joined); !slices.Equal(joined, []string{"raw", "sse"}) {
		t.Fatalf("joins named transports %v, want raw and sse", joined)
	}
}

func TestPing(t *testing.T) {
	t.Parallel()
	_, base := newServer(t, herald.Config{})
	c := dial(t, base)
	id := c.Send(map[string]any{"op": "ping"})
	if r := c.Next(); !equalJSON(r, map[string]any{"id": float64(id), "ok": true}) {
		t.Fatalf("ping reply %v", r)
	}
}

func TestJoinLeave(t *testing.T) {
	t.Parallel()
	_, base := newServer(t, herald.Config{Namespaces: map[string]herald.Namespace{
		"room":  {JoinLeave: true},
		"plain": {},
	}})
	a, b := dial(t, base), dial(t, base)

	// nextEvent skips a's own join and returns the next frame.
	nextEvent := func() map[string]any {
		t.Helper()
		for {
			m := a.Next()
			if m["op"] == "join" && m["client"] == clientID(a) {
				continue
			}
			return m
		}
	}
	a.MustOK(map[string]any{"op": "subscribe", "channel": "room:1"})
	b.MustOK(map[string]any{"op": "subscribe", "channel": "room:1"})
	want := map[string]any{"op": "join", "channel": "room:1", "client": clientID(b), "user": "", "transport": "websocket"}
	if m := nextEvent(); !equalJSON(m, want) {
		t.Fatalf("after b subscribed a got %v, want %v", m, want)
	}
	b.MustOK(map[string]any{"op": "unsubscribe", "channel": "room:1"})
	want["op"] = "leave"
	if m := nextEvent(); !equalJSON(m, want) {
		t.Fatalf("after b unsubscribed a got %v, want %v", m, want)
	}
	// Disconnecting is leaving.
	b.MustOK(map[string]any{"op": "subscribe", "channel": "room:1"})
	want["op"] = "join"
	if m := nextEvent(); !equalJSON(m, want) {
		t.Fatalf("after b subscribed again a got %v, want %v", m, want)
	}
	_ = b.Conn.Close(websocket.StatusNormalClosure, "")
	want["op"] = "leave"
	if m := nextEvent(); !equalJSON(m, want) {
		t.Fatalf("after b disconnected a got %v, want %v", m, want)
	}

	// A namespace without JoinLeave, and a channel outside any namespace:
	// no pushes. A message published afterwards is the next frame.
	for _, ch := range []string{"plain:1", "nons"} {
		c, d := dial(t, base), dial(t, base)
		c.MustOK(map[string]any{"op": "subscribe", "channel": ch})
		d.MustOK(map[string]any{"op": "subscribe", "channel": ch})
		d.MustOK(map[string]any{"op": "unsubscribe", "channel": ch})
		publish(t, d, ch, "after")
		if m := c.Next(); m["op"] != "message" || m["data"] != "after" {
			t.Fatalf("%s: got %v, want the message and no join or leave", ch, m)
		}
	}
}

func TestSubprotocols(t *testing.T) {
	t.Parallel()
	_, base := newServer(t, herald.Config{})
	tests := []struct {
		offer []string
		want  string
	}{
		{nil, ""},
		{[]string{"herald.v1"}, "herald.v1"},
		{[]string{"herald.v1.jsonl"}, "herald.v1.jsonl"},
		{[]string{"other", "herald.v1"}, "herald.v1"},
		{[]string{"herald.v1.jsonl", "herald.v1"}, "herald.v1.jsonl"},
		{[]string{"unknown"}, ""},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.offer), func(t *testing.T) {
			c := dial(t, base, tt.offer...)
			if got := c.Conn.Subprotocol(); got != tt.want {
				t.Fatalf("offered %v, got subprotocol %q, want %q", tt.offer, got, tt.want)
			}
			ch := "sp-" + strings.NewReplacer(" ", "", "[", "", "]", "").Replace(fmt.Sprint(tt.offer))
			c.MustOK(map[string]any{"op": "ping"})
			c.MustOK(map[string]any{"op": "subscribe", "channel": ch})
			off := publish(t, c, ch, map[string]any{"via": tt.want})
			r := c.MustOK(map[string]any{"op": "history", "channel": ch})
			if msgs := r["messages"].([]any); len(msgs) != 1 || msgs[0].(map[string]any)["offset"] != off {
				t.Fatalf("history %v, want the one message at %s", r, off)
			}
		})
	}
}

// In herald.v1.jsonl a client may put several commands in one frame.
func TestJSONLBatch(t *testing.T) {
	t.Parallel()
	_, base := newServer(t, herald.Config{})
	c := dial(t, base, "herald.v1.jsonl")
	c.SendRaw(`{"id":101,"op":"subscribe","channel":"b"}` + "\n" +
		`{"id":102,"op":"publish","channel":"b","data":1}` + "\n\n" +
		`{"id":103,"op":"history","channel":"b"}` + "\n")
	var ids []float64
	var pushes int
	for len(ids) < 3 {
		m := c.Next()
		if id, ok := m["id"].(float64); ok {
			if m["ok"] != true {
				t.Fatalf("reply %v", m)
			}
			ids = append(ids, id)
		} else if m["op"] == "message" {
			pushes++
		}
	}
	if !slices.Equal(ids, []float64{101, 102, 103}) || pushes != 1 {
		t.Fatalf("replies %v and %d pushes, want 101, 102, 103 and 1 push", ids, pushes)
	}
}

// Commands of one connection are handled and replied in order.
func TestCommandsInOrder(t *testing.T) {
	t.Parallel()
	for _, sp := range []string{"herald.v1", "herald.v1.jsonl"} {
		t.Run(sp, func(t *testing.T) {
			t.Parallel()
			_, base := newServer(t, herald.Config{})
			c := dial(t, base, sp)
			const n = 300
			var sent []float64
			for i := range n {
				var f map[string]any
				switch i % 3 {
				case 0:
					f = map[string]any{"op": "publish", "channel": "order", "data": map[string]any{"n": i}}
				case 1:
					f = map[string]any{"op": "history", "channel": "order"}
				default:
					f = map[string]any{"op": "ping"}
				}
				sent = append(sent, float64(c.Send(f)))
			}
			var got []float64
			for len(got) < n {
				r := c.Next()
				got = append(got, r["id"].(float64))
				// A history handled right after a publish sees it.
				if i := len(got) - 1; i%3 == 1 {
					msgs := r["messages"].([]any)
					if len(msgs) != i/3+1 {
						t.Fatalf("history after %d publishes has %d messages", i/3+1, len(msgs))
					}
				}
			}
			if !slices.Equal(got, sent) {
				t.Fatalf("reply ids out of order")
			}
		})
	}
}

// A client may send before it has read anything: the welcome still comes
// first, even when the Connected hook is still running while the client's
// commands arrive.
func TestWelcomeFirstWhenClientSendsAtOnce(t *testing.T) {
	t.Parallel()
	gates := make(chan chan struct{}, 1)
	_, base := newServer(t, herald.Config{Hooks: herald.Hooks{
		Connected: func(herald.Client) {
			// Return only once the client has sent its commands.
			g := <-gates
			select {
			case <-g:
			case <-time.After(heraldtest.Timeout):
			}
		},
	}})
	for _, sp := range []string{"herald.v1", "herald.v1.jsonl"} {
		sent := make(chan struct{})
		gates <- sent
		ctx, cancel := context.WithTimeout(context.Background(), heraldtest.Timeout)
		conn, _, err := websocket.Dial(ctx, heraldtest.WSURL(base, "/ws"), &websocket.DialOptions{Subprotocols: []string{sp}})
		if err != nil {
			t.Fatal(err)
		}
		for i := 1; i <= 3; i++ {
			if err := conn.Write(ctx, websocket.MessageText, []byte(fmt.Sprintf(`{"id":%d,"op":"ping"}`, i))); err != nil {
				t.Fatal(err)
			}
		}
		close(sent)
		var lines []string
		for len(lines) < 4 {
			_, b, err := conn.Read(ctx)
			if err != nil {
				t.Fatal(err)
			}
			lines = append(lines, strings.Split(strings.TrimSpace(string(b)), "\n")...)
		}
		cancel()
		_ = conn.CloseNow()
		if !strings.HasPrefix(lines[0], `{"op":"welcome"`) {
			t.Fatalf("%s: first frame %s, want the welcome", sp, lines[0])
		}
		for i, l := range lines[1:] {
			if want := fmt.Sprintf(`{"id":%d,"ok":true}`, i+1); l != want {
				t.Fatalf("%s: frame %d is %s, want %s", sp, i+2, l, want)
			}
		}
	}
}
