package hub_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/memory"
	"github.com/heraldhq/herald/internal/hub"
)

// gated is a Paced subscriber whose room the test controls: WaitRoom
// blocks until the test opens the gate.
type gated struct {
	recording
	mu     sync.Mutex
	open   chan struct{}
	behind chan struct{}
}

func newGated() *gated {
	return &gated{open: make(chan struct{}), behind: make(chan struct{})}
}

func (g *gated) TryRoom() int  { return 0 } // no room until the gate opens
func (g *gated) PageDone()     {}
func (g *gated) Hold(int) bool { return true }
func (g *gated) Unhold(int)    {}

func (g *gated) WaitRoom(ctx context.Context) (int, error) {
	g.mu.Lock()
	ch := g.open
	g.mu.Unlock()
	select {
	case <-ch:
		return 1 << 20, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

func (g *gated) FellBehind() { close(g.behind) }

func (g *gated) openGate() {
	g.mu.Lock()
	close(g.open)
	g.mu.Unlock()
}

func newCatchUpHub(t *testing.T, size int) (*hub.Hub, func(n int)) {
	b := memory.New()
	h := hub.New(hub.Config{
		Broker:  b,
		Options: func(string) hub.ChannelOptions { return hub.ChannelOptions{History: broker.HistoryOptions{Size: size}} },
	})
	if err := h.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		h.Stop()
		_ = b.Close()
	})
	n := 0
	publish := func(count int) {
		t.Helper()
		for range count {
			n++
			if _, err := h.Publish(context.Background(), room, broker.Publication{Data: json.RawMessage(fmt.Sprint(n))}); err != nil {
				t.Fatal(err)
			}
		}
	}
	return h, publish
}

func seqs(from, to uint64) []uint64 {
	var s []uint64
	for i := from; i <= to; i++ {
		s = append(s, i)
	}
	return s
}

// A paced subscriber gets its catch-up a page at a time, only as it has
// room; live messages published meanwhile — more than the hub buffers
// for it — still reach it once and in order, read back from history.
func TestCatchUpPagesAndOverflow(t *testing.T) {
	h, publish := newCatchUpHub(t, 5000)
	publish(100)
	g := newGated()
	zero := broker.Offset{}
	if err := h.Subscribe(context.Background(), g, &broker.ClientInfo{Client: "g"}, room, &zero, func(hub.SubscribeResult) {}); err != nil {
		t.Fatal(err)
	}
	// Nothing arrives before the subscriber has room.
	if got := g.got(); len(got) != 0 {
		t.Fatalf("before any room: %d messages, want none", len(got))
	}
	publish(2000) // more than a catching-up subscriber's live buffer
	g.openGate()
	g.waitSeqs(t, "paced subscriber", seqs(1, 2100)...)
	publish(5)
	g.waitSeqs(t, "paced subscriber, live", seqs(1, 2105)...)
}

// When history trims past where a paced subscriber's catch-up stands, the
// subscriber is told it fell behind instead of being handed a gap.
func TestCatchUpFellBehind(t *testing.T) {
	h, publish := newCatchUpHub(t, 20)
	publish(20)
	g := newGated()
	zero := broker.Offset{}
	if err := h.Subscribe(context.Background(), g, &broker.ClientInfo{Client: "g"}, room, &zero, func(hub.SubscribeResult) {}); err != nil {
		t.Fatal(err)
	}
	publish(100) // history now starts far past where the catch-up stands
	g.openGate()
	select {
	case <-g.behind:
	case <-time.After(5 * time.Second):
		t.Fatal("the subscriber was not told it fell behind")
	}
}
