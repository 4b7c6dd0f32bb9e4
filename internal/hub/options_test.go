package hub_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/centrifugal/fdelta"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/memory"
	"github.com/heraldhq/herald/internal/hub"
)

// eqFilter passes messages whose tag equals a value, and counts its
// evaluations.
type eqFilter struct {
	tag, value string
	calls      *atomic.Int64
}

func (f eqFilter) Match(tags map[string]string) bool {
	f.calls.Add(1)
	return tags[f.tag] == f.value
}

func (f eqFilter) Key() string { return f.tag + "=" + f.value }

// collector keeps every delivery it is handed.
type collector struct {
	mu sync.Mutex
	ds []*hub.Delivery
}

func (c *collector) Deliver(d *hub.Delivery) {
	if d.Presence != nil {
		return
	}
	c.mu.Lock()
	c.ds = append(c.ds, d)
	c.mu.Unlock()
}

func (c *collector) deliveries() []*hub.Delivery {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*hub.Delivery(nil), c.ds...)
}

func newOptionsHub(t *testing.T, opts hub.ChannelOptions, delivered func(broker.Message, []broker.ClientInfo)) *hub.Hub {
	t.Helper()
	b := memory.New()
	h := hub.New(hub.Config{
		Broker:    b,
		Options:   func(string) hub.ChannelOptions { return opts },
		Delivered: delivered,
	})
	if err := h.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		h.Stop()
		_ = b.Close()
	})
	return h
}

func subscribeWith(t *testing.T, h *hub.Hub, sub hub.Subscriber, client, channel string, since *broker.Offset, so hub.SubscribeOptions) {
	t.Helper()
	info := broker.ClientInfo{Client: client}
	so.Acks = true
	if err := h.SubscribeWith(context.Background(), sub, &info, channel, since, so, func(hub.SubscribeResult) {}); err != nil {
		t.Fatal(err)
	}
}

func publishTagged(t *testing.T, h *hub.Hub, channel string, data string, tags map[string]string) broker.Offset {
	t.Helper()
	off, err := h.Publish(context.Background(), channel, broker.Publication{Data: json.RawMessage(data), Tags: tags})
	if err != nil {
		t.Fatal(err)
	}
	return off
}

// A filter is evaluated once per distinct filter per message, however
// many subscribers share it, and each subscriber gets only what its
// filter passes.
func TestFiltersEvaluatedOncePerDistinctFilter(t *testing.T) {
	h := newOptionsHub(t, hub.ChannelOptions{}, nil)
	var calls atomic.Int64
	const subs, distinct, messages = 200, 10, 7
	cs := make([]*collector, subs)
	for i := range cs {
		cs[i] = &collector{}
		f := eqFilter{tag: "sym", value: fmt.Sprint(i % distinct), calls: &calls}
		subscribeWith(t, h, cs[i], fmt.Sprint("c", i), "prices", nil, hub.SubscribeOptions{Filter: f})
	}
	plain := &collector{}
	subscribeWith(t, h, plain, "plain", "prices", nil, hub.SubscribeOptions{})
	for m := range messages {
		publishTagged(t, h, "prices", fmt.Sprint(m), map[string]string{"sym": fmt.Sprint(m % distinct)})
	}
	if got := calls.Load(); got != distinct*messages {
		t.Fatalf("filters evaluated %d times, want %d (once per distinct filter per message)", got, distinct*messages)
	}
	for i, c := range cs {
		for _, d := range c.deliveries() {
			if d.Message.Tags["sym"] != fmt.Sprint(i%distinct) {
				t.Fatalf("subscriber %d (sym=%d) got a message tagged %v", i, i%distinct, d.Message.Tags)
			}
		}
		want := 0
		if i%distinct < messages {
			want = 1
		}
		if n := len(c.deliveries()); n != want {
			t.Fatalf("subscriber %d got %d messages, want %d", i, n, want)
		}
	}
	if n := len(plain.deliveries()); n != messages {
		t.Fatalf("a subscriber without a filter got %d messages, want %d", n, messages)
	}
}

// History catch-up passes through the subscription's filter too.
func TestFilterAppliesToCatchUp(t *testing.T) {
	h := newOptionsHub(t, hub.ChannelOptions{History: broker.HistoryOptions{Size: 100}}, nil)
	for i := range 10 {
		publishTagged(t, h, "feed", fmt.Sprint(i), map[string]string{"odd": fmt.Sprint(i%2 == 1)})
	}
	var calls atomic.Int64
	c := &collector{}
	subscribeWith(t, h, c, "c", "feed", &broker.Offset{}, hub.SubscribeOptions{Filter: eqFilter{tag: "odd", value: "true", calls: &calls}})
	publishTagged(t, h, "feed", "10", map[string]string{"odd": "false"})
	publishTagged(t, h, "feed", "11", map[string]string{"odd": "true"})
	var got []string
	for _, d := range c.deliveries() {
		got = append(got, string(d.Message.Data))
	}
	if want := "1 3 5 7 9 11"; strings.Join(got, " ") != want {
		t.Fatalf("got %v, want %s", got, want)
	}
}

// A delta subscriber gets the first message whole, then deltas that
// rebuild each message byte for byte; the delta is made once for all
// delta subscribers; one that joins later starts whole again.
func TestDeltasRebuildEveryMessage(t *testing.T) {
	h := newOptionsHub(t, hub.ChannelOptions{}, nil)
	a, b := &collector{}, &collector{}
	subscribeWith(t, h, a, "a", "doc", nil, hub.SubscribeOptions{Delta: true})
	subscribeWith(t, h, b, "b", "doc", nil, hub.SubscribeOptions{Delta: true})
	doc := func(v int) string {
		return fmt.Sprintf(`{"title":"report","body":%q,"version":%d}`, strings.Repeat("lorem ipsum ", 300), v)
	}
	for v := range 5 {
		publishTagged(t, h, "doc", doc(v), nil)
	}
	late := &collector{}
	subscribeWith(t, h, late, "late", "doc", nil, hub.SubscribeOptions{Delta: true})
	publishTagged(t, h, "doc", doc(5), nil)

	da, db := a.deliveries(), b.deliveries()
	if len(da) != 6 || len(db) != 6 {
		t.Fatalf("got %d and %d deliveries, want 6 each", len(da), len(db))
	}
	if da[0].Delta() {
		t.Fatal("the first push after subscribing is a delta")
	}
	var base []byte
	for i, d := range da {
		if i > 0 && !d.Delta() {
			t.Fatalf("message %d went whole, though the subscriber had the one before", i)
		}
		if d != db[i] {
			t.Fatalf("message %d: the two delta subscribers got different deliveries (the delta was made twice)", i)
		}
		got := rebuild(t, base, d)
		if string(got) != doc(i) {
			t.Fatalf("message %d rebuilt as %.60q…, want %.60q…", i, got, doc(i))
		}
		base = got
	}
	if dl := late.deliveries(); len(dl) != 1 || dl[0].Delta() {
		t.Fatalf("a subscriber that joined late got %d deliveries (first a delta: %v), want one whole", len(dl), len(dl) > 0 && dl[0].Delta())
	}
}

// rebuild returns the data a client has after d, given base, the data of
// the message before.
func rebuild(t *testing.T, base []byte, d *hub.Delivery) []byte {
	t.Helper()
	var push struct {
		Data  json.RawMessage `json:"data"`
		Delta bool            `json:"delta"`
	}
	p := d.JSON()
	if err := json.Unmarshal(p.Bytes, &push); err != nil {
		t.Fatalf("push %s: %v", p.Bytes, err)
	}
	if !push.Delta {
		return push.Data
	}
	if p.Whole == nil || !bytes.Contains(p.Whole.Bytes, d.Message.Data) {
		t.Fatalf("a delta push has no whole form to fall back on")
	}
	var delta string
	if err := json.Unmarshal(push.Data, &delta); err != nil {
		t.Fatalf("delta data %s is not a JSON string: %v", push.Data, err)
	}
	if len(p.Bytes) >= len(p.Whole.Bytes) {
		t.Fatalf("a delta push of %d bytes was sent instead of the whole %d", len(p.Bytes), len(p.Whole.Bytes))
	}
	out, err := fdelta.Apply(base, []byte(delta))
	if err != nil {
		t.Fatalf("apply delta: %v", err)
	}
	return out
}

// A message that a delta would not shrink goes whole.
func TestDeltaNotSmallerGoesWhole(t *testing.T) {
	h := newOptionsHub(t, hub.ChannelOptions{}, nil)
	c := &collector{}
	subscribeWith(t, h, c, "c", "n", nil, hub.SubscribeOptions{Delta: true})
	publishTagged(t, h, "n", `1`, nil)
	publishTagged(t, h, "n", `2`, nil)
	if n := len(c.deliveries()); n != 2 {
		t.Fatalf("%d deliveries, want 2", n)
	}
	for i, d := range c.deliveries() {
		if d.Delta() {
			t.Fatalf("message %d went as a delta, larger than its data", i)
		}
	}
}

// In a channel with receipts, the hub reports each message with the
// JSON-protocol subscribers it went to, leaving out those whose filter
// refused it and those that cannot acknowledge (SSE, raw).
func TestDeliveredReportsRecipients(t *testing.T) {
	type report struct {
		off     broker.Offset
		clients []string
	}
	var mu sync.Mutex
	var reports []report
	h := newOptionsHub(t, hub.ChannelOptions{Receipts: true}, func(m broker.Message, cs []broker.ClientInfo) {
		var names []string
		for _, c := range cs {
			names = append(names, c.Client)
		}
		mu.Lock()
		reports = append(reports, report{m.Offset, names})
		mu.Unlock()
	})
	var calls atomic.Int64
	subscribeWith(t, h, &collector{}, "all", "alerts", nil, hub.SubscribeOptions{})
	subscribeWith(t, h, &collector{}, "red", "alerts", nil, hub.SubscribeOptions{Filter: eqFilter{tag: "level", value: "red", calls: &calls}})
	sse := broker.ClientInfo{Client: "stream", Transport: "sse"}
	if err := h.Subscribe(context.Background(), &collector{}, &sse, "alerts", nil, func(hub.SubscribeResult) {}); err != nil {
		t.Fatal(err)
	}
	first := publishTagged(t, h, "alerts", `"a"`, map[string]string{"level": "red"})
	second := publishTagged(t, h, "alerts", `"b"`, map[string]string{"level": "green"})
	mu.Lock()
	defer mu.Unlock()
	if len(reports) != 2 {
		t.Fatalf("%d reports, want 2", len(reports))
	}
	got := map[broker.Offset]string{}
	for _, r := range reports {
		names := append([]string(nil), r.clients...)
		if len(names) == 2 && names[0] > names[1] {
			names[0], names[1] = names[1], names[0]
		}
		got[r.off] = strings.Join(names, ",")
	}
	if got[first] != "all,red" || got[second] != "all" {
		t.Fatalf("recipients %v, want all,red for the first and all for the second", got)
	}
}

// A conflating channel's pushes say so, with their key.
func TestConflatingChannelMarksPayloads(t *testing.T) {
	h := newOptionsHub(t, hub.ChannelOptions{Conflate: true}, nil)
	c := &collector{}
	subscribeWith(t, h, c, "c", "ticks", nil, hub.SubscribeOptions{})
	if _, err := h.Publish(context.Background(), "ticks", broker.Publication{Data: json.RawMessage(`1`), Key: "AAPL"}); err != nil {
		t.Fatal(err)
	}
	d := c.deliveries()
	if len(d) != 1 {
		t.Fatalf("%d deliveries", len(d))
	}
	for _, p := range []struct {
		name     string
		key      string
		conflate bool
		channel  string
	}{{"json", d[0].JSON().Key, d[0].JSON().Conflate, d[0].JSON().Channel}, {"raw", d[0].Raw().Key, d[0].Raw().Conflate, d[0].Raw().Channel}} {
		if p.key != "AAPL" || !p.conflate || p.channel != "ticks" {
			t.Fatalf("%s payload: key %q conflate %v channel %q", p.name, p.key, p.conflate, p.channel)
		}
	}
}
