package nats_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/nats"
	"github.com/heraldhq/herald/internal/serverproc"
)

// natsURL returns the URL of s.
func natsURL(s *serverproc.Server) string { return "nats://" + s.Addr() }

// waitUntil polls cond for up to 10 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// startBroker starts a broker on cfg, closed when t ends.
func startBroker(t *testing.T, cfg nats.Config) *nats.Broker {
	t.Helper()
	b, err := nats.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background(), &handler{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// A server restarted with an empty store has neither the stream, the
// presence bucket nor the queue streams: the broker makes them again once
// it reconnects (the queue streams when a queue is next used), and
// publishing, history, presence and queues work without a restart of the
// node.
func TestServerRestartedEmpty(t *testing.T) {
	s := serverproc.NATS(t)
	b := startBroker(t, nats.Config{URL: natsURL(s), Prefix: "empty", DialTimeout: time.Second, ReconnectWait: 50 * time.Millisecond})
	ctx := context.Background()
	opts := broker.HistoryOptions{Size: 10}
	if _, err := b.Publish(ctx, "c", broker.Publication{Data: []byte(`1`)}, opts); err != nil {
		t.Fatal(err)
	}
	if err := b.Push(ctx, "q", "k", []byte("lost")); err != nil {
		t.Fatal(err)
	}

	s.Kill()
	if err := os.RemoveAll(s.Dir()); err != nil {
		t.Fatal(err)
	}
	s.Start()

	var off broker.Offset
	waitUntil(t, "a publish succeeds after the restart", func() bool {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		var err error
		off, err = b.Publish(pctx, "c", broker.Publication{Data: []byte(`2`)}, opts)
		return err == nil
	})
	h, err := b.History(ctx, "c", broker.HistoryQuery{Limit: -1})
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Messages) != 1 || h.Messages[0].Offset != off || string(h.Messages[0].Data) != "2" {
		t.Fatalf("history after the restart: %v, want only the message published since at %v", h.Messages, off)
	}
	c := broker.ClientInfo{Client: "x", User: "u"}
	if err := b.AddPresence(ctx, "c", c); err != nil {
		t.Fatalf("presence after the restart: %v", err)
	}
	waitUntil(t, "a push succeeds after the restart", func() bool {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		return b.Push(pctx, "q", "k", []byte("kept")) == nil
	})
	items, err := b.Take(ctx, "q", 10, time.Minute)
	if err != nil {
		t.Fatalf("Take after the restart: %v", err)
	}
	if len(items) != 1 || string(items[0].Data) != "kept" {
		t.Fatalf("Take after the restart: %+v, want only the item pushed since", items)
	}
}
