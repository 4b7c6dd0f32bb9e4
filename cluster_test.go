package herald_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	goredis "github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/nats"
	"github.com/heraldhq/herald/broker/redis"
	"github.com/heraldhq/herald/heraldtest"
)

// redisAddr and natsURL are the brokers the cluster tests use (.ci/run
// starts them where they are not running).
func redisAddr() string {
	if a := os.Getenv("HERALD_TEST_REDIS"); a != "" {
		return a
	}
	return "127.0.0.1:6379"
}

func natsURL() string {
	if u := os.Getenv("HERALD_TEST_NATS"); u != "" {
		return u
	}
	return "nats://127.0.0.1:4222"
}

func testPrefix() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "heraldtest-" + hex.EncodeToString(b[:])
}

// redisBrokers returns a maker of Redis brokers sharing a key prefix of
// the test's own, and removes the keys after the test.
func redisBrokers(t *testing.T) func() broker.Broker {
	prefix := testPrefix() + ":"
	rdb := goredis.NewClient(&goredis.Options{Addr: redisAddr()})
	defer rdb.Close()
	if err := rdb.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("Redis at %s is not reachable (set HERALD_TEST_REDIS, or let .ci/run start it): %v", redisAddr(), err)
	}
	t.Cleanup(func() { dropRedisKeys(prefix) })
	return func() broker.Broker {
		b, err := redis.New(redis.Config{URL: "redis://" + redisAddr() + "/0", Prefix: prefix})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
}

// natsBrokers returns a maker of NATS brokers sharing a prefix of the
// test's own, and deletes its stream and bucket after the test.
func natsBrokers(t *testing.T) func() broker.Broker {
	prefix := testPrefix()
	nc, err := natsgo.Connect(natsURL(), natsgo.Timeout(2*time.Second))
	if err != nil {
		t.Fatalf("NATS with JetStream is not reachable at %s (set HERALD_TEST_NATS, or let .ci/run start it): %v", natsURL(), err)
	}
	nc.Close()
	t.Cleanup(func() { dropNATSPrefix(prefix) })
	return func() broker.Broker {
		b, err := nats.New(nats.Config{URL: natsURL(), Prefix: prefix})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
}

// dropRedisKeys removes the keys under prefix from the test Redis.
func dropRedisKeys(prefix string) {
	ctx := context.Background()
	rdb := goredis.NewClient(&goredis.Options{Addr: redisAddr()})
	defer rdb.Close()
	iter := rdb.Scan(ctx, 0, prefix+"*", 100).Iterator()
	for iter.Next(ctx) {
		rdb.Del(ctx, iter.Val())
	}
}

// dropNATSPrefix deletes the stream and bucket of prefix from the test NATS.
func dropNATSPrefix(prefix string) {
	nc, err := natsgo.Connect(natsURL(), natsgo.Timeout(2*time.Second))
	if err != nil {
		return
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = js.DeleteStream(ctx, prefix+"-history")
	_ = js.DeleteKeyValue(ctx, prefix+"-presence")
}

// cluster starts n herald nodes, each with its own listener and broker
// from newBroker, and returns their base URLs. Cleanup runs in reverse, so
// the nodes shut down before their brokers' data is removed.
func cluster(t *testing.T, n int, newBroker func() broker.Broker) []string {
	t.Helper()
	bases := make([]string, n)
	for i := range bases {
		_, hs := heraldtest.NewServer(t, herald.Config{Broker: newBroker()})
		bases[i] = hs.URL
	}
	return bases
}

func TestClusterOnRedis(t *testing.T) {
	t.Parallel()
	testCluster(t, cluster(t, 3, redisBrokers(t)))
}

func TestClusterOnNATS(t *testing.T) {
	t.Parallel()
	testCluster(t, cluster(t, 3, natsBrokers(t)))
}

// testCluster checks that nodes on one broker behave as one server: a
// publish on one node reaches subscribers on the others with the same
// offset, a client resumes on another node from an offset it got
// elsewhere, and presence lists the clients of every node.
func testCluster(t *testing.T, nodes []string) {
	on := func(i int) *heraldtest.Client { return dial(t, nodes[i]) }

	c2, c3 := on(1), on(2)
	c2.MustOK(map[string]any{"op": "subscribe", "channel": "room:a"})
	c3.MustOK(map[string]any{"op": "subscribe", "channel": "room:a"})

	pub := on(0)
	var offsets []string
	for i := 1; i <= 5; i++ {
		r := pub.MustOK(map[string]any{"op": "publish", "channel": "room:a", "data": map[string]int{"n": i}})
		offsets = append(offsets, r["offset"].(string))
	}
	for _, c := range []*heraldtest.Client{c2, c3} {
		for i, want := range offsets {
			m := nextMessage(t, c)
			if m["offset"] != want || counter(t, m) != i+1 {
				t.Fatalf("message %d on another node: %v, want offset %s", i+1, m, want)
			}
		}
	}

	// Resume on node 3 from an offset node 1 gave.
	late := on(2)
	r := late.MustOK(map[string]any{"op": "subscribe", "channel": "room:a", "since": offsets[1]})
	if r["recovered"] != true || r["offset"] != offsets[4] {
		t.Fatalf("resume on node 3: %v, want recovered at %s", r, offsets[4])
	}
	for i := 3; i <= 5; i++ {
		if m := nextMessage(t, late); counter(t, m) != i || m["offset"] != offsets[i-1] {
			t.Fatalf("resumed message %v, want %d", m, i)
		}
	}

	// Presence asked on node 1 lists the clients of nodes 2 and 3.
	p := pub.MustOK(map[string]any{"op": "presence", "channel": "room:a"})
	got := map[string]bool{}
	for _, c := range p["clients"].([]any) {
		got[c.(map[string]any)["client"].(string)] = true
	}
	for _, c := range []*heraldtest.Client{c2, c3, late} {
		if id := c.Welcome["client"].(string); !got[id] {
			t.Fatalf("presence on node 1 %v lacks client %s", p["clients"], id)
		}
	}
}
