package redis_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/brokertest"
	"github.com/heraldhq/herald/broker/redis"
	"github.com/heraldhq/herald/internal/logtest"
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
	return prefixOf(t)
}

// prefixOf is testPrefix for tests and benchmarks.
func prefixOf(t testing.TB) string {
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

func newBroker(t testing.TB, cfg redis.Config) *redis.Broker {
	t.Helper()
	b, err := redis.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return b
}

// startBroker starts a broker on cfg, closed when t ends.
func startBroker(t *testing.T, cfg redis.Config) *redis.Broker {
	t.Helper()
	b := newBroker(t, cfg)
	if err := b.Start(context.Background(), &collector{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func TestBroker(t *testing.T) {
	brokertest.Run(t, func(t *testing.T) broker.Broker {
		return newBroker(t, redis.Config{URL: serverURL(), Prefix: testPrefix(t)})
	})
}

func TestOccupancy(t *testing.T) {
	prefix := brokertest.OnePerSubtest(testPrefix)
	brokertest.RunOccupancy(t, func(t *testing.T) broker.Broker {
		return newBroker(t, redis.Config{URL: serverURL(), Prefix: prefix(t)})
	}, true)
}

func TestRegistry(t *testing.T) {
	prefix := brokertest.OnePerSubtest(testPrefix)
	brokertest.RunRegistry(t, func(t *testing.T) broker.Broker {
		return newBroker(t, redis.Config{URL: serverURL(), Prefix: prefix(t)})
	}, true)
}

func TestQueue(t *testing.T) {
	// The brokers of one subtest share a prefix: they are nodes of one
	// cluster.
	prefix := brokertest.OnePerSubtest(testPrefix)
	brokertest.RunQueue(t, func(t *testing.T) broker.Broker {
		return newBroker(t, redis.Config{URL: serverURL(), Prefix: prefix(t)})
	}, true)
}

func TestReceipts(t *testing.T) {
	// The brokers of one subtest share a prefix: they are nodes of one
	// cluster.
	prefix := brokertest.OnePerSubtest(testPrefix)
	brokertest.RunReceipts(t, func(t *testing.T) broker.Broker {
		return newBroker(t, redis.Config{URL: serverURL(), Prefix: prefix(t)})
	}, true)
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

// twoNodes starts two brokers on prefix, both subscribed to channel.
func twoNodes(ctx context.Context, t *testing.T, prefix, channel string) ([2]*redis.Broker, [2]*collector) {
	t.Helper()
	var nodes [2]*redis.Broker
	var recs [2]*collector
	for i := range nodes {
		nodes[i] = newBroker(t, redis.Config{URL: serverURL(), Prefix: prefix})
		recs[i] = &collector{}
		if err := nodes[i].Start(ctx, recs[i]); err != nil {
			t.Fatalf("Start node %d: %v", i, err)
		}
		t.Cleanup(func() { _ = nodes[i].Close() })
		if err := nodes[i].Subscribe(ctx, channel); err != nil {
			t.Fatalf("Subscribe node %d: %v", i, err)
		}
	}
	return nodes, recs
}

func TestTwoNodesShareChannels(t *testing.T) {
	prefix := testPrefix(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	nodes, recs := twoNodes(ctx, t, prefix, "shared")
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

// Presence entries and joins written by nodes from before transports were
// kept (the user alone) still read, with no transport.
func TestPresenceFromOlderNodes(t *testing.T) {
	prefix := testPrefix(t)
	b := newBroker(t, redis.Config{URL: serverURL(), Prefix: prefix})
	defer b.Close()
	ctx := context.Background()
	rec := &presenceRecorder{joins: make(chan broker.ClientInfo, 1)}
	if err := b.Start(ctx, rec); err != nil {
		t.Fatal(err)
	}
	if err := b.Subscribe(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	admin := adminClient(t)
	// As an older node's presenceAddScript and publishPresence did.
	if err := admin.ZAdd(ctx, prefix+"{c}:presence", goredis.Z{Score: float64(time.Now().Add(time.Minute).UnixMilli()), Member: "old"}).Err(); err != nil {
		t.Fatal(err)
	}
	if err := admin.HSet(ctx, prefix+"{c}:users", "old", "4:ann,").Err(); err != nil { // a user that looks like a netstring
		t.Fatal(err)
	}
	if err := admin.Publish(ctx, prefix+"ch:c", "j3:old3:ann").Err(); err != nil {
		t.Fatal(err)
	}
	cs, err := b.Presence(ctx, "c")
	if want := (broker.ClientInfo{Client: "old", User: "4:ann,"}); err != nil || len(cs) != 1 || !reflect.DeepEqual(cs[0], want) {
		t.Fatalf("Presence = %v, %v; want [%v]", cs, err, want)
	}
	select {
	case c := <-rec.joins:
		if want := (broker.ClientInfo{Client: "old", User: "ann"}); !reflect.DeepEqual(c, want) {
			t.Fatalf("join %v, want %v", c, want)
		}
	case <-time.After(brokertest.Timeout):
		t.Fatal("the older node's join was not delivered")
	}
}

// presenceRecorder is a Handler that passes on the joins it receives.
type presenceRecorder struct {
	collector
	joins chan broker.ClientInfo
}

func (r *presenceRecorder) HandleJoin(_ string, c broker.ClientInfo) { r.joins <- c }

// keysOf returns the keys herald keeps channel's offsets and history in,
// under prefix (see the key layout in scripts.go).
func keysOf(prefix, channel string) []string {
	return []string{prefix + "{" + channel + "}:meta", prefix + "{" + channel + "}:stream"}
}

// snapshot is a saved state of some keys: DUMP payloads and TTLs.
type snapshot map[string]struct {
	dump string
	ttl  time.Duration
}

// saveKeys DUMPs keys, as a replica that stops replicating keeps them.
func saveKeys(t *testing.T, c *goredis.Client, keys ...string) snapshot {
	t.Helper()
	ctx := context.Background()
	s := snapshot{}
	for _, k := range keys {
		d, err := c.Dump(ctx, k).Result()
		if err != nil {
			t.Fatalf("DUMP %s: %v", k, err)
		}
		ttl, err := c.PTTL(ctx, k).Result()
		if err != nil {
			t.Fatalf("PTTL %s: %v", k, err)
		}
		s[k] = struct {
			dump string
			ttl  time.Duration
		}{d, max(ttl, 0)}
	}
	return s
}

// restore puts the saved keys back (RESTORE … REPLACE with their TTL), as
// a failover to that replica would.
func (s snapshot) restore(t *testing.T, c *goredis.Client) {
	t.Helper()
	for k, v := range s {
		if err := c.RestoreReplace(context.Background(), k, v.ttl, v.dump).Err(); err != nil {
			t.Fatalf("RESTORE %s: %v", k, err)
		}
	}
}

func adminClient(t *testing.T) *goredis.Client {
	t.Helper()
	opts, err := goredis.ParseURL(serverURL())
	if err != nil {
		t.Fatal(err)
	}
	c := goredis.NewClient(opts)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// TestOlderStateStartsNewEpoch brings a channel's keys back to an older
// state, as a failover to a replica that lagged does: the offsets herald
// acknowledged since are never acknowledged again, subscribers keep
// receiving, and a resume from the newest acknowledged offset is told it
// did not recover.
func TestOlderStateStartsNewEpoch(t *testing.T) {
	prefix := testPrefix(t)
	admin := adminClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	nodes, recs := twoNodes(ctx, t, prefix, "c")
	opts := broker.HistoryOptions{Size: 100, TTL: time.Hour}
	acked := map[broker.Offset]bool{}
	var last broker.Offset
	pub := func(node int) broker.Offset {
		t.Helper()
		off, err := nodes[node].Publish(ctx, "c", broker.Publication{Data: json.RawMessage(`1`)}, opts)
		if err != nil {
			t.Fatalf("Publish on node %d: %v", node, err)
		}
		if acked[off] {
			t.Fatalf("offset %v acknowledged twice", off)
		}
		acked[off] = true
		return off
	}
	for range 3 {
		pub(0)
	}
	saved := saveKeys(t, admin, keysOf(prefix, "c")...)
	for range 3 {
		last = pub(0)
	}
	// Both nodes delivered everything: both saw the channel up to last.
	for i, rec := range recs {
		waitOffsets(t, rec, 6, fmt.Sprintf("node %d before the restore", i))
	}
	saved.restore(t, admin)

	// Both nodes publish at once: neither may reuse an offset, nor may
	// they disagree on the new epoch.
	var wg sync.WaitGroup
	offs := make([][]broker.Offset, 2)
	for i := range nodes {
		wg.Go(func() {
			for range 5 {
				off, err := nodes[i].Publish(ctx, "c", broker.Publication{Data: json.RawMessage(`2`)}, opts)
				if err != nil {
					t.Errorf("Publish after the restore on node %d: %v", i, err)
					return
				}
				offs[i] = append(offs[i], off)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	var after []broker.Offset
	for _, o := range append(offs[0], offs[1]...) {
		if acked[o] {
			t.Fatalf("offset %v acknowledged again after the restore", o)
		}
		acked[o] = true
		if o.Epoch == last.Epoch && o.Seq <= last.Seq {
			t.Fatalf("offset %v after the restore is not past %v in its epoch", o, last)
		}
		after = append(after, o)
	}
	for i, rec := range recs {
		got := waitOffsets(t, rec, 6+len(after), fmt.Sprintf("node %d after the restore", i))
		for _, o := range got[6:] {
			if o.Epoch == last.Epoch && o.Seq <= last.Seq {
				t.Fatalf("node %d was delivered %v, an offset it had been given before", i, o)
			}
		}
		// The new epoch's first message says how far the lost one went,
		// as its publisher had seen it: up to last, like both nodes.
		rec.mu.Lock()
		for _, m := range rec.msgs[6:] {
			if want := (broker.Offset{}); m.Prev == 0 {
				want = last
				if m.Ended != want {
					t.Errorf("node %d: the new epoch's first message %v ended %v, want %v", i, m.Offset, m.Ended, want)
				}
			} else if m.Ended != want {
				t.Errorf("node %d: message %v inside the new epoch ended %v, want none", i, m.Offset, m.Ended)
			}
		}
		rec.mu.Unlock()
	}
	res, err := nodes[1].History(ctx, "c", broker.HistoryQuery{Since: last, Limit: -1})
	if err != nil {
		t.Fatalf("History: %v", err)
	}
	if res.Complete {
		t.Fatalf("resume from %v, lost in the restore: Complete = true", last)
	}
	all, err := nodes[1].History(ctx, "c", broker.HistoryQuery{Limit: -1})
	if err != nil {
		t.Fatalf("History: %v", err)
	}
	if len(res.Messages) != len(all.Messages) || len(all.Messages) == 0 {
		t.Fatalf("resume from %v got %d messages, want all %d history holds", last, len(res.Messages), len(all.Messages))
	}
}

// waitOffsets waits until rec holds n messages and returns their offsets.
func waitOffsets(t *testing.T, rec *collector, n int, what string) []broker.Offset {
	t.Helper()
	deadline := time.Now().Add(brokertest.Timeout)
	for len(rec.offsets()) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d messages delivered, want %d", what, len(rec.offsets()), n)
		}
		time.Sleep(2 * time.Millisecond)
	}
	return rec.offsets()
}

// TestSubscribedMapShrinks subscribes many channels and unsubscribes them:
// the broker's table of subscribed topics must not keep their memory.
func TestSubscribedMapShrinks(t *testing.T) {
	b := newBroker(t, redis.Config{URL: serverURL(), Prefix: testPrefix(t)})
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := b.Start(ctx, &collector{}); err != nil {
		t.Fatalf("Start: %v", err)
	}
	const n = 3000
	for i := range n {
		if err := b.Subscribe(ctx, fmt.Sprint("c", i)); err != nil {
			t.Fatalf("Subscribe: %v", err)
		}
	}
	if got, peak := b.SubscribedTopics(); got != n || peak != n {
		t.Fatalf("after %d subscribes: %d topics, peak %d; want %d, %d", n, got, peak, n, n)
	}
	for i := range n - 10 {
		if err := b.Unsubscribe(ctx, fmt.Sprint("c", i)); err != nil {
			t.Fatalf("Unsubscribe: %v", err)
		}
	}
	got, peak := b.SubscribedTopics()
	if got != 10 {
		t.Fatalf("after unsubscribing all but 10: %d topics held", got)
	}
	if peak > n/4 {
		t.Fatalf("after unsubscribing all but 10: the map's peak is still %d, not rebuilt", peak)
	}
}

// TestStreamBoundedBySizeAndTTL checks what Redis itself keeps: the stream
// is trimmed to the history size and both keys expire after the TTL (the
// channel's offsets a minute later).
func TestStreamBoundedBySizeAndTTL(t *testing.T) {
	prefix := testPrefix(t)
	b := startBroker(t, redis.Config{URL: serverURL(), Prefix: prefix})
	ctx := context.Background()
	for range 5 {
		if _, err := b.Publish(ctx, "c", broker.Publication{Data: json.RawMessage(`1`)}, broker.HistoryOptions{Size: 3, TTL: time.Hour}); err != nil {
			t.Fatal(err)
		}
	}
	admin := adminClient(t)
	keys := keysOf(prefix, "c")
	if n, err := admin.XLen(ctx, keys[1]).Result(); err != nil || n != 3 {
		t.Fatalf("XLEN = %d, %v; want 3", n, err)
	}
	for i, limit := range []time.Duration{time.Hour + time.Minute, time.Hour} {
		ttl, err := admin.PTTL(ctx, keys[i]).Result()
		if err != nil || ttl <= 0 || ttl > limit {
			t.Fatalf("PTTL %s = %v, %v; want at most %v", keys[i], ttl, err, limit)
		}
	}
}

// A publish trims the stream's expired entries at most once a second: in
// between they stay in Redis, bounded by the history size, but a history
// read trims them first and never returns them; the first publish a
// second after the last trim drops them. Publishes 10 ms apart keep the
// stream itself, whose key expires with the TTL, alive; should the
// machine stall for a TTL between two of them, the scenario starts over
// on a new channel.
func TestPublishTrimsExpiredOnceASecond(t *testing.T) {
	prefix := testPrefix(t)
	b := startBroker(t, redis.Config{URL: serverURL(), Prefix: prefix})
	for attempt := range 3 {
		if trimsOnceASecond(t, b, prefix, fmt.Sprintf("c%d", attempt)) {
			return
		}
		t.Logf("attempt %d: the machine stalled between two publishes for longer than the TTL", attempt+1)
	}
	t.Fatal("every attempt stalled")
}

// trimsOnceASecond runs TestPublishTrimsExpiredOnceASecond's scenario on
// channel; false when it could not, the machine having stalled.
func trimsOnceASecond(t *testing.T, b *redis.Broker, prefix, channel string) bool {
	t.Helper()
	ctx := context.Background()
	opts := broker.HistoryOptions{Size: 1000, TTL: 300 * time.Millisecond}
	admin := adminClient(t)
	stream := keysOf(prefix, channel)[1]
	start := time.Now() // the first publish trims: no trim is recorded yet
	published, atHistory, checkedHistory := 0, 0, false
	last := start
	for {
		if time.Since(last) >= opts.TTL {
			return false // the stream's key may have expired
		}
		if _, err := b.Publish(ctx, channel, broker.Publication{Data: json.RawMessage(`1`)}, opts); err != nil {
			t.Fatal(err)
		}
		last = time.Now()
		published++
		n, err := admin.XLen(ctx, stream).Result()
		if err != nil {
			t.Fatal(err)
		}
		switch since := time.Since(start); {
		case since >= 900*time.Millisecond && !checkedHistory:
			return false // too slow to read the history within the second
		case !checkedHistory && n != int64(published):
			t.Fatalf("XLEN = %d after %d publishes within a second of the first: want every entry kept until the next trim", n, published)
		case !checkedHistory && since > 2*opts.TTL:
			// The first entries are older than the TTL now.
			res, err := b.History(ctx, channel, broker.HistoryQuery{Limit: -1})
			if err != nil {
				t.Fatal(err)
			}
			if int64(len(res.Messages)) >= n {
				t.Fatalf("history holds all %d entries kept, the first of them %v old: want the expired ones left out (a read trims first)", n, since)
			}
			checkedHistory, atHistory = true, published
		case checkedHistory && since > 1100*time.Millisecond:
			if n >= int64(published-atHistory) {
				t.Fatalf("XLEN = %d, with %d publishes since the history read trimmed, more than a second after the first publish trimmed: want the expired ones trimmed again", n, published-atHistory)
			}
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// replyDropper is a TCP proxy to Redis that, once, forwards a command
// containing marker and closes the client's connection instead of passing
// on Redis's reply: the command ran, but the client never learns it. Only
// the connection that carried the marker drops its reply; the client's
// other connections keep going.
type replyDropper struct {
	l      net.Listener
	marker []byte
	used   atomic.Bool // dropped once already
}

func newReplyDropper(t *testing.T, target, marker string) *replyDropper {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &replyDropper{l: l, marker: []byte(marker)}
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				_ = c.Close()
				continue
			}
			go p.pipe(c, s)
		}
	}()
	return p
}

func (p *replyDropper) pipe(c, s net.Conn) {
	defer c.Close()
	defer s.Close()
	var armed atomic.Bool // the marker went through here; drop the next reply
	go func() {
		defer c.Close()
		defer s.Close()
		buf := make([]byte, 64<<10)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			if !p.used.Load() && bytes.Contains(buf[:n], p.marker) {
				armed.Store(true)
			}
			if _, err := s.Write(buf[:n]); err != nil {
				return
			}
		}
	}()
	buf := make([]byte, 64<<10)
	for {
		n, err := s.Read(buf)
		if err != nil {
			return
		}
		if armed.Load() && p.used.CompareAndSwap(false, true) {
			return // the reply to the marked command is lost
		}
		if _, err := c.Write(buf[:n]); err != nil {
			return
		}
	}
}

// A publish whose reply is lost after Redis ran it is not sent again: the
// message is stored once, whatever the URL says about retries (go-redis
// retries a command on a broken connection by default).
func TestPublishReplyLostStoresOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	prefix := testPrefix(t)
	target := strings.TrimSuffix(strings.TrimPrefix(serverURL(), "redis://"), "/0")
	p := newReplyDropper(t, target, "lost-reply-marker")
	b := startBroker(t, redis.Config{URL: "redis://" + p.l.Addr().String() + "/0", Prefix: prefix})
	opts := broker.HistoryOptions{Size: 10}
	_, lostErr := b.Publish(ctx, "c", broker.Publication{Data: []byte(`"lost-reply-marker"`)}, opts)
	if !p.used.Load() {
		t.Fatal("the proxy never dropped a reply")
	}
	if _, err := b.Publish(ctx, "c", broker.Publication{Data: []byte(`"next"`)}, opts); err != nil {
		t.Fatalf("publish after: %v", err)
	}
	h, err := b.History(ctx, "c", broker.HistoryQuery{Limit: -1})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range h.Messages {
		got = append(got, string(m.Data))
	}
	if want := []string{`"lost-reply-marker"`, `"next"`}; !slices.Equal(got, want) {
		t.Fatalf("history %q, want %q (the lost-reply publish stored once)", got, want)
	}
	if !errors.Is(lostErr, broker.ErrUnavailable) {
		t.Fatalf("publish with its reply lost: err %v, want unavailable", lostErr)
	}
}

// An Unsubscribe whose confirmation is lost with the pub/sub connection
// returns: a connection that dropped holds no subscription, and the new
// one does not subscribe the topic again, so no confirmation ever comes.
func TestUnsubscribeReturnsWhenConnectionDrops(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	prefix := testPrefix(t)
	target := strings.TrimSuffix(strings.TrimPrefix(serverURL(), "redis://"), "/0")
	p := newReplyDropper(t, target, "unsubscribe")
	b := startBroker(t, redis.Config{URL: "redis://" + p.l.Addr().String() + "/0", Prefix: prefix})
	if err := b.Subscribe(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	uctx, ucancel := context.WithTimeout(ctx, 3*time.Second)
	defer ucancel()
	start := time.Now()
	err := b.Unsubscribe(uctx, "c")
	if uctx.Err() != nil {
		t.Fatalf("Unsubscribe waited %v for a confirmation lost with its connection: %v", time.Since(start), err)
	}
	if !p.used.Load() {
		t.Fatal("the proxy never dropped the confirmation")
	}
}

// go-redis's own log lines (here, its connection pool failing to dial) go
// to the logger SetLibraryLogger names, instead of go-redis's stderr
// logger. Not parallel: go-redis has one logger for the whole process.
func TestLibraryLogsGoToSlog(t *testing.T) {
	h := logtest.New()
	redis.SetLibraryLogger(h.Logger())
	t.Cleanup(func() { redis.SetLibraryLogger(slog.New(slog.NewTextHandler(os.Stderr, nil))) })
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close() // a port nothing listens on
	b := newBroker(t, redis.Config{URL: "redis://" + addr + "/0"})
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Start(ctx, &collector{}); err == nil {
		t.Fatal("Start on a closed port succeeded")
	}
	dialFailed := func(r slog.Record) bool {
		return r.Level == slog.LevelWarn && logtest.Attrs(r)["lib"] == "go-redis" &&
			strings.Contains(r.Message, "failed to dial") && strings.Contains(r.Message, addr)
	}
	deadline := time.Now().Add(brokertest.Timeout)
	for !h.Has(dialFailed) {
		if time.Now().After(deadline) {
			t.Fatalf("no go-redis dial failure logged through slog; logged: %v", h.Records())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// BenchmarkPublish measures Publish on one node through to HandleMessage
// on another (see brokertest.BenchPublish).
func BenchmarkPublish(b *testing.B) {
	brokertest.BenchPublish(b, func(b *testing.B) (pub, sub broker.Broker) {
		prefix := prefixOf(b)
		return newBroker(b, redis.Config{URL: serverURL(), Prefix: prefix}),
			newBroker(b, redis.Config{URL: serverURL(), Prefix: prefix})
	})
}
