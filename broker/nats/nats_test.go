package nats_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/brokertest"
	"github.com/heraldhq/herald/broker/nats"
)

// serverURL is the NATS server the tests use: HERALD_TEST_NATS, or the
// local default.
func serverURL() string {
	if u := os.Getenv("HERALD_TEST_NATS"); u != "" {
		return u
	}
	return "nats://127.0.0.1:4222"
}

// newPrefix returns a prefix unique to this run and deletes its streams and
// bucket when t ends (after the brokers using it are closed).
func newPrefix(t *testing.T) string {
	t.Helper()
	return prefixOf(t)
}

// prefixOf is newPrefix for tests and benchmarks.
func prefixOf(t testing.TB) string {
	t.Helper()
	var r [6]byte
	_, _ = rand.Read(r[:])
	prefix := "heraldtest-" + hex.EncodeToString(r[:])
	nc, err := natsgo.Connect(serverURL(), natsgo.Timeout(2*time.Second))
	if err != nil {
		t.Fatalf("NATS with JetStream must run at %s (set HERALD_TEST_NATS to use another): %v", serverURL(), err)
	}
	t.Cleanup(func() {
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			t.Errorf("cleanup: %v", err)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for _, del := range []func() error{
			func() error { return js.DeleteStream(ctx, prefix+"-history") },
			func() error { return js.DeleteKeyValue(ctx, prefix+"-presence") },
			func() error { return js.DeleteStream(ctx, prefix+"-queue-items") },
			func() error { return js.DeleteStream(ctx, prefix+"-queue-keys") },
			func() error { return js.DeleteStream(ctx, prefix+"-registry") },
			func() error { return js.DeleteStream(ctx, prefix+"-receipts") },
		} {
			if err := del(); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) && !errors.Is(err, jetstream.ErrBucketNotFound) {
				t.Errorf("cleanup of %s: %v", prefix, err)
			}
		}
	})
	return prefix
}

func newBroker(t testing.TB, prefix string) *nats.Broker {
	t.Helper()
	b, err := nats.New(nats.Config{URL: serverURL(), Prefix: prefix, PresenceTTL: time.Minute})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return b
}

func TestBroker(t *testing.T) {
	brokertest.Run(t, func(t *testing.T) broker.Broker { return newBroker(t, newPrefix(t)) })
}

func TestQueue(t *testing.T) {
	// The brokers of one subtest share a prefix: they are nodes of one
	// cluster.
	prefix := brokertest.OnePerSubtest(newPrefix)
	brokertest.RunQueue(t, func(t *testing.T) broker.Broker { return newBroker(t, prefix(t)) }, true)
}

func TestRegistry(t *testing.T) {
	// The brokers of one subtest share a prefix: they are nodes of one
	// cluster.
	prefix := brokertest.OnePerSubtest(newPrefix)
	brokertest.RunRegistry(t, func(t *testing.T) broker.Broker { return newBroker(t, prefix(t)) }, true)
}

func TestOccupancy(t *testing.T) {
	// The brokers of one subtest share a prefix: they are nodes of one
	// cluster.
	prefix := brokertest.OnePerSubtest(newPrefix)
	brokertest.RunOccupancy(t, func(t *testing.T) broker.Broker { return newBroker(t, prefix(t)) }, true)
}

func TestReceipts(t *testing.T) {
	// The brokers of one subtest share a prefix: they are nodes of one
	// cluster.
	prefix := brokertest.OnePerSubtest(newPrefix)
	brokertest.RunReceipts(t, func(t *testing.T) broker.Broker { return newBroker(t, prefix(t)) }, true)
}

func TestStartUnreachable(t *testing.T) {
	b, err := nats.New(nats.Config{URL: "nats://127.0.0.1:1", DialTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer b.Close()
	if err := b.Start(context.Background(), &handler{}); !errors.Is(err, broker.ErrUnavailable) {
		t.Fatalf("Start against a closed port: %v, want broker.ErrUnavailable", err)
	}
}

func TestNewRejectsBadPrefix(t *testing.T) {
	if _, err := nats.New(nats.Config{Prefix: "a.b"}); err == nil {
		t.Fatal("New accepted prefix a.b")
	}
}

// twoNodes starts two brokers on prefix, both subscribed to channel
// unless it is ""; they are closed when t ends.
func twoNodes(ctx context.Context, t *testing.T, prefix, channel string) ([2]*nats.Broker, [2]*handler) {
	t.Helper()
	nodes := [2]*nats.Broker{newBroker(t, prefix), newBroker(t, prefix)}
	hs := [2]*handler{{}, {}}
	for i, b := range nodes {
		if err := b.Start(ctx, hs[i]); err != nil {
			t.Fatalf("Start node %d: %v", i, err)
		}
		t.Cleanup(func() { _ = b.Close() })
		if channel == "" {
			continue
		}
		if err := b.Subscribe(ctx, channel); err != nil {
			t.Fatalf("Subscribe node %d: %v", i, err)
		}
	}
	return nodes, hs
}

// TestTwoNodes checks that two brokers on one prefix see each other's
// messages in the same order, with the offsets Publish returned.
func TestTwoNodes(t *testing.T) {
	prefix := newPrefix(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const ch = "room:a.b@c=d,e"
	nodes, hs := twoNodes(ctx, t, prefix, ch)
	var (
		mu   sync.Mutex
		offs = map[broker.Offset]bool{}
		wg   sync.WaitGroup
	)
	const each = 30
	for i, b := range nodes {
		wg.Go(func() {
			for j := range each {
				off, err := b.Publish(ctx, ch, broker.Publication{Data: json.RawMessage(`[1]`)}, broker.HistoryOptions{Size: 100})
				if err != nil {
					t.Errorf("node %d publish %d: %v", i, j, err)
					return
				}
				mu.Lock()
				offs[off] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(hs[0].offsets()) < 2*each || len(hs[1].offsets()) < 2*each {
		if time.Now().After(deadline) {
			t.Fatalf("nodes saw %d and %d messages, want %d each", len(hs[0].offsets()), len(hs[1].offsets()), 2*each)
		}
		time.Sleep(5 * time.Millisecond)
	}
	a, b := hs[0].offsets(), hs[1].offsets()
	if !slices.Equal(a, b) {
		t.Fatalf("nodes saw different sequences:\n%v\n%v", a, b)
	}
	for i, o := range a {
		if !offs[o] {
			t.Fatalf("delivered offset %v was not returned by Publish", o)
		}
		if i > 0 && (o.Epoch != a[i-1].Epoch || o.Seq <= a[i-1].Seq) {
			t.Fatalf("offset %v delivered after %v", o, a[i-1])
		}
	}
	res, err := nodes[1].History(ctx, ch, broker.HistoryQuery{Limit: -1})
	if err != nil {
		t.Fatalf("History: %v", err)
	}
	if len(res.Messages) != 2*each || !res.Complete || res.Latest != a[len(a)-1] {
		t.Fatalf("History: %d messages, Complete %v, Latest %v; want %d, true, %v", len(res.Messages), res.Complete, res.Latest, 2*each, a[len(a)-1])
	}
}

type handler struct {
	mu    sync.Mutex
	offs  []broker.Offset
	ended []broker.Offset // each message's Ended
}

func (h *handler) HandleMessage(m broker.Message) {
	h.mu.Lock()
	h.offs = append(h.offs, m.Offset)
	h.ended = append(h.ended, m.Ended)
	h.mu.Unlock()
}
func (h *handler) HandleJoin(string, broker.ClientInfo)  {}
func (h *handler) HandleLeave(string, broker.ClientInfo) {}
func (h *handler) HandleReconnect()                      {}

func (h *handler) offsets() []broker.Offset {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.offs)
}

// TestNewestLimitCompleteness checks History with the zero cursor and a
// Limit smaller than what is kept: Complete still tells whether the
// channel's first message is kept.
func TestNewestLimitCompleteness(t *testing.T) {
	b := newBroker(t, newPrefix(t))
	ctx := context.Background() // no deadline: the broker bounds its own waits
	if err := b.Start(ctx, &handler{}); err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer b.Close()
	if err := b.Subscribe(ctx, "x"); err != nil {
		t.Fatalf("Subscribe without a deadline: %v", err)
	}
	for _, tt := range []struct {
		size     int
		complete bool
	}{{3, false}, {5, true}, {10, true}} {
		ch := "limit-" + string(rune('a'+tt.size))
		var last broker.Offset
		for range 5 {
			off, err := b.Publish(ctx, ch, broker.Publication{Data: json.RawMessage(`1`)}, broker.HistoryOptions{Size: tt.size})
			if err != nil {
				t.Fatalf("Publish: %v", err)
			}
			last = off
		}
		for _, limit := range []int{0, 1, 2} {
			res, err := b.History(ctx, ch, broker.HistoryQuery{Limit: limit})
			if err != nil {
				t.Fatalf("History: %v", err)
			}
			if len(res.Messages) != limit || res.Complete != tt.complete || res.Latest != last {
				t.Errorf("size %d, limit %d: %d messages, Complete %v, Latest %v; want %d, %v, %v",
					tt.size, limit, len(res.Messages), res.Complete, res.Latest, limit, tt.complete, last)
			}
			if limit > 0 && res.Messages[limit-1].Offset != last {
				t.Errorf("size %d, limit %d: newest returned is %v, want %v", tt.size, limit, res.Messages[limit-1].Offset, last)
			}
		}
	}
}

// TestCloseStopsDelivery checks that no Handler call happens after Close
// returns, even with messages in flight.
func TestCloseStopsDelivery(t *testing.T) {
	prefix := newPrefix(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	pub, sub, watcher := newBroker(t, prefix), newBroker(t, prefix), newBroker(t, prefix)
	h, seen := &handler{}, &handler{}
	if err := pub.Start(ctx, &handler{}); err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer pub.Close()
	for b, bh := range map[*nats.Broker]*handler{sub: h, watcher: seen} {
		if err := b.Start(ctx, bh); err != nil {
			t.Fatalf("Start: %v", err)
		}
		if err := b.Subscribe(ctx, "c"); err != nil {
			t.Fatalf("Subscribe: %v", err)
		}
	}
	defer watcher.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			if _, err := pub.Publish(ctx, "c", broker.Publication{Data: json.RawMessage(`1`)}, broker.HistoryOptions{}); err != nil {
				return
			}
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for len(h.offsets()) < 10 {
		if time.Now().After(deadline) {
			t.Fatal("no message delivered within 10s")
		}
		time.Sleep(time.Millisecond)
	}
	if err := sub.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	// Another node is delivered 50 more messages: had Close left a
	// delivery running, the closed node would have had some of them.
	n, m := len(h.offsets()), len(seen.offsets())
	for len(seen.offsets()) < m+50 {
		if time.Now().After(deadline) {
			t.Fatal("the watching node got no more messages")
		}
		time.Sleep(time.Millisecond) // poll
	}
	if got := len(h.offsets()); got != n {
		t.Errorf("Handler saw %d messages after Close returned", got-n)
	}
	if _, err := sub.History(ctx, "c", broker.HistoryQuery{}); !errors.Is(err, broker.ErrUnavailable) {
		t.Errorf("History after Close: %v, want broker.ErrUnavailable", err)
	}
	cancel()
	<-done
}

// TestLostMessagesStartNewEpoch takes messages a node saw out of the
// stream in three ways (purge, delete and recreate, deleting the newest as
// a restored older snapshot would) while two nodes are subscribed, then
// has both publish at once: no offset is acknowledged twice, both nodes
// are delivered the new messages in one new epoch, and a resume from the
// newest lost offset is not complete and gets what history holds.
func TestLostMessagesStartNewEpoch(t *testing.T) {
	for _, tt := range []struct {
		name string
		lose func(ctx context.Context, js jetstream.JetStream, stream string, lost []broker.Offset) error
	}{
		{"Purge", func(ctx context.Context, js jetstream.JetStream, stream string, _ []broker.Offset) error {
			s, err := js.Stream(ctx, stream)
			if err != nil {
				return err
			}
			return s.Purge(ctx)
		}},
		{"Recreate", func(ctx context.Context, js jetstream.JetStream, stream string, _ []broker.Offset) error {
			s, err := js.Stream(ctx, stream)
			if err != nil {
				return err
			}
			if err := js.DeleteStream(ctx, stream); err != nil {
				return err
			}
			_, err = js.CreateStream(ctx, s.CachedInfo().Config)
			return err
		}},
		{"DeleteNewest", func(ctx context.Context, js jetstream.JetStream, stream string, lost []broker.Offset) error {
			s, err := js.Stream(ctx, stream)
			if err != nil {
				return err
			}
			for _, o := range lost {
				if err := s.DeleteMsg(ctx, o.Seq); err != nil {
					return err
				}
			}
			return nil
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			prefix := newPrefix(t)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			nodes, hs := twoNodes(ctx, t, prefix, "c")
			opts := broker.HistoryOptions{Size: 100}
			acked := map[broker.Offset]bool{}
			var lost []broker.Offset
			for i := range 4 {
				off, err := nodes[i%2].Publish(ctx, "c", broker.Publication{Data: json.RawMessage(`1`)}, opts)
				if err != nil {
					t.Fatalf("Publish: %v", err)
				}
				acked[off] = true
				if i >= 2 {
					lost = append(lost, off)
				}
			}
			last := lost[len(lost)-1]
			for i, h := range hs {
				waitCount(t, h, 4, fmt.Sprintf("node %d before the loss", i))
			}
			js := jetStream(t)
			if err := tt.lose(ctx, js, nodes[0].StreamName(), lost); err != nil {
				t.Fatalf("losing messages: %v", err)
			}

			var (
				mu    sync.Mutex
				after []broker.Offset
				wg    sync.WaitGroup
			)
			for i, b := range nodes {
				wg.Go(func() {
					for range 5 {
						off, err := b.Publish(ctx, "c", broker.Publication{Data: json.RawMessage(`2`)}, opts)
						if err != nil {
							t.Errorf("Publish on node %d after the loss: %v", i, err)
							return
						}
						mu.Lock()
						after = append(after, off)
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			if t.Failed() {
				return
			}
			for _, o := range after {
				if acked[o] {
					t.Fatalf("offset %v acknowledged twice", o)
				}
				acked[o] = true
				if o.Epoch == last.Epoch {
					t.Fatalf("offset %v after the loss is in the epoch of the lost %v", o, last)
				}
				if o.Epoch != after[0].Epoch {
					t.Fatalf("offsets after the loss in two epochs: %v and %v", after[0], o)
				}
			}
			for i, h := range hs {
				got := waitCount(t, h, 4+len(after), fmt.Sprintf("node %d after the loss", i))
				if !slices.Equal(got[:4], hs[0].offsets()[:4]) || got[4].Epoch != after[0].Epoch {
					t.Fatalf("node %d was delivered %v", i, got)
				}
				// The new epoch's first message says how far the lost one
				// went, as its publisher had seen it: up to last, like
				// both nodes; no other message says anything.
				h.mu.Lock()
				ended := slices.Clone(h.ended)
				h.mu.Unlock()
				for j, e := range ended {
					if want := (broker.Offset{}); j == 4 && e != last || j != 4 && e != want {
						t.Errorf("node %d: message %v ended %v (the first of the new epoch: want %v)", i, got[j], e, last)
					}
				}
			}
			res, err := nodes[1].History(ctx, "c", broker.HistoryQuery{Since: last, Limit: -1})
			if err != nil {
				t.Fatalf("History: %v", err)
			}
			if res.Complete || len(res.Messages) != len(after) {
				t.Fatalf("resume from the lost %v: Complete %v, %d messages; want false and the %d published since",
					last, res.Complete, len(res.Messages), len(after))
			}
		})
	}
}

// jetStream returns a JetStream handle of the test's own, to look at and
// tamper with the broker's stream.
func jetStream(t *testing.T) jetstream.JetStream {
	t.Helper()
	nc, err := natsgo.Connect(serverURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// waitCount waits until h holds n messages and returns their offsets.
func waitCount(t *testing.T, h *handler, n int, what string) []broker.Offset {
	t.Helper()
	deadline := time.Now().Add(brokertest.Timeout)
	for len(h.offsets()) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d messages delivered, want %d", what, len(h.offsets()), n)
		}
		time.Sleep(2 * time.Millisecond)
	}
	return h.offsets()
}

// TestStartAppliesLimits starts a broker on a stream created without caps
// (as herald made it before): Start brings it to the configured limits.
func TestStartAppliesLimits(t *testing.T) {
	prefix := newPrefix(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	js := jetStream(t)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name:      prefix + "-history",
		Subjects:  []string{prefix + ".msg.*"},
		Storage:   jetstream.FileStorage,
		MaxAge:    24 * time.Hour,
		RePublish: &jetstream.RePublish{Source: prefix + ".msg.>", Destination: prefix + ".live.>"},
	}); err != nil {
		t.Fatalf("create the old stream: %v", err)
	}
	b, err := nats.New(nats.Config{URL: serverURL(), Prefix: prefix, MaxHistory: 50, MaxAge: 11 * time.Minute, MaxBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(ctx, &handler{}); err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer b.Close()
	s, err := js.Stream(ctx, b.StreamName())
	if err != nil {
		t.Fatal(err)
	}
	got := s.CachedInfo().Config
	if got.MaxMsgsPerSubject != 50 || got.MaxAge != 11*time.Minute || got.MaxBytes != 1<<20 {
		t.Fatalf("stream limits: %d per channel, age %v, %d bytes; want 50, 11m, %d",
			got.MaxMsgsPerSubject, got.MaxAge, got.MaxBytes, 1<<20)
	}

	// Defaults: a cap on bytes too.
	b2, err := nats.New(nats.Config{URL: serverURL(), Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	if err := b2.Start(ctx, &handler{}); err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer b2.Close()
	if s, err = js.Stream(ctx, b.StreamName()); err != nil {
		t.Fatal(err)
	}
	if got := s.CachedInfo().Config.MaxBytes; got != nats.DefaultMaxBytes {
		t.Fatalf("default MaxBytes %d, want %d", got, nats.DefaultMaxBytes)
	}
}

// TestHistoryPageCost checks History with a cursor deep in a long chain
// and a small Limit: it returns exactly the messages after the cursor, and
// reads about Limit stream messages to do it (counted as the requests its
// connection sends), not one per message between the cursor and the head.
// Another channel's messages are interleaved, so stream sequences have gaps.
func TestHistoryPageCost(t *testing.T) {
	prefix := newPrefix(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pub, reader := newBroker(t, prefix), newBroker(t, prefix)
	for _, b := range []*nats.Broker{pub, reader} {
		if err := b.Start(ctx, &handler{}); err != nil {
			t.Fatalf("Start: %v", err)
		}
		defer b.Close()
	}
	const n = 400
	// "all" keeps every message, "trimmed" only its newest 50.
	offs := map[string][]broker.Offset{}
	for range n {
		for _, ch := range []struct {
			name string
			size int
		}{{"all", 1000}, {"trimmed", 50}, {"other", 1000}} {
			off, err := pub.Publish(ctx, ch.name, broker.Publication{Data: json.RawMessage(`1`)}, broker.HistoryOptions{Size: ch.size})
			if err != nil {
				t.Fatalf("Publish: %v", err)
			}
			offs[ch.name] = append(offs[ch.name], off)
		}
	}
	all, trimmed := offs["all"], offs["trimmed"]
	epoch := all[0].Epoch
	// search is what finding the first kept message after a cursor far
	// behind may read: about log2 of the sequences in between.
	const search = 16
	for _, tt := range []struct {
		name     string
		ch       string
		since    broker.Offset
		limit    int
		want     []broker.Offset
		complete bool
		reads    int // at most
	}{
		{"deep cursor", "all", all[9], 8, all[10:18], true, 8},
		{"cursor between the channel's sequences", "all", broker.Offset{Epoch: epoch, Seq: all[9].Seq + 1}, 8, all[10:18], true, 8},
		{"epoch start", "all", broker.Offset{Epoch: epoch}, 8, all[:8], true, 8},
		{"near the head", "all", all[395], 8, all[396:], true, 8},
		{"limit 0", "all", all[9], 0, nil, true, 1},
		{"at the head", "all", all[n-1], 8, nil, true, 0},
		{"no limit", "all", all[389], -1, all[390:], true, 10},
		{"cursor behind what is kept", "trimmed", trimmed[9], 8, trimmed[350:358], false, 8 + search},
		{"cursor just before what is kept", "trimmed", trimmed[349], 8, trimmed[350:358], true, 8},
		{"cursor one before that", "trimmed", trimmed[348], 8, trimmed[350:358], false, 8 + search},
		{"cursor in what is kept", "trimmed", trimmed[379], 8, trimmed[380:388], true, 8},
		{"epoch gone", "trimmed", broker.Offset{Epoch: "gone", Seq: 5}, 3, trimmed[350:353], false, 3 + search},
		{"ahead of the head", "all", broker.Offset{Epoch: epoch, Seq: all[n-1].Seq + 1000}, 3, all[:3], false, 3 + search},
	} {
		before := reader.RequestsSent()
		res, err := reader.History(ctx, tt.ch, broker.HistoryQuery{Since: tt.since, Limit: tt.limit})
		reads := int(reader.RequestsSent()-before) - 1 // the head is read first
		if err != nil {
			t.Fatalf("%s: History: %v", tt.name, err)
		}
		if got := offsetsOf(res.Messages); !slices.Equal(got, tt.want) || res.Complete != tt.complete || res.Latest != offs[tt.ch][n-1] {
			t.Errorf("%s: since %v limit %d: messages %v, Complete %v, Latest %v; want %v, %v, %v",
				tt.name, tt.since, tt.limit, got, res.Complete, res.Latest, tt.want, tt.complete, offs[tt.ch][n-1])
		}
		if reads > tt.reads {
			t.Errorf("%s: History read %d stored messages besides the head, want at most %d", tt.name, reads, tt.reads)
		}
	}
}

// offsetsOf returns the offsets of ms.
func offsetsOf(ms []broker.Message) []broker.Offset {
	var out []broker.Offset
	for _, m := range ms {
		out = append(out, m.Offset)
	}
	return out
}

// TestCursorAtEvictedMessage checks a cursor whose own message the stream
// already dropped (MaxHistory) while every message after it is kept:
// nothing after it was lost, so History is complete, as on the other
// brokers; one message earlier, the first after the cursor is gone.
func TestCursorAtEvictedMessage(t *testing.T) {
	prefix := newPrefix(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b, err := nats.New(nats.Config{URL: serverURL(), Prefix: prefix, MaxHistory: 5})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(ctx, &handler{}); err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer b.Close()
	var offs []broker.Offset
	for range 10 {
		off, err := b.Publish(ctx, "x", broker.Publication{Data: json.RawMessage(`1`)}, broker.HistoryOptions{Size: 10})
		if err != nil {
			t.Fatalf("Publish: %v", err)
		}
		offs = append(offs, off)
	}
	for _, tt := range []struct {
		since    broker.Offset
		complete bool
	}{{offs[4], true}, {offs[3], false}} {
		res, err := b.History(ctx, "x", broker.HistoryQuery{Since: tt.since, Limit: -1})
		if err != nil {
			t.Fatalf("History: %v", err)
		}
		if got := offsetsOf(res.Messages); !slices.Equal(got, offs[5:]) || res.Complete != tt.complete {
			t.Errorf("since %v with the stream keeping %v: messages %v, Complete %v; want %v, %v",
				tt.since, offs[5:], got, res.Complete, offs[5:], tt.complete)
		}
	}
}

// BenchmarkPublish measures Publish on one node through to HandleMessage
// on another (see brokertest.BenchPublish).
func BenchmarkPublish(b *testing.B) {
	brokertest.BenchPublish(b, func(b *testing.B) (pub, sub broker.Broker) {
		prefix := prefixOf(b)
		return newBroker(b, prefix), newBroker(b, prefix)
	})
}
