package redis_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/brokertest"
	"github.com/heraldhq/herald/broker/redis"
)

// serverURL is the Redis the tests use: HERALD_TEST_REDIS (host:port) or
// the local default.
func serverURL() string {
	addr := os.Getenv("HERALD_TEST_REDIS")
	if addr == "" {
		addr = "127.0.0.1:6379"
	}
	return "redis://" + addr + "/0"
}

// testPrefix returns a key prefix of t's own and deletes its keys when t
// ends. It fails t when Redis cannot be reached.
func testPrefix(t *testing.T) string {
	t.Helper()
	opts, err := goredis.ParseURL(serverURL())
	if err != nil {
		t.Fatal(err)
	}
	c := goredis.NewClient(opts)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		_ = c.Close()
		t.Fatalf("no Redis at %s (set HERALD_TEST_REDIS=host:port): %v", serverURL(), err)
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	prefix := "herald-test:" + hex.EncodeToString(b[:]) + ":"
	t.Cleanup(func() {
		defer c.Close()
		ctx := context.Background()
		iter := c.Scan(ctx, 0, prefix+"*", 100).Iterator()
		for iter.Next(ctx) {
			if err := c.Del(ctx, iter.Val()).Err(); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		}
		if err := iter.Err(); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return prefix
}

func newBroker(t *testing.T, cfg redis.Config) *redis.Broker {
	t.Helper()
	b, err := redis.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return b
}

func TestBroker(t *testing.T) {
	brokertest.Run(t, func(t *testing.T) broker.Broker {
		return newBroker(t, redis.Config{URL: serverURL(), Prefix: testPrefix(t)})
	})
}

// collector is a Handler that keeps the messages it is given.
type collector struct {
	mu   sync.Mutex
	msgs []broker.Message
}

func (c *collector) HandleMessage(m broker.Message) {
	c.mu.Lock()
	c.msgs = append(c.msgs, m)
	c.mu.Unlock()
}
func (*collector) HandleJoin(string, broker.ClientInfo)  {}
func (*collector) HandleLeave(string, broker.ClientInfo) {}
func (*collector) HandleReconnect()                      {}

func (c *collector) offsets() []broker.Offset {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]broker.Offset, len(c.msgs))
	for i, m := range c.msgs {
		out[i] = m.Offset
	}
	return out
}

func TestTwoNodesShareChannels(t *testing.T) {
	prefix := testPrefix(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var nodes [2]*redis.Broker
	var recs [2]*collector
	for i := range nodes {
		nodes[i] = newBroker(t, redis.Config{URL: serverURL(), Prefix: prefix})
		recs[i] = &collector{}
		if err := nodes[i].Start(ctx, recs[i]); err != nil {
			t.Fatalf("Start node %d: %v", i, err)
		}
		t.Cleanup(func() { _ = nodes[i].Close() })
		if err := nodes[i].Subscribe(ctx, "shared"); err != nil {
			t.Fatalf("Subscribe node %d: %v", i, err)
		}
	}
	var want []broker.Offset
	for i := range 6 {
		off, err := nodes[i%2].Publish(ctx, "shared", broker.Publication{Data: json.RawMessage(`1`)}, broker.HistoryOptions{Size: 10})
		if err != nil {
			t.Fatalf("Publish %d: %v", i, err)
		}
		if len(want) > 0 && (off.Epoch != want[0].Epoch || off.Seq != want[len(want)-1].Seq+1) {
			t.Fatalf("Publish %d on node %d returned %v after %v", i, i%2, off, want[len(want)-1])
		}
		want = append(want, off)
	}
	for i, rec := range recs {
		deadline := time.Now().Add(brokertest.Timeout)
		for len(rec.offsets()) < len(want) && time.Now().Before(deadline) {
			time.Sleep(2 * time.Millisecond)
		}
		got := rec.offsets()
		if len(got) != len(want) {
			t.Fatalf("node %d saw %v, want %v", i, got, want)
		}
		for j := range got {
			if got[j] != want[j] {
				t.Fatalf("node %d saw %v, want %v", i, got, want)
			}
		}
	}
	res, err := nodes[1].History(ctx, "shared", broker.HistoryQuery{Limit: -1})
	if err != nil || len(res.Messages) != len(want) || res.Latest != want[len(want)-1] || !res.Complete {
		t.Fatalf("History on node 1 = %+v, %v; want %d messages up to %v", res, err, len(want), want[len(want)-1])
	}
}

func TestUnreachableIsUnavailable(t *testing.T) {
	b := newBroker(t, redis.Config{URL: "redis://127.0.0.1:1/0"})
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Start(ctx, &collector{}); !errors.Is(err, broker.ErrUnavailable) {
		t.Errorf("Start = %v, want broker.ErrUnavailable", err)
	}
	if _, err := b.Publish(ctx, "c", broker.Publication{Data: json.RawMessage(`1`)}, broker.HistoryOptions{Size: 1}); !errors.Is(err, broker.ErrUnavailable) {
		t.Errorf("Publish = %v, want broker.ErrUnavailable", err)
	}
	if _, err := b.History(ctx, "c", broker.HistoryQuery{Limit: -1}); !errors.Is(err, broker.ErrUnavailable) {
		t.Errorf("History = %v, want broker.ErrUnavailable", err)
	}
}

func TestClosedIsUnavailable(t *testing.T) {
	b := newBroker(t, redis.Config{URL: serverURL(), Prefix: testPrefix(t)})
	ctx := context.Background()
	if err := b.Start(ctx, &collector{}); err != nil {
		t.Fatalf("Start: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := b.Publish(ctx, "c", broker.Publication{Data: json.RawMessage(`1`)}, broker.HistoryOptions{Size: 1}); !errors.Is(err, broker.ErrUnavailable) {
		t.Errorf("Publish after Close = %v, want broker.ErrUnavailable", err)
	}
	if err := b.Subscribe(ctx, "c"); !errors.Is(err, broker.ErrUnavailable) {
		t.Errorf("Subscribe after Close = %v, want broker.ErrUnavailable", err)
	}
}

func TestPresenceExpires(t *testing.T) {
	b := newBroker(t, redis.Config{URL: serverURL(), Prefix: testPrefix(t), PresenceTTL: 100 * time.Millisecond})
	defer b.Close()
	ctx := context.Background()
	if err := b.AddPresence(ctx, "c", broker.ClientInfo{Client: "gone", User: "u"}); err != nil {
		t.Fatalf("AddPresence: %v", err)
	}
	deadline := time.Now().Add(brokertest.Timeout)
	for {
		cs, err := b.Presence(ctx, "c")
		if err != nil {
			t.Fatalf("Presence: %v", err)
		}
		if len(cs) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Presence still lists %v after its TTL", cs)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
