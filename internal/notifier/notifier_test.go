package notifier_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	goredis "github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/memory"
	"github.com/heraldhq/herald/broker/redis"
	"github.com/heraldhq/herald/heraldtest"
	"github.com/heraldhq/herald/internal/notifier"
	"github.com/heraldhq/herald/webhook"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"))
}

var secret = []byte("webhook-secret")

// app is the application's webhook endpoint: it checks each signature,
// keeps the events it acknowledged, and fails while told to.
type app struct {
	t        *testing.T
	mu       sync.Mutex
	events   []webhook.Event
	seen     map[string]bool
	failing  atomic.Bool
	failures atomic.Int64
}

func newApp(t *testing.T) (*app, string) {
	a := &app{t: t, seen: map[string]bool{}}
	hs := httptest.NewServer(a)
	t.Cleanup(hs.Close)
	return a, hs.URL
}

func (a *app) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if err := webhook.Verify(secret, r.Header.Get(webhook.SignatureHeader), body, time.Now()); err != nil {
		a.t.Errorf("an event with a bad signature: %v", err)
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	if a.failing.Load() {
		a.failures.Add(1)
		http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
		return
	}
	var e webhook.Event
	if err := json.Unmarshal(body, &e); err != nil {
		a.t.Errorf("an event that is no JSON: %q", body)
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.seen[e.ID] { // at least once: a repeat is the same id
		a.seen[e.ID] = true
		a.events = append(a.events, e)
	}
}

// byClient returns the ids of the events acknowledged, per client, in the
// order they arrived.
func (a *app) byClient() map[string][]string {
	a.mu.Lock()
	defer a.mu.Unlock()
	m := map[string][]string{}
	for _, e := range a.events {
		m[e.Client] = append(m[e.Client], e.ID)
	}
	return m
}

func (a *app) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.events)
}

func newNotifier(t *testing.T, q broker.Queue, url string, reg prometheus.Registerer, tweak func(*notifier.Config)) *notifier.Notifier {
	cfg := notifier.Config{
		URL: url, Secret: secret, Queue: q, Node: "n1", Registerer: reg,
		Timeout: time.Second, RetryMin: 20 * time.Millisecond, RetryMax: 200 * time.Millisecond,
	}
	if tweak != nil {
		tweak(&cfg)
	}
	n, err := notifier.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func startedMemory(t *testing.T) *memory.Broker { return startedMemoryTB(t) }

func startedMemoryTB(t testing.TB) *memory.Broker {
	b := memory.New()
	if err := b.Start(context.Background(), nopHandler{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// redisQueues returns a maker of Redis brokers sharing a key prefix of
// the test's own: nodes of one cluster.
func redisQueues(t *testing.T) func() broker.Queue { return redisQueuesTB(t) }

// redisQueuesB is one Redis broker for a benchmark.
func redisQueuesB(b *testing.B) broker.Queue { return redisQueuesTB(b)() }

func redisQueuesTB(t testing.TB) func() broker.Queue {
	addr := os.Getenv("HERALD_TEST_REDIS")
	if addr == "" {
		addr = "127.0.0.1:6379"
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	prefix := "herald-test:" + hex.EncodeToString(b[:]) + ":"
	t.Cleanup(func() {
		c := goredis.NewClient(&goredis.Options{Addr: addr})
		defer c.Close()
		iter := c.Scan(context.Background(), 0, prefix+"*", 100).Iterator()
		for iter.Next(context.Background()) {
			c.Del(context.Background(), iter.Val())
		}
	})
	return func() broker.Queue {
		br, err := redis.New(redis.Config{URL: "redis://" + addr + "/0", Prefix: prefix})
		if err != nil {
			t.Fatal(err)
		}
		if err := br.Start(context.Background(), nopHandler{}); err != nil {
			t.Fatalf("Redis at %s: %v", addr, err)
		}
		t.Cleanup(func() { _ = br.Close() })
		return br
	}
}

// clientEvents notifies a client's life: connect, two subscribes, an
// unsubscribe, a disconnect; it returns their ids in order.
func clientEvents(n *notifier.Notifier, client string) []string {
	user := "u-" + client
	evs := []webhook.Event{
		{Type: webhook.Connect, Transport: "websocket"},
		{Type: webhook.Subscribe, Channel: "a"},
		{Type: webhook.Subscribe, Channel: "b"},
		{Type: webhook.Unsubscribe, Channel: "a"},
		{Type: webhook.Disconnect, Reason: webhook.ReasonClosed},
	}
	var ids []string
	for i, e := range evs {
		e.ID = fmt.Sprintf("%s-%d", client, i)
		e.Client, e.User = client, &user
		n.Notify(e)
		ids = append(ids, e.ID)
	}
	return ids
}

// An app that fails for a while and then recovers loses no event, and
// gets each client's events in the order they happened — on one node
// (memory) and on Redis.
func TestEveryEventOnceTheAppRecovers(t *testing.T) {
	t.Parallel()
	for name, q := range map[string]func(t *testing.T) broker.Queue{
		"memory": func(t *testing.T) broker.Queue { return startedMemory(t) },
		"redis":  func(t *testing.T) broker.Queue { return redisQueues(t)() },
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			a, url := newApp(t)
			a.failing.Store(true)
			reg := prometheus.NewRegistry()
			n := newNotifier(t, q(t), url, reg, nil)
			n.Start()
			t.Cleanup(func() { _ = n.Stop(context.Background()) })
			want := map[string][]string{}
			for _, c := range []string{"c1", "c2", "c3"} {
				want[c] = clientEvents(n, c)
			}
			heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
				if f := a.failures.Load(); f < 10 {
					return fmt.Errorf("the app refused %d deliveries so far, want 10 before it recovers", f)
				}
				return nil
			})
			a.failing.Store(false)
			heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
				if got := a.count(); got < 15 {
					return fmt.Errorf("%d of 15 events acknowledged", got)
				}
				return nil
			})
			if got := a.byClient(); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("events per client %v, want %v", got, want)
			}
			if r := testutil.ToFloat64(metric(t, reg, "herald_webhook_events_retried_total")); r < 10 {
				t.Errorf("retried counted %v, want at least the 10 refusals", r)
			}
			heraldtest.WaitFor(t, heraldtest.Timeout, func() error { // counted once the app has answered
				if d := testutil.ToFloat64(metric(t, reg, "herald_webhook_events_delivered_total")); d < 15 {
					return fmt.Errorf("delivered counted %v, want 15", d)
				}
				return nil
			})
		})
	}
}

// An event the app refuses for longer than RetryFor is dropped, counted,
// and leaves the queue; the client's next event goes on.
func TestEventDroppedAfterRetryFor(t *testing.T) {
	t.Parallel()
	a, url := newApp(t)
	a.failing.Store(true)
	reg := prometheus.NewRegistry()
	b := startedMemory(t)
	n := newNotifier(t, b, url, reg, func(c *notifier.Config) { c.RetryFor = 300 * time.Millisecond })
	n.Start()
	t.Cleanup(func() { _ = n.Stop(context.Background()) })
	user := ""
	n.Notify(webhook.Event{ID: "lost", Type: webhook.Connect, Client: "c", User: &user})
	heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
		if d := testutil.ToFloat64(metric(t, reg, "herald_webhook_events_dropped_total")); d != 1 {
			return fmt.Errorf("dropped counted %v, want 1", d)
		}
		return nil
	})
	a.failing.Store(false)
	n.Notify(webhook.Event{ID: "next", Type: webhook.Disconnect, Client: "c", User: &user, Reason: webhook.ReasonClosed})
	heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
		if got := a.byClient()["c"]; !slices.Equal(got, []string{"next"}) {
			return fmt.Errorf("the app got %v, want only the event after the dropped one", got)
		}
		return nil
	})
	heraldtest.WaitFor(t, heraldtest.Timeout, func() error { // acknowledged once the app answered
		if l, err := b.Len(context.Background(), notifier.QueueName); l != 0 || err != nil {
			return fmt.Errorf("%d events left in the queue (%v)", l, err)
		}
		return nil
	})
}

// A node that stops with events queued loses none: another node on the
// same Redis delivers them. Events of a type not chosen are not sent.
func TestAnotherNodeDeliversWhatOneQueued(t *testing.T) {
	t.Parallel()
	nodes := redisQueues(t)
	a, url := newApp(t)
	a.failing.Store(true) // nothing is delivered before the first node stops
	first := newNotifier(t, nodes(), url, nil, func(c *notifier.Config) {
		c.Events = []string{webhook.Connect, webhook.Subscribe, webhook.Unsubscribe, webhook.Disconnect}
	})
	first.Start()
	want := clientEvents(first, "c1")
	first.Notify(webhook.Event{ID: "occ", Type: webhook.Occupied, Channel: "a"}) // not chosen
	if err := first.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	a.failing.Store(false)
	second := newNotifier(t, nodes(), url, nil, nil)
	second.Start()
	t.Cleanup(func() { _ = second.Stop(context.Background()) })
	heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
		if got := a.byClient()["c1"]; !slices.Equal(got, want) {
			return fmt.Errorf("the app got %v of the stopped node's events, want %v", got, want)
		}
		return nil
	})
	if got := a.byClient()[""]; len(got) != 0 {
		t.Fatalf("an event type not chosen was sent: %v", got)
	}
}

func TestConfigChecked(t *testing.T) {
	t.Parallel()
	b := memory.New()
	for _, cfg := range []notifier.Config{
		{Secret: secret, Queue: b},
		{URL: "http://x", Queue: b},
		{URL: "http://x", Secret: secret},
		{URL: "http://x", Secret: secret, Queue: b, Events: []string{"conect"}},
	} {
		if _, err := notifier.New(cfg); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
}

func metric(t *testing.T, reg *prometheus.Registry, name string) prometheus.Collector {
	t.Helper()
	return collectorFunc(func() float64 {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		sum := 0.0
		for _, mf := range mfs {
			if mf.GetName() == name {
				for _, m := range mf.GetMetric() {
					sum += m.GetCounter().GetValue()
				}
			}
		}
		return sum
	})
}

// collectorFunc is a gauge of one value, for testutil.ToFloat64.
func collectorFunc(f func() float64) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "value", Help: "a value"}, f)
}

type nopHandler struct{}

func (nopHandler) HandleMessage(broker.Message)          {}
func (nopHandler) HandleJoin(string, broker.ClientInfo)  {}
func (nopHandler) HandleLeave(string, broker.ClientInfo) {}
func (nopHandler) HandleReconnect()                      {}

// A sender that takes more events than it has workers for must not let
// their leases run out before they are posted: an event whose lease ended
// is taken and posted again while its first post is still to come. With
// every POST as slow as the timeout allows, each event is posted once.
func TestSlowAppEachEventPostedOnce(t *testing.T) {
	const events = 64
	var mu sync.Mutex
	posts := map[string]int{}
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var e webhook.Event
		_ = json.NewDecoder(r.Body).Decode(&e)
		mu.Lock()
		posts[e.ID]++
		mu.Unlock()
		time.Sleep(1200 * time.Millisecond) // the app is slow, but within the timeout
	}))
	t.Cleanup(hs.Close)
	b := startedMemory(t)
	n := newNotifier(t, b, hs.URL, nil, func(c *notifier.Config) { c.Timeout = 1300 * time.Millisecond })
	for i := range events {
		user := "u"
		n.Notify(webhook.Event{Type: webhook.Connect, Client: fmt.Sprintf("c%d", i), User: &user})
	}
	n.Start()
	deadline := time.Now().Add(30 * time.Second)
	for {
		left, err := b.Len(context.Background(), notifier.QueueName)
		if err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		seen := len(posts)
		mu.Unlock()
		if seen == events && left == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d events posted, %d still queued", seen, left)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := n.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(posts) != events {
		t.Fatalf("%d distinct events posted, want %d", len(posts), events)
	}
	for id, k := range posts {
		if k != 1 {
			t.Errorf("event %s posted %d times", id, k)
		}
	}
}

// An event that comes after Stop took what waited is dropped and
// counted, not lost silently.
func TestEventAfterStopIsCounted(t *testing.T) {
	t.Parallel()
	_, url := newApp(t)
	reg := prometheus.NewRegistry()
	n := newNotifier(t, startedMemory(t), url, reg, nil)
	n.Start()
	if err := n.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	user := ""
	n.Notify(webhook.Event{Type: webhook.Connect, Client: "late", User: &user})
	if d := testutil.ToFloat64(metric(t, reg, "herald_webhook_events_dropped_total")); d != 1 {
		t.Fatalf("dropped counted %v, want 1", d)
	}
}
