// Package memory is herald's single-node broker: history, offsets and
// presence live in this process and are lost when it exits.
//
// Publish calls the Handler inline, under the channel's lock, so a channel's
// messages reach the hub in offset order with no goroutine in between.
//
// All channels' history shares one budget (Config.MaxHistoryBytes). Once
// it is spent, the channels published to least recently lose their
// history and start a new epoch, so a resume from one of their offsets
// reads as not recovered.
package memory

import (
	"container/list"
	"context"
	"encoding/json"
	"errors"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldhq/herald/broker"
)

var (
	_ broker.Broker        = (*Broker)(nil)
	_ broker.PresenceStore = (*Broker)(nil)
)

// sweepInterval is how often idle channels with no history left are dropped.
const sweepInterval = time.Minute

// DefaultMaxHistoryBytes is the history budget of a Broker made by New: a
// small machine's share for history.
const DefaultMaxHistoryBytes = 64 << 20

// Config configures a Broker.
type Config struct {
	// MaxHistoryBytes bounds the history all channels keep together,
	// counted as the bytes of each message's data, event, user, client,
	// trace, tags and key, plus a fixed overhead per message and an
	// estimate of what its tags' map costs. When a publish takes it past the
	// bound, the channels published to least recently lose their history
	// and start a new epoch. Zero means DefaultMaxHistoryBytes; negative
	// means no bound.
	MaxHistoryBytes int64
}

// Broker is the in-memory broker. The zero value is not usable; call New.
type Broker struct {
	now      func() time.Time
	maxBytes int64 // ≤ 0: no bound

	used      atomic.Int64 // history bytes of all channels
	evictions atomic.Int64

	mu       sync.Mutex // guards channels, peak, lru, handler, closed; taken before channel.mu
	channels map[string]*channel
	peak     int       // most entries channels held since it was made (see shrinkLocked)
	lru      list.List // of *channel with history; front: published to most recently
	handler  broker.Handler
	closed   bool
	stop     chan struct{}
	done     chan struct{}

	queues    queues    // the work queues (broker.Queue)
	registry  registry  // what each node holds (broker.Registry)
	occupancy occupancy // which nodes have subscribers of a channel (broker.Occupancy)
	receipts  receipts  // deliveries, acknowledgements and due checks (broker.Receipts)
}

type channel struct {
	name string
	lru  *list.Element // in Broker.lru; guarded by Broker.mu

	mu         sync.Mutex
	epoch      string
	seq        uint64
	history    []broker.Message // oldest first
	ttl        time.Duration    // from the latest Publish; 0 keeps messages until pushed out
	subscribed bool
	presence   map[string]present // by client id
	gone       bool               // dropped from Broker.channels: look the name up again
}

// present is a client's presence in a channel, its id being the map's
// key. A channel holds one per subscriber, so it keeps less than a
// broker.ClientInfo: no second copy of the id, and the info, which few
// connections have, behind a pointer.
type present struct {
	user      string
	transport string
	info      *json.RawMessage // nil for none
}

// newPresent returns c's presence.
func newPresent(c broker.ClientInfo) present {
	p := present{user: c.User, transport: c.Transport}
	if c.Info != nil {
		info := c.Info
		p.info = &info
	}
	return p
}

// clientInfo returns the ClientInfo of the client id present as p.
func (p present) clientInfo(id string) broker.ClientInfo {
	c := broker.ClientInfo{Client: id, User: p.user, Transport: p.transport}
	if p.info != nil {
		c.Info = *p.info
	}
	return c
}

// New returns an in-memory broker with the default history budget.
func New() *Broker {
	b, _ := NewWithConfig(Config{})
	return b
}

// NewWithConfig returns an in-memory broker configured by cfg.
func NewWithConfig(cfg Config) (*Broker, error) {
	switch {
	case cfg.MaxHistoryBytes == 0:
		cfg.MaxHistoryBytes = DefaultMaxHistoryBytes
	case cfg.MaxHistoryBytes < 0:
		cfg.MaxHistoryBytes = 0
	}
	return &Broker{
		now:      time.Now,
		maxBytes: cfg.MaxHistoryBytes,
		channels: make(map[string]*channel),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}, nil
}

// HistoryBytes returns what the history of all channels counts against
// Config.MaxHistoryBytes now.
func (b *Broker) HistoryBytes() int64 { return b.used.Load() }

// Evictions returns how many times a channel lost its history to the
// budget.
func (b *Broker) Evictions() int64 { return b.evictions.Load() }

// messageOverhead approximates what a kept message costs besides its
// variable parts: the Message struct and its slot in the history slice.
const messageOverhead = 160

// tagsMapOverhead and tagOverhead estimate what a message's tags map costs
// besides the tags' bytes: a map of up to 8 tags took about 340 bytes and
// one of 16 about 2,200 with Go 1.26. They err on the high side between.
const (
	tagsMapOverhead = 224
	tagOverhead     = 112
)

func messageBytes(m *broker.Message) int64 {
	n := int64(cap(m.Data)+len(m.Event)+len(m.User)+len(m.Client)+len(m.Trace)+len(m.Key)) + messageOverhead
	if len(m.Tags) > 0 {
		n += tagsMapOverhead
		for k, v := range m.Tags {
			n += int64(len(k)+len(v)) + tagOverhead
		}
	}
	return n
}

// Start registers h and starts the sweeper that forgets idle channels.
func (b *Broker) Start(_ context.Context, h broker.Handler) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.handler != nil {
		return errors.New("memory broker: started twice")
	}
	b.handler = h
	go b.sweep()
	return nil
}

// Close stops the sweeper; later calls fail with broker.ErrUnavailable.
func (b *Broker) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	started := b.handler != nil
	b.mu.Unlock()
	close(b.stop)
	if started {
		<-b.done
	}
	return nil
}

// channelFor returns channel name's state, creating it when create is set.
func (b *Broker) channelFor(name string, create bool) (*channel, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, broker.ErrUnavailable
	}
	ch := b.channels[name]
	if ch == nil && create {
		ch = &channel{name: name, epoch: broker.NewEpoch()}
		b.channels[name] = ch
		b.peak = max(b.peak, len(b.channels))
	}
	return ch, nil
}

// lockChannel returns channel name's state locked, creating it when create
// is set; nil when it does not exist. It skips a state dropped meanwhile.
func (b *Broker) lockChannel(name string, create bool) (*channel, error) {
	for {
		ch, err := b.channelFor(name, create)
		if err != nil || ch == nil {
			return nil, err
		}
		ch.mu.Lock()
		if !ch.gone {
			return ch, nil
		}
		ch.mu.Unlock()
	}
}

// dropLocked forgets channel ch; the caller holds b.mu and ch.mu, and
// calls shrinkLocked once done dropping.
func (b *Broker) dropLocked(ch *channel) {
	ch.gone = true
	delete(b.channels, ch.name)
	if ch.lru != nil {
		b.lru.Remove(ch.lru)
		ch.lru = nil
	}
}

// shrinkLocked rebuilds the channel map once it holds under a quarter of
// its peak: Go maps never give memory back, and a node that served many
// channels once must not keep their memory for good.
func (b *Broker) shrinkLocked() {
	const minRebuild = 1024
	if b.peak < minRebuild || len(b.channels) > b.peak/4 {
		return
	}
	m := make(map[string]*channel, len(b.channels))
	maps.Copy(m, b.channels) // not maps.Clone, which keeps the capacity
	b.channels, b.peak = m, len(m)
}

// Subscribe makes Publish on channel call the Handler.
func (b *Broker) Subscribe(_ context.Context, name string) error {
	ch, err := b.lockChannel(name, true)
	if err != nil {
		return err
	}
	ch.subscribed = true
	ch.mu.Unlock()
	return nil
}

// Unsubscribe stops calling the Handler for channel.
func (b *Broker) Unsubscribe(_ context.Context, name string) error {
	ch, err := b.lockChannel(name, false)
	if err != nil || ch == nil {
		return err
	}
	ch.subscribed = false
	ch.mu.Unlock()
	return nil
}

// Publish stores p and calls the Handler inline when the channel is
// subscribed. p.Data and p.Tags are kept as they are, not copied: neither
// the caller nor the Handler may change them afterwards.
func (b *Broker) Publish(_ context.Context, name string, p broker.Publication, opts broker.HistoryOptions) (broker.Offset, error) {
	ch, err := b.lockChannel(name, true)
	if err != nil {
		return broker.Offset{}, err
	}
	off := b.publishLocked(ch, p, opts)
	ch.mu.Unlock()
	if opts.Size > 0 && b.maxBytes > 0 {
		b.spend(ch)
	}
	return off, nil
}

// publishLocked stores p in ch and calls the Handler; the caller holds
// ch.mu.
func (b *Broker) publishLocked(ch *channel, p broker.Publication, opts broker.HistoryOptions) broker.Offset {
	now := b.now()
	ch.seq++
	m := broker.Message{
		Channel: ch.name,
		Offset:  broker.Offset{Epoch: ch.epoch, Seq: ch.seq},
		Prev:    ch.seq - 1,
		Data:    p.Data,
		Binary:  p.Binary,
		Event:   p.Event,
		User:    p.User,
		Client:  p.Client,
		Time:    now,
		Trace:   p.Trace,
		Tags:    p.Tags,
		Key:     p.Key,
	}
	if opts.Size > 0 {
		ch.history = append(ch.history, m)
		n := messageBytes(&m)
		b.used.Add(n)
		b.trimLocked(ch, len(ch.history)-opts.Size)
	}
	ch.ttl = opts.TTL
	b.expireLocked(ch, now)
	if ch.subscribed {
		b.handler.HandleMessage(m)
	}
	return m.Offset
}

// spend moves ch to the front of the budget's queue and, while history is
// over budget, takes it from the channels published to least recently: they
// lose their history and start a new epoch, and are forgotten when nothing
// else holds them. ch itself, when it alone is over budget, loses its
// oldest messages instead.
func (b *Broker) spend(ch *channel) {
	b.mu.Lock()
	defer b.mu.Unlock()
	defer b.shrinkLocked()
	if ch.gone {
		return
	}
	if ch.lru == nil {
		ch.lru = b.lru.PushFront(ch)
	} else {
		b.lru.MoveToFront(ch.lru)
	}
	for b.used.Load() > b.maxBytes {
		victim := b.lru.Back().Value.(*channel)
		victim.mu.Lock()
		if len(victim.history) == 0 && victim != ch {
			// Emptied by its TTL already: nothing to free, nothing lost.
			b.lru.Remove(victim.lru)
			victim.lru = nil
			victim.mu.Unlock()
			continue
		}
		if victim == ch {
			for len(ch.history) > 0 && b.used.Load() > b.maxBytes {
				b.trimLocked(ch, 1)
			}
			ch.mu.Unlock()
			return
		}
		b.trimLocked(victim, len(victim.history))
		victim.history = nil
		victim.epoch, victim.seq = broker.NewEpoch(), 0
		b.evictions.Add(1)
		b.lru.Remove(victim.lru)
		victim.lru = nil
		if !victim.subscribed && len(victim.presence) == 0 {
			b.dropLocked(victim)
		}
		victim.mu.Unlock()
	}
}

// trimLocked drops ch's n oldest messages; the caller holds ch.mu.
func (b *Broker) trimLocked(ch *channel, n int) {
	if n <= 0 {
		return
	}
	var freed int64
	for i := range ch.history[:n] {
		freed += messageBytes(&ch.history[i])
	}
	clear(ch.history[:n])
	ch.history = ch.history[n:]
	b.used.Add(-freed)
}

// expireLocked drops messages older than the channel's TTL; the caller
// holds ch.mu.
func (b *Broker) expireLocked(ch *channel, now time.Time) {
	ttl := ch.ttl
	if ttl <= 0 {
		return
	}
	cut := 0
	for cut < len(ch.history) && now.Sub(ch.history[cut].Time) > ttl {
		cut++
	}
	b.trimLocked(ch, cut)
}

// History reads the channel's history.
func (b *Broker) History(_ context.Context, name string, q broker.HistoryQuery) (broker.HistoryResult, error) {
	ch, err := b.lockChannel(name, false)
	if err != nil {
		return broker.HistoryResult{}, err
	}
	if ch == nil {
		// A channel never seen has nothing to lose: any cursor into it is
		// from a history that no longer exists unless it is zero.
		return broker.HistoryResult{Complete: q.Since.IsZero()}, nil
	}
	defer ch.mu.Unlock()
	b.expireLocked(ch, b.now())
	res := broker.HistoryResult{}
	if ch.seq > 0 {
		res.Latest = broker.Offset{Epoch: ch.epoch, Seq: ch.seq}
	}
	first := ch.seq + 1 // seq of the oldest message kept
	if len(ch.history) > 0 {
		first = ch.history[0].Offset.Seq
	}
	start := 0
	switch {
	case q.Since.IsZero():
		res.Complete = first == 1
		if q.Limit >= 0 && len(ch.history) > q.Limit {
			start = len(ch.history) - q.Limit // the newest Limit
		}
	case q.Since.Epoch != ch.epoch || q.Since.Seq > ch.seq:
		// A cursor into a history that is gone: all that is kept now
		// came after it.
	default:
		res.Complete = q.Since.Seq+1 >= first
		start = len(ch.history)
		for i, m := range ch.history {
			if m.Offset.Seq > q.Since.Seq {
				start = i
				break
			}
		}
	}
	msgs := ch.history[start:]
	if q.Limit >= 0 && len(msgs) > q.Limit {
		msgs = msgs[:q.Limit]
	}
	res.Messages = append([]broker.Message(nil), msgs...)
	return res, nil
}

// PublishJoin calls the Handler inline when channel is subscribed.
func (b *Broker) PublishJoin(_ context.Context, name string, c broker.ClientInfo) error {
	return b.presenceEvent(name, c, true)
}

// PublishLeave calls the Handler inline when channel is subscribed.
func (b *Broker) PublishLeave(_ context.Context, name string, c broker.ClientInfo) error {
	return b.presenceEvent(name, c, false)
}

func (b *Broker) presenceEvent(name string, c broker.ClientInfo, join bool) error {
	ch, err := b.lockChannel(name, false)
	if err != nil || ch == nil {
		return err
	}
	defer ch.mu.Unlock()
	if !ch.subscribed {
		return nil
	}
	if join {
		b.handler.HandleJoin(name, c)
	} else {
		b.handler.HandleLeave(name, c)
	}
	return nil
}

// AddPresence records c in channel.
func (b *Broker) AddPresence(_ context.Context, name string, c broker.ClientInfo) error {
	ch, err := b.lockChannel(name, true)
	if err != nil {
		return err
	}
	defer ch.mu.Unlock()
	if ch.presence == nil {
		ch.presence = make(map[string]present)
	}
	ch.presence[c.Client] = newPresent(c)
	return nil
}

// RemovePresence forgets c in channel.
func (b *Broker) RemovePresence(_ context.Context, name string, c broker.ClientInfo) error {
	ch, err := b.lockChannel(name, false)
	if err != nil || ch == nil {
		return err
	}
	defer ch.mu.Unlock()
	delete(ch.presence, c.Client)
	return nil
}

// Presence lists channel's subscribers in no particular order.
func (b *Broker) Presence(_ context.Context, name string) ([]broker.ClientInfo, error) {
	ch, err := b.lockChannel(name, false)
	if err != nil || ch == nil {
		return []broker.ClientInfo{}, err
	}
	defer ch.mu.Unlock()
	out := make([]broker.ClientInfo, 0, len(ch.presence))
	for id, p := range ch.presence {
		out = append(out, p.clientInfo(id))
	}
	return out, nil
}

// sweep periodically forgets channels that nobody subscribes to, nobody is
// present in and whose history is empty, and expired receipts. A channel forgotten and later used
// again starts a new epoch, so old offsets into it read as not recovered.
func (b *Broker) sweep() {
	defer close(b.done)
	t := time.NewTicker(sweepInterval)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
			b.sweepOnce()
		}
	}
}

func (b *Broker) sweepOnce() {
	now := b.now()
	b.receipts.sweep(now)
	b.mu.Lock()
	defer b.mu.Unlock()
	defer b.shrinkLocked()
	for _, ch := range b.channels {
		ch.mu.Lock()
		b.expireLocked(ch, now)
		if !ch.subscribed && len(ch.presence) == 0 && len(ch.history) == 0 {
			b.dropLocked(ch)
		}
		ch.mu.Unlock()
	}
}
