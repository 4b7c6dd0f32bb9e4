package herald_test

import (
	"context"
	"slices"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	goredis "github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/nats"
	"github.com/heraldhq/herald/broker/redis"
)

// failoverChannel is the channel the failover tests publish on.
const failoverChannel = "failover:c"

// TestRedisOlderStateKeepsOffsetsUnique brings the channel's keys back to
// an older state (DUMP, then RESTORE … REPLACE with their TTL), as a
// failover to a replica that lagged does.
func TestRedisOlderStateKeepsOffsetsUnique(t *testing.T) {
	t.Parallel()
	prefix := testPrefix() + ":"
	t.Cleanup(func() { dropRedisKeys(prefix) })
	b, err := redis.New(redis.Config{URL: "redis://" + redisAddr() + "/0", Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	rdb := goredis.NewClient(&goredis.Options{Addr: redisAddr()})
	t.Cleanup(func() { _ = rdb.Close() })
	keys := []string{prefix + "{" + failoverChannel + "}:meta", prefix + "{" + failoverChannel + "}:stream"}
	testLostState(t, b, func() func() {
		ctx := context.Background()
		type saved struct {
			dump string
			ttl  time.Duration
		}
		snap := map[string]saved{}
		for _, k := range keys {
			d, err := rdb.Dump(ctx, k).Result()
			if err != nil {
				t.Fatalf("DUMP %s: %v", k, err)
			}
			ttl, err := rdb.PTTL(ctx, k).Result()
			if err != nil {
				t.Fatalf("PTTL %s: %v", k, err)
			}
			snap[k] = saved{d, max(ttl, 0)}
		}
		return func() {
			for k, s := range snap {
				if err := rdb.RestoreReplace(ctx, k, s.ttl, s.dump).Err(); err != nil {
					t.Fatalf("RESTORE %s: %v", k, err)
				}
			}
		}
	})
}

// TestNATSPurgedStreamKeepsOffsetsUnique purges the history stream, as an
// operator (or a restore of an empty stream) may.
func TestNATSPurgedStreamKeepsOffsetsUnique(t *testing.T) {
	t.Parallel()
	b, js := natsFailoverBroker(t)
	testLostState(t, b, func() func() {
		return func() {
			s, err := js.Stream(context.Background(), b.StreamName())
			if err != nil {
				t.Fatalf("stream: %v", err)
			}
			if err := s.Purge(context.Background()); err != nil {
				t.Fatalf("purge: %v", err)
			}
		}
	})
}

// TestNATSRecreatedStreamKeepsOffsetsUnique deletes the history stream and
// creates it again with the same configuration: its sequences start over.
func TestNATSRecreatedStreamKeepsOffsetsUnique(t *testing.T) {
	t.Parallel()
	b, js := natsFailoverBroker(t)
	testLostState(t, b, func() func() {
		return func() {
			ctx := context.Background()
			s, err := js.Stream(ctx, b.StreamName())
			if err != nil {
				t.Fatalf("stream: %v", err)
			}
			cfg := s.CachedInfo().Config
			if err := js.DeleteStream(ctx, b.StreamName()); err != nil {
				t.Fatalf("delete stream: %v", err)
			}
			if _, err := js.CreateStream(ctx, cfg); err != nil {
				t.Fatalf("create stream: %v", err)
			}
		}
	})
}

// natsFailoverBroker returns a NATS broker on a prefix of the test's own
// and a JetStream handle to tamper with its stream.
func natsFailoverBroker(t *testing.T) (*nats.Broker, jetstream.JetStream) {
	prefix := testPrefix()
	t.Cleanup(func() { dropNATSPrefix(prefix) })
	b, err := nats.New(nats.Config{URL: natsURL(), Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := natsgo.Connect(natsURL(), natsgo.Timeout(2*time.Second))
	if err != nil {
		t.Fatalf("NATS: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return b, js
}

// testLostState publishes through herald, lets save take a snapshot of
// the broker's state, publishes more, and calls the function save returned
// to bring the broker back to the snapshot (or lose more). Then: no offset
// is acknowledged twice, a subscriber that stayed connected keeps
// receiving, and a client resuming from the newest offset acknowledged
// before is told it did not recover, and gets what history holds.
func testLostState(t *testing.T, b broker.Broker, save func() (restore func())) {
	_, base := newServer(t, herald.Config{Broker: b})
	sub := dial(t, base)
	sub.MustOK(map[string]any{"op": "subscribe", "channel": failoverChannel})
	pub := dial(t, base)

	acked := map[string]bool{}
	var last broker.Offset
	n := 0
	send := func() string {
		t.Helper()
		n++
		off := publish(t, pub, failoverChannel, map[string]int{"n": n})
		if acked[off] {
			t.Fatalf("message %d acknowledged at %s, given to an earlier message", n, off)
		}
		acked[off] = true
		if m := nextMessage(t, sub); m["offset"] != off || counter(t, m) != n {
			t.Fatalf("subscriber got %v, want n=%d at %s", m, n, off)
		}
		return off
	}
	for range 3 {
		send()
	}
	restore := save()
	for range 3 {
		o, err := broker.ParseOffset(send())
		if err != nil {
			t.Fatal(err)
		}
		last = o
	}
	restore()

	var after []string
	for range 3 {
		off := send()
		o, err := broker.ParseOffset(off)
		if err != nil {
			t.Fatal(err)
		}
		if o.Epoch == last.Epoch && o.Seq <= last.Seq {
			t.Fatalf("offset %s after the loss is not past %s in its epoch", off, last)
		}
		after = append(after, off)
	}

	late := dial(t, base)
	r := late.MustOK(map[string]any{"op": "subscribe", "channel": failoverChannel, "since": last.String()})
	if r["recovered"] != false {
		t.Fatalf("resume from %s, lost with the broker's state: %v, want recovered false", last, r)
	}
	var got []string
	for _, m := range fence(t, late) {
		if m["op"] == "message" {
			got = append(got, m["offset"].(string))
		}
	}
	h := pub.MustOK(map[string]any{"op": "history", "channel": failoverChannel})
	var held []string
	for _, m := range h["messages"].([]any) {
		held = append(held, m.(map[string]any)["offset"].(string))
	}
	if len(held) == 0 || !equalJSON(got, held) {
		t.Fatalf("resume from %s replayed %v, want what history holds, %v", last, got, held)
	}
	for _, off := range after {
		if !slices.Contains(held, off) {
			t.Fatalf("history %v lacks %s, published after the loss", held, off)
		}
	}
}
