package memory_test

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/brokertest"
	"github.com/heraldhq/herald/broker/memory"
)

func TestBroker(t *testing.T) {
	brokertest.Run(t, func(*testing.T) broker.Broker { return memory.New() })
}

func TestOccupancy(t *testing.T) {
	brokertest.RunOccupancy(t, func(*testing.T) broker.Broker { return memory.New() }, false)
}

func TestRegistry(t *testing.T) {
	brokertest.RunRegistry(t, func(*testing.T) broker.Broker { return memory.New() }, false)
}

func TestQueue(t *testing.T) {
	brokertest.RunQueue(t, func(*testing.T) broker.Broker { return memory.New() }, false)
}

func TestReceipts(t *testing.T) {
	brokertest.RunReceipts(t, func(*testing.T) broker.Broker { return memory.New() }, false)
}

// start returns a started broker with the given history budget, closed
// when t ends.
func start(t *testing.T, budget int64, h broker.Handler) *memory.Broker {
	t.Helper()
	b, err := memory.NewWithConfig(memory.Config{MaxHistoryBytes: budget})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// recorder keeps the offsets the broker delivers, per channel.
type recorder struct {
	mu   sync.Mutex
	offs map[string][]broker.Offset
}

func (r *recorder) HandleMessage(m broker.Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.offs == nil {
		r.offs = map[string][]broker.Offset{}
	}
	r.offs[m.Channel] = append(r.offs[m.Channel], m.Offset)
}
func (*recorder) HandleJoin(string, broker.ClientInfo)  {}
func (*recorder) HandleLeave(string, broker.ClientInfo) {}
func (*recorder) HandleReconnect()                      {}

// TestHistoryBudget publishes into many channels, far past the budget, as
// short connections publishing into many channels do: the oldest channels
// lose their history, the broker's accounting stays within the budget and
// so does the heap, a resume into an evicted channel is not complete, and
// its offsets are not given again.
func TestHistoryBudget(t *testing.T) {
	const budget = 1 << 20
	rec := &recorder{}
	b := start(t, budget, rec)
	ctx := context.Background()
	if err := b.Subscribe(ctx, "ch-1"); err != nil {
		t.Fatal(err)
	}

	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	data := `"` + strings.Repeat("x", 1000) + `"`
	opts := broker.HistoryOptions{Size: 100}
	const channels, each = 500, 20 // about 12 MiB of history without a budget
	last := map[string]broker.Offset{}
	for c := range channels {
		name := fmt.Sprint("ch-", c)
		for range each {
			off, err := b.Publish(ctx, name, broker.Publication{Data: json.RawMessage(data)}, opts)
			if err != nil {
				t.Fatal(err)
			}
			last[name] = off
			if used := b.HistoryBytes(); used > budget {
				t.Fatalf("history counts %d bytes, over the budget of %d", used, budget)
			}
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > 3*budget {
		t.Fatalf("the heap grew by %d bytes for a history budget of %d", grew, budget)
	}
	if b.Evictions() == 0 {
		t.Fatal("no channel was evicted")
	}

	newest := fmt.Sprint("ch-", channels-1)
	res, err := b.History(ctx, newest, broker.HistoryQuery{Limit: -1})
	if err != nil || len(res.Messages) != each || !res.Complete {
		t.Fatalf("the newest channel: %d messages, Complete %v, %v; want all %d", len(res.Messages), res.Complete, err, each)
	}
	for _, name := range []string{"ch-0", "ch-1"} { // ch-1 is subscribed: evicted but not forgotten
		res, err = b.History(ctx, name, broker.HistoryQuery{Since: last[name], Limit: -1})
		if err != nil || res.Complete || len(res.Messages) != 0 {
			t.Fatalf("resume into the evicted %s from %v: Complete %v, %d messages, %v; want false, none",
				name, last[name], res.Complete, len(res.Messages), err)
		}
		off, err := b.Publish(ctx, name, broker.Publication{Data: json.RawMessage(`1`)}, opts)
		if err != nil {
			t.Fatal(err)
		}
		if off.Epoch == last[name].Epoch {
			t.Fatalf("%s after its eviction: offset %v in the epoch of %v", name, off, last[name])
		}
	}
	rec.mu.Lock()
	got := rec.offs["ch-1"]
	rec.mu.Unlock()
	if len(got) != each+1 || got[each].Epoch == got[0].Epoch {
		t.Fatalf("the subscribed ch-1 was delivered %v, want %d messages then one in a new epoch", got, each+1)
	}
}

// TestHistoryBudgetOneChannel fills the budget from one channel: it keeps
// its newest messages within the budget, and the cursor before them reads
// as not complete.
func TestHistoryBudgetOneChannel(t *testing.T) {
	const budget = 64 << 10
	b := start(t, budget, &recorder{})
	ctx := context.Background()
	data := json.RawMessage(`"` + strings.Repeat("y", 1000) + `"`)
	var offs []broker.Offset
	for range 200 {
		off, err := b.Publish(ctx, "big", broker.Publication{Data: data}, broker.HistoryOptions{Size: 1000})
		if err != nil {
			t.Fatal(err)
		}
		offs = append(offs, off)
	}
	if used := b.HistoryBytes(); used > budget || used == 0 {
		t.Fatalf("history counts %d bytes, want some and at most %d", used, budget)
	}
	res, err := b.History(ctx, "big", broker.HistoryQuery{Since: offs[0], Limit: -1})
	if err != nil || res.Complete || len(res.Messages) == 0 || res.Messages[len(res.Messages)-1].Offset != offs[199] {
		t.Fatalf("since the first: Complete %v, %d messages, %v; want false and the newest kept", res.Complete, len(res.Messages), err)
	}
}

func TestNewWithConfigNoBound(t *testing.T) {
	b := start(t, -1, &recorder{})
	ctx := context.Background()
	data := json.RawMessage(`"` + strings.Repeat("z", 1000) + `"`)
	for c := range 100 {
		if _, err := b.Publish(ctx, fmt.Sprint("c", c), broker.Publication{Data: data}, broker.HistoryOptions{Size: 10}); err != nil {
			t.Fatal(err)
		}
	}
	if b.Evictions() != 0 || b.HistoryBytes() < 100*1000 {
		t.Fatalf("without a bound: %d evictions, %d bytes", b.Evictions(), b.HistoryBytes())
	}
}

// TestHistoryBytesCountTagsAndKey checks that a kept message's tags and
// key count against the budget, and that dropping it gives back what it
// counted.
func TestHistoryBytesCountTagsAndKey(t *testing.T) {
	b := start(t, -1, &recorder{})
	ctx := context.Background()
	one := broker.HistoryOptions{Size: 1}
	publish := func(name string, p broker.Publication) int64 {
		t.Helper()
		before := b.HistoryBytes()
		if _, err := b.Publish(ctx, name, p, one); err != nil {
			t.Fatal(err)
		}
		return b.HistoryBytes() - before
	}
	data := json.RawMessage(`"some data"`)
	plain := publish("plain", broker.Publication{Data: data})
	tags := map[string]string{"room": strings.Repeat("r", 100), strings.Repeat("k", 120): "v"}
	key := strings.Repeat("q", 128)
	tagged := publish("tagged", broker.Publication{Data: data, Tags: tags, Key: key})
	var tagBytes int64
	for k, v := range tags {
		tagBytes += int64(len(k) + len(v))
	}
	if want := plain + tagBytes + int64(len(key)); tagged < want {
		t.Fatalf("a message with %d bytes of tags and a %d-byte key counts %d bytes, one without counts %d; want at least %d",
			tagBytes, len(key), tagged, plain, want)
	}
	// Size 1: the plain message pushes the tagged one out.
	if got := publish("tagged", broker.Publication{Data: data}); got != plain-tagged {
		t.Fatalf("replacing the tagged message with a plain one changed the count by %d, want %d", got, plain-tagged)
	}
	if got, want := b.HistoryBytes(), 2*plain; got != want {
		t.Fatalf("two plain messages kept count %d bytes, want %d", got, want)
	}
}

// TestHistoryBudgetConcurrent publishes, reads and subscribes from several
// goroutines into channels that evict each other: the accounting ends
// within the budget and matches what the channels hold.
func TestHistoryBudgetConcurrent(t *testing.T) {
	const budget = 64 << 10
	b := start(t, budget, &recorder{})
	ctx := context.Background()
	data := json.RawMessage(`"` + strings.Repeat("w", 500) + `"`)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 1000 {
				name := fmt.Sprint("c", (g*7+i)%50)
				if _, err := b.Publish(ctx, name, broker.Publication{Data: data}, broker.HistoryOptions{Size: 20}); err != nil {
					t.Error(err)
					return
				}
				switch i % 10 {
				case 3:
					_, _ = b.History(ctx, name, broker.HistoryQuery{Limit: -1})
				case 7:
					_ = b.Subscribe(ctx, name)
				}
			}
		})
	}
	wg.Wait()
	if used := b.HistoryBytes(); used > budget || used <= 0 {
		t.Fatalf("history counts %d bytes, want some and at most %d", used, budget)
	}
	var held int
	for c := range 50 {
		res, err := b.History(ctx, fmt.Sprint("c", c), broker.HistoryQuery{Limit: -1})
		if err != nil {
			t.Fatal(err)
		}
		held += len(res.Messages)
	}
	if perMessage := b.HistoryBytes() / int64(max(held, 1)); held == 0 || perMessage < int64(len(data)) || perMessage > int64(len(data))+1024 {
		t.Fatalf("%d bytes counted for %d messages held", b.HistoryBytes(), held)
	}
}

// TestChannelMapShrinks uses many channels at once, then leaves them: the
// broker forgets them (evicted, or swept once idle) and rebuilds its
// channel map, whose memory Go never gives back otherwise.
func TestChannelMapShrinks(t *testing.T) {
	b := start(t, 16<<10, &recorder{})
	ctx := context.Background()
	const n = 3000
	for c := range n {
		if err := b.Subscribe(ctx, fmt.Sprint("c", c)); err != nil {
			t.Fatal(err)
		}
	}
	if got, peak := b.Channels(); got != n || peak != n {
		t.Fatalf("%d channels subscribed: %d held, peak %d", n, got, peak)
	}
	data := json.RawMessage(`"` + strings.Repeat("v", 1000) + `"`)
	for c := range n {
		name := fmt.Sprint("c", c)
		if _, err := b.Publish(ctx, name, broker.Publication{Data: data}, broker.HistoryOptions{Size: 10}); err != nil {
			t.Fatal(err)
		}
		if err := b.Unsubscribe(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	b.Sweep() // what the budget did not evict has history left: kept
	got, peak := b.Channels()
	if got > 20 || peak > n/4 {
		t.Fatalf("after leaving %d channels, 20 at most within the budget: %d held, map peak %d", n, got, peak)
	}
}

// TestReceiptsAreFreed records receipts in many channels, then lets most
// of them expire: the sweep frees them, rebuilds the maps that held them,
// and keeps what has not expired.
func TestReceiptsAreFreed(t *testing.T) {
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	b := memory.New()
	b.SetClock(func() time.Time { return time.Unix(0, clock.Load()) })
	if err := b.Start(context.Background(), &recorder{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	ctx := context.Background()
	const n = 3000
	now := time.Unix(0, clock.Load())
	for c := range n {
		ch, keep := fmt.Sprint("c", c), time.Minute
		if c < 10 {
			keep = time.Hour
		}
		off := broker.Offset{Epoch: "e", Seq: 1}
		who := []broker.ClientInfo{{Client: "a", User: "u"}, {Client: "b"}}
		if err := b.Delivered(ctx, ch, off, who, now.Add(time.Second), keep); err != nil {
			t.Fatal(err)
		}
		if err := b.Acked(ctx, ch, who[0], off, keep); err != nil {
			t.Fatal(err)
		}
	}
	want := memory.ReceiptsCount{Channels: n, ChannelsPeak: n, Deliveries: n, Acks: 2 * n, Checks: n}
	if got := b.ReceiptsSize(); got != want {
		t.Fatalf("receipts hold %+v, want %+v", got, want)
	}
	clock.Add(int64(2 * time.Minute))
	b.Sweep()
	want = memory.ReceiptsCount{Channels: 10, ChannelsPeak: 10, Deliveries: 10, Acks: 20, Checks: 10}
	if got := b.ReceiptsSize(); got != want {
		t.Fatalf("after the sweep, receipts hold %+v, want %+v", got, want)
	}
	st, found, err := b.Receipts(ctx, "c3", broker.Offset{Epoch: "e", Seq: 1})
	if err != nil || !found || len(st.Acked) != 1 || len(st.Pending) != 1 {
		t.Fatalf("a channel kept for an hour: %+v %v %v", st, found, err)
	}
}
