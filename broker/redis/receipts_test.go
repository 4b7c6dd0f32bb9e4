package redis_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/brokertest"
	"github.com/heraldhq/herald/broker/redis"
)

// TestReceiptsKeysExpire records receipts with a short keep: every key
// of the channel expires by itself, and the due checks' index forgets a
// check that nobody took once its keep ended.
func TestReceiptsKeysExpire(t *testing.T) {
	prefix := testPrefix(t)
	b := newBroker(t, redis.Config{URL: serverURL(), Prefix: prefix})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := b.Start(ctx, &collector{}); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	opts, _ := goredis.ParseURL(serverURL())
	c := goredis.NewClient(opts)
	defer c.Close()

	const keep = 500 * time.Millisecond
	ch, off := "chat:a@b", broker.Offset{Epoch: "e1", Seq: 3}
	who := []broker.ClientInfo{{Client: "c1", User: "u1"}, {Client: "c2"}}
	if err := b.Delivered(ctx, ch, off, who, time.Now().Add(time.Hour), keep); err != nil {
		t.Fatal(err)
	}
	if err := b.Acked(ctx, ch, who[0], off, keep); err != nil {
		t.Fatal(err)
	}
	keys, err := c.Keys(ctx, prefix+"*").Result()
	if err != nil {
		t.Fatal(err)
	}
	var channelKeys int
	for _, k := range keys {
		ttl, err := c.PTTL(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		if k == prefix+"{rc}:due" || k == prefix+"{rc}:expiry" {
			continue // the index of all checks, pruned as they expire
		}
		channelKeys++
		if ttl <= 0 || ttl > keep {
			t.Errorf("key %s expires in %v, want at most %v", k, ttl, keep)
		}
	}
	if channelKeys != 3 {
		t.Errorf("keys %q: want the delivery's and the acknowledgements' (3)", keys)
	}
	waitFor(t, func() error {
		if n, err := c.Exists(ctx, keys...).Result(); err != nil || n != 2 {
			return fmt.Errorf("%d of keys %q left (%v), want only the index's 2", n, keys, err)
		}
		return nil
	})
	// The check expired untaken: TakeDue forgets it.
	if ds, err := b.TakeDue(ctx, 10, time.Minute); err != nil || len(ds) != 0 {
		t.Fatalf("TakeDue = %v, %v", ds, err)
	}
	if n, err := c.Exists(ctx, keys...).Result(); err != nil || n != 0 {
		t.Fatalf("%d keys left after TakeDue (%v), want none", n, err)
	}
}

// waitFor polls cond until it returns nil, failing t after
// brokertest.Timeout.
func waitFor(t *testing.T, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(brokertest.Timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// BenchmarkDelivered records one message's delivery to many clients, as a
// node that fanned it out does, with its check.
func BenchmarkDelivered(b *testing.B) {
	for _, n := range []int{10, 1000} {
		b.Run(fmt.Sprintf("clients=%d", n), func(b *testing.B) {
			rb := newBroker(b, redis.Config{URL: serverURL(), Prefix: prefixOf(b)})
			ctx := context.Background()
			if err := rb.Start(ctx, &collector{}); err != nil {
				b.Fatal(err)
			}
			defer rb.Close()
			clients := make([]broker.ClientInfo, n)
			for i := range clients {
				clients[i] = broker.ClientInfo{Client: fmt.Sprintf("client-%06d", i), User: fmt.Sprintf("user-%d", i%100)}
			}
			epoch := broker.NewEpoch()
			b.ReportAllocs()
			seq := uint64(0)
			for b.Loop() {
				seq++
				err := rb.Delivered(ctx, "bench:room", broker.Offset{Epoch: epoch, Seq: seq}, clients, time.Now().Add(30*time.Second), time.Minute)
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
