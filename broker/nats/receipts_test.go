package nats_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/brokertest"
	"github.com/heraldhq/herald/broker/nats"
	"github.com/nats-io/nats.go/jetstream"
)

// TestReceiptsManyClients delivers a message to more clients than one
// NATS message holds (1 MiB by default), and has more of them acknowledge
// than one read fetches: the receipts and the check list every one of
// them.
func TestReceiptsManyClients(t *testing.T) {
	prefix := newPrefix(t)
	b := startBroker(t, nats.Config{URL: serverURL(), Prefix: prefix})
	ctx, cancel := context.WithTimeout(context.Background(), 4*brokertest.Timeout)
	defer cancel()
	const n = 30000
	clients := make([]broker.ClientInfo, n)
	for i := range clients {
		clients[i] = broker.ClientInfo{Client: fmt.Sprintf("client-%06d", i), User: fmt.Sprintf("user-%d-%s", i, strings.Repeat("x", 20))}
	}
	off := broker.Offset{Epoch: "e", Seq: 1}
	if err := b.Delivered(ctx, "big", off, clients, time.Now().Add(-time.Second), time.Hour); err != nil {
		t.Fatal(err)
	}
	const acked = 1500
	for _, c := range clients[n-acked:] {
		if err := b.Acked(ctx, "big", c, off, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	same := func(a, b broker.ClientInfo) bool { return a.Client == b.Client && a.User == b.User }
	st, found, err := b.Receipts(ctx, "big", off)
	if err != nil || !found || len(st.Acked) != acked || len(st.Pending) != n-acked ||
		!same(st.Acked[0], clients[n-acked]) || !same(st.Pending[n-acked-1], clients[n-acked-1]) {
		t.Fatalf("Receipts: found %v, %d acked, %d pending, %v", found, len(st.Acked), len(st.Pending), err)
	}
	ds, err := b.TakeDue(ctx, 10, time.Minute)
	if err != nil || len(ds) != 1 || len(ds[0].Pending) != n-acked || !same(ds[0].Pending[0], clients[0]) {
		t.Fatalf("TakeDue: %d checks (%v)", len(ds), err)
	}
}

// TestReceiptsKeepIsCapped keeps receipts for longer than
// Config.ReceiptTTL: they expire after ReceiptTTL.
func TestReceiptsKeepIsCapped(t *testing.T) {
	prefix := newPrefix(t)
	const ttl = time.Second
	b := startBroker(t, nats.Config{URL: serverURL(), Prefix: prefix, ReceiptTTL: ttl})
	ctx, cancel := context.WithTimeout(context.Background(), 2*brokertest.Timeout)
	defer cancel()
	off := broker.Offset{Epoch: "e", Seq: 1}
	c := broker.ClientInfo{Client: "c1", User: "u1"}
	start := time.Now()
	if err := b.Delivered(ctx, "ch", off, []broker.ClientInfo{c}, time.Now().Add(time.Hour), time.Hour); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(brokertest.Timeout)
	for {
		_, found, err := b.Receipts(ctx, "ch", off)
		if err != nil {
			t.Fatal(err)
		}
		if !found {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("receipts kept for an hour are still there after %v, with a ReceiptTTL of %v", time.Since(start), ttl)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if waited := time.Since(start); waited < ttl-100*time.Millisecond {
		t.Fatalf("receipts gone after %v, before ReceiptTTL", waited)
	}
}

func TestNewRejectsNegativeReceiptTTL(t *testing.T) {
	if _, err := nats.New(nats.Config{ReceiptTTL: -time.Second}); err == nil {
		t.Fatal("New accepted a negative ReceiptTTL")
	}
}

// A record that leaves the stream (it expired, or was deleted) after a
// read's consumer counted it is not there to read: the read returns what
// is left, here nothing, instead of an error (TestReceiptsKeepIsCapped
// met it once in a while, a record expiring between the two).
func TestReadSkipsRecordsGoneAfterCounted(t *testing.T) {
	js := jetStream(t)
	ctx, cancel := context.WithTimeout(context.Background(), brokertest.Timeout)
	defer cancel()
	name := newPrefix(t) + "-gone"
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{name + ".>"}, Storage: jetstream.MemoryStorage})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = js.DeleteStream(context.WithoutCancel(ctx), name) }()
	ack, err := js.Publish(ctx, name+".a", []byte("record"))
	if err != nil {
		t.Fatal(err)
	}
	cons, err := stream.CreateConsumer(ctx, jetstream.ConsumerConfig{
		FilterSubject: name + ".>", DeliverPolicy: jetstream.DeliverLastPerSubjectPolicy,
		AckPolicy: jetstream.AckNonePolicy, MemoryStorage: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	counted := cons.CachedInfo().NumPending
	if counted != 1 {
		t.Fatalf("the consumer counts %d records, want 1", counted)
	}
	if err := stream.DeleteMsg(ctx, ack.Sequence); err != nil {
		t.Fatal(err)
	}
	msgs, err := nats.FetchPending(ctx, cons, name+".>", counted) // the fetch waits its 5 s for the record first
	if err != nil || len(msgs) != 0 {
		t.Fatalf("read %d records, %v; want none and no error", len(msgs), err)
	}
}
