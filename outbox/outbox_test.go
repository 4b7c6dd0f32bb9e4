package outbox_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/heraldtest"
	"github.com/heraldhq/herald/outbox"
	"github.com/heraldhq/herald/outbox/outboxtest"
)

// Rows go out in id order, across channels and transactions, each once
// when nothing fails, and each is deleted once published.
func TestPublishesInIDOrder(t *testing.T) {
	t.Parallel()
	d := outboxtest.New(t)
	srv, sub := newServer(t, herald.Config{}, "orders", "stock", "mail")
	r := startReader(t, outbox.Config{URL: d.URL, Publisher: srv, BatchSize: 64})
	d.WaitHolder(0)
	const n = 3000
	channels := []string{"orders", "stock", "mail"}
	for i := 0; i < n; i += 100 { // 30 transactions of 100 rows, the channel changing every 100
		d.Insert(channels[i/100%3], i+1, 100)
	}
	got := receive(t, sub, func(m []message) bool { return len(m) == n })
	for i, m := range got {
		if m.N != i+1 || m.Channel != channels[i/100%3] {
			t.Fatalf("message %d: n=%d on %s, want n=%d on %s", i, m.N, m.Channel, i+1, channels[i/100%3])
		}
	}
	checkFirstSeenOrder(t, got, 1, n)
	d.WaitEmpty()
	if p := r.metric(t, "herald_outbox_published_total"); p != n {
		t.Errorf("herald_outbox_published_total = %v, want %d", p, n)
	}
	if f, err := sub.Poll(50 * time.Millisecond); f != nil || err != nil {
		t.Fatalf("after all rows: %v, %v", f, err)
	}
}

// A row's event goes with it; a NULL or empty event is none; data is the
// row's JSON.
func TestEventAndData(t *testing.T) {
	t.Parallel()
	d := outboxtest.New(t)
	srv, sub := newServer(t, herald.Config{}, "c")
	startReader(t, outbox.Config{URL: d.URL, Publisher: srv})
	d.WaitHolder(0)
	d.Exec(`INSERT INTO herald_outbox (channel, data, event) VALUES
  ('c', '{"n": 1, "s": "é \"q\""}', 'created'), ('c', '[1, 2]', NULL), ('c', '"x"', '')`)
	got := receive(t, sub, func(m []message) bool { return len(m) == 3 })
	want := []struct{ data, event string }{{`{"n":1,"s":"é \"q\""}`, "created"}, {`[1,2]`, ""}, {`"x"`, ""}}
	for i, w := range want {
		if string(got[i].Data) != w.data || got[i].Event != w.event {
			t.Errorf("message %d: data %s event %q, want %s %q", i, got[i].Data, got[i].Event, w.data, w.event)
		}
	}
}

// crashAfter publishes through srv and, right after the broker
// acknowledged the row with n == at (the first time), ends the reader's
// database session, as a crash between the acknowledgement and the delete
// would.
type crashAfter struct {
	srv     *herald.Server
	d       *outboxtest.DB
	at      int
	crashed atomic.Bool
}

func (c *crashAfter) Publish(ctx context.Context, channel string, data any, opts ...herald.PublishOption) (string, error) {
	off, err := c.srv.Publish(ctx, channel, data, opts...)
	if err == nil && strings.Contains(string(data.(json.RawMessage)), fmt.Sprintf(`"n": %d}`, c.at)) && c.crashed.CompareAndSwap(false, true) {
		c.d.Terminate(c.d.Holder())
	}
	return off, err
}

// A row published but not yet deleted when the reader's session dies is
// published again by the next session: never lost, maybe twice, at a new
// offset.
func TestAtLeastOnceAcrossCrash(t *testing.T) {
	t.Parallel()
	d := outboxtest.New(t)
	srv, sub := newServer(t, herald.Config{}, "c")
	pub := &crashAfter{srv: srv, d: d, at: 250}
	startReader(t, outbox.Config{URL: d.URL, Publisher: pub, BatchSize: 100})
	first := d.WaitHolder(0)
	const n = 500
	d.Insert("c", 1, n)
	got := receive(t, sub, func(m []message) bool { return distinct(m) == n })
	if !pub.crashed.Load() {
		t.Fatal("the session was never ended")
	}
	checkFirstSeenOrder(t, got, 1, n)
	twice := 0
	for _, m := range got {
		if m.N == pub.at {
			twice++
		}
	}
	if twice < 2 {
		t.Fatalf("row %d published %d times; its delete was cut off, so want it again", pub.at, twice)
	}
	if second := d.WaitHolder(0); second == first {
		t.Fatalf("the reader still reads on the ended session %d", first)
	}
	d.WaitEmpty()
}

// A row whose transaction commits after rows with higher ids went out is
// published when it commits.
func TestLateCommit(t *testing.T) {
	t.Parallel()
	d := outboxtest.New(t)
	srv, sub := newServer(t, herald.Config{}, "c")
	startReader(t, outbox.Config{URL: d.URL, Publisher: srv})
	d.WaitHolder(0)

	ctx, cancel := context.WithTimeout(context.Background(), heraldtest.Timeout)
	defer cancel()
	late, err := pgx.Connect(ctx, d.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer late.Close(ctx)
	tx, err := late.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO herald_outbox (channel, data) VALUES ('c', '{"n": 1}')`); err != nil {
		t.Fatal(err)
	}
	d.Insert("c", 2, 2) // ids above lateID, committed first
	got := receive(t, sub, func(m []message) bool { return len(m) == 2 })
	if got[0].N != 2 || got[1].N != 3 {
		t.Fatalf("before the late commit: %d, %d; want 2, 3", got[0].N, got[1].N)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	got = receive(t, sub, func(m []message) bool { return len(m) == 1 })
	if got[0].N != 1 {
		t.Fatalf("after the late commit: n=%d, want 1", got[0].N)
	}
	d.WaitEmpty()
}

// A row herald can never publish moves to herald_outbox_dead with the
// reason, and the rows behind it go out.
func TestDeadRows(t *testing.T) {
	t.Parallel()
	d := outboxtest.New(t)
	srv, sub := newServer(t, herald.Config{}, "c")
	r := startReader(t, outbox.Config{URL: d.URL, Publisher: srv, MaxMessageSize: 100})
	d.WaitHolder(0)
	big := `{"n": 0, "pad": "` + strings.Repeat("x", 100) + `"}`
	d.Exec(`INSERT INTO herald_outbox (channel, data, event) VALUES
  ('c', '{"n": 1}', NULL),
  ('bad channel', '{"n": 0}', 'e1'),
  ('c', '{"n": 2}', NULL),
  ('herald-admin:nodes', '{"n": 0}', NULL),
  ('', '{"n": 0}', NULL),
  ('c', $1, 'e2'),
  ('`+strings.Repeat("a", 256)+`', '{"n": 0}', NULL),
  ('c', '{"n": 3}', NULL)`, big)
	got := receive(t, sub, func(m []message) bool { return len(m) == 3 })
	for i, m := range got {
		if m.N != i+1 {
			t.Fatalf("message %d: n=%d, want %d", i, m.N, i+1)
		}
	}
	type deadRow struct {
		id                   int64
		channel, data, event string
		reason               string
		created, failed      time.Time
	}
	d.WaitEmpty()
	var dead []deadRow
	d.Conn(func(ctx context.Context, conn *pgx.Conn) error {
		rows, err := conn.Query(ctx, `SELECT id, channel, data::text, coalesce(event, '-'), error, created_at, failed_at FROM herald_outbox_dead ORDER BY id`)
		if err != nil {
			return err
		}
		var x deadRow
		_, err = pgx.ForEachRow(rows, []any{&x.id, &x.channel, &x.data, &x.event, &x.reason, &x.created, &x.failed}, func() error {
			dead = append(dead, x)
			return nil
		})
		return err
	})
	if len(dead) != 5 {
		t.Fatalf("%d dead rows, want 5", len(dead))
	}
	want := []struct{ channel, event, reason string }{
		{"bad channel", "e1", "bad_request: bad channel name"},
		{"herald-admin:nodes", "-", "forbidden: "},
		{"", "-", "bad_request: bad channel name"},
		{"c", "e2", "too_large: data is 119 bytes, over the maximum message size of 100"},
		{strings.Repeat("a", 256), "-", "bad_request: bad channel name"},
	}
	for i, w := range want {
		x := dead[i]
		if x.channel != w.channel || x.event != w.event || !strings.HasPrefix(x.reason, w.reason) {
			t.Errorf("dead row %d: %q %q %q; want %q %q %q…", i, x.channel, x.event, x.reason, w.channel, w.event, w.reason)
		}
		if x.created.IsZero() || x.failed.Before(x.created) {
			t.Errorf("dead row %d: created_at %v, failed_at %v", i, x.created, x.failed)
		}
		if i > 0 && x.id <= dead[i-1].id {
			t.Errorf("dead row %d: id %d after %d", i, x.id, dead[i-1].id)
		}
	}
	if dead[0].data != `{"n": 0}` {
		t.Errorf("dead row's data %s, want the row's", dead[0].data)
	}
	if v := r.metric(t, "herald_outbox_dead_total"); v != 5 {
		t.Errorf("herald_outbox_dead_total = %v, want 5", v)
	}
}

// flaky fails every publish of the row with n == at with
// broker.ErrUnavailable until it has failed times times.
type flaky struct {
	srv   *herald.Server
	at    string
	times int
	mu    sync.Mutex
	fails int
}

func (f *flaky) Publish(ctx context.Context, channel string, data any, opts ...herald.PublishOption) (string, error) {
	f.mu.Lock()
	if strings.Contains(string(data.(json.RawMessage)), f.at) && f.fails < f.times {
		f.fails++
		f.mu.Unlock()
		return "", fmt.Errorf("publish: %w", broker.ErrUnavailable)
	}
	f.mu.Unlock()
	return f.srv.Publish(ctx, channel, data, opts...)
}

// A publish that fails for a while (the broker is unavailable) is retried
// with backoff; the rows behind it wait, so order holds, and nothing is
// dead.
func TestUnavailableRetriedInOrder(t *testing.T) {
	t.Parallel()
	d := outboxtest.New(t)
	srv, sub := newServer(t, herald.Config{}, "c")
	pub := &flaky{srv: srv, at: `"n": 5}`, times: 3}
	r := startReader(t, outbox.Config{URL: d.URL, Publisher: pub})
	d.WaitHolder(0)
	// Rows an hour old: while they wait, the lag says so.
	d.Exec(`INSERT INTO herald_outbox (channel, data, created_at)
SELECT 'c', jsonb_build_object('n', g), now() - interval '1 hour' FROM generate_series(1, 10) g ORDER BY g`)
	heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
		if lag := r.metric(t, "herald_outbox_lag_seconds"); lag < 3600 {
			return fmt.Errorf("herald_outbox_lag_seconds = %v while hour-old rows wait", lag)
		}
		return nil
	})
	got := receive(t, sub, func(m []message) bool { return distinct(m) == 10 })
	checkFirstSeenOrder(t, got, 1, 10)
	if len(got) != 10 {
		t.Errorf("%d messages, want 10: the rows before the failure are deleted before the retry", len(got))
	}
	if v := r.metric(t, "herald_outbox_retries_total"); v != 3 {
		t.Errorf("herald_outbox_retries_total = %v, want 3", v)
	}
	if n := d.Int(`SELECT count(*) FROM herald_outbox_dead`); n != 0 {
		t.Errorf("%d dead rows, want none", n)
	}
	heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
		if lag := r.metric(t, "herald_outbox_lag_seconds"); lag != 0 {
			return fmt.Errorf("herald_outbox_lag_seconds = %v with nothing waiting", lag)
		}
		return nil
	})
}

// Of two nodes on one outbox, one reads. When its database session ends
// (pg_terminate_backend), a node reads again within seconds; when the
// reader stops, the other takes over; nothing is lost either way.
func TestTakeover(t *testing.T) {
	t.Parallel()
	d := outboxtest.New(t)
	prefix := redisPrefix(t)
	srvA, hsA := redisServer(t, prefix)
	srvB, _ := redisServer(t, prefix)
	sub := subscriber(t, hsA.URL, "c")
	a := startReader(t, outbox.Config{URL: d.URL, Publisher: srvA})
	b := startReader(t, outbox.Config{URL: d.URL, Publisher: srvB})
	first := d.WaitHolder(0)
	holder := func() (reading, standing *reader) {
		t.Helper()
		heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
			ra, rb := a.metric(t, "herald_outbox_reading"), b.metric(t, "herald_outbox_reading")
			switch {
			case ra == 1 && rb == 0:
				reading, standing = a, b
			case ra == 0 && rb == 1:
				reading, standing = b, a
			default:
				return fmt.Errorf("herald_outbox_reading: %v and %v, want one of them 1", ra, rb)
			}
			return nil
		})
		return reading, standing
	}
	_, standby := holder()

	const n = 300
	d.Insert("c", 1, 100)
	got := receive(t, sub, func(m []message) bool { return distinct(m) == 100 })
	checkFirstSeenOrder(t, got, 1, 100)
	if p := standby.metric(t, "herald_outbox_published_total"); p != 0 {
		t.Fatalf("the standby published %v rows", p)
	}

	// The reader's session is ended while rows keep coming.
	inserted := make(chan struct{})
	go func() {
		defer close(inserted)
		for i := 101; i <= 200; i += 5 {
			d.Insert("c", i, 5)
		}
	}()
	d.WaitEmpty() // so that no row of before is published again
	start := time.Now()
	d.Terminate(first)
	d.WaitHolder(first)
	t.Logf("reading again %v after the session ended", time.Since(start))
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("reading again took %v, want a few seconds at most", took)
	}
	<-inserted
	got = receive(t, sub, func(m []message) bool { return distinct(m) == 100 })
	checkFirstSeenOrder(t, got, 101, 200)

	// The reader stops, as its process would; the other takes over.
	reading, standing := holder()
	d.WaitEmpty()
	pid := d.Holder()
	start = time.Now()
	reading.stop()
	d.WaitHolder(pid)
	// The standby holds the lock now; it says it reads once it has set
	// up its session after taking it.
	heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
		if s := standing.metric(t, "herald_outbox_reading"); s != 1 {
			return fmt.Errorf("after the reader stopped, the standby's herald_outbox_reading is %v", s)
		}
		return nil
	})
	t.Logf("taken over %v after the reader stopped", time.Since(start))
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("the takeover took %v, want a few seconds at most", took)
	}
	d.Insert("c", 201, n-200)
	got = receive(t, sub, func(m []message) bool { return distinct(m) == n-200 })
	checkFirstSeenOrder(t, got, 201, n)
}

// NOTIFY wakes the reader: with a poll interval of a minute, each row of a
// single-row transaction still reaches a subscriber within milliseconds.
func TestNotifyWakesReader(t *testing.T) {
	t.Parallel()
	d := outboxtest.New(t)
	srv, sub := newServer(t, herald.Config{}, "c")
	startReader(t, outbox.Config{URL: d.URL, Publisher: srv, PollInterval: time.Minute})
	d.WaitHolder(0)
	const n = 30
	lat := make([]time.Duration, n)
	for i := range n {
		start := time.Now()
		d.Insert("c", i+1, 1)
		got := receive(t, sub, func(m []message) bool { return len(m) == 1 })
		if got[0].N != i+1 {
			t.Fatalf("got n=%d, want %d", got[0].N, i+1)
		}
		lat[i] = got[0].At.Sub(start)
	}
	slices.Sort(lat)
	t.Logf("commit → delivery: p50 %v, max %v", lat[n/2], lat[n-1])
	if lat[n/2] > 200*time.Millisecond {
		t.Errorf("median commit → delivery %v, want under 200ms", lat[n/2])
	}
}

// Without a notification (the trigger disabled) the reader still finds
// rows by polling.
func TestPollWithoutNotify(t *testing.T) {
	t.Parallel()
	d := outboxtest.New(t)
	srv, sub := newServer(t, herald.Config{}, "c")
	startReader(t, outbox.Config{URL: d.URL, Publisher: srv, PollInterval: 200 * time.Millisecond})
	d.WaitHolder(0)
	d.Exec(`ALTER TABLE herald_outbox DISABLE TRIGGER herald_outbox_notify`)
	start := time.Now()
	d.Insert("c", 1, 3)
	got := receive(t, sub, func(m []message) bool { return len(m) == 3 })
	checkFirstSeenOrder(t, got, 1, 3)
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("polling found the rows after %v", took)
	}
}

// Nodes that start at once on an empty schema make the tables and the
// trigger once, without errors; one of them reads.
func TestSchemaMadeOnceByManyNodes(t *testing.T) {
	t.Parallel()
	d := outboxtest.New(t)
	srv, sub := newServer(t, herald.Config{}, "c")
	var rs []*reader
	for range 6 {
		rs = append(rs, startReader(t, outbox.Config{URL: d.URL, Publisher: srv}))
	}
	d.WaitHolder(0)
	heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
		standing := 0
		for _, r := range rs {
			if strings.Contains(r.logs.String(), "standing by") {
				standing++
			}
		}
		if standing != len(rs)-1 {
			return fmt.Errorf("%d nodes stand by, want %d", standing, len(rs)-1)
		}
		return nil
	})
	for i, r := range rs {
		if l := r.logs.String(); strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") {
			t.Errorf("node %d logged:\n%s", i, l)
		}
	}
	if n := d.Int(`SELECT count(*) FROM pg_trigger WHERE tgrelid = 'herald_outbox'::regclass AND NOT tgisinternal`); n != 1 {
		t.Errorf("%d triggers on herald_outbox, want 1", n)
	}
	d.Insert("c", 1, 5)
	checkFirstSeenOrder(t, receive(t, sub, func(m []message) bool { return len(m) == 5 }), 1, 5)
}

// A reader whose context ends deletes what it published, ends its
// session (and with it the lock) and returns.
func TestStopReleasesLock(t *testing.T) {
	t.Parallel()
	d := outboxtest.New(t)
	srv, sub := newServer(t, herald.Config{}, "c")
	r := startReader(t, outbox.Config{URL: d.URL, Publisher: srv})
	pid := d.WaitHolder(0)
	d.Insert("c", 1, 50)
	receive(t, sub, func(m []message) bool { return len(m) == 50 })
	r.stop()
	// PostgreSQL ends the session just after the connection closes.
	heraldtest.WaitFor(t, time.Second, func() error {
		if n := d.Int(`SELECT count(*) FROM pg_stat_activity WHERE pid = $1::int`, pid); n != 0 {
			return fmt.Errorf("the reader's session %d is still open", pid)
		}
		if h := d.Holder(); h != 0 {
			return fmt.Errorf("pid %d holds the lock after Run returned", h)
		}
		return nil
	})
	if left := d.Int(`SELECT count(*) FROM herald_outbox`); left != 0 {
		t.Fatalf("%d published rows not deleted", left)
	}
}

// New refuses a config it cannot run, and its errors never show the
// password.
func TestNewErrors(t *testing.T) {
	t.Parallel()
	srv, _ := heraldtest.NewServer(t, herald.Config{})
	const secret = "hunter2"
	for _, tc := range []struct {
		name string
		cfg  outbox.Config
		want string
	}{
		{"no publisher", outbox.Config{URL: outboxtest.DefaultURL}, "no Publisher"},
		{"no URL", outbox.Config{Publisher: srv}, "no URL"},
		{"bad URL", outbox.Config{URL: "postgres://u:" + secret + "@127.0.0.1:notaport/db", Publisher: srv}, "outbox: config"},
		{"bad option", outbox.Config{URL: "postgres://u:" + secret + "@127.0.0.1/db?sslmode=maybe", Publisher: srv}, "outbox: config"},
		{"bad key=value", outbox.Config{URL: "host=127.0.0.1 password=" + secret + " port=x", Publisher: srv}, "outbox: config"},
	} {
		_, err := outbox.New(tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one with %q", tc.name, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), secret) {
			t.Errorf("%s: error %v shows the password", tc.name, err)
		}
	}
}
