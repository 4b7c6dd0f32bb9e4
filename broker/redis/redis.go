// Package redis is herald's broker for several nodes sharing one Redis 7
// server.
//
// Each channel has a sequence and epoch in a hash, its history in a stream
// and a pub/sub topic of its own. Publish runs one Lua script that assigns
// the offset, stores the message and publishes it on the topic, so the
// topic carries a channel's messages in offset order. Every node holds one
// pub/sub connection; one goroutine reads it and calls the Handler, so calls
// for one channel never overlap and keep the topic's order.
//
// Pub/sub is not durable: a node whose connection drops misses what was
// published until go-redis reconnects it. History still holds those
// messages: once the connection receives again the broker calls the
// Handler's HandleReconnect, and the offsets show the gap.
//
// # Failover
//
// Redis may come back with an older state of a channel than the one it
// acknowledged (a failover to a replica that lagged, a restored snapshot).
// Every node remembers the newest offset it saw in each channel it used
// recently (publish acknowledgements, deliveries, history reads; bounded
// by watermark.DefaultSize channels, least recently used forgotten) and
// hands it to the publish script, which starts a new epoch when the stored
// sequence is behind it. So an offset is never acknowledged twice through a
// node that saw it; a node that never saw the lost offsets cannot tell, and
// a publish through it before any node that saw them publishes may reuse
// one (subscribers elsewhere then take that message for a copy of one they
// had). Resumes from a lost offset are told they did not recover.
package redis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/internal/mask"
	"github.com/heraldhq/herald/internal/watermark"
)

var (
	_ broker.Broker        = (*Broker)(nil)
	_ broker.PresenceStore = (*Broker)(nil)
	_ broker.HealthChecker = (*Broker)(nil)
)

// metaGrace is how long a channel's sequence and epoch outlive its history
// when the history has a TTL, so that a reader can still tell "expired"
// from "never used". After that the channel starts a new epoch.
const metaGrace = time.Minute

// Config configures a Broker. The zero value talks to a local Redis.
type Config struct {
	// URL names the server, as redis://[user:pass@]host:port/db or
	// rediss:// for TLS. Empty means redis://127.0.0.1:6379/0.
	URL string
	// Prefix starts every key and topic the broker uses, so several herald
	// deployments (or tests) can share one server. Empty means "herald:".
	Prefix string
	// PresenceTTL is how long AddPresence keeps a client listed; the
	// caller must add it again before then. It bounds how long the clients
	// of a crashed node stay listed. Zero means 60s.
	PresenceTTL time.Duration
	// Logger receives errors of the receive loop. Nil discards them. The
	// lines of go-redis itself go where SetLibraryLogger sends them.
	Logger *slog.Logger
}

// Broker is the Redis broker. Call New, then Start. All methods are safe
// for concurrent use.
type Broker struct {
	prefix      string
	presenceTTL time.Duration
	log         *slog.Logger
	client      *goredis.Client
	// publisher runs the publish script and never sends a command twice:
	// go-redis retries a command whose reply it did not get (a broken
	// connection, a read timeout), and a publish that ran but whose reply
	// was lost would then be stored again at the next offset.
	publisher *goredis.Client
	seen      *watermark.Table // newest offset seen per recent channel

	mu      sync.Mutex // guards everything below
	ps      *goredis.PubSub
	handler broker.Handler
	wanted  map[string]bool // subscribed topics (always true)
	// wantedPeak is the most entries wanted held since it was made; Go
	// maps never give memory back, so it is rebuilt when it shrinks well
	// below that (see forgetTopicLocked).
	wantedPeak int
	waiters    map[string][]chan struct{} // kind+" "+topic → Subscribe/Unsubscribe calls awaiting confirmation
	closed     bool
	stop       chan struct{} // closed by Close
	done       chan struct{} // closed when the receive loop exits
}

// New validates cfg and returns a broker. It does not connect; Start does.
func New(cfg Config) (*Broker, error) {
	if cfg.URL == "" {
		cfg.URL = "redis://127.0.0.1:6379/0"
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "herald:"
	}
	if cfg.PresenceTTL == 0 {
		cfg.PresenceTTL = 60 * time.Second
	}
	if cfg.PresenceTTL < time.Millisecond {
		return nil, errors.New("redis broker: PresenceTTL must be at least 1ms")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	opts, err := goredis.ParseURL(cfg.URL)
	if err != nil {
		var ue *url.Error // it would quote the URL, credentials and all
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("redis broker: URL %s: %w", mask.URL(cfg.URL), err)
	}
	pubOpts := *opts
	pubOpts.MaxRetries = -1 // go-redis: -1 is no retries (0 means its default, 3)
	return &Broker{
		prefix:      cfg.Prefix,
		presenceTTL: cfg.PresenceTTL,
		log:         cfg.Logger,
		client:      goredis.NewClient(opts),
		publisher:   goredis.NewClient(&pubOpts),
		seen:        watermark.New(0),
		wanted:      make(map[string]bool),
		waiters:     make(map[string][]chan struct{}),
		stop:        make(chan struct{}),
		done:        make(chan struct{}),
	}, nil
}

// Start checks that Redis answers, opens the node's pub/sub connection and
// starts the loop that calls h. It fails with a wrapped
// broker.ErrUnavailable when Redis cannot be reached.
func (b *Broker) Start(ctx context.Context, h broker.Handler) error {
	if err := b.client.Ping(ctx).Err(); err != nil {
		return b.wrap(ctx, "start", err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return fmt.Errorf("redis broker: start: %w", broker.ErrUnavailable)
	}
	if b.handler != nil {
		return errors.New("redis broker: started twice")
	}
	b.handler = h
	b.ps = b.client.Subscribe(context.WithoutCancel(ctx))
	go b.receive(b.ps)
	return nil
}

// Close stops the receive loop and closes the connections. No Handler call
// runs after it returns; later calls fail with broker.ErrUnavailable.
func (b *Broker) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	ps := b.ps
	b.mu.Unlock()
	close(b.stop)
	var errs []error
	if ps != nil {
		errs = append(errs, ps.Close())
		<-b.done
	}
	errs = append(errs, b.client.Close(), b.publisher.Close())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("redis broker: close: %w", err)
	}
	return nil
}

// healthTimeout bounds Healthy's PING when ctx allows longer.
const healthTimeout = time.Second

// Healthy pings Redis, waiting at most a second. It returns nil when Redis
// answers, and an error wrapping broker.ErrUnavailable otherwise, also once
// the broker is closed.
func (b *Broker) Healthy(ctx context.Context) error {
	b.mu.Lock()
	closed := b.closed
	b.mu.Unlock()
	if closed {
		return fmt.Errorf("redis broker: health: %w: closed", broker.ErrUnavailable)
	}
	ctx, cancel := context.WithTimeout(ctx, healthTimeout)
	defer cancel()
	if err := b.client.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis broker: health: %w: %w", broker.ErrUnavailable, err)
	}
	return nil
}

func (b *Broker) key(channel, kind string) string {
	return b.prefix + "{" + channel + "}:" + kind
}

func (b *Broker) topic(channel string) string { return b.prefix + "ch:" + channel }

// Subscribe adds channel's topic to the node's pub/sub connection and
// returns once Redis confirmed it, so a Publish that starts afterwards is
// delivered.
func (b *Broker) Subscribe(ctx context.Context, channel string) error {
	return b.subscription(ctx, "subscribe", channel)
}

// Unsubscribe removes channel's topic and returns once Redis confirmed it;
// nothing of channel is delivered after it returns.
func (b *Broker) Unsubscribe(ctx context.Context, channel string) error {
	return b.subscription(ctx, "unsubscribe", channel)
}

func (b *Broker) subscription(ctx context.Context, kind, channel string) error {
	topic := b.topic(channel)
	wait := make(chan struct{})
	b.mu.Lock()
	if b.closed || b.ps == nil {
		b.mu.Unlock()
		return fmt.Errorf("redis broker: %s %q: %w", kind, channel, broker.ErrUnavailable)
	}
	ps := b.ps
	if kind == "subscribe" {
		b.wanted[topic] = true
		b.wantedPeak = max(b.wantedPeak, len(b.wanted))
	} else {
		b.forgetTopicLocked(topic)
	}
	w := kind + " " + topic
	b.waiters[w] = append(b.waiters[w], wait)
	b.mu.Unlock()

	var err error
	if kind == "subscribe" {
		err = ps.Subscribe(ctx, topic)
	} else {
		err = ps.Unsubscribe(ctx, topic)
	}
	if err == nil {
		select {
		case <-wait:
			return nil
		case <-ctx.Done():
			err = ctx.Err()
		case <-b.stop:
			err = goredis.ErrClosed
		}
	}
	b.mu.Lock()
	b.waiters[w] = removeWaiter(b.waiters[w], wait)
	if len(b.waiters[w]) == 0 {
		delete(b.waiters, w)
	}
	b.mu.Unlock()
	return b.wrap(ctx, kind+" "+strconv.Quote(channel), err)
}

// minRebuild is the peak below which the table of subscribed topics is not
// worth rebuilding.
const minRebuild = 1024

// forgetTopicLocked removes topic from the subscribed topics, rebuilding
// the map once it holds under a quarter of its peak: a node that served
// many channels once does not keep their memory for good.
func (b *Broker) forgetTopicLocked(topic string) {
	delete(b.wanted, topic)
	if b.wantedPeak < minRebuild || len(b.wanted) > b.wantedPeak/4 {
		return
	}
	m := make(map[string]bool, len(b.wanted))
	maps.Copy(m, b.wanted) // not maps.Clone, which keeps the capacity
	b.wanted, b.wantedPeak = m, len(m)
}

func removeWaiter(ws []chan struct{}, w chan struct{}) []chan struct{} {
	for i, x := range ws {
		if x == w {
			return append(ws[:i], ws[i+1:]...)
		}
	}
	return ws
}

// receive reads the pub/sub connection until Close and calls the Handler.
func (b *Broker) receive(ps *goredis.PubSub) {
	defer close(b.done)
	ctx := context.Background()
	lost := false // the connection failed since the last thing it received
	for {
		v, err := ps.Receive(ctx)
		if err == nil && lost {
			lost = false
			b.log.Info("redis broker: pub/sub connection back")
			b.mu.Lock()
			h := b.handler
			b.mu.Unlock()
			h.HandleReconnect()
		}
		if err != nil {
			if !lost {
				b.releaseUnsubscribes()
			}
			lost = true
			select {
			case <-b.stop:
				return
			default:
			}
			// go-redis reconnects and subscribes again on the next call.
			b.log.Warn("redis broker: receive", "err", err)
			select {
			case <-b.stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		switch v := v.(type) {
		case *goredis.Subscription:
			b.confirm(v.Kind, v.Channel)
		case *goredis.Message:
			b.deliver(v.Channel, v.Payload)
		}
	}
}

// releaseUnsubscribes releases every Unsubscribe call waiting for its
// confirmation when the pub/sub connection failed: the confirmation may
// have been lost with it, and never comes on the new connection, which
// go-redis subscribes to the remaining topics only. A dropped connection
// holds no subscription, so the topics are unsubscribed. (Subscribe calls
// keep waiting: go-redis subscribes their topics again on the new
// connection, and Redis confirms that.)
func (b *Broker) releaseUnsubscribes() {
	b.mu.Lock()
	var ws []chan struct{}
	for w, cs := range b.waiters {
		if strings.HasPrefix(w, "unsubscribe ") {
			ws = append(ws, cs...)
			delete(b.waiters, w)
		}
	}
	b.mu.Unlock()
	for _, c := range ws {
		close(c)
	}
}

// confirm releases the Subscribe or Unsubscribe calls waiting for topic.
func (b *Broker) confirm(kind, topic string) {
	w := kind + " " + topic
	b.mu.Lock()
	ws := b.waiters[w]
	delete(b.waiters, w)
	b.mu.Unlock()
	for _, c := range ws {
		close(c)
	}
}

// deliver decodes one pub/sub payload and calls the Handler, unless the
// channel was unsubscribed meanwhile.
func (b *Broker) deliver(topic, payload string) {
	channel, ok := strings.CutPrefix(topic, b.prefix+"ch:")
	b.mu.Lock()
	wanted := b.wanted[topic]
	h := b.handler
	b.mu.Unlock()
	if !ok || !wanted || payload == "" {
		return
	}
	fields, err := splitNetstrings(payload[1:])
	switch {
	case err != nil:
	case payload[0] == 'm' && len(fields) >= 8:
		var m broker.Message
		if m, err = decodeMessage(channel, fields); err == nil {
			b.seen.Observe(channel, m.Offset)
			h.HandleMessage(m)
			return
		}
	case payload[0] == 'j' && (len(fields) == 2 || len(fields) == 3):
		h.HandleJoin(channel, presenceEvent(fields))
		return
	case payload[0] == 'l' && (len(fields) == 2 || len(fields) == 3):
		h.HandleLeave(channel, presenceEvent(fields))
		return
	default:
		err = errors.New("unknown payload")
	}
	b.log.Error("redis broker: bad pub/sub payload", "topic", topic, "err", err)
}

// decodeMessage builds a Message from the fields the publish script sends:
// seq, epoch, time µs, binary, event, user, client, data, then the
// traceparent, tags, key and the ended epoch's offset up to the last one
// the message has. Fields after those, from a newer node, are left alone.
func decodeMessage(channel string, f []string) (broker.Message, error) {
	var trace, tags, key, endedAt string
	optional := []*string{&trace, &tags, &key, &endedAt}
	for i, v := range f[8:min(len(f), 8+len(optional))] {
		*optional[i] = v
	}
	seq, err := strconv.ParseUint(f[0], 10, 64)
	if err != nil {
		return broker.Message{}, fmt.Errorf("seq: %w", err)
	}
	us, err := strconv.ParseInt(f[2], 10, 64)
	if err != nil {
		return broker.Message{}, fmt.Errorf("time: %w", err)
	}
	tagMap, err := decodeTags(tags)
	if err != nil {
		return broker.Message{}, err
	}
	ended, _ := broker.ParseOffset(endedAt) // a malformed one is no loss to report
	return broker.Message{
		Channel: channel,
		Offset:  broker.Offset{Epoch: f[1], Seq: seq},
		Prev:    seq - 1, // sequences are contiguous (HINCRBY)
		Ended:   ended,
		Data:    []byte(f[7]),
		Binary:  f[3] == "1",
		Event:   f[4],
		User:    f[5],
		Client:  f[6],
		Time:    time.UnixMicro(us),
		Trace:   trace,
		Tags:    tagMap,
		Key:     key,
	}, nil
}

// encodeTags writes tags as netstrings, each key followed by its value,
// in key order: any bytes survive, and no tags cost nothing ("").
func encodeTags(tags map[string]string) string {
	if len(tags) == 0 {
		return ""
	}
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(tags)) {
		b.WriteString(netstring(k))
		b.WriteString(netstring(tags[k]))
	}
	return b.String()
}

// decodeTags reads what encodeTags wrote; "" is no tags (nil).
func decodeTags(s string) (map[string]string, error) {
	if s == "" {
		return nil, nil
	}
	f, err := splitNetstrings(s)
	if err != nil || len(f)%2 != 0 {
		return nil, fmt.Errorf("tags %q: not netstrings in pairs", s)
	}
	tags := make(map[string]string, len(f)/2)
	for i := 0; i < len(f); i += 2 {
		tags[f[i]] = f[i+1]
	}
	return tags, nil
}

// presenceEvent reads the fields of a join or leave: client, user and
// transport (which nodes before it was kept leave out).
func presenceEvent(fields []string) broker.ClientInfo {
	c := broker.ClientInfo{Client: fields[0], User: fields[1]}
	if len(fields) == 3 {
		c.Transport = fields[2]
	}
	return c
}

// presenceValue is what the users hash holds for a client: its user and
// transport, and its info when it has one, as netstrings.
func presenceValue(c broker.ClientInfo) string {
	v := netstring(c.User) + netstring(c.Transport)
	if len(c.Info) > 0 {
		v += netstring(string(c.Info))
	}
	return v
}

// parsePresenceValue reads a presenceValue into c: two netstrings, or
// three with the client's info. A value that is neither was written by a
// node before transports were kept: it is the user alone.
func parsePresenceValue(c *broker.ClientInfo, v string) {
	f, err := splitNetstrings(v)
	switch {
	case err == nil && len(f) == 3:
		c.Info = json.RawMessage(f[2])
		fallthrough
	case err == nil && len(f) == 2:
		c.User, c.Transport = f[0], f[1]
	default:
		c.User = v
	}
}

// splitNetstrings splits "LEN:VALUE" items written back to back.
func splitNetstrings(s string) ([]string, error) {
	var out []string
	for s != "" {
		n, rest, ok := strings.Cut(s, ":")
		size, err := strconv.Atoi(n)
		if !ok || err != nil || size < 0 || size > len(rest) {
			return nil, errors.New("malformed netstring")
		}
		out = append(out, rest[:size])
		s = rest[size:]
	}
	return out, nil
}

func netstring(s string) string { return strconv.Itoa(len(s)) + ":" + s }

// Publish stores p in channel's history (when opts.Size > 0) and publishes
// it on channel's topic in one atomic script. A TTL applies to every kept
// message; once all of them expired and the channel stayed idle a further
// minute, the next Publish starts a new epoch.
func (b *Broker) Publish(ctx context.Context, channel string, p broker.Publication, opts broker.HistoryOptions) (broker.Offset, error) {
	binary := "0"
	if p.Binary {
		binary = "1"
	}
	ttl := max(opts.TTL.Milliseconds(), 0)
	if opts.TTL > 0 && ttl == 0 {
		ttl = 1
	}
	seen := b.seen.Get(channel)
	res, err := publishScript.Run(ctx, b.publisher,
		[]string{b.key(channel, "meta"), b.key(channel, "stream")},
		broker.NewEpoch(), max(opts.Size, 0), ttl, metaGrace.Milliseconds(), b.topic(channel),
		[]byte(p.Data), binary, p.Event, p.User, p.Client, seen.Epoch, seen.Seq, p.Trace,
		encodeTags(p.Tags), p.Key,
	).Slice()
	if err != nil {
		return broker.Offset{}, b.wrap(ctx, "publish to "+strconv.Quote(channel), err)
	}
	if len(res) != 2 {
		return broker.Offset{}, fmt.Errorf("redis broker: publish to %q: unexpected reply %v", channel, res)
	}
	seq, _ := res[0].(int64)
	epoch, _ := res[1].(string)
	off := broker.Offset{Epoch: epoch, Seq: uint64(seq)}
	b.seen.Observe(channel, off)
	return off, nil
}

// History reads channel's history, dropping expired messages first.
func (b *Broker) History(ctx context.Context, channel string, q broker.HistoryQuery) (broker.HistoryResult, error) {
	limit := q.Limit
	if limit < 0 {
		limit = -1
	}
	res, err := historyScript.Run(ctx, b.client,
		[]string{b.key(channel, "meta"), b.key(channel, "stream")},
		q.Since.Epoch, q.Since.Seq, limit,
	).Slice()
	if err != nil {
		return broker.HistoryResult{}, b.wrap(ctx, "history of "+strconv.Quote(channel), err)
	}
	if len(res) == 0 {
		// A channel never used (or long expired): nothing to lose unless
		// a cursor points into it.
		return broker.HistoryResult{Complete: q.Since.IsZero()}, nil
	}
	bad := func(what string) (broker.HistoryResult, error) {
		return broker.HistoryResult{}, fmt.Errorf("redis broker: history of %q: unexpected reply: %s", channel, what)
	}
	if len(res) != 5 {
		return bad("length")
	}
	seq, ok1 := res[0].(int64)
	epoch, ok2 := res[1].(string)
	first, ok3 := res[2].(int64)
	mode, ok4 := res[3].(string)
	entries, ok5 := res[4].([]any)
	if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 {
		return bad("types")
	}
	out := broker.HistoryResult{Latest: broker.Offset{Epoch: epoch, Seq: uint64(seq)}}
	if seq == 0 {
		out.Latest = broker.Offset{}
	}
	b.seen.Observe(channel, out.Latest)
	switch mode {
	case "zero":
		out.Complete = first == 1
	case "since":
		out.Complete = int64(q.Since.Seq)+1 >= first
	}
	out.Messages = make([]broker.Message, 0, len(entries))
	for _, e := range entries {
		m, err := decodeEntry(channel, epoch, e)
		if err != nil {
			return bad(err.Error())
		}
		out.Messages = append(out.Messages, m)
	}
	if mode == "zero" { // read newest first
		for i, j := 0, len(out.Messages)-1; i < j; i, j = i+1, j-1 {
			out.Messages[i], out.Messages[j] = out.Messages[j], out.Messages[i]
		}
	}
	return out, nil
}

// decodeEntry turns one XRANGE entry {"<seq>-0", {field, value, ...}} into
// a Message.
func decodeEntry(channel, epoch string, e any) (broker.Message, error) {
	pair, ok := e.([]any)
	if !ok || len(pair) != 2 {
		return broker.Message{}, errors.New("entry shape")
	}
	id, _ := pair[0].(string)
	kv, _ := pair[1].([]any)
	seqText, _, _ := strings.Cut(id, "-")
	seq, err := strconv.ParseUint(seqText, 10, 64)
	if err != nil {
		return broker.Message{}, fmt.Errorf("entry id %q", id)
	}
	m := broker.Message{Channel: channel, Offset: broker.Offset{Epoch: epoch, Seq: seq}, Prev: seq - 1}
	for i := 0; i+1 < len(kv); i += 2 {
		k, _ := kv[i].(string)
		v, _ := kv[i+1].(string)
		switch k {
		case "data":
			m.Data = []byte(v)
		case "binary":
			m.Binary = v == "1"
		case "event":
			m.Event = v
		case "user":
			m.User = v
		case "client":
			m.Client = v
		case "trace":
			m.Trace = v
		case "tags":
			if m.Tags, err = decodeTags(v); err != nil {
				return broker.Message{}, fmt.Errorf("entry %w", err)
			}
		case "key":
			m.Key = v
		case "time":
			us, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return broker.Message{}, fmt.Errorf("entry time %q", v)
			}
			m.Time = time.UnixMicro(us)
		}
	}
	return m, nil
}

// PublishJoin publishes a join on channel's topic; it is not stored.
func (b *Broker) PublishJoin(ctx context.Context, channel string, c broker.ClientInfo) error {
	return b.publishPresence(ctx, "j", channel, c)
}

// PublishLeave publishes a leave on channel's topic; it is not stored.
func (b *Broker) PublishLeave(ctx context.Context, channel string, c broker.ClientInfo) error {
	return b.publishPresence(ctx, "l", channel, c)
}

func (b *Broker) publishPresence(ctx context.Context, kind, channel string, c broker.ClientInfo) error {
	payload := kind + netstring(c.Client) + netstring(c.User) + netstring(c.Transport)
	if err := b.client.Publish(ctx, b.topic(channel), payload).Err(); err != nil {
		return b.wrap(ctx, "presence event on "+strconv.Quote(channel), err)
	}
	return nil
}

// AddPresence lists c in channel for PresenceTTL; adding it again renews
// that.
func (b *Broker) AddPresence(ctx context.Context, channel string, c broker.ClientInfo) error {
	err := presenceAddScript.Run(ctx, b.client,
		[]string{b.key(channel, "presence"), b.key(channel, "users")},
		c.Client, presenceValue(c), max(b.presenceTTL.Milliseconds(), 1),
	).Err()
	return b.wrap(ctx, "add presence in "+strconv.Quote(channel), err)
}

// RemovePresence forgets c in channel.
func (b *Broker) RemovePresence(ctx context.Context, channel string, c broker.ClientInfo) error {
	err := presenceRemoveScript.Run(ctx, b.client,
		[]string{b.key(channel, "presence"), b.key(channel, "users")},
		c.Client,
	).Err()
	return b.wrap(ctx, "remove presence in "+strconv.Quote(channel), err)
}

// Presence lists channel's clients whose PresenceTTL has not run out, in no
// particular order.
func (b *Broker) Presence(ctx context.Context, channel string) ([]broker.ClientInfo, error) {
	res, err := presenceListScript.Run(ctx, b.client,
		[]string{b.key(channel, "presence"), b.key(channel, "users")},
	).StringSlice()
	if err != nil {
		return nil, b.wrap(ctx, "presence in "+strconv.Quote(channel), err)
	}
	out := make([]broker.ClientInfo, 0, len(res)/2)
	for i := 0; i+1 < len(res); i += 2 {
		c := broker.ClientInfo{Client: res[i]}
		parsePresenceValue(&c, res[i+1])
		out = append(out, c)
	}
	return out, nil
}

// wrap adds context to err. Errors that mean Redis cannot serve us
// (connection failures, a closed broker, a server still loading or
// without a primary) wrap broker.ErrUnavailable; the caller's own
// cancellation and other server replies do not.
func (b *Broker) wrap(ctx context.Context, op string, err error) error {
	if err == nil {
		return nil
	}
	var reply goredis.Error
	switch {
	case ctx.Err() != nil && errors.Is(err, ctx.Err()):
		return fmt.Errorf("redis broker: %s: %w", op, err)
	case errors.As(err, &reply) && !unavailableReply(reply.Error()):
		return fmt.Errorf("redis broker: %s: %w", op, err)
	}
	return fmt.Errorf("redis broker: %s: %w: %w", op, broker.ErrUnavailable, err)
}

func unavailableReply(msg string) bool {
	for _, p := range []string{"LOADING", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "READONLY", "BUSY "} {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}
