package outbox

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// The names the contract fixes.
const (
	table         = "herald_outbox"
	deadTable     = "herald_outbox_dead"
	notifyChannel = "herald_outbox"
	triggerName   = "herald_outbox_notify" // the trigger, and its function
)

// lockSpace is the upper half of every advisory lock key herald takes
// ("hera"); the lower half is the outbox table's OID, or 0 for the lock
// that guards creating the tables.
const lockSpace int64 = 0x68657261 << 32

// schemaLock serialises creating the tables among nodes that start at
// once; it is held for one transaction.
const schemaLock = lockSpace

// The tables and the trigger, as the contract gives them.
const (
	createTable = `CREATE TABLE IF NOT EXISTS ` + table + ` (
  id         bigserial PRIMARY KEY,
  channel    text  NOT NULL,
  data       jsonb NOT NULL,
  event      text,
  created_at timestamptz NOT NULL DEFAULT now()
)`
	createDeadTable = `CREATE TABLE IF NOT EXISTS ` + deadTable + ` (
  id         bigint NOT NULL,
  channel    text  NOT NULL,
  data       jsonb NOT NULL,
  event      text,
  created_at timestamptz NOT NULL,
  error      text  NOT NULL,
  failed_at  timestamptz NOT NULL DEFAULT now()
)`
	createNotify = `CREATE OR REPLACE FUNCTION ` + triggerName + `() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('` + notifyChannel + `', '');
  RETURN NULL;
END
$$`
	createTrigger = `CREATE TRIGGER ` + triggerName + ` AFTER INSERT ON ` + table + `
FOR EACH STATEMENT EXECUTE FUNCTION ` + triggerName + `()`
	// schemaReady: both tables and the trigger are there.
	schemaReady = `SELECT to_regclass('` + table + `') IS NOT NULL
  AND to_regclass('` + deadTable + `') IS NOT NULL
  AND EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass('` + table + `') AND tgname = '` + triggerName + `')`
)

// ensureSchema makes what is missing of the tables and the trigger, under
// schemaLock, so that nodes starting at once do not collide. When all is
// there it changes nothing: a role that may only read and delete the
// outbox and insert into the dead table can run the reader.
func ensureSchema(ctx context.Context, conn *pgx.Conn) error {
	ready, err := queryBool(ctx, conn, schemaReady)
	if err != nil {
		return fmt.Errorf("look for %s: %w", table, err)
	}
	if ready {
		return nil
	}
	qctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	err = pgx.BeginFunc(qctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(qctx, `SELECT pg_advisory_xact_lock($1)`, schemaLock); err != nil {
			return err
		}
		if _, err := tx.Exec(qctx, createTable); err != nil {
			return err
		}
		if _, err := tx.Exec(qctx, createDeadTable); err != nil {
			return err
		}
		var ready bool
		if err := tx.QueryRow(qctx, schemaReady).Scan(&ready); err != nil || ready {
			return err
		}
		if _, err := tx.Exec(qctx, createNotify); err != nil {
			return err
		}
		_, err := tx.Exec(qctx, createTrigger)
		return err
	})
	if err != nil {
		return fmt.Errorf("create %s: %w", table, err)
	}
	return nil
}

// LockKey returns the key of the advisory lock that the reader of the
// outbox table conn sees (herald_outbox in its search_path) holds for as
// long as it reads: 0x68657261 ("hera") in the upper 32 bits, the table's
// OID in the lower. The key is one per table, so readers of tables in
// other schemas or databases do not wait for each other; pg_locks shows
// the holder as locktype 'advisory' with classid 0x68657261 (1751478881)
// and objid the table's OID.
func LockKey(ctx context.Context, conn *pgx.Conn) (int64, error) {
	qctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	var oid uint32
	if err := conn.QueryRow(qctx, `SELECT to_regclass('`+table+`')::oid`).Scan(&oid); err != nil {
		return 0, fmt.Errorf("find %s: %w", table, err)
	}
	return lockSpace | int64(oid), nil
}

// tryLock takes the reader lock if no session holds it.
func tryLock(ctx context.Context, conn *pgx.Conn, key int64) (bool, error) {
	ok, err := queryBool(ctx, conn, `SELECT pg_try_advisory_lock($1)`, key)
	if err != nil {
		return false, fmt.Errorf("take the reader lock: %w", err)
	}
	return ok, nil
}

// row is one outbox row to publish.
type row struct {
	id      int64
	channel string
	data    []byte // JSON text
	event   string
	age     float64 // seconds since created_at, by the database's clock
}

// readBatch returns up to n rows of the outbox, lowest id first. It
// starts at the lowest id every time: the table holds only what is not
// yet published, and a row whose transaction committed after higher ids
// went out is the first of the next read.
func readBatch(ctx context.Context, conn *pgx.Conn, n int) ([]row, error) {
	qctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	rows, err := conn.Query(qctx, `SELECT id, channel, data::text, coalesce(event, ''),
  extract(epoch FROM clock_timestamp() - created_at)::float8
FROM `+table+` ORDER BY id LIMIT $1`, n)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", table, err)
	}
	out := make([]row, 0, n)
	var r row
	_, err = pgx.ForEachRow(rows, []any{&r.id, &r.channel, &r.data, &r.event, &r.age}, func() error {
		out = append(out, r)
		r.data = nil // Scan reuses a slice it is given
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", table, err)
	}
	return out, nil
}

// deadRow is a row that can never be published, and why.
type deadRow struct {
	id      int64
	channel string
	reason  string
}

// settle deletes the published rows and moves the dead ones to the dead
// table, in one round trip and one transaction.
func settle(ctx context.Context, conn *pgx.Conn, done []int64, dead []deadRow) error {
	b := &pgx.Batch{}
	if len(done) > 0 {
		b.Queue(`DELETE FROM `+table+` WHERE id = ANY($1)`, done)
	}
	if len(dead) > 0 {
		ids := make([]int64, len(dead))
		reasons := make([]string, len(dead))
		for i, d := range dead {
			ids[i], reasons[i] = d.id, d.reason
		}
		b.Queue(`WITH moved AS (
  DELETE FROM `+table+` WHERE id = ANY($1) RETURNING id, channel, data, event, created_at
)
INSERT INTO `+deadTable+` (id, channel, data, event, created_at, error)
SELECT m.id, m.channel, m.data, m.event, m.created_at, r.reason
FROM moved m JOIN unnest($1::bigint[], $2::text[]) AS r(id, reason) ON r.id = m.id`, ids, reasons)
	}
	if err := conn.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("delete published rows: %w", err)
	}
	return nil
}

// exec runs one statement.
func exec(ctx context.Context, conn *pgx.Conn, sql string) error {
	qctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	if _, err := conn.Exec(qctx, sql); err != nil {
		return fmt.Errorf("%s: %w", sql, err)
	}
	return nil
}

// ping checks that the connection, and so the reader lock, is still there.
func ping(ctx context.Context, conn *pgx.Conn) error {
	qctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	if err := conn.Ping(qctx); err != nil {
		return fmt.Errorf("ping: %w", err)
	}
	return nil
}

// queryBool runs a query of one boolean.
func queryBool(ctx context.Context, conn *pgx.Conn, sql string, args ...any) (bool, error) {
	qctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	var b bool
	if err := conn.QueryRow(qctx, sql, args...).Scan(&b); err != nil {
		return false, err
	}
	return b, nil
}
