// Package outbox publishes what an application committed to PostgreSQL:
// the rows of its table herald_outbox, in id order, at least once, each
// deleted once the broker has acknowledged it. It is what
// `herald serve --outbox postgres://…` runs, and a program that mounts a
// herald.Server runs it the same way beside that server:
//
//	r, err := outbox.New(outbox.Config{URL: "postgres://…", Publisher: srv})
//	if err != nil { … }
//	go r.Run(ctx) // until ctx is done; cancel it before srv.Shutdown
//
// The outbox joins herald's message flow at one place, Publisher.Publish
// (herald.Server.Publish): to herald a row is a message the application
// published. It knows nothing else of herald.
//
// One node of a cluster reads at a time: the one that holds a session-level
// PostgreSQL advisory lock whose key is derived from herald_outbox's OID
// (LockKey), on the connection it reads with. The others try for the lock
// every Config.LockRetry and take over when that connection ends, whether
// its node shut down, crashed or lost the database. The reader listens on
// the channel herald_outbox, which the table's trigger notifies on every
// insert, and also looks every Config.PollInterval.
//
// A row is published again when the reader stops between the broker's
// acknowledgement and the row's delete (a crash, a lost connection, a
// takeover), so subscribers may see a row twice, each time at a new
// offset. A row herald refuses for good (a bad channel name, the
// herald-admin namespace, data over Config.MaxMessageSize) moves to
// herald_outbox_dead with the reason; any other failure (the broker is
// unavailable) is retried with backoff, and the rows behind it wait.
package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldhq/herald"
)

// Defaults of Config's zero values.
const (
	DefaultMaxMessageSize = 65536
	DefaultBatchSize      = 100
	DefaultPollInterval   = time.Second
	DefaultLockRetry      = time.Second
)

// Bounds of the reader's waits; not settings.
const (
	queryTimeout   = 10 * time.Second       // one statement
	publishTimeout = 10 * time.Second       // one Publish
	minBackoff     = 100 * time.Millisecond // first wait after a failure
	maxBackoff     = 5 * time.Second        // longest wait after failures
)

// Publisher publishes one message and returns the offset the broker gave
// it. *herald.Server is one.
type Publisher interface {
	Publish(ctx context.Context, channel string, data any, opts ...herald.PublishOption) (string, error)
}

// Config configures a Reader. URL and Publisher are required.
type Config struct {
	// URL is the PostgreSQL connection string, a URL
	// (postgres://user:password@host:5432/db?sslmode=require) or
	// key=value pairs. The tables are those of the connection's current
	// schema, the first of its search_path; set search_path in the URL to
	// use another than public.
	URL string

	// Publisher publishes each row: the herald.Server to publish with.
	Publisher Publisher

	// MaxMessageSize bounds a row's data, in bytes of its JSON text; a
	// larger row is dead [65536]. Give it herald's Config.MaxMessageSize.
	// Negative: no bound.
	MaxMessageSize int

	// BatchSize is how many rows one read takes, and so how many rows a
	// crash may publish twice [100].
	BatchSize int

	// PollInterval is how often the reader looks for rows without being
	// notified [1s]: it catches rows a lost notification would leave, and
	// rows of a transaction that was not committed at the last look.
	PollInterval time.Duration

	// LockRetry is how often a node that is not the reader tries to
	// become it [1s], and so about how long a takeover takes once the
	// reader's database session has ended.
	LockRetry time.Duration

	// Registerer receives the reader's Prometheus collectors; nil: none.
	// herald serve gives it herald.Server.Registerer(). They are
	// herald_outbox_published_total (rows published; one published again
	// counts again), herald_outbox_dead_total (rows moved to
	// herald_outbox_dead), herald_outbox_retries_total (publishes that
	// failed and were retried), herald_outbox_lag_seconds (at the last
	// read, the age of the oldest row waiting, by the database's clock; 0
	// when none was) and herald_outbox_reading (1 while this node is the
	// reader).
	Registerer prometheus.Registerer

	// Logger receives the reader's logs; nil discards them.
	Logger *slog.Logger
}

// Reader publishes an outbox table. Create it with New and run it with
// Run.
type Reader struct {
	cfg     Config
	pgcfg   *pgx.ConnConfig
	log     *slog.Logger
	metrics *metrics
}

// New checks cfg, fills its defaults and registers the reader's metrics.
// It does not connect: Run does.
func New(cfg Config) (*Reader, error) {
	if cfg.Publisher == nil {
		return nil, errors.New("outbox: config: no Publisher")
	}
	if cfg.URL == "" {
		return nil, errors.New("outbox: config: no URL")
	}
	pgcfg, err := pgx.ParseConfig(cfg.URL) // its errors hide the password
	if err != nil {
		return nil, fmt.Errorf("outbox: config: %w", err)
	}
	if pgcfg.RuntimeParams["application_name"] == "" {
		pgcfg.RuntimeParams["application_name"] = "herald-outbox"
	}
	if cfg.MaxMessageSize == 0 {
		cfg.MaxMessageSize = DefaultMaxMessageSize
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = DefaultBatchSize
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.LockRetry <= 0 {
		cfg.LockRetry = DefaultLockRetry
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("outbox: metrics: %w", err)
	}
	return &Reader{cfg: cfg, pgcfg: pgcfg, log: cfg.Logger, metrics: m}, nil
}

// Run reads the outbox until ctx is done, then returns nil once the rows
// it has published are deleted (within a few seconds). It connects, makes
// the tables and the trigger if they are missing, waits until it holds the
// reader lock, and publishes; a lost connection or any other database
// error is logged and Run starts over after a short wait. Call Run once
// per Reader.
func (r *Reader) Run(ctx context.Context) error {
	backoff := minBackoff
	for {
		held, err := r.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if held {
			backoff = minBackoff // it worked for a while: come back at once
		}
		r.log.Warn("outbox: database session ended; starting over", "err", err, "in", backoff)
		if !sleep(ctx, backoff) {
			return nil
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// session is one database connection's life: it returns why it ended, and
// whether it held the reader lock.
func (r *Reader) session(ctx context.Context) (held bool, err error) {
	conn, err := pgx.ConnectConfig(ctx, r.pgcfg)
	if err != nil {
		return false, fmt.Errorf("connect: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), queryTimeout)
		defer cancel()
		_ = conn.Close(cctx) // ends the session, and with it the lock
	}()
	if err := ensureSchema(ctx, conn); err != nil {
		return false, err
	}
	key, err := LockKey(ctx, conn)
	if err != nil {
		return false, err
	}
	for waiting := false; ; waiting = true {
		ok, err := tryLock(ctx, conn, key)
		if err != nil {
			return false, err
		}
		if ok {
			break
		}
		if !waiting {
			r.log.Info("outbox: another node reads the outbox; standing by", "lock", key)
		}
		if !sleep(ctx, r.cfg.LockRetry) {
			return false, ctx.Err()
		}
	}
	r.log.Info("outbox: reading", "lock", key, "pid", conn.PgConn().PID())
	r.metrics.reading.Set(1)
	defer func() {
		r.metrics.reading.Set(0)
		r.metrics.lag.Set(0) // another node's to tell now
	}()
	if err := exec(ctx, conn, "LISTEN "+notifyChannel); err != nil {
		return true, err
	}
	return true, r.read(ctx, conn)
}

// read publishes what the outbox holds, then waits for a notification or
// the poll interval, until the connection fails or ctx is done.
func (r *Reader) read(ctx context.Context, conn *pgx.Conn) error {
	for {
		if err := r.drain(ctx, conn); err != nil {
			return err
		}
		wctx, cancel := context.WithTimeout(ctx, r.cfg.PollInterval)
		_, err := conn.WaitForNotification(wctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case err != nil && !errors.Is(err, context.DeadlineExceeded):
			return fmt.Errorf("wait for a notification: %w", err)
		}
		discardNotifications(conn) // the next read sees what they announce
	}
}

// discardNotifications drops the notifications already received: one
// read answers them all.
func discardNotifications(conn *pgx.Conn) {
	done, cancel := context.WithCancel(context.Background())
	cancel()
	for {
		// Queued notifications come back without a wait; with none
		// queued, a done context returns at once.
		if n, _ := conn.WaitForNotification(done); n == nil {
			return
		}
	}
}

// drain publishes batches until one comes back short.
func (r *Reader) drain(ctx context.Context, conn *pgx.Conn) error {
	for {
		rows, err := readBatch(ctx, conn, r.cfg.BatchSize)
		if err != nil {
			return err
		}
		if len(rows) == 0 {
			r.metrics.lag.Set(0)
			return nil
		}
		r.metrics.lag.Set(rows[0].age)
		if err := r.publish(ctx, conn, rows); err != nil {
			return err
		}
		if len(rows) < r.cfg.BatchSize {
			return nil
		}
	}
}

// publish publishes rows in order, then deletes those published and
// moves the dead ones. A failure that may pass is retried with backoff,
// after deleting what went out before it, for as long as the connection
// (and so the lock) lasts.
func (r *Reader) publish(ctx context.Context, conn *pgx.Conn, rows []row) error {
	var (
		done    []int64
		dead    []deadRow
		backoff = minBackoff
	)
	for i := 0; i < len(rows); {
		rw := rows[i]
		reason, err := r.publishRow(ctx, rw)
		switch {
		case reason != "":
			dead = append(dead, deadRow{id: rw.id, channel: rw.channel, reason: reason})
			i++
			continue
		case err == nil:
			done = append(done, rw.id)
			r.metrics.published.Inc()
			i++
			backoff = minBackoff
			continue
		}
		if ferr := r.settle(ctx, conn, done, dead); ferr != nil {
			return ferr
		}
		done, dead = nil, nil
		if ctx.Err() != nil {
			return ctx.Err()
		}
		r.metrics.retries.Inc()
		r.log.Warn("outbox: publish failed; retrying", "id", rw.id, "channel", rw.channel, "err", err, "in", backoff)
		if !sleep(ctx, backoff) {
			return ctx.Err()
		}
		backoff = min(2*backoff, maxBackoff)
		if err := ping(ctx, conn); err != nil { // still the reader?
			return err
		}
	}
	return r.settle(ctx, conn, done, dead)
}

// publishRow publishes one row. It returns why the row is dead, or the
// error of a publish that may work later.
func (r *Reader) publishRow(ctx context.Context, rw row) (dead string, err error) {
	if r.cfg.MaxMessageSize > 0 && len(rw.data) > r.cfg.MaxMessageSize {
		return fmt.Sprintf("%s: data is %d bytes, over the maximum message size of %d", herald.CodeTooLarge, len(rw.data), r.cfg.MaxMessageSize), nil
	}
	var opts []herald.PublishOption
	if rw.event != "" {
		opts = append(opts, herald.WithEvent(rw.event))
	}
	pctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	_, err = r.cfg.Publisher.Publish(pctx, rw.channel, json.RawMessage(rw.data), opts...)
	if refused(err) {
		return err.Error(), nil
	}
	return "", err
}

// refused reports whether err is herald's refusal of the message itself,
// which no retry changes.
func refused(err error) bool {
	var e *herald.Error
	if !errors.As(err, &e) {
		return false
	}
	switch e.Code {
	case herald.CodeBadRequest, herald.CodeForbidden, herald.CodeTooLarge:
		return true
	}
	return false
}

// settle deletes the published rows and moves the dead ones, even when
// ctx is done: a reader that stops deletes what it published.
func (r *Reader) settle(ctx context.Context, conn *pgx.Conn, done []int64, dead []deadRow) error {
	if len(done) == 0 && len(dead) == 0 {
		return nil
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), queryTimeout)
	defer cancel()
	if err := settle(sctx, conn, done, dead); err != nil {
		return err
	}
	for _, d := range dead {
		r.metrics.dead.Inc()
		r.log.Warn("outbox: row moved to "+deadTable, "id", d.id, "channel", d.channel, "reason", d.reason)
	}
	return nil
}

// sleep waits d, or until ctx is done; it reports whether it waited d.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
