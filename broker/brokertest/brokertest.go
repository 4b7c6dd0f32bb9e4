// Package brokertest is the behaviour suite every herald broker must pass
// unchanged. A broker's own test calls Run:
//
//	func TestBroker(t *testing.T) {
//		brokertest.Run(t, func(t *testing.T) broker.Broker { return memory.New() })
//	}
//
// Every subtest uses channels under a prefix of its own, so brokers backed
// by a shared service (one Redis, one NATS server) can run the suite against
// that service without one subtest seeing another's messages. Waits poll a
// condition; nothing sleeps for a fixed time.
package brokertest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald/broker"
)

// Timeout bounds every wait of the suite: how long a broker may take to
// deliver a message or expire history.
const Timeout = 10 * time.Second

// Run runs the suite. newBroker returns a new, unstarted broker for one
// subtest; Run starts it with a recording Handler and closes it when the
// subtest ends.
func Run(t *testing.T, newBroker func(t *testing.T) broker.Broker) {
	tests := []struct {
		name string
		fn   func(t *testing.T, e *env)
	}{
		{"OffsetsIncreaseAndHandlerSeesThemInOrder", testOffsetsInOrder},
		{"MessageFieldsArePreserved", testMessageFields},
		{"TagsAndKeyArePreserved", testTagsAndKey},
		{"OffsetsSurviveTheWire", testOffsetWireForm},
		{"PublishUnsubscribedStoresHistoryOnly", testPublishUnsubscribed},
		{"UnsubscribeStopsDelivery", testUnsubscribe},
		{"SubscribeIsNotCounted", testSubscribeNotCounted},
		{"HistorySizeKeepsNewest", testHistorySize},
		{"HistoryTTLExpires", testHistoryTTL},
		{"HistorySizeZeroKeepsNone", testHistorySizeZero},
		{"HistorySinceAndLimit", testHistorySinceLimit},
		{"HistoryOfUnknownChannel", testHistoryUnknownChannel},
		{"HistorySinceOtherEpoch", testHistoryOtherEpoch},
		{"HistorySinceAheadOfLatest", testHistoryAhead},
		{"JoinLeaveOnlyWhenSubscribed", testJoinLeave},
		{"Presence", testPresence},
		{"ChannelsAreIndependent", testChannelsIndependent},
		{"ConcurrentPublishersGetUniqueOffsets", testConcurrentPublishers},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := newBroker(t)
			rec := newRecorder()
			ctx, cancel := context.WithTimeout(context.Background(), 2*Timeout)
			t.Cleanup(cancel)
			if err := b.Start(ctx, rec); err != nil {
				t.Fatalf("Start: %v", err)
			}
			t.Cleanup(func() {
				if err := b.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			tt.fn(t, &env{t: t, b: b, rec: rec, ctx: ctx, prefix: uniquePrefix(t)})
		})
	}
}

// env is one subtest's broker, recorder and channel prefix.
type env struct {
	t      *testing.T
	b      broker.Broker
	rec    *recorder
	ctx    context.Context
	prefix string
}

// channel returns a channel name unique to this subtest.
func (e *env) channel(name string) string { return e.prefix + name }

func (e *env) subscribe(ch string) {
	e.t.Helper()
	if err := e.b.Subscribe(e.ctx, ch); err != nil {
		e.t.Fatalf("Subscribe(%q): %v", ch, err)
	}
}

func (e *env) unsubscribe(ch string) {
	e.t.Helper()
	if err := e.b.Unsubscribe(e.ctx, ch); err != nil {
		e.t.Fatalf("Unsubscribe(%q): %v", ch, err)
	}
}

// publish publishes data (a JSON value) with opts and returns the offset.
func (e *env) publish(ch, data string, opts broker.HistoryOptions) broker.Offset {
	e.t.Helper()
	off, err := e.b.Publish(e.ctx, ch, broker.Publication{Data: json.RawMessage(data)}, opts)
	if err != nil {
		e.t.Fatalf("Publish(%q): %v", ch, err)
	}
	if off.IsZero() {
		e.t.Fatalf("Publish(%q) returned the zero offset", ch)
	}
	return off
}

// publishAll publishes pubs in order, keeping history, and returns their
// offsets.
func (e *env) publishAll(ch string, pubs []broker.Publication) []broker.Offset {
	e.t.Helper()
	offs := make([]broker.Offset, len(pubs))
	for i, p := range pubs {
		off, err := e.b.Publish(e.ctx, ch, p, keep)
		if err != nil {
			e.t.Fatalf("Publish %d to %q: %v", i, ch, err)
		}
		offs[i] = off
	}
	return offs
}

// publishN publishes n messages {"n":1}…{"n":n} and returns their offsets.
func (e *env) publishN(ch string, n int, opts broker.HistoryOptions) []broker.Offset {
	e.t.Helper()
	offs := make([]broker.Offset, n)
	for i := range offs {
		offs[i] = e.publish(ch, fmt.Sprintf(`{"n":%d}`, i+1), opts)
	}
	return offs
}

func (e *env) history(ch string, q broker.HistoryQuery) broker.HistoryResult {
	e.t.Helper()
	res, err := e.b.History(e.ctx, ch, q)
	if err != nil {
		e.t.Fatalf("History(%q, %+v): %v", ch, q, err)
	}
	return res
}

// waitMessages waits until the Handler has seen n messages of ch and
// returns them.
func (e *env) waitMessages(ch string, n int) []broker.Message {
	e.t.Helper()
	waitFor(e.t, func() error {
		if got := len(e.rec.messages(ch)); got < n {
			return fmt.Errorf("Handler saw %d messages of %s, want at least %d", got, ch, n)
		}
		return nil
	})
	return e.rec.messages(ch)
}

var keep = broker.HistoryOptions{Size: 1000}

func testOffsetsInOrder(t *testing.T, e *env) {
	ch := e.channel("ordered")
	e.subscribe(ch)
	const n = 100
	offs := e.publishN(ch, n, keep)
	for i := 1; i < n; i++ {
		if !after(offs[i], offs[i-1]) {
			t.Fatalf("offset %d %v is not after offset %d %v", i+1, offs[i], i, offs[i-1])
		}
	}
	got := e.waitMessages(ch, n)
	if len(got) != n {
		t.Fatalf("Handler saw %d messages, want %d", len(got), n)
	}
	for i, m := range got {
		if m.Offset != offs[i] {
			t.Fatalf("Handler message %d has offset %v, Publish returned %v", i+1, m.Offset, offs[i])
		}
		if want := fmt.Sprintf(`{"n":%d}`, i+1); string(m.Data) != want {
			t.Fatalf("Handler message %d has data %s, want %s", i+1, m.Data, want)
		}
	}
	checkChain(t, "Handler", got)
	checkChain(t, "History", e.history(ch, broker.HistoryQuery{Limit: -1}).Messages)
	e.rec.checkSerial(t)
}

// checkChain fails t unless each message's Prev is the Seq of the message
// before it and the first message of a channel has Prev 0.
func checkChain(t *testing.T, what string, ms []broker.Message) {
	t.Helper()
	for i, m := range ms {
		want := uint64(0)
		if i > 0 {
			want = ms[i-1].Offset.Seq
		}
		if m.Prev != want {
			t.Fatalf("%s message %d at %v has Prev %d, want %d", what, i+1, m.Offset, m.Prev, want)
		}
	}
}

func testMessageFields(t *testing.T, e *env) {
	ch := e.channel("fields")
	e.subscribe(ch)
	before := time.Now().Add(-time.Minute)
	pubs := []broker.Publication{
		{Data: json.RawMessage(`{"text":"hi","list":[1,2.5,"x",null,true]}`), Event: "greet", User: "alice", Client: "c-1",
			Trace: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
		{Data: json.RawMessage(`"a string with \"quotes\" and ünïcode"`)},
		{Data: json.RawMessage(`null`)},
		{Data: []byte{0, 1, 2, 0xff, '\n'}, Binary: true, Client: "c-2"},
	}
	offs := e.publishAll(ch, pubs)
	check := func(where string, ms []broker.Message) {
		t.Helper()
		if len(ms) != len(pubs) {
			t.Fatalf("%s: %d messages, want %d", where, len(ms), len(pubs))
		}
		for i, m := range ms {
			p := pubs[i]
			if m.Channel != ch || m.Offset != offs[i] || string(m.Data) != string(p.Data) ||
				m.Binary != p.Binary || m.Event != p.Event || m.User != p.User || m.Client != p.Client || m.Trace != p.Trace {
				t.Errorf("%s: message %d = %+v, published %+v on %q at %v", where, i, m, p, ch, offs[i])
			}
			if m.Time.Before(before) || m.Time.After(time.Now().Add(time.Minute)) {
				t.Errorf("%s: message %d has time %v, not about now", where, i, m.Time)
			}
		}
	}
	check("Handler", e.waitMessages(ch, len(pubs)))
	check("History", e.history(ch, broker.HistoryQuery{Limit: -1}).Messages)
}

func testOffsetWireForm(t *testing.T, e *env) {
	ch := e.channel("wire")
	for _, off := range e.publishN(ch, 3, keep) {
		s := off.String()
		back, err := broker.ParseOffset(s)
		if err != nil || back != off {
			t.Fatalf("offset %#v: String %q parses back to %#v, %v", off, s, back, err)
		}
	}
	res := e.history(ch, broker.HistoryQuery{Limit: 0})
	if back, err := broker.ParseOffset(res.Latest.String()); err != nil || back != res.Latest {
		t.Fatalf("Latest %#v does not survive String/ParseOffset: %#v, %v", res.Latest, back, err)
	}
}

func testPublishUnsubscribed(t *testing.T, e *env) {
	ch := e.channel("quiet")
	first := e.publish(ch, `"before"`, keep)
	res := e.history(ch, broker.HistoryQuery{Limit: -1})
	if len(res.Messages) != 1 || res.Messages[0].Offset != first || res.Latest != first {
		t.Fatalf("History after a publish nobody subscribed to = %+v, want the one message at %v", res, first)
	}
	// A message published after subscribing is delivered; one published
	// before it would have come first, as the Handler sees offset order.
	e.subscribe(ch)
	fence := e.publish(ch, `"after"`, keep)
	got := e.waitMessages(ch, 1)
	if len(got) != 1 || got[0].Offset != fence {
		t.Fatalf("Handler saw %v, want only the message at %v", offsets(got), fence)
	}
}

func testUnsubscribe(t *testing.T, e *env) {
	ch := e.channel("unsub")
	e.subscribe(ch)
	o1 := e.publish(ch, `1`, keep)
	e.waitMessages(ch, 1)
	e.unsubscribe(ch)
	e.publish(ch, `2`, keep)
	// Subscribe again and publish a fence: the message published while
	// unsubscribed must never show up, before the fence or after it.
	e.subscribe(ch)
	o3 := e.publish(ch, `3`, keep)
	got := e.waitMessages(ch, 2)
	if want := []broker.Offset{o1, o3}; !slices.Equal(offsets(got), want) {
		t.Fatalf("Handler saw %v, want %v", offsets(got), want)
	}
}

func testSubscribeNotCounted(t *testing.T, e *env) {
	ch := e.channel("twice")
	e.subscribe(ch)
	e.subscribe(ch)
	o1 := e.publish(ch, `1`, keep)
	e.waitMessages(ch, 1)
	e.unsubscribe(ch) // one Unsubscribe undoes both Subscribes
	e.publish(ch, `2`, keep)
	other := e.channel("twice-fence")
	e.subscribe(other)
	e.publish(other, `"fence"`, keep)
	e.waitMessages(other, 1)
	e.subscribe(ch)
	o3 := e.publish(ch, `3`, keep)
	got := e.waitMessages(ch, 2)
	if want := []broker.Offset{o1, o3}; !slices.Equal(offsets(got), want) {
		t.Fatalf("Handler saw %v, want %v (each message once, none while unsubscribed)", offsets(got), want)
	}
}

func testHistorySize(t *testing.T, e *env) {
	ch := e.channel("size")
	opts := broker.HistoryOptions{Size: 3}
	offs := e.publishN(ch, 5, opts)

	res := e.history(ch, broker.HistoryQuery{Since: offs[1], Limit: -1})
	if !res.Complete {
		t.Errorf("since the 2nd of 5 with size 3: Complete = false, want true (3rd..5th are kept)")
	}
	if got := offsets(res.Messages); !slices.Equal(got, offs[2:]) {
		t.Errorf("since the 2nd: messages %v, want %v", got, offs[2:])
	}
	if res.Latest != offs[4] {
		t.Errorf("Latest = %v, want %v", res.Latest, offs[4])
	}

	res = e.history(ch, broker.HistoryQuery{Since: offs[0], Limit: -1})
	if res.Complete {
		t.Errorf("since the 1st of 5 with size 3: Complete = true, want false (the 2nd was trimmed)")
	}
	if got := offsets(res.Messages); !slices.Equal(got, offs[2:]) {
		t.Errorf("since the 1st: messages %v, want what is kept, %v", got, offs[2:])
	}

	res = e.history(ch, broker.HistoryQuery{Since: offs[4], Limit: -1})
	if !res.Complete || len(res.Messages) != 0 {
		t.Errorf("since the latest: Complete %v, %d messages; want true, 0", res.Complete, len(res.Messages))
	}

	// The zero Since asks for all of the epoch: two messages are gone.
	res = e.history(ch, broker.HistoryQuery{Limit: -1})
	if res.Complete {
		t.Errorf("zero since after the 1st and 2nd of 5 were trimmed: Complete = true, want false")
	}
	if got := offsets(res.Messages); !slices.Equal(got, offs[2:]) {
		t.Errorf("zero since: messages %v, want %v", got, offs[2:])
	}
}

func testHistoryTTL(t *testing.T, e *env) {
	ch := e.channel("ttl")
	opts := broker.HistoryOptions{Size: 10, TTL: 200 * time.Millisecond}
	offs := e.publishN(ch, 2, opts)
	if got := offsets(e.history(ch, broker.HistoryQuery{Limit: -1}).Messages); !slices.Equal(got, offs) {
		t.Fatalf("history right after publishing: %v, want %v", got, offs)
	}
	waitFor(t, func() error {
		if got := e.history(ch, broker.HistoryQuery{Limit: -1}).Messages; len(got) != 0 {
			return fmt.Errorf("history past the TTL has %d messages %v, want none", len(got), offsets(got))
		}
		return nil
	})
	// Expired messages are lost: a cursor from before them, or no cursor
	// at all, no longer gets everything.
	for _, since := range []broker.Offset{{}, offs[0]} {
		if res := e.history(ch, broker.HistoryQuery{Since: since, Limit: -1}); res.Complete {
			t.Errorf("since %v after the history expired: Complete = true, want false", since)
		}
	}
	// A channel whose history expired still takes messages.
	o3 := e.publish(ch, `3`, opts)
	if got := offsets(e.history(ch, broker.HistoryQuery{Limit: -1}).Messages); !slices.Equal(got, []broker.Offset{o3}) {
		t.Fatalf("history after expiry and one more publish: %v, want [%v]", got, o3)
	}
}

func testHistorySizeZero(t *testing.T, e *env) {
	ch := e.channel("nohistory")
	e.subscribe(ch)
	o1 := e.publish(ch, `1`, broker.HistoryOptions{})
	o2 := e.publish(ch, `2`, broker.HistoryOptions{})
	if !after(o2, o1) {
		t.Fatalf("offsets %v then %v do not increase without history", o1, o2)
	}
	if got := e.waitMessages(ch, 2); !slices.Equal(offsets(got), []broker.Offset{o1, o2}) {
		t.Fatalf("Handler saw %v, want %v", offsets(got), []broker.Offset{o1, o2})
	}
	if res := e.history(ch, broker.HistoryQuery{Limit: -1}); len(res.Messages) != 0 {
		t.Fatalf("History with Size 0 returned %d messages", len(res.Messages))
	}
}

func testHistorySinceLimit(t *testing.T, e *env) {
	ch := e.channel("query")
	offs := e.publishN(ch, 5, keep)
	tests := []struct {
		name string
		q    broker.HistoryQuery
		want []broker.Offset
	}{
		{"zero since, all", broker.HistoryQuery{Limit: -1}, offs},
		{"zero since, limit 0", broker.HistoryQuery{Limit: 0}, nil},
		{"zero since, limit 2 gives the newest", broker.HistoryQuery{Limit: 2}, offs[3:]},
		{"zero since, limit past the end", broker.HistoryQuery{Limit: 50}, offs},
		{"since 2nd, all", broker.HistoryQuery{Since: offs[1], Limit: -1}, offs[2:]},
		{"since 2nd, limit 2", broker.HistoryQuery{Since: offs[1], Limit: 2}, offs[2:4]},
		{"since 2nd, limit 0", broker.HistoryQuery{Since: offs[1], Limit: 0}, nil},
		{"since latest", broker.HistoryQuery{Since: offs[4], Limit: -1}, nil},
	}
	for _, tt := range tests {
		res := e.history(ch, tt.q)
		if got := offsets(res.Messages); !slices.Equal(got, tt.want) {
			t.Errorf("%s: messages %v, want %v", tt.name, got, tt.want)
		}
		if !res.Complete {
			t.Errorf("%s: Complete = false, want true (nothing was trimmed)", tt.name)
		}
		if res.Latest != offs[4] {
			t.Errorf("%s: Latest = %v, want %v", tt.name, res.Latest, offs[4])
		}
	}
	for i, m := range e.history(ch, broker.HistoryQuery{Limit: -1}).Messages {
		if want := fmt.Sprintf(`{"n":%d}`, i+1); string(m.Data) != want {
			t.Errorf("history message %d: data %s, want %s (oldest first)", i, m.Data, want)
		}
	}
}

func testHistoryUnknownChannel(t *testing.T, e *env) {
	res := e.history(e.channel("never-used"), broker.HistoryQuery{Limit: -1})
	if len(res.Messages) != 0 || !res.Latest.IsZero() || !res.Complete {
		t.Fatalf("History of a channel never used = %+v, want no messages, zero Latest, Complete", res)
	}
}

func testHistoryOtherEpoch(t *testing.T, e *env) {
	ch := e.channel("epoch")
	offs := e.publishN(ch, 3, keep)
	for _, since := range []broker.Offset{
		{Epoch: offs[0].Epoch + "x", Seq: offs[0].Seq},
		{Epoch: "not-" + offs[0].Epoch, Seq: 1},
		{Epoch: "not-" + offs[0].Epoch, Seq: offs[2].Seq + 100},
	} {
		// A cursor into a history that is gone gets what the current
		// history holds, oldest first.
		res := e.history(ch, broker.HistoryQuery{Since: since, Limit: -1})
		if res.Complete {
			t.Errorf("since %v, from another epoch than %v: Complete = true, want false", since, offs[0])
		}
		if res.Latest != offs[2] {
			t.Errorf("since %v: Latest = %v, want %v", since, res.Latest, offs[2])
		}
		if got := offsets(res.Messages); !slices.Equal(got, offs) {
			t.Errorf("since %v: messages %v, want all the current history holds, %v", since, got, offs)
		}
		res = e.history(ch, broker.HistoryQuery{Since: since, Limit: 2})
		if got := offsets(res.Messages); !slices.Equal(got, offs[:2]) || res.Complete {
			t.Errorf("since %v, limit 2: messages %v, Complete %v; want the oldest two %v, false", since, got, res.Complete, offs[:2])
		}
	}
}

// testHistoryAhead asks from an offset of the current epoch beyond the
// newest message: a cursor from a history the broker lost (a server that
// came back with an older state) must not be taken as up to date.
func testHistoryAhead(t *testing.T, e *env) {
	ch := e.channel("ahead")
	offs := e.publishN(ch, 3, keep)
	latest := offs[2]
	for _, since := range []broker.Offset{
		{Epoch: latest.Epoch, Seq: latest.Seq + 1},
		{Epoch: latest.Epoch, Seq: latest.Seq + 1000},
	} {
		res := e.history(ch, broker.HistoryQuery{Since: since, Limit: -1})
		if res.Complete {
			t.Errorf("since %v, ahead of the latest %v: Complete = true, want false", since, latest)
		}
		if res.Latest != latest {
			t.Errorf("since %v: Latest = %v, want %v", since, res.Latest, latest)
		}
		if got := offsets(res.Messages); !slices.Equal(got, offs) {
			t.Errorf("since %v: messages %v, want all the history holds, %v", since, got, offs)
		}
		res = e.history(ch, broker.HistoryQuery{Since: since, Limit: 1})
		if got := offsets(res.Messages); !slices.Equal(got, offs[:1]) || res.Complete {
			t.Errorf("since %v, limit 1: messages %v, Complete %v; want the oldest %v, false", since, got, res.Complete, offs[:1])
		}
	}
}

func testJoinLeave(t *testing.T, e *env) {
	ch := e.channel("presence-events")
	early := broker.ClientInfo{Client: "early", User: "u0"}
	if err := e.b.PublishJoin(e.ctx, ch, early); err != nil {
		t.Fatalf("PublishJoin unsubscribed: %v", err)
	}
	if err := e.b.PublishLeave(e.ctx, ch, early); err != nil {
		t.Fatalf("PublishLeave unsubscribed: %v", err)
	}
	e.subscribe(ch)
	c := broker.ClientInfo{Client: "c1", User: "u1", Transport: "sse"}
	if err := e.b.PublishJoin(e.ctx, ch, c); err != nil {
		t.Fatalf("PublishJoin: %v", err)
	}
	if err := e.b.PublishLeave(e.ctx, ch, c); err != nil {
		t.Fatalf("PublishLeave: %v", err)
	}
	waitFor(t, func() error { return e.rec.presenceAtLeast(ch, 2) })
	want := []presenceEvent{{"join", c}, {"leave", c}}
	if got := e.rec.presence(ch); !slices.EqualFunc(got, want, samePresenceEvent) {
		t.Fatalf("Handler saw %v, want %v (nothing from before the subscription)", got, want)
	}
	if res := e.history(ch, broker.HistoryQuery{Limit: -1}); len(res.Messages) != 0 || !res.Latest.IsZero() {
		t.Fatalf("join and leave went into history: %+v", res)
	}
	if ms := e.rec.messages(ch); len(ms) != 0 {
		t.Fatalf("join and leave reached HandleMessage: %v", offsets(ms))
	}

	e.unsubscribe(ch)
	if err := e.b.PublishJoin(e.ctx, ch, broker.ClientInfo{Client: "late"}); err != nil {
		t.Fatalf("PublishJoin after unsubscribe: %v", err)
	}
	e.subscribe(ch)
	fence := broker.ClientInfo{Client: "fence"}
	if err := e.b.PublishJoin(e.ctx, ch, fence); err != nil {
		t.Fatalf("PublishJoin: %v", err)
	}
	waitFor(t, func() error { return e.rec.presenceAtLeast(ch, 3) })
	want = append(want, presenceEvent{"join", fence})
	if got := e.rec.presence(ch); !slices.EqualFunc(got, want, samePresenceEvent) {
		t.Fatalf("Handler saw %v, want %v (nothing while unsubscribed)", got, want)
	}
}

func testPresence(t *testing.T, e *env) {
	ps, ok := e.b.(broker.PresenceStore)
	if !ok {
		// Presence is optional: herald reports empty presence for brokers
		// without a store. Nothing else to check.
		return
	}
	ch := e.channel("who")
	list := func() []broker.ClientInfo {
		t.Helper()
		cs, err := ps.Presence(e.ctx, ch)
		if err != nil {
			t.Fatalf("Presence: %v", err)
		}
		slices.SortFunc(cs, func(a, b broker.ClientInfo) int { return strings.Compare(a.Client, b.Client) })
		return cs
	}
	if got := list(); len(got) != 0 {
		t.Fatalf("Presence of an unused channel = %v, want none", got)
	}
	a := broker.ClientInfo{Client: "a", User: "alice", Transport: "websocket"}
	b := broker.ClientInfo{Client: "b", User: "", Transport: "sse"}
	for _, c := range []broker.ClientInfo{a, b, a} {
		if err := ps.AddPresence(e.ctx, ch, c); err != nil {
			t.Fatalf("AddPresence(%v): %v", c, err)
		}
	}
	if got, want := list(), []broker.ClientInfo{a, b}; !slices.EqualFunc(got, want, sameClient) {
		t.Fatalf("Presence = %v, want %v (a added twice is listed once)", got, want)
	}
	if cs, err := ps.Presence(e.ctx, e.channel("who-else")); err != nil || len(cs) != 0 {
		t.Fatalf("Presence of another channel = %v, %v; want none", cs, err)
	}
	if err := ps.RemovePresence(e.ctx, ch, a); err != nil {
		t.Fatalf("RemovePresence: %v", err)
	}
	if got, want := list(), []broker.ClientInfo{b}; !slices.EqualFunc(got, want, sameClient) {
		t.Fatalf("Presence after removing a = %v, want %v", got, want)
	}
	if err := ps.RemovePresence(e.ctx, ch, broker.ClientInfo{Client: "nobody"}); err != nil {
		t.Fatalf("RemovePresence of a client not present: %v", err)
	}
	if err := ps.RemovePresence(e.ctx, ch, b); err != nil {
		t.Fatalf("RemovePresence: %v", err)
	}
	if got := list(); len(got) != 0 {
		t.Fatalf("Presence after removing everyone = %v", got)
	}

	// Info is kept as given, and replaced (or dropped) by the next
	// AddPresence of the client.
	c := broker.ClientInfo{Client: "c", User: "carol", Info: json.RawMessage(`{"role":"admin","n":[1,"x"]}`)}
	for _, step := range []struct {
		add  broker.ClientInfo
		want string
	}{
		{c, `{"role":"admin","n":[1,"x"]}`},
		{broker.ClientInfo{Client: "c", User: "carol", Info: json.RawMessage(`"mod"`)}, `"mod"`},
		{broker.ClientInfo{Client: "c", User: "carol"}, ""},
	} {
		if err := ps.AddPresence(e.ctx, ch, step.add); err != nil {
			t.Fatalf("AddPresence(%v): %v", step.add, err)
		}
		got := list()
		if len(got) != 1 || got[0].Client != "c" || got[0].User != "carol" || string(got[0].Info) != step.want {
			t.Fatalf("Presence after adding %v = %v, want carol with info %s", step.add, got, step.want)
		}
	}
	if err := ps.RemovePresence(e.ctx, ch, c); err != nil {
		t.Fatalf("RemovePresence: %v", err)
	}
	if err := ps.AddPresence(e.ctx, ch, broker.ClientInfo{Client: "c", User: "carol"}); err != nil {
		t.Fatalf("AddPresence: %v", err)
	}
	if got := list(); len(got) != 1 || got[0].Info != nil {
		t.Fatalf("Presence after removing c and adding it back without info = %v, want no info", got)
	}
}

func testChannelsIndependent(t *testing.T, e *env) {
	a, b := e.channel("a"), e.channel("b")
	e.subscribe(a)
	e.subscribe(b)
	oa := e.publishN(a, 3, keep)
	ob := e.publishN(b, 2, keep)
	if got := offsets(e.waitMessages(a, 3)); !slices.Equal(got, oa) {
		t.Errorf("Handler saw %v on a, want %v", got, oa)
	}
	if got := offsets(e.waitMessages(b, 2)); !slices.Equal(got, ob) {
		t.Errorf("Handler saw %v on b, want %v", got, ob)
	}
	if got := offsets(e.history(a, broker.HistoryQuery{Limit: -1}).Messages); !slices.Equal(got, oa) {
		t.Errorf("history of a = %v, want %v", got, oa)
	}
	if got := offsets(e.history(b, broker.HistoryQuery{Limit: -1}).Messages); !slices.Equal(got, ob) {
		t.Errorf("history of b = %v, want %v", got, ob)
	}
	for _, m := range e.rec.messages(b) {
		if m.Channel != b {
			t.Errorf("message %v delivered for b names channel %q", m.Offset, m.Channel)
		}
	}
	// Unsubscribing one channel leaves the other delivered.
	e.unsubscribe(a)
	o := e.publish(b, `"still"`, keep)
	if got := e.waitMessages(b, 3); got[len(got)-1].Offset != o {
		t.Errorf("after unsubscribing a, b's last delivery is %v, want %v", got[len(got)-1].Offset, o)
	}
}

func testConcurrentPublishers(t *testing.T, e *env) {
	ch := e.channel("busy")
	e.subscribe(ch)
	const publishers, each = 8, 50
	var (
		mu   sync.Mutex
		offs []broker.Offset
		wg   sync.WaitGroup
	)
	for p := range publishers {
		wg.Go(func() {
			for i := range each {
				off, err := e.b.Publish(e.ctx, ch, broker.Publication{Data: json.RawMessage(fmt.Sprintf(`[%d,%d]`, p, i))}, keep)
				if err != nil {
					t.Errorf("Publish: %v", err)
					return
				}
				mu.Lock()
				offs = append(offs, off)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	seen := make(map[broker.Offset]bool, len(offs))
	for _, o := range offs {
		if seen[o] {
			t.Fatalf("offset %v returned twice", o)
		}
		seen[o] = true
	}
	got := e.waitMessages(ch, publishers*each)
	if len(got) != publishers*each {
		t.Fatalf("Handler saw %d messages, want %d", len(got), publishers*each)
	}
	for i, m := range got {
		if !seen[m.Offset] {
			t.Fatalf("Handler saw offset %v that no Publish returned", m.Offset)
		}
		if i > 0 && !after(m.Offset, got[i-1].Offset) {
			t.Fatalf("Handler saw %v after %v: not in offset order", m.Offset, got[i-1].Offset)
		}
	}
	checkChain(t, "Handler", got)
	// Each publisher's own messages keep their order.
	last := make(map[int]int)
	for _, m := range got {
		var pi [2]int
		if err := json.Unmarshal(m.Data, &pi); err != nil {
			t.Fatalf("data %s: %v", m.Data, err)
		}
		if prev, ok := last[pi[0]]; ok && pi[1] <= prev {
			t.Fatalf("publisher %d: message %d delivered after %d", pi[0], pi[1], prev)
		}
		last[pi[0]] = pi[1]
	}
	if got := offsets(e.history(ch, broker.HistoryQuery{Limit: -1}).Messages); !slices.Equal(got, offsets(e.rec.messages(ch))) {
		t.Fatalf("history and deliveries disagree")
	}
	e.rec.checkSerial(t)
}

// after reports whether a comes after b in one channel: same epoch, higher
// sequence.
func after(a, b broker.Offset) bool { return a.Epoch == b.Epoch && a.Seq > b.Seq }

func offsets(ms []broker.Message) []broker.Offset {
	if len(ms) == 0 {
		return nil
	}
	out := make([]broker.Offset, len(ms))
	for i, m := range ms {
		out[i] = m.Offset
	}
	return out
}

// waitFor polls cond until it returns nil, failing the test after Timeout
// with the last error cond returned.
func waitFor(t *testing.T, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(Timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v: %v", Timeout, err)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// uniquePrefix names a subtest's channels: valid channel-name bytes only,
// unique across runs sharing one backing service.
func uniquePrefix(t *testing.T) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	name := t.Name()
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		name = name[i+1:]
	}
	if len(name) > 40 {
		name = name[:40]
	}
	return "brokertest-" + name + "-" + hex.EncodeToString(b[:]) + "."
}

type presenceEvent struct {
	op string
	c  broker.ClientInfo
}

func samePresenceEvent(a, b presenceEvent) bool { return a.op == b.op && sameClient(a.c, b.c) }

// sameClient reports whether a and b name the same client with the same
// user, transport and info.
func sameClient(a, b broker.ClientInfo) bool {
	return a.Client == b.Client && a.User == b.User && a.Transport == b.Transport && string(a.Info) == string(b.Info)
}

// recorder is the suite's Handler: it records every call and whether calls
// for one channel ever overlapped.
type recorder struct {
	mu       sync.Mutex
	msgs     map[string][]broker.Message
	events   map[string][]presenceEvent
	inflight sync.Map // channel → *atomic.Int32
	overlap  atomic.Value
}

var _ broker.Handler = (*recorder)(nil)

func newRecorder() *recorder {
	return &recorder{msgs: make(map[string][]broker.Message), events: make(map[string][]presenceEvent)}
}

func (r *recorder) enter(ch string) func() {
	v, _ := r.inflight.LoadOrStore(ch, new(atomic.Int32))
	n := v.(*atomic.Int32)
	if n.Add(1) > 1 {
		r.overlap.CompareAndSwap(nil, ch)
	}
	return func() { n.Add(-1) }
}

func (r *recorder) HandleMessage(m broker.Message) {
	defer r.enter(m.Channel)()
	m.Data = append(json.RawMessage(nil), m.Data...) // the broker may reuse its buffer
	r.mu.Lock()
	r.msgs[m.Channel] = append(r.msgs[m.Channel], m)
	r.mu.Unlock()
}

func (r *recorder) HandleJoin(ch string, c broker.ClientInfo) {
	defer r.enter(ch)()
	r.mu.Lock()
	r.events[ch] = append(r.events[ch], presenceEvent{"join", c})
	r.mu.Unlock()
}

func (r *recorder) HandleLeave(ch string, c broker.ClientInfo) {
	defer r.enter(ch)()
	r.mu.Lock()
	r.events[ch] = append(r.events[ch], presenceEvent{"leave", c})
	r.mu.Unlock()
}

// HandleReconnect needs no record: the suite does not cut the connection.
func (r *recorder) HandleReconnect() {}

func (r *recorder) messages(ch string) []broker.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.msgs[ch])
}

func (r *recorder) presence(ch string) []presenceEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events[ch])
}

// presenceAtLeast is a waitFor condition: the Handler saw at least n join
// or leave events of ch.
func (r *recorder) presenceAtLeast(ch string, n int) error {
	if got := r.presence(ch); len(got) < n {
		return fmt.Errorf("Handler saw presence events %v of %s, want at least %d", got, ch, n)
	}
	return nil
}

// checkSerial fails t if the Handler was ever called for one channel while
// an earlier call for it was still running.
func (r *recorder) checkSerial(t *testing.T) {
	t.Helper()
	if ch := r.overlap.Load(); ch != nil {
		t.Errorf("Handler calls for channel %q overlapped", ch)
	}
}
