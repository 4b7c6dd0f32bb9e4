package hub_test

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/memory"
	"github.com/heraldhq/herald/internal/hub"
)

// burstBroker publishes a burst right after a History read returns,
// before the hub sees the result (the window a real broker round trip opens).
type burstBroker struct {
	*memory.Broker
	armed atomic.Bool
	n     int
}

func (b *burstBroker) History(ctx context.Context, name string, q broker.HistoryQuery) (broker.HistoryResult, error) {
	res, err := b.Broker.History(ctx, name, q)
	if b.armed.Swap(false) {
		for range 2000 {
			b.n++
			if _, err := b.Broker.Publish(ctx, name, broker.Publication{Data: json.RawMessage(fmt.Sprint(b.n))}, broker.HistoryOptions{Size: 5000}); err != nil {
				panic(err)
			}
		}
	}
	return res, err
}

// Live messages that overflow a subscriber's buffer while its first (and
// only) page is read are read back from history, not lost.
func TestFirstPageOverflowIsReadBack(t *testing.T) {
	b := &burstBroker{Broker: memory.New()}
	h := hub.New(hub.Config{Broker: b, Options: func(string) hub.ChannelOptions {
		return hub.ChannelOptions{History: broker.HistoryOptions{Size: 5000}}
	}})
	if err := h.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Stop(); _ = b.Close() })
	var off broker.Offset
	for range 3 {
		b.n++
		var err error
		if off, err = h.Publish(context.Background(), room, broker.Publication{Data: json.RawMessage(fmt.Sprint(b.n))}); err != nil {
			t.Fatal(err)
		}
	}
	r := newGated()
	r.openGate()
	since := broker.Offset{Epoch: off.Epoch, Seq: 1}
	b.armed.Store(true)
	if err := h.Subscribe(context.Background(), r, &broker.ClientInfo{Client: "r"}, room, &since, func(hub.SubscribeResult) {}); err != nil {
		t.Fatal(err)
	}
	r.waitSeqs(t, "subscriber", seqs(2, 2003)...)
}

// sharedRoom is one connection's queue (bound q) subscribed to many
// channels, paced the way Session is: a page at a time, reserved.
type sharedRoom struct {
	q       int
	mu      sync.Mutex
	held    int
	maxHeld int
	paging  bool
	drained chan struct{}
}

func (s *sharedRoom) Deliver(d *hub.Delivery) {
	if d.Presence != nil {
		return
	}
	s.mu.Lock()
	s.held += len(d.Message.Data)
	s.maxHeld = max(s.maxHeld, s.held)
	s.mu.Unlock()
}
func (s *sharedRoom) TryRoom() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.paging || s.held > s.q/2 {
		return 0
	}
	s.paging = true
	return s.q - s.held
}
func (s *sharedRoom) WaitRoom(ctx context.Context) (int, error) {
	s.mu.Lock()
	for s.paging || s.held > s.q/2 {
		ch := s.drained
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		s.mu.Lock()
	}
	defer s.mu.Unlock()
	s.paging = true
	return s.q - s.held, nil
}
func (s *sharedRoom) PageDone() {
	s.mu.Lock()
	s.paging = false
	close(s.drained)
	s.drained = make(chan struct{})
	s.mu.Unlock()
}
func (s *sharedRoom) Hold(n int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.held+n > s.q {
		return false
	}
	s.held += n
	return true
}
func (s *sharedRoom) Unhold(n int) { s.mu.Lock(); s.held -= n; s.mu.Unlock() }
func (s *sharedRoom) FellBehind()  {}
func (s *sharedRoom) drain() {
	s.mu.Lock()
	s.held = 0
	close(s.drained)
	s.drained = make(chan struct{})
	s.mu.Unlock()
}

// slowBroker's History takes a network round trip, as Redis's does.
type slowBroker struct{ *memory.Broker }

func (b slowBroker) History(ctx context.Context, name string, q broker.HistoryQuery) (broker.HistoryResult, error) {
	time.Sleep(2 * time.Millisecond)
	return b.Broker.History(ctx, name, q)
}

// Many catch-ups of one subscriber share its one bound: after it drains
// once, they do not each add a page.
func TestManyCatchUpsShareOneBound(t *testing.T) {
	b := slowBroker{memory.New()}
	h := hub.New(hub.Config{Broker: b, Options: func(string) hub.ChannelOptions {
		return hub.ChannelOptions{History: broker.HistoryOptions{Size: 100}}
	}})
	if err := h.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Stop(); _ = b.Close() })
	big := json.RawMessage(`"` + string(make([]byte, 0)) + fmt.Sprintf("%01000d", 0) + `"`) // ~1 KB
	const q = 16 << 10
	s := &sharedRoom{q: q, drained: make(chan struct{})}
	for c := range 32 {
		name := fmt.Sprint("c", c)
		for range 40 {
			if _, err := h.Publish(context.Background(), name, broker.Publication{Data: big}); err != nil {
				t.Fatal(err)
			}
		}
		zero := broker.Offset{}
		if err := h.Subscribe(context.Background(), s, &broker.ClientInfo{Client: "s"}, name, &zero, func(hub.SubscribeResult) {}); err != nil {
			t.Fatal(err)
		}
	}
	s.mu.Lock()
	before := s.held
	s.mu.Unlock()
	s.drain() // the client reads once, then stops
	// Once a page has come and no page is reserved, nothing more can
	// come until the next drain.
	settled := func() bool { s.mu.Lock(); defer s.mu.Unlock(); return s.held > q/2 && !s.paging }
	deadline := time.Now().Add(5 * time.Second)
	for !settled() {
		if time.Now().After(deadline) {
			t.Fatal("the catch-ups never filled the drained subscriber")
		}
		time.Sleep(time.Millisecond) // poll for the catch-up goroutines
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t.Logf("bound %d; held after subscribes %d; most held after one drain %d", q, before, s.maxHeld)
	if s.maxHeld > 2*q {
		t.Fatalf("one connection held %d bytes with a %d-byte bound", s.maxHeld, q)
	}
}

// A catch-up waiting for room ends with its subscription, not when the
// subscriber next drains.
func TestUnsubscribedCatchUpsEnd(t *testing.T) {
	b := memory.New()
	h := hub.New(hub.Config{Broker: b, Options: func(string) hub.ChannelOptions {
		return hub.ChannelOptions{History: broker.HistoryOptions{Size: 100}}
	}})
	if err := h.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Stop(); _ = b.Close() })
	for range 40 {
		if _, err := h.Publish(context.Background(), room, broker.Publication{Data: json.RawMessage(`1`)}); err != nil {
			t.Fatal(err)
		}
	}
	s := &sharedRoom{q: 16 << 10, drained: make(chan struct{}), held: 12 << 10} // between half and full: commands are read
	before := runtime.NumGoroutine()
	for range 1000 {
		zero := broker.Offset{}
		if err := h.Subscribe(context.Background(), s, &broker.ClientInfo{Client: "s"}, room, &zero, func(hub.SubscribeResult) {}); err != nil {
			t.Fatal(err)
		}
		h.Unsubscribe(context.Background(), s, broker.ClientInfo{Client: "s"}, room)
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine()-before > 10 {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines left behind by 1000 subscribe/unsubscribe pairs", runtime.NumGoroutine()-before)
		}
		time.Sleep(5 * time.Millisecond) // poll for the goroutines to end
	}
}
