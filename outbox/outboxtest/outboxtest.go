// Package outboxtest helps test code that uses herald's outbox against a
// real PostgreSQL: each test gets a schema of its own, so that tests run
// in parallel on one database without seeing each other's rows or
// waiting for each other's reader lock (its key is the table's OID).
package outboxtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/heraldhq/herald/heraldtest"
)

// DefaultURL is the database the tests use when HERALD_TEST_POSTGRES
// does not name another: a local PostgreSQL's database test.
const DefaultURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// DB is a test's own schema of the test database, with a connection of
// the test's own. Its methods fail the test on errors and are safe for
// concurrent use.
type DB struct {
	// URL connects to the schema: give it to the outbox (its search_path
	// is the schema).
	URL string
	// Schema is the schema's name.
	Schema string

	t    testing.TB
	mu   sync.Mutex
	conn *pgx.Conn
}

// New creates a schema for t in the database HERALD_TEST_POSTGRES names
// (a connection URL; default DefaultURL) and drops it, with everything in
// it, when t ends. The outbox makes its tables there when it starts.
func New(t testing.TB) *DB {
	t.Helper()
	base := os.Getenv("HERALD_TEST_POSTGRES")
	if base == "" {
		base = DefaultURL
	}
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("HERALD_TEST_POSTGRES: %v", err)
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	schema := "herald_test_" + hex.EncodeToString(b[:])
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	ctx, cancel := context.WithTimeout(context.Background(), heraldtest.Timeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, u.String())
	if err != nil {
		t.Fatalf("connect to PostgreSQL (set HERALD_TEST_POSTGRES to a connection URL): %v", err)
	}
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		_ = conn.Close(ctx)
		t.Fatalf("create schema: %v", err)
	}
	d := &DB{URL: u.String(), Schema: schema, t: t, conn: conn}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), heraldtest.Timeout)
		defer cancel()
		if _, err := conn.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
		_ = conn.Close(ctx)
	})
	return d
}

// Conn runs f with the test's connection, which no one else uses
// meanwhile.
func (d *DB) Conn(f func(ctx context.Context, conn *pgx.Conn) error) {
	d.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), heraldtest.Timeout)
	defer cancel()
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := f(ctx, d.conn); err != nil {
		d.t.Fatal(err)
	}
}

// Exec runs one statement.
func (d *DB) Exec(sql string, args ...any) {
	d.t.Helper()
	d.Conn(func(ctx context.Context, conn *pgx.Conn) error {
		if _, err := conn.Exec(ctx, sql, args...); err != nil {
			return fmt.Errorf("%s: %w", sql, err)
		}
		return nil
	})
}

// Int runs a query of one integer; NULL is 0.
func (d *DB) Int(sql string, args ...any) int64 {
	d.t.Helper()
	var n *int64
	d.Conn(func(ctx context.Context, conn *pgx.Conn) error {
		if err := conn.QueryRow(ctx, sql, args...).Scan(&n); err != nil {
			return fmt.Errorf("%s: %w", sql, err)
		}
		return nil
	})
	if n == nil {
		return 0
	}
	return *n
}

// Insert commits n rows to channel in one transaction, with data
// {"n": from}, {"n": from+1}, … in id order.
func (d *DB) Insert(channel string, from, n int) {
	d.t.Helper()
	d.Exec(`INSERT INTO herald_outbox (channel, data)
SELECT $1, jsonb_build_object('n', g) FROM generate_series($2::int, $3::int) g ORDER BY g`, channel, from, from+n-1)
}

// Holder returns the pid of the session that holds the schema's reader
// lock, or 0 while none does. It finds the lock in pg_locks as the outbox
// package documents it: classid 0x68657261, objid the table's OID.
func (d *DB) Holder() int64 {
	d.t.Helper()
	return d.Int(`SELECT max(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted
  AND classid = x'68657261'::int::oid AND objid = to_regclass('herald_outbox')::oid AND objsubid = 1`)
}

// WaitHolder waits until the outbox table is there and a session other
// than pid not holds its reader lock, and returns that session's pid.
func (d *DB) WaitHolder(not int64) int64 {
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

// WaitEmpty waits until every row is published (or dead) and deleted.
func (d *DB) WaitEmpty() {
	d.t.Helper()
	heraldtest.WaitFor(d.t, heraldtest.Timeout, func() error {
		if left := d.Int(`SELECT count(*) FROM herald_outbox`); left != 0 {
			return fmt.Errorf("%d rows left in herald_outbox", left)
		}
		return nil
	})
}

// Terminate ends the session pid, as a crash or a lost network would, and
// waits until it is gone.
func (d *DB) Terminate(pid int64) {
	d.t.Helper()
	d.Exec(`SELECT pg_terminate_backend($1::int)`, pid)
	heraldtest.WaitFor(d.t, heraldtest.Timeout, func() error {
		if n := d.Int(`SELECT count(*) FROM pg_stat_activity WHERE pid = $1::int`, pid); n != 0 {
			return fmt.Errorf("session %d still there", pid)
		}
		return nil
	})
}
