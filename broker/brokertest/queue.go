package brokertest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/broker"
)

// RunQueue runs the suite of broker.Queue against brokers from newBroker,
// which must implement it. With shared set, brokers from newBroker share
// their backing service (one Redis, one NATS): the suite then also checks
// that what one pushes another takes, as nodes of a cluster do.
func RunQueue(t *testing.T, newBroker func(t *testing.T) broker.Broker, shared bool) {
	tests := []struct {
		name     string
		fn       func(t *testing.T, q *queueEnv)
		needsTwo bool
	}{
		{"OneItemPerKeyInOrder", testQueueOrder, false},
		{"LeaseEndsAndItemIsTakenAgain", testQueueLease, false},
		{"RetryWaitsAndKeepsOrder", testQueueRetry, false},
		{"ManyTakersEveryItemOnceInOrder", testQueueManyTakers, false},
		{"OneNodePushesAnotherTakes", testQueueShared, true},
	}
	for _, tt := range tests {
		if tt.needsTwo && !shared {
			continue // two brokers of this kind share nothing
		}
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 4*Timeout)
			t.Cleanup(cancel)
			start := func() broker.Queue { return startAbility[broker.Queue](ctx, t, newBroker) }
			e := &queueEnv{t: t, ctx: ctx, q: start(), name: uniquePrefix(t) + "q"}
			if tt.needsTwo {
				e.other = start()
			}
			tt.fn(t, e)
		})
	}
}

// queueEnv is one queue subtest's queue (and a second node's, shared).
type queueEnv struct {
	t     *testing.T
	ctx   context.Context
	q     broker.Queue
	other broker.Queue
	name  string
}

func (e *queueEnv) push(key, data string) {
	e.t.Helper()
	if err := e.q.Push(e.ctx, e.name, key, []byte(data)); err != nil {
		e.t.Fatalf("Push(%s, %s): %v", key, data, err)
	}
}

func (e *queueEnv) take(max int, lease time.Duration) []broker.QueueItem {
	e.t.Helper()
	items, err := e.q.Take(e.ctx, e.name, max, lease)
	if err != nil {
		e.t.Fatalf("Take: %v", err)
	}
	return items
}

func (e *queueEnv) ack(it broker.QueueItem) {
	e.t.Helper()
	if err := e.q.Ack(e.ctx, e.name, it); err != nil {
		e.t.Fatalf("Ack(%s %s): %v", it.Key, it.Data, err)
	}
}

func (e *queueEnv) length() int {
	e.t.Helper()
	n, err := e.q.Len(e.ctx, e.name)
	if err != nil {
		e.t.Fatalf("Len: %v", err)
	}
	return n
}

// itemData maps each item's key to its data, for comparison.
func itemData(items []broker.QueueItem) map[string]string {
	m := make(map[string]string, len(items))
	for _, it := range items {
		m[it.Key] = string(it.Data)
	}
	return m
}

func testQueueOrder(t *testing.T, e *queueEnv) {
	before := time.Now().Add(-time.Minute)
	e.push("a", "a1")
	e.push("a", "a2")
	e.push("b", "b1")
	e.push("a", "a3")
	if n := e.length(); n != 4 {
		t.Fatalf("Len = %d after 4 pushes", n)
	}
	// One item per key, each its key's oldest.
	got := e.take(10, Timeout)
	if want := map[string]string{"a": "a1", "b": "b1"}; fmt.Sprint(itemData(got)) != fmt.Sprint(want) || len(got) != 2 {
		t.Fatalf("first Take = %v, want %v", itemData(got), want)
	}
	for _, it := range got {
		if it.Attempts != 0 || it.ID == "" || it.Lease == "" || it.Pushed.Before(before) || it.Pushed.After(time.Now().Add(time.Minute)) {
			t.Errorf("item %+v: want attempts 0, an id, a lease and a push time of about now", it)
		}
	}
	// Nothing more while both keys' items are leased.
	if more := e.take(10, Timeout); len(more) != 0 {
		t.Fatalf("Take gave %v while every key had an item leased", itemData(more))
	}
	var a, b broker.QueueItem
	for _, it := range got {
		if it.Key == "a" {
			a = it
		} else {
			b = it
		}
	}
	e.ack(a)
	next := e.take(10, Timeout)
	if len(next) != 1 || string(next[0].Data) != "a2" {
		t.Fatalf("after a1's Ack, Take = %v, want a2 only", itemData(next))
	}
	e.ack(b)
	e.ack(next[0])
	last := e.take(10, Timeout)
	if len(last) != 1 || string(last[0].Data) != "a3" {
		t.Fatalf("then Take = %v, want a3", itemData(last))
	}
	e.ack(last[0])
	if n := e.length(); n != 0 {
		t.Fatalf("Len = %d after every item was acknowledged", n)
	}
	if rest := e.take(10, Timeout); len(rest) != 0 {
		t.Fatalf("an empty queue gave %v", itemData(rest))
	}
	// Max bounds one Take.
	for i := range 5 {
		e.push(fmt.Sprintf("k%d", i), "x")
	}
	if got := e.take(3, Timeout); len(got) != 3 {
		t.Fatalf("Take(3) gave %d items of 5 keys", len(got))
	}
}

func testQueueLease(t *testing.T, e *queueEnv) {
	e.push("a", "a1")
	e.push("a", "a2")
	const lease = 300 * time.Millisecond
	first := e.take(10, lease)
	if len(first) != 1 {
		t.Fatalf("Take = %v", itemData(first))
	}
	// The holder goes away: once the lease ends, a1 is taken again, as the
	// same item, with one attempt counted.
	var again []broker.QueueItem
	waitFor(t, func() error {
		if again = e.take(10, lease); len(again) == 0 {
			return errors.New("a1 not taken again after its lease ended")
		}
		return nil
	})
	if len(again) != 1 || again[0].ID != first[0].ID || string(again[0].Data) != "a1" || again[0].Attempts != 1 || again[0].Lease == first[0].Lease {
		t.Fatalf("after the lease: %+v, want a1 again (same id, attempts 1, a new lease) — first %+v", again, first[0])
	}
	// The first holder's late Ack and Retry are refused; the item stays.
	if err := e.q.Ack(e.ctx, e.name, first[0]); !errors.Is(err, broker.ErrLeaseLost) {
		t.Fatalf("late Ack: %v, want ErrLeaseLost", err)
	}
	if err := e.q.Retry(e.ctx, e.name, first[0], 0); !errors.Is(err, broker.ErrLeaseLost) {
		t.Fatalf("late Retry: %v, want ErrLeaseLost", err)
	}
	e.ack(again[0])
	if got := e.take(10, Timeout); len(got) != 1 || string(got[0].Data) != "a2" || got[0].Attempts != 0 {
		t.Fatalf("after a1: %+v, want a2 on its first attempt", got)
	}
}

func testQueueRetry(t *testing.T, e *queueEnv) {
	e.push("a", "a1")
	e.push("a", "a2")
	e.push("b", "b1")
	got := e.take(10, Timeout)
	var a broker.QueueItem
	for _, it := range got {
		if it.Key == "a" {
			a = it
		} else {
			e.ack(it)
		}
	}
	const delay = 400 * time.Millisecond
	retried := time.Now()
	if err := e.q.Retry(e.ctx, e.name, a, delay); err != nil {
		t.Fatal(err)
	}
	// Not before the delay, and then a1 again, ahead of a2.
	var again []broker.QueueItem
	waitFor(t, func() error {
		if again = e.take(10, Timeout); len(again) == 0 {
			return errors.New("a1 not given again after its retry delay")
		}
		return nil
	})
	if waited := time.Since(retried); waited < delay-50*time.Millisecond {
		t.Fatalf("a retried item came back after %v, before its delay %v", waited, delay)
	}
	if len(again) != 1 || string(again[0].Data) != "a1" || again[0].Attempts != 1 {
		t.Fatalf("after Retry: %+v, want a1 with attempts 1", again)
	}
	e.ack(again[0])
	if got := e.take(10, Timeout); len(got) != 1 || string(got[0].Data) != "a2" {
		t.Fatalf("then: %v, want a2", itemData(got))
	}
}

// Several takers drain many keys at once: every item is done once (none
// given to two takers at a time while its lease holds), each key in order.
func testQueueManyTakers(t *testing.T, e *queueEnv) {
	const keys, perKey, takers = 20, 15, 4
	for i := range perKey {
		for k := range keys {
			e.push(fmt.Sprintf("k%02d", k), fmt.Sprint(i))
		}
	}
	var (
		mu     sync.Mutex
		seen   = map[string][]string{}
		failed error
		wg     sync.WaitGroup
	)
	deadline := time.Now().Add(2 * Timeout)
	for range takers {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				mu.Lock()
				done := 0
				for _, s := range seen {
					done += len(s)
				}
				mu.Unlock()
				if done >= keys*perKey {
					return
				}
				items, err := e.q.Take(e.ctx, e.name, 5, Timeout)
				if err != nil {
					mu.Lock()
					failed = err
					mu.Unlock()
					return
				}
				for _, it := range items {
					mu.Lock()
					seen[it.Key] = append(seen[it.Key], string(it.Data))
					mu.Unlock()
					if err := e.q.Ack(e.ctx, e.name, it); err != nil {
						mu.Lock()
						failed = err
						mu.Unlock()
						return
					}
				}
			}
		})
	}
	wg.Wait()
	if failed != nil {
		t.Fatal(failed)
	}
	for k := range keys {
		key := fmt.Sprintf("k%02d", k)
		var want []string
		for i := range perKey {
			want = append(want, fmt.Sprint(i))
		}
		if fmt.Sprint(seen[key]) != fmt.Sprint(want) {
			t.Errorf("key %s done as %v, want each once in order %v", key, seen[key], want)
		}
	}
}

// What one node pushes, another takes; an item one node took and never
// acknowledged (it died) another takes once the lease ends.
func testQueueShared(t *testing.T, e *queueEnv) {
	e.push("c", "from node 1")
	const lease = 300 * time.Millisecond
	var got []broker.QueueItem
	waitFor(t, func() error {
		var err error
		if got, err = e.other.Take(e.ctx, e.name, 10, lease); err != nil || len(got) == 0 {
			return fmt.Errorf("node 2 took %v (%v)", got, err)
		}
		return nil
	})
	if string(got[0].Data) != "from node 1" {
		t.Fatalf("node 2 took %+v", got)
	}
	// Node 2 dies holding it; node 1 takes it when the lease ends.
	waitFor(t, func() error {
		again := e.take(10, lease)
		if len(again) == 0 {
			return errors.New("not taken again")
		}
		e.ack(again[0])
		return nil
	})
	if n := e.length(); n != 0 {
		t.Fatalf("Len = %d after the item was acknowledged", n)
	}
}

// OnePerSubtest memoizes newPrefix per subtest, for RunQueue and
// RunRegistry with shared brokers: the brokers one subtest makes share a
// prefix, as the nodes of one cluster do, and other subtests' do not.
func OnePerSubtest(newPrefix func(t *testing.T) string) func(t *testing.T) string {
	var (
		mu       sync.Mutex
		prefixes = map[*testing.T]string{}
	)
	return func(t *testing.T) string {
		mu.Lock()
		defer mu.Unlock()
		p, ok := prefixes[t]
		if !ok {
			p = newPrefix(t)
			prefixes[t] = p
		}
		return p
	}
}
