// Package hub keeps, for one herald node, which subscribers listen to which
// channel, and fans out what the broker delivers to them.
//
// A message flows Publish → broker → HandleMessage → Subscriber.Deliver.
// The hub encodes each delivery once per wire format (Delivery) and hands it
// to every subscriber without blocking; what a subscriber does with a full
// queue is its own policy.
//
// Lock order: channel.setup, then Hub.mu (acquire and release count a
// channel's subscribers under setup). channel.mu is never held together
// with Hub.mu. A subscriber's own locks (a session's queue) are taken
// under channel.mu, never the other way round. Broker calls are never made
// while holding Hub.mu or channel.mu, only channel.setup, which serialises
// a channel's broker Subscribe and Unsubscribe.
//
// Gaps: live delivery from a broker spanning several nodes can miss
// messages while the node is cut off from it. Each message names its
// predecessor (broker.Message.Prev); when one arrives whose predecessor
// this node never fanned out, or when the broker reports a reconnection,
// the channel is repaired: the missing messages are read from history and
// fanned out in order before anything that arrived meanwhile. Each
// subscriber also remembers where it started, so no message reaches it
// twice or from before its start. A broker that lost messages for good
// (history trimmed, or a new epoch) makes the hub tell the subscribers
// that missed them (Interruptible), so that their resume says so.
//
// Catch-up: a subscribe with since reads history a page at a time for a
// subscriber with a bounded queue (Paced); see catchup.go. Joins and
// leaves are coalesced per channel (presenceEvent).
package hub

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/internal/filter"
	"github.com/heraldhq/herald/internal/protocol"
	"github.com/heraldhq/herald/internal/tracing"
)

var _ broker.Handler = (*Hub)(nil)

// ErrAlreadySubscribed is returned by Subscribe for a subscriber that is
// subscribed to the channel already; it is a bad_request a client may see.
var ErrAlreadySubscribed = protocol.Errorf(protocol.CodeBadRequest, "already subscribed")

// Subscriber receives a channel's deliveries. Deliver must not block.
type Subscriber interface {
	Deliver(d *Delivery)
}

// Interruptible is a Subscriber that can be told it missed messages that
// the broker no longer holds (live delivery lost them while the broker
// was unreachable, and history was trimmed, was never kept, or went back
// to an older state), so that its client resumes and learns it did not
// recover. It must not block.
type Interruptible interface {
	Subscriber
	MissedMessages()
}

// ChannelOptions are the per-channel rules the hub applies.
type ChannelOptions struct {
	History broker.HistoryOptions
	// Presence keeps the channel's subscribers in the broker's presence
	// store; JoinLeave sends join and leave pushes.
	Presence  bool
	JoinLeave bool
	// Conflate marks the channel's pushes as conflatable: a subscriber
	// whose queue is full may drop a keyed message that a newer one of
	// the same key follows (wire.Payload.Conflate).
	Conflate bool
	// Receipts makes the hub report, for each message it fans out, the
	// subscribers that can acknowledge it (Config.Delivered).
	Receipts bool
}

// SubscribeOptions are one subscription's delivery options.
type SubscribeOptions struct {
	// Filter, when set, passes only the messages whose tags it matches:
	// live, in catch-up and after a repair.
	Filter Filter
	// Delta asks for Fossil deltas: a live message the subscription
	// follows its previous one with is sent as a delta against it when
	// that is smaller (Delivery.Delta).
	Delta bool
	// Acks marks a subscriber that can acknowledge messages (the JSON
	// protocol): in a channel with receipts, it is among the recipients
	// the hub reports (Config.Delivered).
	Acks bool
}

// Filter is a subscription's tag filter. Subscribers of a channel whose
// filters have the same Key share one evaluation per message.
type Filter interface {
	Match(tags map[string]string) bool
	Key() string
}

// Config configures a Hub.
type Config struct {
	// Broker is required.
	Broker broker.Broker
	// Options resolves a channel's rules; nil gives every channel the zero
	// ChannelOptions (no history, no presence).
	Options func(channel string) ChannelOptions
	// Logger receives broker errors the hub cannot return to anyone; nil
	// discards them.
	Logger *slog.Logger
	// PresenceRefresh is how often the hub records its subscribers in the
	// broker's presence store again, for stores whose entries expire so
	// that a crashed node's clients vanish. Zero: never.
	PresenceRefresh time.Duration
	// MaxMessageSize is the size of the largest message the hub expects,
	// in bytes: the first page of a catch-up is sized for messages this
	// large, later pages for the largest seen [65536].
	MaxMessageSize int
	// Tracer records a span for each publish and each traced message's
	// fan-out; nil: no tracing.
	Tracer *tracing.Tracer
	// Occupied, when set, is told when a channel gets its first subscriber
	// on this node (true) and loses its last (false), in that order per
	// channel. It must not block.
	Occupied func(channel string, occupied bool)
	// Delivered, when set, is told of each message fanned out live in a
	// channel with Receipts, with the subscribers it was handed to that
	// can acknowledge it (SubscribeOptions.Acks); never called with none.
	// It is called under the channel's lock: it must not block, and owns
	// clients.
	Delivered func(m broker.Message, clients []broker.ClientInfo)
	// Receipts keeps acknowledgements and answers who acknowledged what;
	// nil: no channel keeps receipts.
	Receipts broker.Receipts
}

// Hub is one node's channel table. Its methods are safe for concurrent use.
type Hub struct {
	broker    broker.Broker
	presence  broker.PresenceStore // nil when the broker keeps no presence
	options   func(string) ChannelOptions
	log       *slog.Logger
	tracer    *tracing.Tracer // nil: tracing off
	occupied  func(channel string, occupied bool)
	delivered func(m broker.Message, clients []broker.ClientInfo)
	receipts  broker.Receipts // nil: no channel keeps receipts

	mu       sync.RWMutex
	channels map[string]*channel

	refresh time.Duration
	stop    chan struct{}
	done    chan struct{}

	// Background work (repairs, catch-ups) runs under ctx, cancelled by
	// Stop, which waits for it.
	ctx     context.Context
	cancel  context.CancelFunc
	bgMu    sync.Mutex // orders starting background work with Stop
	stopped bool       // guarded by bgMu
	bgWork  sync.WaitGroup

	maxMessage int // Config.MaxMessageSize
}

type channel struct {
	name string
	refs int // subscribers, including those still subscribing; guarded by Hub.mu

	setup sync.Mutex // serialises broker Subscribe/Unsubscribe
	live  bool       // the broker delivers this channel to us; guarded by setup

	mu   sync.Mutex
	subs map[Subscriber]*entry
	// seen is the newest message fanned out; zero before the first.
	seen broker.Offset
	// While repairing, live messages wait in held (up to maxHeld; beyond
	// that they are dropped and overflow makes the repair read history
	// again, where they are).
	repairing bool
	held      []broker.Message
	overflow  bool
	// ended are epochs the channel moved past (the newest maxEnded):
	// a late copy of one of their messages is stale and not delivered.
	ended []string

	// Delivery options (see fanOutLocked), guarded by mu: the distinct
	// filters of the subscribers, by key; the subscribers that asked for
	// deltas, and, while there are any, the previous message fanned out,
	// which the next one's delta is made against.
	filters  map[string]*sharedFilter
	fanOuts  uint64 // messages fanned out: a sharedFilter's result is for one
	deltas   int
	prev     broker.Offset
	prevData []byte
	opts     ChannelOptions // the channel's rules, read when it was made

	// Joins and leaves, coalesced (see presenceEvent). Guarded by mu.
	presNext  time.Time        // until then, joins and leaves wait in presQueue
	presQueue []*PresenceEvent // waiting, in order; nil where one was cancelled
	presIndex map[string]int   // client id → its event's index in presQueue
	presTimer *time.Timer      // flushes presQueue at presNext; nil when idle
}

// maxHeld bounds the live messages a channel holds while it is repaired.
const maxHeld = 4096

// maxEnded bounds the ended epochs a channel remembers.
const maxEnded = 8

// endLocked records that the channel moved past epoch.
func (ch *channel) endLocked(epoch string) {
	if epoch == "" || ch.endedLocked(epoch) {
		return
	}
	if len(ch.ended) >= maxEnded {
		ch.ended = ch.ended[1:]
	}
	ch.ended = append(ch.ended, epoch)
}

// endedLocked reports whether the channel moved past epoch.
func (ch *channel) endedLocked(epoch string) bool {
	return slices.Contains(ch.ended, epoch)
}

// entry is one subscriber's state in a channel. from is the offset it
// started after: it never gets a message up to it. cu is set while it
// catches up from history (see catchup.go). filter is its shared filter
// (nil: every message). last is set for a subscriber that asked for
// deltas only (a channel holds an entry per subscriber, and few ask): the
// newest message handed to it.
type entry struct {
	info   *broker.ClientInfo // the subscriber's, which does not change while it is subscribed
	from   broker.Offset
	cu     *catchup
	filter *sharedFilter
	last   *broker.Offset
	acks   bool
}

// delta reports whether the subscriber asked for deltas.
func (e *entry) delta() bool { return e.last != nil }

// handed records that m was handed to the subscriber.
func (e *entry) handed(m broker.Message) {
	if e.last != nil {
		*e.last = m.Offset
	}
}

// passes reports whether the entry's filter lets m through, evaluating it
// on its own (catch-up, where messages go to one subscriber).
func (e *entry) passes(m broker.Message) bool {
	return e.filter == nil || e.filter.f.Match(m.Tags)
}

// sharedFilter is one distinct filter of a channel's subscribers: it is
// evaluated once per message fanned out, for all of them.
type sharedFilter struct {
	f    Filter
	refs int
	gen  uint64 // the fan-out whose result match holds
	pass bool
}

// match reports whether the message of fan-out gen passes the filter.
func (sf *sharedFilter) match(gen uint64, tags map[string]string) bool {
	if sf.gen != gen {
		sf.gen, sf.pass = gen, sf.f.Match(tags)
	}
	return sf.pass
}

// addOptionsLocked applies a new subscription's options to its entry.
func (ch *channel) addOptionsLocked(e *entry, o SubscribeOptions) {
	if o.Filter != nil {
		k := o.Filter.Key()
		sf := ch.filters[k]
		if sf == nil {
			if ch.filters == nil {
				ch.filters = make(map[string]*sharedFilter)
			}
			sf = &sharedFilter{f: o.Filter}
			ch.filters[k] = sf
		}
		sf.refs++
		e.filter = sf
	}
	if o.Delta {
		e.last = new(broker.Offset)
		ch.deltas++
	}
	e.acks = o.Acks
}

// dropOptionsLocked undoes addOptionsLocked for an entry that leaves.
func (ch *channel) dropOptionsLocked(e *entry) {
	if sf := e.filter; sf != nil {
		if sf.refs--; sf.refs == 0 {
			delete(ch.filters, sf.f.Key())
		}
	}
	if e.delta() {
		if ch.deltas--; ch.deltas == 0 {
			ch.prev, ch.prevData = broker.Offset{}, nil
		}
	}
}

// New returns a hub over cfg.Broker; call Start before use.
func New(cfg Config) *Hub {
	ctx, cancel := context.WithCancel(context.Background())
	h := &Hub{
		ctx:       ctx,
		cancel:    cancel,
		broker:    cfg.Broker,
		options:   cfg.Options,
		log:       cfg.Logger,
		channels:  make(map[string]*channel),
		refresh:   cfg.PresenceRefresh,
		tracer:    cfg.Tracer,
		occupied:  cfg.Occupied,
		delivered: cfg.Delivered,
		receipts:  cfg.Receipts,
		stop:      make(chan struct{}),
		done:      make(chan struct{}),

		maxMessage: cfg.MaxMessageSize,
	}
	if h.maxMessage <= 0 {
		h.maxMessage = 65536
	}
	if h.options == nil {
		h.options = func(string) ChannelOptions { return ChannelOptions{} }
	}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	h.presence, _ = cfg.Broker.(broker.PresenceStore)
	return h
}

// Start starts the broker with the hub as its Handler.
func (h *Hub) Start(ctx context.Context) error {
	if err := h.broker.Start(ctx, h); err != nil {
		return fmt.Errorf("hub: start broker: %w", err)
	}
	go h.refreshPresence()
	return nil
}

// Stop ends the hub's background work, repairs included; call it before
// closing the broker.
func (h *Hub) Stop() {
	select {
	case <-h.stop:
		return
	default:
	}
	close(h.stop)
	<-h.done
	h.bgMu.Lock()
	h.stopped = true
	h.bgMu.Unlock()
	h.cancel()
	h.bgWork.Wait()
}

// background runs f on a goroutine of its own that Stop waits for; after
// Stop it does nothing and reports false.
func (h *Hub) background(f func()) bool {
	h.bgMu.Lock()
	defer h.bgMu.Unlock()
	if h.stopped {
		return false
	}
	h.bgWork.Add(1)
	go func() {
		defer h.bgWork.Done()
		f()
	}()
	return true
}

// refreshPresence records every subscriber in presence again, every
// PresenceRefresh, until Stop.
func (h *Hub) refreshPresence() {
	defer close(h.done)
	if h.refresh <= 0 || h.presence == nil {
		<-h.stop
		return
	}
	t := time.NewTicker(h.refresh)
	defer t.Stop()
	for {
		select {
		case <-h.stop:
			return
		case <-t.C:
			h.refreshPresenceOnce()
		}
	}
}

func (h *Hub) refreshPresenceOnce() {
	chs := h.snapshot()
	for _, ch := range chs {
		if !h.options(ch.name).Presence {
			continue
		}
		ch.mu.Lock()
		infos := make([]broker.ClientInfo, 0, len(ch.subs))
		for _, e := range ch.subs {
			if e.cu == nil {
				infos = append(infos, *e.info)
			}
		}
		ch.mu.Unlock()
		for _, info := range infos {
			ctx, cancel := context.WithTimeout(context.Background(), h.refresh)
			err := h.presence.AddPresence(ctx, ch.name, info)
			cancel()
			if err != nil {
				h.log.Warn("refresh presence", "channel", ch.name, "err", err)
				break
			}
		}
	}
}

// SubscribeResult tells a subscriber where it starts.
type SubscribeResult struct {
	// Latest is the channel's newest offset when the subscription began.
	Latest broker.Offset
	// Recovered is true when every message after the requested since was
	// still in history (always true without since).
	Recovered bool
}

// Subscribe adds sub to channel. Without since, sub gets the messages
// published after Latest. With since, it first gets every message after
// since that history holds, then live ones, with no gap and no duplicate.
// ready is called exactly once on success, before anything is delivered to
// sub for this channel, so a reply queued there precedes the messages.
// info is the subscriber's: the hub keeps the pointer, not a copy (a
// server may hold a subscription per idle connection), so *info must not
// change until sub is unsubscribed.
func (h *Hub) Subscribe(ctx context.Context, sub Subscriber, info *broker.ClientInfo, name string, since *broker.Offset, ready func(SubscribeResult)) error {
	return h.SubscribeWith(ctx, sub, info, name, since, SubscribeOptions{}, ready)
}

// SubscribeWith is Subscribe with delivery options.
func (h *Hub) SubscribeWith(ctx context.Context, sub Subscriber, info *broker.ClientInfo, name string, since *broker.Offset, so SubscribeOptions, ready func(SubscribeResult)) error {
	ch, err := h.acquire(ctx, name)
	if err != nil {
		return err
	}
	ch.mu.Lock()
	if _, dup := ch.subs[sub]; dup {
		ch.mu.Unlock()
		h.release(name, ch)
		return ErrAlreadySubscribed
	}
	e := &entry{info: info, cu: h.newCatchup()}
	ch.subs[sub] = e
	ch.addOptionsLocked(e, so)
	ch.mu.Unlock()

	first, page, err := h.firstPage(ctx, sub, name, since)
	pageDone := func() { // the first page is queued: the next may be read
		if page.reserved {
			page.reserved = false
			sub.(Paced).PageDone()
		}
	}
	defer pageDone()
	if err != nil {
		ch.mu.Lock()
		delete(ch.subs, sub)
		ch.dropOptionsLocked(e)
		e.cu.abandonLocked(sub)
		ch.mu.Unlock()
		h.release(name, ch)
		return fmt.Errorf("hub: read history of %q: %w", name, err)
	}

	// In presence before the reply goes out: a client that asks who is
	// there after its subscribe reply finds itself.
	opts := h.options(name)
	if opts.Presence && h.presence != nil {
		if err := h.presence.AddPresence(ctx, name, *info); err != nil {
			h.log.Warn("add presence", "channel", name, "err", err)
		}
	}

	ch.mu.Lock()
	if since != nil && first.Latest.Epoch != "" && first.Latest.Epoch != since.Epoch {
		ch.endLocked(since.Epoch) // history moved on to another epoch
	}
	recovered := since == nil || first.Complete
	ready(SubscribeResult{Latest: first.Latest, Recovered: recovered})
	// Where the subscriber stands: at Latest when there is nothing to
	// read, else after the last message it was given, or where the
	// background catch-up starts.
	last, largest := first.Latest, h.maxMessage // until a page shows their size
	if page.more {
		last = page.start
	}
	if len(page.Messages) > 0 {
		last, largest = e.deliverReplay(sub, page.Messages)
	}
	pageDone()
	if page.more || e.cu.overflow {
		// More history to read, or live messages dropped while the page
		// was read (history has them): read on in the background.
		e.cu.overflow = false
		e.cu.unrecovered = !recovered && len(page.Messages) == 0
		ch.mu.Unlock()
		if !h.background(func() { h.catchUp(ch, sub, e, last, largest) }) {
			ch.mu.Lock()
			e.cu.abandonLocked(sub)
			ch.mu.Unlock()
		}
	} else {
		e.finishLocked(ch, sub, last)
		ch.mu.Unlock()
	}

	if opts.JoinLeave {
		if err := h.broker.PublishJoin(ctx, name, bare(*info)); err != nil {
			h.log.Warn("publish join", "channel", name, "err", err)
		}
	}
	return nil
}

// Unsubscribe removes sub from channel; it is a no-op when sub is not
// subscribed.
func (h *Hub) Unsubscribe(ctx context.Context, sub Subscriber, info broker.ClientInfo, name string) {
	h.mu.Lock()
	ch := h.channels[name]
	h.mu.Unlock()
	if ch == nil {
		return
	}
	ch.mu.Lock()
	e, ok := ch.subs[sub]
	delete(ch.subs, sub)
	if ok {
		ch.dropOptionsLocked(e)
		if e.cu != nil {
			e.cu.abandonLocked(sub)
		}
	}
	ch.mu.Unlock()
	if !ok {
		return
	}
	opts := h.options(name)
	if opts.Presence && h.presence != nil {
		if err := h.presence.RemovePresence(ctx, name, info); err != nil {
			h.log.Warn("remove presence", "channel", name, "err", err)
		}
	}
	if opts.JoinLeave {
		if err := h.broker.PublishLeave(ctx, name, bare(info)); err != nil {
			h.log.Warn("publish leave", "channel", name, "err", err)
		}
	}
	h.release(name, ch)
}

// acquire counts one more subscriber of name and makes sure the broker
// delivers it to this node.
func (h *Hub) acquire(ctx context.Context, name string) (*channel, error) {
	h.mu.Lock()
	ch := h.channels[name]
	if ch == nil {
		ch = &channel{name: name, subs: make(map[Subscriber]*entry), opts: h.options(name)}
		h.channels[name] = ch
	}
	ch.refs++
	h.mu.Unlock()

	ch.setup.Lock()
	defer ch.setup.Unlock()
	if !ch.live {
		if err := h.broker.Subscribe(ctx, name); err != nil {
			h.mu.Lock()
			ch.refs--
			h.dropIfUnusedLocked(ch)
			h.mu.Unlock()
			return nil, fmt.Errorf("hub: subscribe broker to %q: %w", name, err)
		}
		ch.live = true
		if h.occupied != nil {
			h.occupied(name, true)
		}
	}
	return ch, nil
}

// release counts one subscriber less and, for the last one, unsubscribes
// the broker and forgets the channel.
func (h *Hub) release(name string, ch *channel) {
	h.mu.Lock()
	ch.refs--
	last := ch.refs == 0
	h.mu.Unlock()
	if !last {
		return
	}
	ch.setup.Lock()
	defer ch.setup.Unlock()
	h.mu.Lock()
	still := ch.refs == 0
	h.mu.Unlock()
	if still && ch.live {
		// Bounded: unsubscribing is cleanup nobody waits for, but it holds
		// the channel's setup, which the next subscriber needs.
		ctx, cancel := context.WithTimeout(context.Background(), repairTimeout)
		if err := h.broker.Unsubscribe(ctx, name); err != nil {
			h.log.Warn("unsubscribe broker", "channel", name, "err", err)
		}
		cancel()
		ch.live = false
		if h.occupied != nil {
			h.occupied(name, false)
		}
	}
	h.mu.Lock()
	h.dropIfUnusedLocked(ch)
	h.mu.Unlock()
}

func (h *Hub) dropIfUnusedLocked(ch *channel) {
	if ch.refs == 0 && !ch.live && h.channels[ch.name] == ch {
		delete(h.channels, ch.name)
	}
}

// Publish publishes p to channel with the channel's history options and
// returns the offset the broker assigned. Tags or a key over the
// contract's limits are a bad_request, whoever publishes.
func (h *Hub) Publish(ctx context.Context, name string, p broker.Publication) (broker.Offset, error) {
	if err := filter.ValidateTags(p.Tags); err != nil {
		return broker.Offset{}, err
	}
	if err := filter.ValidateKey(p.Key); err != nil {
		return broker.Offset{}, err
	}
	if h.tracer != nil {
		return h.publishTraced(ctx, name, p)
	}
	off, err := h.broker.Publish(ctx, name, p, h.options(name).History)
	if err != nil {
		return broker.Offset{}, fmt.Errorf("hub: publish to %q: %w", name, err)
	}
	return off, nil
}

// publishTraced is Publish with a publish span, whose traceparent the
// message carries to every node's fan-out.
func (h *Hub) publishTraced(ctx context.Context, name string, p broker.Publication) (broker.Offset, error) {
	span, traceparent := h.tracer.StartPublish(ctx, name, p)
	p.Trace = traceparent
	off, err := h.broker.Publish(ctx, name, p, h.options(name).History)
	span.End(off, err)
	if err != nil {
		return broker.Offset{}, fmt.Errorf("hub: publish to %q: %w", name, err)
	}
	return off, nil
}

// FilteredHistory reads channel's history as History does, keeping only
// the messages f passes (nil: all); q.Limit then counts those: the
// newest Limit without q.Since, the oldest after it otherwise.
func (h *Hub) FilteredHistory(ctx context.Context, name string, q broker.HistoryQuery, f Filter) (broker.HistoryResult, error) {
	if f == nil {
		return h.History(ctx, name, q)
	}
	limit := q.Limit
	q.Limit = -1 // history is bounded per channel: read it whole, then filter
	res, err := h.History(ctx, name, q)
	if err != nil {
		return res, err
	}
	kept := res.Messages[:0]
	for _, m := range res.Messages {
		if f.Match(m.Tags) {
			kept = append(kept, m)
		}
	}
	if limit >= 0 && len(kept) > limit {
		if q.Since.IsZero() {
			kept = kept[len(kept)-limit:]
		} else {
			kept = kept[:limit]
		}
	}
	res.Messages = kept
	return res, nil
}

// Ack records that c acknowledged channel's messages up to off, where
// the channel keeps receipts and the broker can keep them; elsewhere it
// does nothing.
func (h *Hub) Ack(ctx context.Context, name string, c broker.ClientInfo, off broker.Offset) error {
	opts := h.options(name)
	if !opts.Receipts || h.receipts == nil {
		return nil
	}
	if err := h.receipts.Acked(ctx, name, bare(c), off, ReceiptKeep(opts.History)); err != nil {
		return fmt.Errorf("hub: record ack of %q: %w", name, err)
	}
	return nil
}

// ReceiptKeep is how long a channel's receipts are kept: as long as its
// history keeps a message, or a day where only its size bounds history.
func ReceiptKeep(history broker.HistoryOptions) time.Duration {
	if history.TTL > 0 {
		return history.TTL
	}
	return 24 * time.Hour
}

// Receipts answers who off of channel was delivered to live, on every
// node, and who of them acknowledged it. It is a not_found error where
// the channel keeps no receipts, or history no longer holds off.
func (h *Hub) Receipts(ctx context.Context, name string, off broker.Offset) (broker.ReceiptState, error) {
	if !h.options(name).Receipts || h.receipts == nil {
		return broker.ReceiptState{}, protocol.Errorf(protocol.CodeNotFound, "channel "+name+" keeps no receipts: turn them on in its namespace")
	}
	res, err := h.History(ctx, name, broker.HistoryQuery{Since: broker.Offset{Epoch: off.Epoch, Seq: off.Seq - 1}, Limit: 1})
	if err != nil {
		return broker.ReceiptState{}, err
	}
	if !res.Complete || len(res.Messages) == 0 || res.Messages[0].Offset != off {
		return broker.ReceiptState{}, protocol.Errorf(protocol.CodeNotFound, "history no longer holds "+off.String())
	}
	st, _, err := h.receipts.Receipts(ctx, name, off)
	if err != nil {
		return st, fmt.Errorf("hub: read receipts of %q: %w", name, err)
	}
	return st, nil
}

// Rules returns the rules the hub applies to channel.
func (h *Hub) Rules(name string) ChannelOptions { return h.options(name) }

// History reads channel's history.
func (h *Hub) History(ctx context.Context, name string, q broker.HistoryQuery) (broker.HistoryResult, error) {
	res, err := h.broker.History(ctx, name, q)
	if err != nil {
		return res, fmt.Errorf("hub: read history of %q: %w", name, err)
	}
	return res, nil
}

// bare is c without its info: joins and leaves name the client and user
// only, so brokers need not carry the info to every node.
func bare(c broker.ClientInfo) broker.ClientInfo {
	c.Info = nil
	return c
}

// Presence lists channel's subscribers across the cluster; it returns an
// empty list for channels whose namespace keeps no presence.
func (h *Hub) Presence(ctx context.Context, name string) ([]broker.ClientInfo, error) {
	if h.presence == nil || !h.options(name).Presence {
		return []broker.ClientInfo{}, nil
	}
	cs, err := h.presence.Presence(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("hub: read presence of %q: %w", name, err)
	}
	sort.Slice(cs, func(i, j int) bool { return cs[i].Client < cs[j].Client })
	return cs, nil
}

// ChannelCount is a channel and its subscribers on this node.
type ChannelCount struct {
	Channel     string
	Subscribers int
}

// Channels lists the channels with subscribers on this node, by name.
func (h *Hub) Channels() []ChannelCount {
	chs := h.snapshot()
	out := make([]ChannelCount, 0, len(chs))
	for _, ch := range chs {
		ch.mu.Lock()
		n := len(ch.subs)
		ch.mu.Unlock()
		if n > 0 {
			out = append(out, ChannelCount{Channel: ch.name, Subscribers: n})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Channel < out[j].Channel })
	return out
}

// HandleMessage fans m out to the channel's subscribers; called by the
// broker.
func (h *Hub) HandleMessage(m broker.Message) {
	ch := h.lookup(m.Channel)
	if ch == nil {
		return
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	switch {
	case ch.repairing:
		ch.holdLocked(m)
	case ch.seen.IsZero():
		ch.fanOutLocked(m, h.tracer, h.delivered)
	case m.Offset.Epoch != ch.seen.Epoch:
		if m.Prev == 0 || ch.endedLocked(m.Offset.Epoch) {
			ch.fanOutLocked(m, h.tracer, h.delivered) // a new epoch from its start, or a late copy
			return
		}
		// A new epoch whose first messages never arrived: read them back,
		// and tell those who started in the old epoch that its end may
		// be lost (repair does).
		h.log.Info("new epoch joined after its start, repairing from history",
			"channel", m.Channel, "after", ch.seen.String(), "before", m.Offset.String())
		ch.holdLocked(m)
		h.repairLocked(ch, ch.seen)
	case m.Offset.Seq <= ch.seen.Seq:
		// A late copy of a message a repair already fanned out.
	case m.Prev > ch.seen.Seq:
		// Messages between seen and m never arrived.
		h.log.Info("gap in live delivery, repairing from history",
			"channel", m.Channel, "after", ch.seen.String(), "before", m.Offset.String())
		ch.holdLocked(m)
		h.repairLocked(ch, ch.seen)
	default:
		ch.fanOutLocked(m, h.tracer, h.delivered)
	}
}

// missedEnd reports whether a node that fanned out up to seen missed
// messages of the epoch that ended, lost, at ended (Message.Ended): it
// saw less of that epoch, or was in another.
func missedEnd(seen, ended broker.Offset) bool {
	if ended.IsZero() {
		return false
	}
	return seen.Epoch != ended.Epoch || seen.Seq < ended.Seq
}

// HandleReconnect repairs every channel from the newest message it fanned
// out, or, before the first, from where its subscribers started; called by
// the broker after an outage.
func (h *Hub) HandleReconnect() {
	chs := h.snapshot()
	for _, ch := range chs {
		ch.mu.Lock()
		if !ch.repairing {
			from, ok := ch.seen, true
			if from.IsZero() {
				from, ok = ch.earliestStartLocked()
			}
			if ok {
				h.repairLocked(ch, from)
			}
		}
		ch.mu.Unlock()
	}
}

// earliestStartLocked returns the oldest offset a subscriber of ch started
// after, and false when ch has no subscriber past catching up.
func (ch *channel) earliestStartLocked() (broker.Offset, bool) {
	var from broker.Offset
	found := false
	for _, e := range ch.subs {
		switch {
		case e.cu != nil:
		case !found:
			from, found = e.from, true
		case e.from.Epoch != from.Epoch:
			return broker.Offset{}, true // several epochs: read all history
		case e.from.Seq < from.Seq:
			from = e.from
		}
	}
	return from, found
}

// fanOutLocked hands m to every subscriber that has not had it and whose
// filter passes it; a message of an epoch the channel moved past is a
// late copy and goes nowhere. Each distinct filter is evaluated once, and
// a delta is made once, for the subscribers that asked for deltas and
// had the previous message. A traced message's fan-out span (tr's)
// follows its payloads to the last write. In a channel with receipts,
// delivered is told who got it.
func (ch *channel) fanOutLocked(m broker.Message, tr *tracing.Tracer, delivered func(broker.Message, []broker.ClientInfo)) {
	if m.Offset.Epoch != ch.seen.Epoch {
		if ch.endedLocked(m.Offset.Epoch) {
			return
		}
		if m.Prev == 0 && !ch.seen.IsZero() && missedEnd(ch.seen, m.Ended) {
			// The broker lost the end of the epoch this node was in, and
			// the node that started this one had seen more of it: those
			// messages were acknowledged, and no history holds them. Here,
			// not in HandleMessage, so that a message held during a
			// repair is checked too.
			ch.tellMissedLocked(ch.seen, m.Offset)
		}
		ch.endLocked(ch.seen.Epoch)
	}
	ch.fanOuts++
	d := &Delivery{Message: m, trace: tr.StartFanOut(m), conflate: ch.opts.Conflate}
	var (
		delta      *Delivery // d as a delta, made for the first subscriber that can take one
		recipients []broker.ClientInfo
	)
	receipts := ch.opts.Receipts && delivered != nil
	if receipts {
		recipients = make([]broker.ClientInfo, 0, len(ch.subs))
	}
	handed := 0
	for sub, e := range ch.subs {
		switch {
		case e.filter != nil && !e.filter.match(ch.fanOuts, m.Tags):
			// Not for this subscriber, live or in its catch-up.
			continue
		case e.cu != nil:
			e.cu.bufferLocked(sub, m)
			continue
		case m.Offset.Epoch == e.from.Epoch && m.Offset.Seq <= e.from.Seq:
			// From before the subscriber's start: it has it, or asked not to.
			continue
		case e.delta() && ch.prevData != nil && *e.last == ch.prev && !m.Binary:
			if delta == nil {
				delta = d.deltaFrom(ch.prevData)
			}
			sub.Deliver(delta)
		default:
			sub.Deliver(d)
		}
		e.handed(m)
		handed++
		if receipts && e.acks {
			recipients = append(recipients, bare(*e.info))
		}
	}
	if d.trace != nil {
		d.trace.Dispatched(handed)
	}
	ch.seen = m.Offset
	if ch.deltas > 0 {
		ch.prev, ch.prevData = m.Offset, m.Data
		if m.Binary {
			ch.prevData = nil
		}
	}
	if len(recipients) > 0 {
		delivered(m, recipients)
	}
}

// holdLocked keeps a live message until the repair in progress ends.
func (ch *channel) holdLocked(m broker.Message) {
	if len(ch.held) >= maxHeld {
		ch.held, ch.overflow = nil, true
	}
	if !ch.overflow {
		ch.held = append(ch.held, m)
	}
}

// repairLocked starts reading ch's history after from, in the background.
func (h *Hub) repairLocked(ch *channel, from broker.Offset) {
	ch.repairing = h.background(func() { h.repair(ch, from) })
}

// repair fans out the messages of ch's history after from that this node
// has not fanned out, then those held meanwhile, retrying while the broker
// is unavailable, until Stop.
func (h *Hub) repair(ch *channel, from broker.Offset) {
	wait := 50 * time.Millisecond
	for {
		ctx, cancel := context.WithTimeout(h.ctx, repairTimeout)
		res, err := h.broker.History(ctx, ch.name, broker.HistoryQuery{Since: from, Limit: -1})
		cancel()
		if err != nil {
			h.log.Warn("repair: read history", "channel", ch.name, "err", err)
			select {
			case <-h.stop:
				return
			case <-time.After(wait):
			}
			wait = min(2*wait, 2*time.Second)
			continue
		}
		ch.mu.Lock()
		if !res.Complete {
			h.log.Warn("repair: history no longer holds every missed message; subscribers told",
				"channel", ch.name, "after", from.String())
			ch.tellMissedLocked(from, res.Latest)
		}
		if res.Latest.Epoch != "" && res.Latest.Epoch != from.Epoch {
			ch.endLocked(from.Epoch) // held copies of its messages are stale
		}
		held := ch.held
		ch.held = nil
		for _, m := range append(res.Messages, held...) {
			if ch.seen.IsZero() || m.Offset.Epoch != ch.seen.Epoch || m.Offset.Seq > ch.seen.Seq {
				ch.fanOutLocked(m, h.tracer, h.delivered)
			}
		}
		if ch.overflow {
			ch.overflow, from = false, ch.seen
			ch.mu.Unlock()
			continue
		}
		ch.repairing = false
		ch.mu.Unlock()
		return
	}
}

// tellMissedLocked tells ch's subscribers that messages after from are
// gone for good, except those that started in latest's epoch when it is
// a new one: their catch-up read the new epoch from its history, and the
// old epoch's end is nothing they asked for. A subscriber still catching
// up is told when its catch-up ends (its buffered live messages may be
// among the lost ones).
func (ch *channel) tellMissedLocked(from, latest broker.Offset) {
	for sub, e := range ch.subs {
		switch {
		case e.cu != nil:
			e.cu.missed = true
		case latest.Epoch != from.Epoch && e.from.Epoch == latest.Epoch && !e.from.IsZero():
		default:
			if s, ok := sub.(Interruptible); ok {
				s.MissedMessages()
			}
		}
	}
}

// repairTimeout bounds one history read of a repair.
const repairTimeout = 10 * time.Second

// HandleJoin fans a join out; called by the broker.
func (h *Hub) HandleJoin(name string, c broker.ClientInfo) { h.presenceEvent("join", name, c) }

// HandleLeave fans a leave out; called by the broker.
func (h *Hub) HandleLeave(name string, c broker.ClientInfo) { h.presenceEvent("leave", name, c) }

// Join and leave coalescing: after a join or leave is pushed to a
// channel's subscribers, the channel's next ones wait presenceWindow and
// go out together, at most maxPresenceFlush at a time; a join and a leave
// of the same client that wait together cancel out. So one client that
// subscribes and unsubscribes in a loop costs the others at most one
// push per window, and a burst of many clients reaches each subscriber
// in batches it can take, instead of closing it as a slow consumer.
const (
	presenceWindow   = 100 * time.Millisecond
	maxPresenceFlush = 64
)

func (h *Hub) presenceEvent(op, name string, c broker.ClientInfo) {
	ch := h.lookup(name)
	if ch == nil {
		return
	}
	ev := &PresenceEvent{Op: op, Channel: name, Client: c}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	now := time.Now()
	if len(ch.presIndex) == 0 && !now.Before(ch.presNext) {
		ch.pushPresenceLocked(ev)
		ch.presNext = now.Add(presenceWindow)
		return
	}
	ch.queuePresenceLocked(ev)
	if ch.presTimer == nil {
		ch.presTimer = time.AfterFunc(time.Until(ch.presNext), func() { h.flushPresence(ch) })
	}
}

// queuePresenceLocked adds ev to the waiting joins and leaves, cancelling
// the opposite event of the same client (a client's joins and leaves
// alternate, so the pair changes nothing anyone was told).
func (ch *channel) queuePresenceLocked(ev *PresenceEvent) {
	if ch.presIndex == nil {
		ch.presIndex = make(map[string]int)
	}
	if i, ok := ch.presIndex[ev.Client.Client]; ok {
		if ch.presQueue[i].Op != ev.Op {
			ch.presQueue[i] = nil
			delete(ch.presIndex, ev.Client.Client)
		}
		return
	}
	ch.presIndex[ev.Client.Client] = len(ch.presQueue)
	ch.presQueue = append(ch.presQueue, ev)
}

// flushPresence pushes the oldest waiting joins and leaves, and schedules
// the rest for the next window.
func (h *Hub) flushPresence(ch *channel) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	ch.presTimer = nil
	if h.ctx.Err() != nil {
		return // stopped: nobody is told anything any more
	}
	sent := 0
	rest := ch.presQueue[:0]
	for _, ev := range ch.presQueue {
		switch {
		case ev == nil:
		case sent < maxPresenceFlush:
			ch.pushPresenceLocked(ev)
			delete(ch.presIndex, ev.Client.Client)
			sent++
		default:
			ch.presIndex[ev.Client.Client] = len(rest)
			rest = append(rest, ev)
		}
	}
	clear(ch.presQueue[len(rest):])
	ch.presQueue = rest
	ch.presNext = time.Now().Add(presenceWindow)
	if len(rest) > 0 {
		ch.presTimer = time.AfterFunc(presenceWindow, func() { h.flushPresence(ch) })
	} else {
		ch.presQueue, ch.presIndex = nil, nil
	}
}

// pushPresenceLocked hands a join or leave to every subscriber past its
// catch-up.
func (ch *channel) pushPresenceLocked(ev *PresenceEvent) {
	d := &Delivery{Presence: ev}
	for sub, e := range ch.subs {
		if e.cu == nil {
			sub.Deliver(d)
		}
	}
}

// snapshot lists the channels this node serves now.
func (h *Hub) snapshot() []*channel {
	h.mu.RLock()
	defer h.mu.RUnlock()
	chs := make([]*channel, 0, len(h.channels))
	for _, ch := range h.channels {
		chs = append(chs, ch)
	}
	return chs
}

func (h *Hub) lookup(name string) *channel {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.channels[name]
}
