// Package receipts keeps a node's share of delivery receipts in the
// broker (broker.Receipts): who each message of a channel with receipts
// was delivered to, recorded off the fan-out path, and the checks that
// come due when a channel's receipt timeout passes, which it turns into
// undelivered reports for the clients still pending.
package receipts

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/heraldhq/herald/broker"
)

// Config configures a Keeper.
type Config struct {
	// Receipts is where receipts are kept; required.
	Receipts broker.Receipts
	// Rules gives a channel's receipt timeout and how long its receipts
	// are kept; required.
	Rules func(channel string) (timeout, keep time.Duration)
	// Undelivered reports a due check's pending clients; it returns once
	// the reports survive this node (queued in the broker). An error
	// leaves the check to be taken again. nil: checks are only cleared.
	Undelivered func(ctx context.Context, d broker.DueCheck) error
	// Logger receives broker errors; nil discards them.
	Logger *slog.Logger
	// Poll is how often due checks are looked for [250ms].
	Poll time.Duration
	// MaxWaiting bounds the deliveries waiting to be recorded; past it
	// they are dropped, and Dropped is called [16384].
	MaxWaiting int
	// Dropped, when set, is told of each delivery dropped unrecorded.
	Dropped func()
}

// Keeper records deliveries and works through due checks. Its methods
// are safe for concurrent use.
type Keeper struct {
	cfg     Config
	mu      sync.RWMutex // orders Delivered's sends with Stop's close
	stopped bool         // guarded by mu
	waiting chan delivery
	ctx     context.Context
	cancel  context.CancelFunc
	records sync.WaitGroup // the recorders, which end once waiting is drained
	checks  sync.WaitGroup // the due loop, which ends on cancel
}

// delivery is one message's recipients on this node, waiting to be
// recorded.
type delivery struct {
	channel string
	offset  broker.Offset
	at      time.Time
	clients []broker.ClientInfo
}

// Tunables of the loops.
const (
	recorders   = 4                // broker calls in flight at once
	dueBatch    = 64               // checks taken at once
	dueLease    = 30 * time.Second // a taken check's lease
	callTimeout = 10 * time.Second // one broker call
)

// New returns a Keeper; Start starts it.
func New(cfg Config) *Keeper {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Poll <= 0 {
		cfg.Poll = 250 * time.Millisecond
	}
	if cfg.MaxWaiting <= 0 {
		cfg.MaxWaiting = 16384
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Keeper{cfg: cfg, waiting: make(chan delivery, cfg.MaxWaiting), ctx: ctx, cancel: cancel}
}

// Store returns where the keeper keeps receipts (Config.Receipts).
func (k *Keeper) Store() broker.Receipts { return k.cfg.Receipts }

// Start starts recording and checking.
func (k *Keeper) Start() {
	k.records.Add(recorders)
	for range recorders {
		go k.recordLoop()
	}
	k.checks.Add(1)
	go k.dueLoop()
}

// Stop records what waits, within ctx, then stops the loops.
func (k *Keeper) Stop(ctx context.Context) {
	k.mu.Lock()
	if k.stopped {
		k.mu.Unlock()
		return
	}
	k.stopped = true
	close(k.waiting)
	k.mu.Unlock()
	recorded := make(chan struct{})
	go func() {
		k.records.Wait()
		close(recorded)
	}()
	select {
	case <-recorded:
	case <-ctx.Done():
	}
	k.cancel() // ends the due loop, and the recorders' broker calls
	<-recorded
	k.checks.Wait()
}

// Delivered is the hub's report of one message fanned out to clients on
// this node (hub.Config.Delivered). It never blocks: the record waits for
// a recorder, or is dropped (and counted, Config.Dropped) when too many
// wait.
func (k *Keeper) Delivered(m broker.Message, clients []broker.ClientInfo) {
	at := m.Time
	if at.IsZero() {
		at = time.Now()
	}
	k.mu.RLock()
	defer k.mu.RUnlock()
	if k.stopped {
		return
	}
	select {
	case k.waiting <- delivery{channel: m.Channel, offset: m.Offset, at: at, clients: clients}:
	default:
		// Counted, not logged: this runs on the fan-out path, when the
		// broker is already behind.
		if k.cfg.Dropped != nil {
			k.cfg.Dropped()
		}
	}
}

// recordLoop records waiting deliveries until Stop.
func (k *Keeper) recordLoop() {
	defer k.records.Done()
	for d := range k.waiting {
		timeout, keep := k.cfg.Rules(d.channel)
		ctx, cancel := context.WithTimeout(k.ctx, callTimeout)
		err := k.cfg.Receipts.Delivered(ctx, d.channel, d.offset, d.clients, d.at.Add(timeout), keep)
		cancel()
		if err != nil {
			k.cfg.Logger.Warn("receipts: record a delivery", "channel", d.channel, "offset", d.offset.String(), "err", err)
			if k.cfg.Dropped != nil {
				k.cfg.Dropped()
			}
		}
	}
}

// dueLoop works through due checks every Poll until Stop.
func (k *Keeper) dueLoop() {
	defer k.checks.Done()
	t := time.NewTicker(k.cfg.Poll)
	defer t.Stop()
	for {
		select {
		case <-k.ctx.Done():
			return
		case <-t.C:
		}
		for k.dueOnce() == dueBatch && k.ctx.Err() == nil {
		}
	}
}

// dueOnce takes one batch of due checks, reports their pending clients
// and clears them; it returns how many it took.
func (k *Keeper) dueOnce() int {
	ctx, cancel := context.WithTimeout(k.ctx, callTimeout)
	defer cancel()
	checks, err := k.cfg.Receipts.TakeDue(ctx, dueBatch, dueLease)
	if err != nil {
		if k.ctx.Err() == nil {
			k.cfg.Logger.Warn("receipts: take due checks", "err", err)
		}
		return 0
	}
	for _, d := range checks {
		if len(d.Pending) > 0 && k.cfg.Undelivered != nil {
			if err := k.cfg.Undelivered(ctx, d); err != nil {
				k.cfg.Logger.Warn("receipts: report undelivered", "channel", d.Channel, "offset", d.Offset.String(), "err", err)
				continue // taken again once its lease ends
			}
		}
		if err := k.cfg.Receipts.DoneDue(ctx, d); err != nil && !errors.Is(err, broker.ErrLeaseLost) {
			k.cfg.Logger.Warn("receipts: clear a due check", "channel", d.Channel, "offset", d.Offset.String(), "err", err)
		}
	}
	return len(checks)
}
