package outbox_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/redis"
	"github.com/heraldhq/herald/heraldtest"
	"github.com/heraldhq/herald/outbox"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// postgresURL is the database the tests use: HERALD_TEST_POSTGRES (a
// connection URL) or the local test database.
func postgresURL() string {
	if u := os.Getenv("HERALD_TEST_POSTGRES"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
}

// db is a test's own schema: the contract fixes the table names, so each
// test gets a schema of its own (and with it a lock key of its own).
type db struct {
	t      *testing.T
	URL    string // the reader's connection string: search_path is the schema
	Schema string
	conn   *pgx.Conn // the test's own connection, in the schema
	mu     sync.Mutex
}

// newDB creates a schema for t and drops it when t ends.
func newDB(t *testing.T) *db {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	schema := "outbox_test_" + hex.EncodeToString(b[:])
	url := postgresURL() + "&search_path=" + schema
	ctx, cancel := context.WithTimeout(context.Background(), heraldtest.Timeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect to PostgreSQL: %v", err)
	}
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatalf("create schema: %v", err)
	}
	d := &db{t: t, URL: url, Schema: schema, conn: conn}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), heraldtest.Timeout)
		defer cancel()
		if _, err := conn.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Errorf("drop schema: %v", err)
		}
		_ = conn.Close(ctx)
	})
	return d
}

// Exec runs sql on the test's connection, failing t on an error.
func (d *db) Exec(sql string, args ...any) {
	d.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), heraldtest.Timeout)
	defer cancel()
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, err := d.conn.Exec(ctx, sql, args...); err != nil {
		d.t.Fatalf("%s: %v", sql, err)
	}
}

// Int runs a query of one integer.
func (d *db) Int(sql string, args ...any) int64 {
	d.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), heraldtest.Timeout)
	defer cancel()
	d.mu.Lock()
	defer d.mu.Unlock()
	var n *int64
	if err := d.conn.QueryRow(ctx, sql, args...).Scan(&n); err != nil {
		d.t.Fatalf("%s: %v", sql, err)
	}
	if n == nil {
		return 0
	}
	return *n
}

// Insert inserts n rows into channel in one transaction: data
// {"n": from}, {"n": from+1}, …
func (d *db) Insert(channel string, from, n int) {
	d.t.Helper()
	d.Exec(`INSERT INTO herald_outbox (channel, data)
SELECT $1, jsonb_build_object('n', g) FROM generate_series($2::int, $3::int) g ORDER BY g`, channel, from, from+n-1)
}

// Holder returns the backend pid that holds the schema's reader lock, or
// 0 while none does. It finds the lock in pg_locks by the key the package
// documents: classid 0x68657261, objid the table's OID.
func (d *db) Holder() int64 {
	d.t.Helper()
	return d.Int(`SELECT max(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted
  AND classid = x'68657261'::int::oid AND objid = to_regclass('herald_outbox')::oid AND objsubid = 1`)
}

// WaitHolder waits until some session other than not holds the reader
// lock, and returns its pid.
func (d *db) WaitHolder(not int64) int64 {
	d.t.Helper()
	var pid int64
	heraldtest.WaitFor(d.t, heraldtest.Timeout, func() error {
		if d.Int(`SELECT count(*) FROM pg_tables WHERE schemaname = $1 AND tablename = 'herald_outbox'`, d.Schema) == 0 {
			return fmt.Errorf("no table herald_outbox yet")
		}
		pid = d.Holder()
		if pid == 0 || pid == not {
			return fmt.Errorf("reader lock held by pid %d", pid)
		}
		return nil
	})
	return pid
}

// Terminate ends the backend pid, as a crash or a lost network would, and
// waits until it is gone.
func (d *db) Terminate(pid int64) {
	d.t.Helper()
	d.Exec(`SELECT pg_terminate_backend($1::int)`, pid)
	heraldtest.WaitFor(d.t, heraldtest.Timeout, func() error {
		if n := d.Int(`SELECT count(*) FROM pg_stat_activity WHERE pid = $1::int`, pid); n != 0 {
			return fmt.Errorf("backend %d still there", pid)
		}
		return nil
	})
}

// reader is a running outbox.Reader with its own metrics.
type reader struct {
	*outbox.Reader
	reg  *prometheus.Registry
	logs *syncBuffer
	stop func()
}

// startReader runs a reader with cfg (URL and Publisher set by the
// caller) until t ends or stop is called.
func startReader(t *testing.T, cfg outbox.Config) *reader {
	t.Helper()
	reg := prometheus.NewRegistry()
	logs := &syncBuffer{}
	cfg.Registerer = reg
	cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	r, err := outbox.New(cfg)
	if err != nil {
		t.Fatalf("outbox.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(heraldtest.Timeout):
				t.Errorf("Run did not return within %v of its context's end", heraldtest.Timeout)
			}
		})
	}
	t.Cleanup(stop)
	return &reader{Reader: r, reg: reg, logs: logs, stop: stop}
}

// metric returns the value of one of the reader's metrics.
func (r *reader) metric(t *testing.T, name string) float64 {
	t.Helper()
	mfs, err := r.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			m := mf.GetMetric()[0]
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// newServer starts a herald server on the memory broker whose queues hold
// a large burst, and a subscriber to channels.
func newServer(t *testing.T, cfg herald.Config, channels ...string) (*herald.Server, *heraldtest.Client) {
	t.Helper()
	cfg.QueueMessages, cfg.QueueBytes = 100000, 64<<20
	srv, hs := heraldtest.NewServer(t, cfg)
	return srv, subscriber(t, hs.URL, channels...)
}

// subscriber dials a herald server at base and subscribes to channels.
func subscriber(t *testing.T, base string, channels ...string) *heraldtest.Client {
	t.Helper()
	c := heraldtest.Dial(t, heraldtest.WSURL(base, "/ws"))
	for _, ch := range channels {
		c.MustOK(map[string]any{"op": "subscribe", "channel": ch})
	}
	return c
}

// message is one message a subscriber received.
type message struct {
	Channel string
	Offset  broker.Offset
	N       int // data's "n"
	Data    json.RawMessage
	Event   string
	At      time.Time
}

// receive reads messages from c until done says it has what it wants,
// failing t after heraldtest.Timeout.
func receive(t *testing.T, c *heraldtest.Client, done func([]message) bool) []message {
	t.Helper()
	var got []message
	deadline := time.Now().Add(heraldtest.Timeout)
	for !done(got) {
		f, err := c.Poll(time.Until(deadline))
		if err != nil {
			t.Fatalf("after %d messages: %v", len(got), err)
		}
		if f == nil {
			t.Fatalf("after %d messages: no more within %v", len(got), heraldtest.Timeout)
		}
		if f["op"] != "message" {
			continue
		}
		got = append(got, parseMessage(t, f))
	}
	return got
}

func parseMessage(t *testing.T, f map[string]any) message {
	t.Helper()
	m := message{At: time.Now()}
	m.Channel, _ = f["channel"].(string)
	m.Event, _ = f["event"].(string)
	off, _ := f["offset"].(string)
	var err error
	if m.Offset, err = broker.ParseOffset(off); err != nil {
		t.Fatalf("message %v: %v", f, err)
	}
	m.Data, _ = json.Marshal(f["data"])
	if d, ok := f["data"].(map[string]any); ok {
		if n, ok := d["n"].(float64); ok {
			m.N = int(n)
		}
	}
	return m
}

// distinct counts the distinct n among msgs.
func distinct(msgs []message) int {
	seen := map[int]bool{}
	for _, m := range msgs {
		seen[m.N] = true
	}
	return len(seen)
}

// checkFirstSeenOrder fails t unless the n of msgs, each taken where it
// first appears, are from…to in order, and each channel's offsets only
// grow (a message published again comes at a new offset).
func checkFirstSeenOrder(t *testing.T, msgs []message, from, to int) {
	t.Helper()
	seen := map[int]bool{}
	next := from
	last := map[string]broker.Offset{}
	for i, m := range msgs {
		if prev, ok := last[m.Channel]; ok && (m.Offset.Epoch != prev.Epoch || m.Offset.Seq <= prev.Seq) {
			t.Fatalf("message %d (n=%d) at offset %s after %s", i, m.N, m.Offset, prev)
		}
		last[m.Channel] = m.Offset
		if seen[m.N] {
			continue
		}
		if m.N != next {
			t.Fatalf("message %d: n=%d first seen where %d was due", i, m.N, next)
		}
		seen[m.N] = true
		next++
	}
	if next != to+1 {
		t.Fatalf("saw %d…%d, want %d…%d", from, next-1, from, to)
	}
}

// syncBuffer is a bytes.Buffer safe for a logger and a test at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// WaitEmpty waits until every row is published (or dead) and deleted.
func (d *db) WaitEmpty() {
	d.t.Helper()
	heraldtest.WaitFor(d.t, heraldtest.Timeout, func() error {
		if left := d.Int(`SELECT count(*) FROM herald_outbox`); left != 0 {
			return fmt.Errorf("%d rows left in herald_outbox", left)
		}
		return nil
	})
}

// redisPrefix returns a Redis key prefix of t's own: its keys expire
// with the history's TTL.
func redisPrefix(t *testing.T) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "herald-outbox-test:" + hex.EncodeToString(b[:]) + ":"
}

// redisServer starts a herald node on the Redis at HERALD_TEST_REDIS
// (host:port, default 127.0.0.1:6379) with key prefix.
func redisServer(t *testing.T, prefix string) (*herald.Server, *httptest.Server) {
	t.Helper()
	addr := os.Getenv("HERALD_TEST_REDIS")
	if addr == "" {
		addr = "127.0.0.1:6379"
	}
	b, err := redis.New(redis.Config{URL: "redis://" + addr + "/0", Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	return heraldtest.NewServer(t, herald.Config{Broker: b, HistoryTTL: time.Minute, QueueMessages: 100000, QueueBytes: 64 << 20})
}
