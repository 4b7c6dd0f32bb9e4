package client

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"

	"github.com/heraldhq/herald/heraldtest"
)

// pendingAcks lists the offsets of the acks waiting to be sent, by id.
func pendingAcks(c *Client) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ids []uint64
	for id, p := range c.pending {
		if p.op == "ack" {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	var out []string
	for _, id := range ids {
		var f struct{ Channel, Offset string }
		_ = json.Unmarshal(c.pending[id].frame, &f)
		out = append(out, f.Channel+"@"+f.Offset)
	}
	return out
}

// answerAcks gives every pending ack its ok reply, as the read loop does.
func answerAcks(c *Client) {
	c.mu.Lock()
	var ids []uint64
	for id, p := range c.pending {
		if p.op == "ack" {
			ids = append(ids, id)
		}
	}
	c.mu.Unlock()
	for _, id := range ids {
		c.handle(fmt.Appendf(nil, `{"id":%d,"ok":true}`, id))
	}
}

func next(t *testing.T, s *Subscription) string {
	t.Helper()
	m, err := s.Next(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return m.Offset
}

func waitAcks(t *testing.T, c *Client, want ...string) {
	t.Helper()
	heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
		if got := pendingAcks(c); !slices.Equal(got, want) {
			return fmt.Errorf("acks waiting %q, want %q", got, want)
		}
		return nil
	})
}

func TestNextAcksWhatItReturnedBefore(t *testing.T) {
	t.Parallel()
	s := offlineSubscription(false, true)
	c := s.c
	for i := 1; i <= 6; i++ {
		s.push(Message{Offset: fmt.Sprint(i), Data: json.RawMessage(`1`)}, false)
	}
	if got := next(t, s); got != "1" || len(pendingAcks(c)) != 0 {
		t.Fatalf("first Next: %s, acks %q; want 1 and no ack yet", got, pendingAcks(c))
	}
	next(t, s) // 2: done with 1, acked
	waitAcks(t, c, "ch@1")
	next(t, s) // 3: done with 2, which waits for the ack in flight
	next(t, s) // 4: done with 3, which replaces 2
	if got := pendingAcks(c); !slices.Equal(got, []string{"ch@1"}) {
		t.Fatalf("acks %q, want only the one in flight: ch@1", got)
	}
	answerAcks(c)
	waitAcks(t, c, "ch@3") // the newest the reader was done with; it covers 2
	answerAcks(c)
	waitAcks(t, c)

	// Ack waits for its reply; it names what Next returned last, so Next
	// does not ack that again.
	acked := make(chan error, 1)
	go func() { acked <- s.Ack(context.Background(), "4") }()
	waitAcks(t, c, "ch@4")
	answerAcks(c)
	if err := <-acked; err != nil {
		t.Fatalf("Ack: %v", err)
	}
	next(t, s) // 5
	next(t, s) // 6: done with 5
	waitAcks(t, c, "ch@5")
}

func TestNoAcksWithoutReceipts(t *testing.T) {
	t.Parallel()
	s := offlineSubscription(false, false)
	for i := 1; i <= 3; i++ {
		s.push(Message{Offset: fmt.Sprint(i), Data: json.RawMessage(`1`)}, false)
	}
	next(t, s)
	next(t, s)
	if err := s.Ack(context.Background(), "2"); err != nil {
		t.Fatalf("Ack without receipts: %v, want nil", err)
	}
	// A subscribe reply that turns receipts on: the message Next returned
	// before it is acked as the reader is done with it.
	s.subscribed(json.RawMessage(`{"id":9,"ok":true,"offset":"3","recovered":true,"receipts":true}`), nil)
	if !s.Receipts() {
		t.Fatal("receipts:true in the subscribe reply did not turn receipts on")
	}
	next(t, s) // 3: done with 2
	waitAcks(t, s.c, "ch@2")
}

// pendingFrame waits for the command op among the pending calls and
// returns it, decoded, without its id.
func pendingFrame(t *testing.T, c *Client, op string) map[string]any {
	t.Helper()
	var f map[string]any
	heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, p := range c.pending {
			if p.op == op {
				return json.Unmarshal(p.frame, &f)
			}
		}
		return fmt.Errorf("no %s command", op)
	})
	delete(f, "id")
	return f
}

func TestCommandsCarryDeliveryOptions(t *testing.T) {
	t.Parallel()
	c := offlineSubscription(false, false).c
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	filter := json.RawMessage(`{"tag":"sport","in":["ski","golf"]}`)

	s := newSubscription(c, "scores")
	for _, o := range []SubscribeOption{Since("7"), Filter(filter), Delta()} {
		o(s)
	}
	c.subscribeCmd(s)
	go func() {
		_, _ = c.Publish(ctx, "scores", 1, "goal", WithTags(map[string]string{"sport": "ski"}), WithKey("match-1"))
	}()
	go func() { _, _ = c.History(ctx, "scores", HistoryOptions{Limit: 5, Filter: filter}) }()
	for op, want := range map[string]string{
		"subscribe": `{"op":"subscribe","channel":"scores","since":"7","filter":{"tag":"sport","in":["ski","golf"]},"delta":"fossil"}`,
		"publish":   `{"op":"publish","channel":"scores","data":1,"event":"goal","tags":{"sport":"ski"},"key":"match-1"}`,
		"history":   `{"op":"history","channel":"scores","limit":5,"filter":{"tag":"sport","in":["ski","golf"]}}`,
	} {
		var w map[string]any
		if err := json.Unmarshal([]byte(want), &w); err != nil {
			t.Fatal(err)
		}
		if got := pendingFrame(t, c, op); fmt.Sprint(got) != fmt.Sprint(w) {
			t.Errorf("%s command %v, want %v", op, got, w)
		}
	}
}
