package hub_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/memory"
	"github.com/heraldhq/herald/internal/hub"
)

// lossyBroker is the in-memory broker with a switch that makes live
// delivery miss messages, as a node cut off from Redis or NATS does, and
// a way to report the reconnection.
type lossyBroker struct {
	*memory.Broker
	inner broker.Handler

	mu     sync.Mutex
	losing bool
	missed []broker.Message // what live delivery lost, for late copies
}

func (b *lossyBroker) Start(ctx context.Context, h broker.Handler) error {
	b.inner = h
	return b.Broker.Start(ctx, b)
}

func (b *lossyBroker) HandleMessage(m broker.Message) {
	b.mu.Lock()
	losing := b.losing
	if losing {
		b.missed = append(b.missed, m)
	}
	b.mu.Unlock()
	if !losing {
		b.inner.HandleMessage(m)
	}
}
func (b *lossyBroker) HandleJoin(ch string, c broker.ClientInfo)  { b.inner.HandleJoin(ch, c) }
func (b *lossyBroker) HandleLeave(ch string, c broker.ClientInfo) { b.inner.HandleLeave(ch, c) }
func (b *lossyBroker) HandleReconnect()                           { b.inner.HandleReconnect() }

func (b *lossyBroker) lose(on bool) {
	b.mu.Lock()
	b.losing = on
	b.mu.Unlock()
}

// recording is a Subscriber that keeps the sequence numbers it is given.
type recording struct {
	mu     sync.Mutex
	seqs   []uint64
	missed int // MissedMessages calls
}

func (r *recording) MissedMessages() {
	r.mu.Lock()
	r.missed++
	r.mu.Unlock()
}

func (r *recording) missedCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.missed
}

func (r *recording) Deliver(d *hub.Delivery) {
	if d.Presence != nil {
		return
	}
	r.mu.Lock()
	r.seqs = append(r.seqs, d.Message.Offset.Seq)
	r.mu.Unlock()
}

func (r *recording) got() []uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.seqs)
}

// waitSeqs waits until r has exactly want, failing on anything else.
func (r *recording) waitSeqs(t *testing.T, what string, want ...uint64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := r.got()
		if slices.Equal(got, want) {
			return
		}
		if len(got) > len(want) || !slices.Equal(got, want[:len(got)]) || time.Now().After(deadline) {
			t.Fatalf("%s got %v, want %v", what, got, want)
		}
		time.Sleep(2 * time.Millisecond) // poll for the repair's goroutine
	}
}

type repairEnv struct {
	t   *testing.T
	b   *lossyBroker
	h   *hub.Hub
	ctx context.Context
	n   int
}

const room = "room"

func newRepairEnv(t *testing.T) *repairEnv { return newRepairEnvOn(t, memory.New()) }

// newRepairEnvOn is newRepairEnv on a memory broker of the caller's.
func newRepairEnvOn(t *testing.T, mb *memory.Broker) *repairEnv {
	b := &lossyBroker{Broker: mb}
	return newRepairEnvThrough(t, b, b)
}

// newRepairEnvThrough is newRepairEnv whose hub uses hb, a broker that
// wraps b.
func newRepairEnvThrough(t *testing.T, b *lossyBroker, hb broker.Broker) *repairEnv {
	h := hub.New(hub.Config{
		Broker:  hb,
		Options: func(string) hub.ChannelOptions { return hub.ChannelOptions{History: broker.HistoryOptions{Size: 100}} },
	})
	e := &repairEnv{t: t, b: b, h: h, ctx: context.Background()}
	if err := h.Start(e.ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		h.Stop()
		_ = b.Close()
	})
	return e
}

func (e *repairEnv) subscribe(since *broker.Offset) *recording {
	e.t.Helper()
	r := &recording{}
	if err := e.h.Subscribe(e.ctx, r, &broker.ClientInfo{Client: fmt.Sprint(r)}, room, since, func(hub.SubscribeResult) {}); err != nil {
		e.t.Fatal(err)
	}
	return r
}

// publish publishes count messages and returns the offset of the last.
func (e *repairEnv) publish(count int) broker.Offset {
	e.t.Helper()
	var off broker.Offset
	for range count {
		e.n++
		var err error
		off, err = e.h.Publish(e.ctx, room, broker.Publication{Data: json.RawMessage(fmt.Sprint(e.n))})
		if err != nil {
			e.t.Fatal(err)
		}
	}
	return off
}

// A message whose predecessor never arrived makes the hub read the missing
// ones from history and deliver them first.
func TestGapRepairedOnNextMessage(t *testing.T) {
	e := newRepairEnv(t)
	r := e.subscribe(nil)
	e.publish(2)
	e.b.lose(true)
	e.publish(3)
	e.b.lose(false)
	r.waitSeqs(t, "before the next message", 1, 2)
	e.publish(1)
	r.waitSeqs(t, "after the next message", 1, 2, 3, 4, 5, 6)
}

// After the broker reports a reconnection the hub fetches what it missed
// without waiting for another message; late copies of those messages are
// not delivered again.
func TestGapRepairedOnReconnect(t *testing.T) {
	e := newRepairEnv(t)
	r := e.subscribe(nil)
	e.publish(2)
	e.b.lose(true)
	e.publish(3)
	e.b.lose(false)
	e.b.HandleReconnect()
	r.waitSeqs(t, "after the reconnection", 1, 2, 3, 4, 5)
	for _, m := range e.b.missed {
		e.b.inner.HandleMessage(m)
	}
	e.publish(1)
	r.waitSeqs(t, "after late copies", 1, 2, 3, 4, 5, 6)
	if n := r.missedCount(); n != 0 {
		t.Fatalf("told of missed messages %d times after a repair history covered", n)
	}
}

// A reconnection before the channel's first message repairs from where
// the subscribers started.
func TestGapRepairedBeforeFirstMessage(t *testing.T) {
	e := newRepairEnv(t)
	e.publish(2) // before anyone subscribed
	r := e.subscribe(nil)
	e.b.lose(true)
	e.publish(2)
	e.b.lose(false)
	e.b.HandleReconnect()
	r.waitSeqs(t, "after the reconnection", 3, 4)
}

// A repair gives each subscriber only what comes after its own start.
func TestRepairRespectsEachSubscribersStart(t *testing.T) {
	e := newRepairEnv(t)
	early := e.subscribe(nil)
	epoch := e.publish(2).Epoch
	e.b.lose(true)
	e.publish(3)
	late := e.subscribe(nil)                                     // starts after 5
	resumed := e.subscribe(&broker.Offset{Epoch: epoch, Seq: 3}) // replays 4 and 5
	e.b.lose(false)
	e.publish(1)
	early.waitSeqs(t, "early subscriber", 1, 2, 3, 4, 5, 6)
	late.waitSeqs(t, "late subscriber", 6)
	resumed.waitSeqs(t, "resumed subscriber", 4, 5, 6)
}

// When a repair finds that history no longer holds messages live delivery
// missed, the subscribers that were live are told, so that their clients
// resume and learn they did not recover (TestGapRepairedOnReconnect: a
// repair that found everything tells no one).
func TestRepairBeyondHistoryTellsSubscribers(t *testing.T) {
	e := newRepairEnv(t)
	r := e.subscribe(nil)
	e.publish(5)
	e.b.lose(true)
	e.publish(150) // history keeps 100: 6 to 55 are gone
	e.b.lose(false)
	e.h.HandleReconnect()
	deadline := time.Now().Add(5 * time.Second)
	for r.missedCount() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("a repair that history could not cover told no subscriber")
		}
		time.Sleep(2 * time.Millisecond) // poll for the repair's goroutine
	}
	if got := r.got(); len(got) != 105 || got[5] != 56 {
		t.Fatalf("after the incomplete repair got %d messages starting %v, want 1-5 then what history holds, 56-155", len(got), got[:min(len(got), 7)])
	}
}

// A node that misses the first messages of a channel's new epoch (the
// broker lost the old one and started again while the node was cut off)
// must not take the first message it does get for the start: the epoch's
// earlier messages are read back from history, and subscribers that
// started in the old epoch are told they may have missed its end.
func TestNewEpochJoinedLateIsRepaired(t *testing.T) {
	mb, err := memory.NewWithConfig(memory.Config{MaxHistoryBytes: 4096})
	if err != nil {
		t.Fatal(err)
	}
	e := newRepairEnvOn(t, mb)
	b, h := e.b, e.h
	r := e.subscribe(nil)
	first := e.publish(2)
	for i := range 40 { // past the budget: room's history is dropped
		if _, err := h.Publish(e.ctx, "other", broker.Publication{Data: json.RawMessage(fmt.Sprintf("%q", fmt.Sprint(i, "padding-padding-padding-padding")))}); err != nil {
			t.Fatal(err)
		}
	}
	b.lose(true)
	second := e.publish(2) // the new epoch's first two, lost on their way
	b.lose(false)
	if second.Epoch == first.Epoch {
		t.Fatalf("room kept its epoch %s: the test needs a new one", first.Epoch)
	}
	e.publish(1)
	deadline := time.Now().Add(5 * time.Second)
	for r.missedCount() == 0 && len(r.got()) < 5 {
		if time.Now().After(deadline) {
			t.Fatalf("got %v and no word of the missed start of the new epoch", r.got())
		}
		time.Sleep(2 * time.Millisecond) // poll for the repair's goroutine
	}
	if got := r.got(); r.missedCount() == 0 && !slices.Equal(got, []uint64{1, 2, 1, 2, 3}) {
		t.Fatalf("got %v, want the old epoch's 1 2 then the new one's 1 2 3", got)
	}
}

// A new epoch that a node started because the broker lost messages
// (Message.Ended) tells the subscribers that started in the old epoch
// that they missed some, when the node saw less of that epoch than the
// one that started the new; a node that saw as much tells nobody. Either
// way the new epoch's messages are delivered.
func TestNewEpochAfterLossTellsWhoSawLess(t *testing.T) {
	for _, tt := range []struct {
		name       string
		endedAhead uint64 // how far past this node's last message the lost epoch went
		told       int
	}{
		{"saw less", 1, 1},
		{"saw as much", 0, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newRepairEnv(t)
			r := e.subscribe(nil)
			last := e.publish(2)
			r.waitSeqs(t, "the old epoch", 1, 2)
			e.h.HandleMessage(broker.Message{
				Channel: room,
				Offset:  broker.Offset{Epoch: "after-the-loss", Seq: 1},
				Data:    json.RawMessage(`3`),
				Ended:   broker.Offset{Epoch: last.Epoch, Seq: last.Seq + tt.endedAhead},
			})
			r.waitSeqs(t, "the new epoch's first message", 1, 2, 1)
			if got := r.missedCount(); got != tt.told {
				t.Fatalf("MissedMessages called %d times, want %d", got, tt.told)
			}
		})
	}
}

// gatedBroker, once armed, holds every History call until open is closed,
// so that a repair stays under way while the test delivers live messages.
type gatedBroker struct {
	*lossyBroker
	armed   atomic.Bool
	entered chan struct{} // closed when the first armed History call arrives
	open    chan struct{}
	once    sync.Once
}

func (b *gatedBroker) History(ctx context.Context, ch string, q broker.HistoryQuery) (broker.HistoryResult, error) {
	if b.armed.Load() {
		b.once.Do(func() { close(b.entered) })
		<-b.open
	}
	return b.lossyBroker.History(ctx, ch, q)
}

// A new epoch's first message that arrives while a repair is under way
// (after a broker outage, just when a broker loses messages) is held and
// fanned out when the repair ends: its Message.Ended is checked then too.
func TestNewEpochAfterLossHeldDuringRepairTells(t *testing.T) {
	b := &gatedBroker{lossyBroker: &lossyBroker{Broker: memory.New()}, entered: make(chan struct{}), open: make(chan struct{})}
	e := newRepairEnvThrough(t, b.lossyBroker, b)
	h := e.h
	r := e.subscribe(nil)
	last := e.publish(2)
	r.waitSeqs(t, "the old epoch", 1, 2)
	b.armed.Store(true)
	h.HandleReconnect()
	<-b.entered
	h.HandleMessage(broker.Message{
		Channel: room,
		Offset:  broker.Offset{Epoch: "after-the-loss", Seq: 1},
		Data:    json.RawMessage(`3`),
		Ended:   broker.Offset{Epoch: last.Epoch, Seq: last.Seq + 1},
	})
	close(b.open)
	r.waitSeqs(t, "the new epoch's first message, after the repair", 1, 2, 1)
	if got := r.missedCount(); got != 1 {
		t.Fatalf("MissedMessages called %d times, want 1", got)
	}
}
