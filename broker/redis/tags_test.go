package redis_test

import (
	"context"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/brokertest"
	"github.com/heraldhq/herald/broker/redis"
)

// A message without tags and key is stored and sent as before they
// existed, so nodes that do not know them still read it; one with them
// adds the entry's fields tags and key and pub/sub fields after the
// traceparent's.
func TestTagsAndKeyOnlyWhenSet(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*brokertest.Timeout)
	defer cancel()
	prefix := testPrefix(t)
	b := startBroker(t, redis.Config{URL: serverURL(), Prefix: prefix})
	admin := adminClient(t)
	ps := admin.Subscribe(ctx, prefix+"ch:c")
	defer ps.Close()
	if _, err := ps.Receive(ctx); err != nil { // the confirmation
		t.Fatal(err)
	}
	trace := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	tests := []struct {
		name   string
		p      broker.Publication
		fields int      // in the pub/sub payload
		extra  []string // entry fields besides data, binary, event, user, client, time
	}{
		{"plain", broker.Publication{Event: "e", User: "u", Client: "c"}, 8, nil},
		{"empty tags", broker.Publication{Tags: map[string]string{}}, 8, nil},
		{"traced", broker.Publication{Trace: trace}, 9, []string{"trace"}},
		{"tagged", broker.Publication{Tags: map[string]string{"a": "1"}}, 10, []string{"tags"}},
		{"keyed", broker.Publication{Key: "k"}, 11, []string{"key"}},
		{"all", broker.Publication{Trace: trace, Tags: map[string]string{"a": "1"}, Key: "k"}, 11, []string{"trace", "tags", "key"}},
	}
	for _, tt := range tests {
		tt.p.Data = []byte(`"` + tt.name + `"`)
		if _, err := b.Publish(ctx, "c", tt.p, broker.HistoryOptions{Size: 10}); err != nil {
			t.Fatal(err)
		}
		msg, err := ps.ReceiveMessage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		fields, err := redis.SplitNetstrings(msg.Payload[1:])
		if err != nil || len(fields) != tt.fields || fields[7] != string(tt.p.Data) {
			t.Errorf("%s: payload %q has fields %q, %v; want %d with the data 8th", tt.name, msg.Payload, fields, err, tt.fields)
		}
	}
	entries, err := admin.XRange(ctx, prefix+"{c}:stream", "-", "+").Result()
	if err != nil || len(entries) != len(tests) {
		t.Fatalf("stream holds %d entries, %v; want %d", len(entries), err, len(tests))
	}
	for i, tt := range tests {
		want := append([]string{"binary", "client", "data", "event", "time", "user"}, tt.extra...)
		slices.Sort(want)
		if got := slices.Sorted(maps.Keys(entries[i].Values)); !slices.Equal(got, want) {
			t.Errorf("%s: entry fields %q, want %q", tt.name, got, want)
		}
	}
}

// A payload with fields after the ended epoch's offset, from a node newer
// than this one, is read for the fields this node knows.
func TestPayloadWithMoreFieldsIsRead(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*brokertest.Timeout)
	defer cancel()
	prefix := testPrefix(t)
	b := newBroker(t, redis.Config{URL: serverURL(), Prefix: prefix})
	rec := &collector{}
	if err := b.Start(ctx, rec); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.Subscribe(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	var payload strings.Builder
	payload.WriteString("m")
	for _, f := range []string{"7", "ep", "1700000000000000", "0", "ev", "u", "cl", `"data"`,
		"tp", redis.Netstring("a") + redis.Netstring("1"), "key", "5-old", "a field to come"} {
		payload.WriteString(redis.Netstring(f))
	}
	if err := adminClient(t).Publish(ctx, prefix+"ch:c", payload.String()).Err(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(brokertest.Timeout)
	for len(rec.offsets()) == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.msgs) != 1 {
		t.Fatalf("Handler saw %d messages, want 1", len(rec.msgs))
	}
	m := rec.msgs[0]
	if m.Offset != (broker.Offset{Epoch: "ep", Seq: 7}) || string(m.Data) != `"data"` || m.Trace != "tp" ||
		!maps.Equal(m.Tags, map[string]string{"a": "1"}) || m.Key != "key" || m.Ended != (broker.Offset{Epoch: "old", Seq: 5}) {
		t.Fatalf("Handler saw %+v", m)
	}
}
