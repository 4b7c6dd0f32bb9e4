// Package memory is herald's single-node broker: history, offsets and
// presence live in this process and are lost when it exits.
//
// Publish calls the Handler inline, under the channel's lock, so a channel's
// messages reach the hub in offset order with no goroutine in between.
package memory

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"sync"
	"time"

	"github.com/heraldhq/herald/broker"
)

var (
	_ broker.Broker        = (*Broker)(nil)
	_ broker.PresenceStore = (*Broker)(nil)
)

// sweepInterval is how often idle channels with no history left are dropped.
const sweepInterval = time.Minute

// Broker is the in-memory broker. The zero value is not usable; call New.
type Broker struct {
	now func() time.Time

	mu       sync.Mutex // guards channels, handler, closed; taken before channel.mu
	channels map[string]*channel
	handler  broker.Handler
	closed   bool
	stop     chan struct{}
	done     chan struct{}
}

type channel struct {
	mu         sync.Mutex
	epoch      string
	seq        uint64
	history    []broker.Message // oldest first
	ttl        time.Duration    // from the latest Publish; 0 keeps messages until pushed out
	subscribed bool
	presence   map[string]broker.ClientInfo // by client id
}

// New returns an in-memory broker.
func New() *Broker {
	return &Broker{
		now:      time.Now,
		channels: make(map[string]*channel),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
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
		ch = &channel{epoch: newEpoch()}
		b.channels[name] = ch
	}
	return ch, nil
}

// Subscribe makes Publish on channel call the Handler.
func (b *Broker) Subscribe(_ context.Context, name string) error {
	ch, err := b.channelFor(name, true)
	if err != nil {
		return err
	}
	ch.mu.Lock()
	ch.subscribed = true
	ch.mu.Unlock()
	return nil
}

// Unsubscribe stops calling the Handler for channel.
func (b *Broker) Unsubscribe(_ context.Context, name string) error {
	ch, err := b.channelFor(name, false)
	if err != nil || ch == nil {
		return err
	}
	ch.mu.Lock()
	ch.subscribed = false
	ch.mu.Unlock()
	return nil
}

// Publish stores p and calls the Handler inline when the channel is
// subscribed.
func (b *Broker) Publish(_ context.Context, name string, p broker.Publication, opts broker.HistoryOptions) (broker.Offset, error) {
	ch, err := b.channelFor(name, true)
	if err != nil {
		return broker.Offset{}, err
	}
	now := b.now()
	ch.mu.Lock()
	defer ch.mu.Unlock()
	ch.seq++
	m := broker.Message{
		Channel: name,
		Offset:  broker.Offset{Epoch: ch.epoch, Seq: ch.seq},
		Prev:    ch.seq - 1,
		Data:    p.Data,
		Binary:  p.Binary,
		Event:   p.Event,
		User:    p.User,
		Client:  p.Client,
		Time:    now,
	}
	if opts.Size > 0 {
		ch.history = append(ch.history, m)
		if over := len(ch.history) - opts.Size; over > 0 {
			clear(ch.history[:over])
			ch.history = ch.history[over:]
		}
	}
	ch.ttl = opts.TTL
	ch.expireLocked(now)
	if ch.subscribed {
		b.handler.HandleMessage(m)
	}
	return m.Offset, nil
}

// expireLocked drops messages older than the channel's TTL.
func (ch *channel) expireLocked(now time.Time) {
	ttl := ch.ttl
	if ttl <= 0 {
		return
	}
	cut := 0
	for cut < len(ch.history) && now.Sub(ch.history[cut].Time) > ttl {
		cut++
	}
	if cut > 0 {
		clear(ch.history[:cut])
		ch.history = ch.history[cut:]
	}
}

// History reads the channel's history.
func (b *Broker) History(_ context.Context, name string, q broker.HistoryQuery) (broker.HistoryResult, error) {
	ch, err := b.channelFor(name, false)
	if err != nil {
		return broker.HistoryResult{}, err
	}
	if ch == nil {
		// A channel never seen has nothing to lose: any cursor into it is
		// from a history that no longer exists unless it is zero.
		return broker.HistoryResult{Complete: q.Since.IsZero()}, nil
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	ch.expireLocked(b.now())
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
	ch, err := b.channelFor(name, false)
	if err != nil || ch == nil {
		return err
	}
	ch.mu.Lock()
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
	ch, err := b.channelFor(name, true)
	if err != nil {
		return err
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.presence == nil {
		ch.presence = make(map[string]broker.ClientInfo)
	}
	ch.presence[c.Client] = c
	return nil
}

// RemovePresence forgets c in channel.
func (b *Broker) RemovePresence(_ context.Context, name string, c broker.ClientInfo) error {
	ch, err := b.channelFor(name, false)
	if err != nil || ch == nil {
		return err
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	delete(ch.presence, c.Client)
	return nil
}

// Presence lists channel's subscribers in no particular order.
func (b *Broker) Presence(_ context.Context, name string) ([]broker.ClientInfo, error) {
	ch, err := b.channelFor(name, false)
	if err != nil || ch == nil {
		return []broker.ClientInfo{}, err
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	out := make([]broker.ClientInfo, 0, len(ch.presence))
	for _, c := range ch.presence {
		out = append(out, c)
	}
	return out, nil
}

// sweep periodically forgets channels that nobody subscribes to, nobody is
// present in and whose history is empty. A channel forgotten and later used
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
	b.mu.Lock()
	defer b.mu.Unlock()
	for name, ch := range b.channels {
		ch.mu.Lock()
		ch.expireLocked(now)
		idle := !ch.subscribed && len(ch.presence) == 0 && len(ch.history) == 0
		ch.mu.Unlock()
		if idle {
			delete(b.channels, name)
		}
	}
}

func newEpoch() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
