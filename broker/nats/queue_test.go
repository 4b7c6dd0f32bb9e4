package nats_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/brokertest"
)

// TestQueueTwoNodesTakeAtOnce has two nodes take from one queue with
// several takers each, all at once: every key's item is leased once,
// whatever characters its key and the queue's name hold.
func TestQueueTwoNodesTakeAtOnce(t *testing.T) {
	prefix := newPrefix(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*brokertest.Timeout)
	defer cancel()
	nodes, _ := twoNodes(ctx, t, prefix, "")
	const queue = "hooks.*>/ ü"
	keys := []string{"", "a.b", "*", ">", "a b", "ü", "a/b", "$x", "x\x00y"}
	for i := range 11 {
		keys = append(keys, fmt.Sprintf("k%d", i))
	}
	for _, k := range keys {
		if err := nodes[0].Push(ctx, queue, k, []byte("item of "+k)); err != nil {
			t.Fatalf("Push(%q): %v", k, err)
		}
	}
	if n, err := nodes[1].Len(ctx, queue); err != nil || n != len(keys) {
		t.Fatalf("Len = %d, %v; want %d", n, err, len(keys))
	}
	var (
		mu     sync.Mutex
		leased = map[string]int{}
		wg     sync.WaitGroup
		start  = make(chan struct{})
	)
	for i := range 8 {
		q := nodes[i%2]
		wg.Go(func() {
			<-start
			for range 3 {
				items, err := q.Take(ctx, queue, len(keys), brokertest.Timeout)
				if err != nil {
					t.Errorf("Take: %v", err)
					return
				}
				mu.Lock()
				for _, it := range items {
					if string(it.Data) != "item of "+it.Key {
						t.Errorf("key %q was given %q", it.Key, it.Data)
					}
					leased[it.Key]++
				}
				mu.Unlock()
			}
		})
	}
	close(start)
	wg.Wait()
	for _, k := range keys {
		if leased[k] != 1 {
			t.Errorf("key %q leased %d times, want once", k, leased[k])
		}
	}
	if len(leased) != len(keys) {
		t.Errorf("leased %d keys, want %d: %v", len(leased), len(keys), leased)
	}
	// A queue whose name starts as this one's does shares nothing.
	if items, err := nodes[0].Take(ctx, queue+"x", 10, time.Second); err != nil || len(items) != 0 {
		t.Fatalf("another queue gave %v, %v", items, err)
	}
}

// TestQueueTakeCost counts the requests Take and Ack send: they grow with
// the keys that have items, not with the items.
func TestQueueTakeCost(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*brokertest.Timeout)
	defer cancel()
	prefix := newPrefix(t)
	b := newBroker(t, prefix)
	if err := b.Start(ctx, &handler{}); err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer b.Close()
	const q, deep = "q", 300
	for i := range deep {
		if err := b.Push(ctx, q, "deep", []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range []string{"a", "b", "c"} {
		if err := b.Push(ctx, q, k, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	cost := func(what string, most int, f func() error) {
		t.Helper()
		before := b.RequestsSent()
		if err := f(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if n := int(b.RequestsSent() - before); n > most {
			t.Errorf("%s sent %d requests, want at most %d", what, n, most)
		}
	}
	var items []broker.QueueItem
	// The listing, then a key's state, head item and claim for each of 4
	// keys.
	cost("Take of 4 keys, one with 300 items", 1+4*3, func() (err error) {
		items, err = b.Take(ctx, q, 10, brokertest.Timeout)
		if err == nil && len(items) != 4 {
			err = fmt.Errorf("took %d items, want 4", len(items))
		}
		return err
	})
	// The listing, the server's time (a write and a read), each key's state.
	cost("Take with every key leased", 1+2+4, func() error {
		again, err := b.Take(ctx, q, 10, brokertest.Timeout)
		if err == nil && len(again) != 0 {
			err = fmt.Errorf("took %v while every key was leased", again)
		}
		return err
	})
	// The state, the new state, removing the item, looking for the next;
	// and deleting the state of a key left without items.
	for _, it := range items {
		most := 5
		if it.Key == "deep" {
			most = 4
		}
		cost("Ack of "+it.Key, most, func() error { return b.Ack(ctx, q, it) })
	}
	cost("Len", 1, func() error {
		n, err := b.Len(ctx, q)
		if err == nil && n != deep-1 {
			err = fmt.Errorf("Len = %d, want %d", n, deep-1)
		}
		return err
	})
	// Keys left without items have no state left: only "deep" has one.
	s, err := jetStream(t).Stream(ctx, b.KeysStreamName())
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(prefix+".qkey.*.*"))
	if err != nil {
		t.Fatal(err)
	}
	if len(info.State.Subjects) != 1 {
		t.Errorf("key states left: %v, want only the key with items", info.State.Subjects)
	}
}
