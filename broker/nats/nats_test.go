package nats_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
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

// newPrefix returns a prefix unique to this run and deletes its stream and
// bucket when t ends (after the brokers using it are closed).
func newPrefix(t *testing.T) string {
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
		} {
			if err := del(); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) && !errors.Is(err, jetstream.ErrBucketNotFound) {
				t.Errorf("cleanup of %s: %v", prefix, err)
			}
		}
	})
	return prefix
}

func newBroker(t *testing.T, prefix string) *nats.Broker {
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

// TestTwoNodes checks that two brokers on one prefix see each other's
// messages in the same order, with the offsets Publish returned.
func TestTwoNodes(t *testing.T) {
	prefix := newPrefix(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	nodes := [2]*nats.Broker{newBroker(t, prefix), newBroker(t, prefix)}
	hs := [2]*handler{{}, {}}
	for i, b := range nodes {
		if err := b.Start(ctx, hs[i]); err != nil {
			t.Fatalf("Start node %d: %v", i, err)
		}
		defer b.Close()
	}
	const ch = "room:a.b@c=d,e"
	for i, b := range nodes {
		if err := b.Subscribe(ctx, ch); err != nil {
			t.Fatalf("Subscribe node %d: %v", i, err)
		}
	}
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
	mu   sync.Mutex
	offs []broker.Offset
}

func (h *handler) HandleMessage(m broker.Message) {
	h.mu.Lock()
	h.offs = append(h.offs, m.Offset)
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
	pub, sub := newBroker(t, prefix), newBroker(t, prefix)
	h := &handler{}
	if err := pub.Start(ctx, &handler{}); err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer pub.Close()
	if err := sub.Start(ctx, h); err != nil {
		t.Fatalf("Start: %v", err)
	}
	if err := sub.Subscribe(ctx, "c"); err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
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
	n := len(h.offsets())
	time.Sleep(50 * time.Millisecond) // give a stray delivery the chance to show
	if got := len(h.offsets()); got != n {
		t.Errorf("Handler saw %d messages after Close returned", got-n)
	}
	if _, err := sub.History(ctx, "c", broker.HistoryQuery{}); !errors.Is(err, broker.ErrUnavailable) {
		t.Errorf("History after Close: %v, want broker.ErrUnavailable", err)
	}
	cancel()
	<-done
}
