// Package nats is herald's broker on NATS JetStream: history and offsets
// live in one JetStream stream per prefix, live delivery rides on core NATS,
// and presence lives in a JetStream key-value bucket.
//
// # Layout on the server
//
// With Prefix p, a channel c is the subject token t = base64url(c) and:
//
//   - stream "p-history" stores every message on subject p.msg.t and
//     republishes it (RePublish) to p.live.t as soon as it is stored;
//   - join and leave events are published to p.live.t directly;
//   - key-value bucket "p-presence" holds one key t.c<base64url(client)>
//     per present client, expiring after Config.PresenceTTL;
//   - streams "p-queue-items" and "p-queue-keys" hold the work queues
//     (broker.Queue), made when a queue is first used: see queue.go;
//   - stream "p-registry" holds the nodes' beats, claims and entries
//     (broker.Registry), made when first used: see registry.go;
//   - stream "p-receipts" holds deliveries, acknowledgements and due
//     checks (broker.Receipts), made when first used: see receipts.go.
//
// The server must be NATS 2.9 or later with JetStream enabled (RePublish and
// the expected-last-subject-sequence check).
//
// # Offsets
//
// An offset's Seq is the message's stream sequence: it grows strictly within
// a channel but is not contiguous. Its Epoch is carried by the message
// (header Herald-Epoch; messages stored before herald wrote it take the
// stream's creation time). Every message carries the stream sequence of the
// channel's previous message in its epoch (Herald-Prev, 0 for the first) and
// its position in the epoch (Herald-N). Publish writes with JetStream's
// expected-last-subject-sequence check, retrying on conflict, so the chain
// is exact even with publishers on many nodes, and they agree on its epoch.
//
// A publish starts a new, random epoch when the channel has no stored
// message (never used, purged, aged out, the stream deleted and created
// again) and when the channel's last stored message is behind the newest
// offset this node saw of its epoch (the stream came back with an older
// state, or lost its newest messages). Nodes remember that newest offset
// for the channels they used recently (see internal/watermark). So stream
// sequences that start over never repeat an acknowledged offset, and a
// cursor into lost messages reads as not recovered.
//
// # Live delivery
//
// The server republishes each stored message to p.live.t in stream order, so
// every subscribed node sees a channel's messages in offset order, each once,
// carrying the offset Publish returned. Join and leave ride the same subject,
// so one subscription per channel, delivered by one goroutine, feeds the
// Handler: calls for one channel never overlap.
//
// Live delivery is at most once, as core NATS is: messages republished while
// a node is disconnected from the server are not delivered to it. They stay
// in history: after a reconnection the broker calls the Handler's
// HandleReconnect, and Herald-Prev shows the gap.
//
// # Retention limits
//
// HistoryOptions are applied when History reads, from the options of the
// channel's latest message: a message is returned only while it is among the
// newest Size of its channel and younger than TTL (by the publishing node's
// clock, compared with the reading node's). The stream itself keeps at most
// Config.MaxHistory messages per channel for at most Config.MaxAge and in
// at most Config.MaxBytes in all, so a Size above MaxHistory or a TTL above
// MaxAge is capped by the server, and a full stream drops its oldest
// messages. Start updates an existing stream to these limits.
// Messages published with Size 0 are stored too (they carry the chain) but
// never returned. When a channel's last message leaves the stream, its next
// message starts a new epoch.
package nats

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/internal/mask"
	"github.com/heraldhq/herald/internal/watermark"
)

var (
	_ broker.Broker        = (*Broker)(nil)
	_ broker.PresenceStore = (*Broker)(nil)
	_ broker.HealthChecker = (*Broker)(nil)
)

// Config configures a NATS broker.
type Config struct {
	// URL is the NATS server, nats://host:port. Empty means
	// nats://127.0.0.1:4222.
	URL string
	// Prefix names the subjects, stream and bucket of this herald cluster;
	// letters, digits, '_' and '-' only. Empty means "herald". Nodes of one
	// cluster share a Prefix; change it to run two clusters on one server.
	Prefix string
	// PresenceTTL is how long a presence entry lives unless renewed by
	// AddPresence. Zero means 60s.
	PresenceTTL time.Duration
	// MaxHistory caps the messages the stream keeps per channel; larger
	// HistoryOptions.Size values are capped to it. Zero means 1000.
	MaxHistory int
	// MaxAge caps how long the stream keeps any message. Zero means 24h;
	// set it a little above the longest history TTL in use.
	MaxAge time.Duration
	// MaxBytes caps the stream's size on the server; past it the oldest
	// messages of any channel go first. Zero means DefaultMaxBytes,
	// negative means no cap.
	MaxBytes int64
	// ReceiptTTL caps how long receipts are kept (broker.Receipts): a
	// keep above it is capped to it, as the receipts stream's MaxAge
	// removes every record that long after it was written. Zero means
	// MaxAge; set it at least as long as the longest keep in use (the
	// history TTL receipts follow). The stream shares MaxBytes with the
	// history stream's setting: when full, its oldest records go first.
	ReceiptTTL time.Duration
	// DialTimeout bounds connecting in Start. Zero means 2s.
	DialTimeout time.Duration
	// ReconnectWait is how long the broker waits between attempts to
	// reconnect after losing the server; it retries forever. Zero means 2s;
	// lower it to notice a server that came back sooner.
	ReconnectWait time.Duration
	// Logger receives connection events and nats.go's asynchronous errors;
	// nil discards them.
	Logger *slog.Logger
}

// DefaultMaxBytes is the stream size cap when Config.MaxBytes is zero.
const DefaultMaxBytes = 256 << 20

// Header names of a stored message.
const (
	hdrEpoch  = "Herald-Epoch"
	hdrN      = "Herald-N"
	hdrPrev   = "Herald-Prev"
	hdrSize   = "Herald-Size"
	hdrTTL    = "Herald-Ttl"
	hdrEvent  = "Herald-Event"
	hdrUser   = "Herald-User"
	hdrClient = "Herald-Client"
	hdrBinary = "Herald-Binary"
	hdrTime   = "Herald-Time"  // Unix nanoseconds when Publish was called
	hdrKind   = "Herald-Kind"  // "join" or "leave" on presence events
	hdrTrace  = "Traceparent"  // W3C trace context of the publish, as OpenTelemetry's NATS carriers name it
	hdrTags   = "Herald-Tags"  // the publisher's tags, as a URL query (key=value&…), only when it has some
	hdrKey    = "Herald-Key"   // the conflation key, only when set
	hdrEnded  = "Herald-Ended" // Message.Ended, on the first message of an epoch started after a loss
)

// flushTimeout bounds Subscribe's wait for the server when ctx has no
// deadline.
const flushTimeout = 5 * time.Second

// maxPublishAttempts bounds Publish's retries on sequence conflicts.
const maxPublishAttempts = 100

var validPrefix = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// Broker is the NATS broker. It is safe for concurrent use; create it with
// New and call Start once before anything else.
type Broker struct {
	cfg Config
	log *slog.Logger

	// Lock order: mu, then channel.mu; queueMu, then mu. pubMu and
	// chain.mu are taken alone.
	mu       sync.Mutex // guards handler, nc, js, stream, kv, qstreams, rstream, rcstream, epoch, channels, closed
	handler  broker.Handler
	nc       *natsgo.Conn
	js       jetstream.JetStream
	stream   jetstream.Stream
	kv       jetstream.KeyValue
	epoch    string              // of messages stored without hdrEpoch (by herald before it had one)
	channels map[string]*channel // subscribed channels
	seen     *watermark.Table    // newest offset seen per recent channel
	closed   bool
	qstreams *queueStreams    // nil until a queue is first used, and after a reconnection
	rstream  jetstream.Stream // the registry's; likewise
	rcstream jetstream.Stream // the receipts'; likewise

	queueMu  sync.Mutex // one making of the queue streams at a time
	ensureMu sync.Mutex // one ensureState at a time

	pubMu  sync.Mutex
	chains map[string]*chain // Publish's view of channels' heads; cleared when large
}

// channel is this node's subscription to one channel.
type channel struct {
	name string
	h    broker.Handler

	mu     sync.Mutex // held while the Handler is called for the channel; guards sub, active
	sub    *natsgo.Subscription
	active bool // false once Unsubscribe or Close ran: deliveries are dropped
}

// chain is the head of one channel's message chain as this node last saw
// it. Its lock makes this node's publishes on the channel take turns, so
// they do not race each other's sequence checks.
type chain struct {
	mu      sync.Mutex
	lastSeq uint64 // stream sequence of the channel's last stored message
	// epoch, prev and lastN are what the next message continues: its
	// epoch, its Herald-Prev (0 when it starts the epoch) and the
	// Herald-N of the message before it in the epoch.
	epoch string
	prev  uint64
	lastN uint64
	known bool
	// ended is the lost epoch's newest offset this node had seen, when
	// the next message starts an epoch because the stream lost messages
	// (Message.Ended); zero otherwise.
	ended broker.Offset
}

// maxChains bounds the chain cache; it is cleared when it grows past this.
const maxChains = 10000

// New validates cfg and returns an unstarted broker.
func New(cfg Config) (*Broker, error) {
	if cfg.URL == "" {
		cfg.URL = "nats://127.0.0.1:4222"
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "herald"
	}
	if !validPrefix.MatchString(cfg.Prefix) {
		return nil, fmt.Errorf("nats broker: prefix %q: want letters, digits, '_' and '-' only", cfg.Prefix)
	}
	if cfg.PresenceTTL == 0 {
		cfg.PresenceTTL = time.Minute
	}
	if cfg.MaxHistory == 0 {
		cfg.MaxHistory = 1000
	}
	if cfg.MaxAge == 0 {
		cfg.MaxAge = 24 * time.Hour
	}
	switch {
	case cfg.MaxBytes == 0:
		cfg.MaxBytes = DefaultMaxBytes
	case cfg.MaxBytes < 0:
		cfg.MaxBytes = -1 // JetStream's "no limit"
	}
	if cfg.ReceiptTTL == 0 {
		cfg.ReceiptTTL = cfg.MaxAge
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 2 * time.Second
	}
	if cfg.ReconnectWait == 0 {
		cfg.ReconnectWait = 2 * time.Second
	}
	if cfg.PresenceTTL < 0 || cfg.MaxHistory < 0 || cfg.MaxAge < 0 || cfg.ReceiptTTL < 0 || cfg.DialTimeout < 0 || cfg.ReconnectWait < 0 {
		return nil, errors.New("nats broker: negative limit in config")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Broker{cfg: cfg, log: log, channels: make(map[string]*channel), chains: make(map[string]*chain), seen: watermark.New(0)}, nil
}

// StreamName and BucketName return the names of the JetStream stream and
// key-value bucket the broker uses, for operators and tests.
func (b *Broker) StreamName() string { return b.cfg.Prefix + "-history" }

// BucketName: see StreamName.
func (b *Broker) BucketName() string { return b.cfg.Prefix + "-presence" }

// Start connects to NATS, creates the stream and bucket or updates their
// limits to the Config's, and registers h. It fails with a wrapped broker.ErrUnavailable when the server
// cannot be reached within Config.DialTimeout.
func (b *Broker) Start(ctx context.Context, h broker.Handler) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.handler != nil || b.closed {
		return errors.New("nats broker: started twice or after Close")
	}
	nc, err := natsgo.Connect(b.cfg.URL,
		natsgo.Name("herald"),
		natsgo.Timeout(b.cfg.DialTimeout),
		natsgo.MaxReconnects(-1),
		natsgo.ReconnectWait(b.cfg.ReconnectWait),
		// No buffering while reconnecting: a publish made during an outage
		// fails now rather than being sent, and stored, after its caller
		// was told it failed.
		natsgo.ReconnectBufSize(-1),
		natsgo.DisconnectErrHandler(func(_ *natsgo.Conn, err error) {
			b.log.Warn("nats broker: disconnected", "err", err)
		}),
		// Errors nats.go gets asynchronously (a publish or subscription
		// the server refused, a slow consumer) go to the logger, not to
		// its default handler, which writes them to stderr.
		natsgo.ErrorHandler(func(_ *natsgo.Conn, sub *natsgo.Subscription, err error) {
			if sub != nil {
				b.log.Warn("nats broker: server error", "err", err, "subject", sub.Subject)
				return
			}
			b.log.Warn("nats broker: server error", "err", err)
		}),
		natsgo.LameDuckModeHandler(func(*natsgo.Conn) {
			b.log.Info("nats broker: the server is shutting down (lame duck mode)")
		}),
		natsgo.ReconnectHandler(func(*natsgo.Conn) {
			b.log.Info("nats broker: reconnected")
			// The server may have come back without the stream and the
			// bucket (restarted with an empty store): make them again
			// before the Handler reads history. Not on nats.go's
			// callback goroutine, which would hold up its other events.
			go func() {
				b.ensureState()
				h.HandleReconnect()
			}()
		}),
	)
	if err != nil {
		return fmt.Errorf("nats broker: connect %s: %w: %w", mask.URL(b.cfg.URL), broker.ErrUnavailable, err)
	}
	ok := false
	defer func() {
		if !ok {
			nc.Close()
		}
	}()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("nats broker: jetstream: %w", err)
	}
	stream, kv, err := b.createState(ctx, js)
	if err != nil {
		return err
	}
	ok = true
	b.handler, b.nc, b.js, b.stream, b.kv = h, nc, js, stream, kv
	b.epoch = strconv.FormatInt(stream.CachedInfo().Created.UnixNano(), 36)
	return nil
}

// createState creates the history stream and the presence bucket, or
// updates them to the broker's settings.
func (b *Broker) createState(ctx context.Context, js jetstream.JetStream) (jetstream.Stream, jetstream.KeyValue, error) {
	p := b.cfg.Prefix
	stream, err := b.createStream(ctx, js, jetstream.StreamConfig{
		Name:              b.StreamName(),
		Subjects:          []string{p + ".msg.*"},
		Storage:           jetstream.FileStorage,
		MaxMsgsPerSubject: int64(b.cfg.MaxHistory),
		MaxAge:            b.cfg.MaxAge,
		MaxBytes:          b.cfg.MaxBytes,
		RePublish:         &jetstream.RePublish{Source: p + ".msg.>", Destination: p + ".live.>"},
	})
	if err != nil {
		return nil, nil, err
	}
	var kv jetstream.KeyValue
	err = retryServerError(ctx, func() (err error) {
		kv, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket: b.BucketName(),
			TTL:    b.cfg.PresenceTTL,
		})
		return err
	})
	if err != nil {
		return nil, nil, b.wrap("create presence bucket", err)
	}
	return stream, kv, nil
}

// createStream creates the stream of cfg, or updates it to cfg. Nodes
// doing it at once with one cfg all succeed.
func (b *Broker) createStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	var stream jetstream.Stream
	err := retryServerError(ctx, func() (err error) {
		stream, err = js.CreateOrUpdateStream(ctx, cfg)
		return err
	})
	if err != nil {
		return nil, b.wrap("create stream "+cfg.Name, err)
	}
	return stream, nil
}

// ensureState makes the stream and the bucket again, as Start did, once the
// server is back from an outage: a server restarted with an empty store
// has neither, and every publish would fail until herald restarted. It
// retries until it succeeds or the broker closes; one call runs at a time
// and a call meanwhile waits for it.
func (b *Broker) ensureState() {
	b.ensureMu.Lock()
	defer b.ensureMu.Unlock()
	wait := 50 * time.Millisecond
	for {
		b.mu.Lock()
		js, closed := b.js, b.closed
		b.mu.Unlock()
		if closed || js == nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), ensureTimeout)
		stream, kv, err := b.createState(ctx, js)
		cancel()
		if err == nil {
			b.mu.Lock()
			b.stream, b.kv = stream, kv
			b.qstreams, b.rstream, b.rcstream = nil, nil, nil // made again on next use
			b.mu.Unlock()
			return
		}
		b.log.Warn("nats broker: make stream and bucket after reconnecting", "err", err)
		time.Sleep(wait)
		wait = min(2*wait, 2*time.Second)
	}
}

// ensureTimeout bounds one attempt of ensureState.
const ensureTimeout = 5 * time.Second

// retryServerError calls f up to three times while it fails with a server
// internal error (status 500): NATS 2.9 servers were seen to fail creating a
// file stream now and then while other streams were created or deleted.
func retryServerError(ctx context.Context, f func() error) error {
	var err error
	for attempt := 1; attempt <= 3; attempt++ {
		if err = f(); err == nil {
			return nil
		}
		var apiErr *jetstream.APIError
		if !errors.As(err, &apiErr) || apiErr.Code != 500 {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Duration(attempt) * 50 * time.Millisecond):
		}
	}
	return err
}

// Close unsubscribes every channel and closes the connection. No Handler
// call starts after it returns; later calls fail with broker.ErrUnavailable.
func (b *Broker) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	nc := b.nc
	for _, ch := range b.channels {
		ch.mu.Lock() // waits for a Handler call in progress
		ch.active = false
		ch.sub = nil
		ch.mu.Unlock()
	}
	clear(b.channels)
	b.mu.Unlock()
	if nc != nil {
		nc.Close()
	}
	return nil
}

// state returns the connection handles, or ErrUnavailable when the broker is
// closed or not started.
func (b *Broker) state() (*natsgo.Conn, jetstream.Stream, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed || b.nc == nil {
		return nil, nil, fmt.Errorf("nats broker: %w: closed or not started", broker.ErrUnavailable)
	}
	return b.nc, b.stream, nil
}

// healthTimeout bounds Healthy's JetStream call when ctx allows longer.
const healthTimeout = time.Second

// Healthy returns nil when the connection to NATS is up and JetStream
// answers an account-info request within a second; otherwise an error
// wrapping broker.ErrUnavailable, also before Start and after Close.
func (b *Broker) Healthy(ctx context.Context) error {
	b.mu.Lock()
	nc, js, closed := b.nc, b.js, b.closed
	b.mu.Unlock()
	if closed || nc == nil {
		return fmt.Errorf("nats broker: health: %w: closed or not started", broker.ErrUnavailable)
	}
	if st := nc.Status(); st != natsgo.CONNECTED {
		return fmt.Errorf("nats broker: health: %w: connection %s", broker.ErrUnavailable, st)
	}
	ctx, cancel := context.WithTimeout(ctx, healthTimeout)
	defer cancel()
	if _, err := js.AccountInfo(ctx); err != nil {
		return fmt.Errorf("nats broker: health: %w: %w", broker.ErrUnavailable, err)
	}
	return nil
}

// chainFor returns Publish's view of channel name's head.
func (b *Broker) chainFor(name string) *chain {
	b.pubMu.Lock()
	defer b.pubMu.Unlock()
	c := b.chains[name]
	if c == nil {
		if len(b.chains) >= maxChains {
			clear(b.chains)
		}
		c = &chain{}
		b.chains[name] = c
	}
	return c
}

func token(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// fromToken returns the name in tok, a subject token that is mark followed
// by the name's token; false when tok is not one.
func fromToken(tok, mark string) (string, bool) {
	rest, ok := strings.CutPrefix(tok, mark)
	name, err := base64.RawURLEncoding.DecodeString(rest)
	return string(name), ok && err == nil
}

func (b *Broker) msgSubject(tok string) string  { return b.cfg.Prefix + ".msg." + tok }
func (b *Broker) liveSubject(tok string) string { return b.cfg.Prefix + ".live." + tok }

// wrap adds context to err, marking connection failures as
// broker.ErrUnavailable.
func (b *Broker) wrap(op string, err error) error {
	if isUnavailable(err) {
		return fmt.Errorf("nats broker: %s: %w: %w", op, broker.ErrUnavailable, err)
	}
	return fmt.Errorf("nats broker: %s: %w", op, err)
}

func isUnavailable(err error) bool {
	for _, target := range []error{
		natsgo.ErrConnectionClosed, natsgo.ErrConnectionDraining, natsgo.ErrConnectionReconnecting,
		natsgo.ErrNoServers, natsgo.ErrTimeout, natsgo.ErrNoResponders, natsgo.ErrDisconnected,
		natsgo.ErrReconnectBufExceeded,
		jetstream.ErrNoStreamResponse, jetstream.ErrJetStreamNotEnabled, context.DeadlineExceeded,
	} {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}

// Subscribe starts delivering channel's messages and presence events to the
// Handler. It returns once the server has registered the subscription.
func (b *Broker) Subscribe(ctx context.Context, name string) error {
	b.mu.Lock()
	if b.closed || b.nc == nil {
		b.mu.Unlock()
		return fmt.Errorf("nats broker: %w: closed or not started", broker.ErrUnavailable)
	}
	if b.channels[name] != nil {
		b.mu.Unlock()
		return nil // calls are not counted
	}
	nc := b.nc
	ch := &channel{name: name, h: b.handler, active: true}
	ch.mu.Lock() // no delivery before sub is set
	sub, err := nc.Subscribe(b.liveSubject(token(name)), func(m *natsgo.Msg) { b.deliver(ch, m) })
	if err != nil {
		ch.mu.Unlock()
		b.mu.Unlock()
		return b.wrap("subscribe "+name, err)
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		b.log.Warn("nats broker: pending limits", "channel", name, "err", err)
	}
	ch.sub = sub
	b.channels[name] = ch
	ch.mu.Unlock()
	b.mu.Unlock()
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, flushTimeout)
		defer cancel()
	}
	if err := nc.FlushWithContext(ctx); err != nil {
		return b.wrap("subscribe "+name, err)
	}
	return nil
}

// Unsubscribe stops delivering channel to the Handler; no call for it starts
// after Unsubscribe returns.
func (b *Broker) Unsubscribe(_ context.Context, name string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed || b.nc == nil {
		return fmt.Errorf("nats broker: %w: closed or not started", broker.ErrUnavailable)
	}
	ch := b.channels[name]
	if ch == nil {
		return nil
	}
	delete(b.channels, name)
	ch.mu.Lock() // waits for a Handler call in progress
	defer ch.mu.Unlock()
	ch.active = false
	if err := ch.sub.Unsubscribe(); err != nil && !errors.Is(err, natsgo.ErrConnectionClosed) {
		return b.wrap("unsubscribe "+name, err)
	}
	return nil
}

// deliver hands one live message to the Handler while its subscription is
// active. It runs on the subscription's goroutine, so calls for one channel
// come one at a time, in the order the server sent them.
func (b *Broker) deliver(ch *channel, m *natsgo.Msg) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if !ch.active {
		return
	}
	h := ch.h
	switch m.Header.Get(hdrKind) {
	case "join", "leave":
		var c broker.ClientInfo
		if err := json.Unmarshal(m.Data, &c); err != nil {
			b.log.Warn("nats broker: bad presence event", "channel", ch.name, "err", err)
			return
		}
		if m.Header.Get(hdrKind) == "join" {
			h.HandleJoin(ch.name, c)
		} else {
			h.HandleLeave(ch.name, c)
		}
		return
	}
	seq, err := strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64)
	if err != nil {
		b.log.Warn("nats broker: live message without sequence", "channel", ch.name)
		return
	}
	msg, _ := b.message(ch.name, seq, m.Header, m.Data)
	b.seen.Observe(ch.name, msg.Offset)
	h.HandleMessage(msg)
}

// meta is what a stored message's headers say besides the publication.
type meta struct {
	n, prev uint64
	size    int
	ttl     time.Duration
}

// epochOf returns the epoch a stored message's headers name.
func (b *Broker) epochOf(h natsgo.Header) string {
	if e := h.Get(hdrEpoch); e != "" {
		return e
	}
	return b.epoch
}

// message decodes a stored message.
func (b *Broker) message(name string, seq uint64, h natsgo.Header, data []byte) (broker.Message, meta) {
	var md meta
	ns, _ := strconv.ParseInt(h.Get(hdrTime), 10, 64)
	md.n, _ = strconv.ParseUint(h.Get(hdrN), 10, 64)
	md.prev, _ = strconv.ParseUint(h.Get(hdrPrev), 10, 64)
	md.size, _ = strconv.Atoi(h.Get(hdrSize))
	ttl, _ := strconv.ParseInt(h.Get(hdrTTL), 10, 64)
	md.ttl = time.Duration(ttl)
	unesc := func(k string) string {
		s, err := url.PathUnescape(h.Get(k))
		if err != nil {
			return h.Get(k)
		}
		return s
	}
	ended, _ := broker.ParseOffset(h.Get(hdrEnded)) // a malformed one is no loss to report
	return broker.Message{
		Channel: name,
		Offset:  broker.Offset{Epoch: b.epochOf(h), Seq: seq},
		Prev:    md.prev,
		Ended:   ended,
		Data:    json.RawMessage(data),
		Binary:  h.Get(hdrBinary) == "1",
		Event:   unesc(hdrEvent),
		User:    unesc(hdrUser),
		Client:  unesc(hdrClient),
		Time:    time.Unix(0, ns),
		Trace:   h.Get(hdrTrace),
		Tags:    b.tags(name, seq, h.Get(hdrTags)),
		Key:     unesc(hdrKey),
	}, md
}

// encodeTags writes tags as a URL query, keys in order: any bytes survive,
// escaped to printable ASCII that a header value can hold.
func encodeTags(tags map[string]string) string {
	q := make(url.Values, len(tags))
	for k, v := range tags {
		q[k] = []string{v}
	}
	return q.Encode()
}

// tags decodes the Herald-Tags header v of message seq of channel name;
// "" is no tags (nil). A header herald did not write is logged, and what
// could be read of it kept.
func (b *Broker) tags(name string, seq uint64, v string) map[string]string {
	if v == "" {
		return nil
	}
	q, err := url.ParseQuery(v)
	if err != nil {
		b.log.Warn("nats broker: bad tags header", "channel", name, "seq", seq, "err", err)
	}
	tags := make(map[string]string, len(q))
	for k, vs := range q {
		tags[k] = vs[0]
	}
	return tags
}

// Publish stores p in the channel's stream subject, chained to the channel's
// previous message, and returns its offset. The server republishes it to
// every subscribed node.
func (b *Broker) Publish(ctx context.Context, name string, p broker.Publication, opts broker.HistoryOptions) (broker.Offset, error) {
	_, stream, err := b.state()
	if err != nil {
		return broker.Offset{}, err
	}
	b.mu.Lock()
	js := b.js
	b.mu.Unlock()

	ch := b.chainFor(name)
	ch.mu.Lock()
	defer ch.mu.Unlock()
	subj := b.msgSubject(token(name))
	var tags string
	if len(p.Tags) > 0 {
		tags = encodeTags(p.Tags)
	}
	for range maxPublishAttempts {
		if !ch.known {
			if err := b.readHead(ctx, stream, name, subj, ch); err != nil {
				return broker.Offset{}, err
			}
		}
		m := natsgo.NewMsg(subj)
		m.Data = p.Data
		m.Header.Set(hdrEpoch, ch.epoch)
		m.Header.Set(hdrN, strconv.FormatUint(ch.lastN+1, 10))
		m.Header.Set(hdrPrev, strconv.FormatUint(ch.prev, 10))
		m.Header.Set(hdrTime, strconv.FormatInt(time.Now().UnixNano(), 10))
		m.Header.Set(hdrSize, strconv.Itoa(max(opts.Size, 0)))
		if opts.TTL > 0 {
			m.Header.Set(hdrTTL, strconv.FormatInt(int64(opts.TTL), 10))
		}
		if p.Binary {
			m.Header.Set(hdrBinary, "1")
		}
		if p.Trace != "" {
			m.Header.Set(hdrTrace, p.Trace)
		}
		if tags != "" {
			m.Header.Set(hdrTags, tags)
		}
		if ch.prev == 0 && !ch.ended.IsZero() {
			m.Header.Set(hdrEnded, ch.ended.String())
		}
		for k, v := range map[string]string{hdrEvent: p.Event, hdrUser: p.User, hdrClient: p.Client, hdrKey: p.Key} {
			if v != "" {
				m.Header.Set(k, url.PathEscape(v))
			}
		}
		ack, err := js.PublishMsg(ctx, m, jetstream.WithExpectLastSequencePerSubject(ch.lastSeq))
		if err != nil {
			if isSequenceConflict(err) {
				ch.known = false // another node published: read the chain's head again
				continue
			}
			ch.known = false
			return broker.Offset{}, b.wrap("publish "+name, err)
		}
		ch.lastSeq, ch.prev, ch.lastN, ch.ended = ack.Sequence, ack.Sequence, ch.lastN+1, broker.Offset{}
		off := broker.Offset{Epoch: ch.epoch, Seq: ack.Sequence}
		b.seen.Observe(name, off)
		return off, nil
	}
	return broker.Offset{}, fmt.Errorf("nats broker: publish %s: %d sequence conflicts in a row", name, maxPublishAttempts)
}

// isSequenceConflict reports whether err is a publish refused by the
// expected-last-subject-sequence check.
func isSequenceConflict(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// readHead sets ch from the channel's last stored message. A new epoch
// starts when the channel has no message left (never used, purged, aged
// out, the stream recreated) and when its last message is behind what this
// node saw of the epoch (the stream came back with an older state): the
// offsets after it were acknowledged for messages that are gone.
func (b *Broker) readHead(ctx context.Context, stream jetstream.Stream, name, subj string, ch *chain) error {
	last, err := stream.GetLastMsgForSubject(ctx, subj)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		ch.lastSeq, ch.epoch, ch.prev, ch.lastN = 0, broker.NewEpoch(), 0, 0
		ch.ended = b.seen.Get(name) // zero for a channel this node never saw
	case err != nil:
		return b.wrap("publish "+name, err)
	default:
		_, md := b.message(name, last.Sequence, last.Header, nil)
		ch.lastSeq, ch.epoch, ch.prev, ch.lastN = last.Sequence, b.epochOf(last.Header), last.Sequence, md.n
		if seen := b.seen.Get(name); seen.Epoch == ch.epoch && seen.Seq > last.Sequence {
			b.log.Warn("nats broker: the stream lost messages it had stored; starting a new epoch",
				"channel", name, "seen", seen.String(), "stored", last.Sequence)
			ch.epoch, ch.prev, ch.lastN, ch.ended = broker.NewEpoch(), 0, 0, seen
		}
	}
	ch.known = true
	return nil
}

// History reads the channel's history: the messages its latest
// HistoryOptions still keep, oldest first. The zero cursor walks the
// chain back from the newest message; any other cursor walks forward
// from it with the stream's next-message-by-subject read, so a page of
// Limit messages costs about Limit reads however long the channel is.
func (b *Broker) History(ctx context.Context, name string, q broker.HistoryQuery) (broker.HistoryResult, error) {
	_, stream, err := b.state()
	if err != nil {
		return broker.HistoryResult{}, err
	}
	subj := b.msgSubject(token(name))
	last, err := stream.GetLastMsgForSubject(ctx, subj)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		// Nothing stored: a channel never used, or one whose every message
		// left the stream. Only the zero cursor has nothing to lose.
		return broker.HistoryResult{Complete: q.Since.IsZero()}, nil
	}
	if err != nil {
		return broker.HistoryResult{}, b.wrap("history "+name, err)
	}
	headMsg, head := b.message(name, last.Sequence, last.Header, nil)
	b.seen.Observe(name, headMsg.Offset)
	r := &historyRead{b: b, stream: stream, name: name, subj: subj,
		last: last, epoch: headMsg.Offset.Epoch, head: head, now: time.Now()}
	var res broker.HistoryResult
	if q.Since.IsZero() {
		res, err = r.newest(ctx, q.Limit)
	} else {
		res, err = r.after(ctx, q.Since, q.Limit)
	}
	if err != nil {
		return broker.HistoryResult{}, b.wrap("history "+name, err)
	}
	res.Latest = headMsg.Offset
	return res, nil
}

// historyRead is one History call's view of a channel: its newest stored
// message (the head), whose options decide what is still kept.
type historyRead struct {
	b      *Broker
	stream jetstream.Stream
	name   string
	subj   string
	last   *jetstream.RawStreamMsg // the head
	epoch  string                  // the head's
	head   meta
	now    time.Time
}

// kept reports whether the head's options still keep a message of its
// epoch: among the newest Size and younger than TTL.
func (r *historyRead) kept(m broker.Message, md meta) bool {
	if r.head.size <= 0 || md.n+uint64(r.head.size) <= r.head.n {
		return false
	}
	return r.head.ttl <= 0 || r.now.Sub(m.Time) <= r.head.ttl
}

// stored is one message read from the stream.
type stored struct {
	msg broker.Message
	md  meta
	ok  bool // of the head's epoch and kept
}

// decode decodes raw and tells whether it is returned.
func (r *historyRead) decode(raw *jetstream.RawStreamMsg) stored {
	m, md := r.b.message(r.name, raw.Sequence, raw.Header, raw.Data)
	return stored{msg: m, md: md, ok: m.Offset.Epoch == r.epoch && r.kept(m, md)}
}

// next returns the channel's first stored message at or after stream
// sequence seq, or nil when there is none up to the head.
func (r *historyRead) next(ctx context.Context, seq uint64) (*stored, error) {
	if seq > r.last.Sequence {
		return nil, nil
	}
	if seq == r.last.Sequence {
		s := r.decode(r.last)
		return &s, nil
	}
	raw, err := r.stream.GetMsg(ctx, max(seq, 1), jetstream.WithGetMsgSubject(r.subj))
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return nil, nil // the head left the stream while we read
	case err != nil:
		return nil, err
	case raw.Sequence > r.last.Sequence:
		return nil, nil // published after the head was read
	}
	s := r.decode(raw)
	return &s, nil
}

// firstKept returns the channel's first returned message (of the head's
// epoch and kept) at or after stream sequence seq, or nil when there is
// none. Returned messages are the newest ones, so when the first message
// at seq is not returned it searches the sequences up to the head by
// halves: a cursor far behind costs a few dozen reads, not one per
// message it missed.
func (r *historyRead) firstKept(ctx context.Context, seq uint64) (*stored, error) {
	s, err := r.next(ctx, seq)
	if err != nil || s == nil || s.ok {
		return s, err
	}
	best := r.decode(r.last) // next(hi) is best, and it is returned
	if !best.ok {
		return nil, nil // not even the head is kept
	}
	lo, hi := s.msg.Offset.Seq, r.last.Sequence // next(lo) is not returned
	for hi-lo > 1 {
		mid := lo + (hi-lo)/2
		s, err := r.next(ctx, mid)
		if err != nil || s == nil {
			return nil, err
		}
		if s.ok {
			hi, best = mid, *s
		} else {
			lo = s.msg.Offset.Seq
		}
	}
	return &best, nil
}

// after returns up to limit (all for a negative limit) returned messages
// after since, oldest first. A cursor of the head's epoch is complete when
// the first returned message after it continues the chain from at or
// before it; any other cursor (an epoch that is gone, a sequence past the
// head) gets the oldest returned messages and is not complete.
func (r *historyRead) after(ctx context.Context, since broker.Offset, limit int) (broker.HistoryResult, error) {
	var res broker.HistoryResult
	from := uint64(1)
	cursor := since.Epoch == r.epoch && since.Seq <= r.last.Sequence
	if cursor {
		if since.Seq == r.last.Sequence {
			res.Complete = true
			return res, nil
		}
		from = since.Seq + 1
	} else if limit == 0 {
		return res, nil
	}
	s, err := r.firstKept(ctx, from)
	if err != nil || s == nil {
		return res, err // nothing after since is kept: not complete
	}
	// The chain reaching back to since, or starting the epoch, is
	// unbroken: nothing after since was lost.
	res.Complete = cursor && s.md.prev <= since.Seq
	if limit == 0 {
		return res, nil
	}
	var msgs []broker.Message
	for {
		msgs = append(msgs, s.msg)
		seq := s.msg.Offset.Seq
		if len(msgs) == limit || seq == r.last.Sequence {
			break
		}
		if s, err = r.next(ctx, seq+1); err != nil {
			return broker.HistoryResult{}, err
		}
		if s == nil {
			break
		}
		if !s.ok || s.md.prev != seq {
			// What came before is cut off from the head's chain (a message
			// missing, or not kept while newer ones are, by a publisher's
			// clock): it is not returned, and since is not complete.
			res.Complete, msgs = false, msgs[:0]
			if !s.ok {
				if s, err = r.firstKept(ctx, s.msg.Offset.Seq+1); err != nil || s == nil {
					break
				}
			}
		}
	}
	if err != nil {
		return broker.HistoryResult{}, err
	}
	if len(msgs) > 0 {
		res.Messages = msgs
	}
	return res, nil
}

// newest returns the newest limit (all for a negative limit) returned
// messages, oldest first, walking the chain back from the head. It is
// complete when the epoch's first message is still returned.
func (r *historyRead) newest(ctx context.Context, limit int) (broker.HistoryResult, error) {
	var res broker.HistoryResult
	var newest []broker.Message // newest first
	reached := false            // the walk reached the epoch's first message
	cut := false                // the walk stopped at limit messages
	raw := r.last
	for {
		if limit >= 0 && len(newest) == limit {
			cut = true
			break
		}
		m, md := r.b.message(r.name, raw.Sequence, raw.Header, raw.Data)
		if !r.kept(m, md) {
			break
		}
		newest = append(newest, m)
		if md.prev == 0 {
			reached = true
			break
		}
		var err error
		raw, err = r.stream.GetMsg(ctx, md.prev)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break // left the stream (MaxHistory, MaxAge)
		}
		if err != nil {
			return res, err
		}
	}
	res.Complete = reached
	if cut {
		// Complete when the channel's first message is still kept.
		first, err := r.stream.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(r.subj))
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
		case err != nil:
			return res, err
		default:
			// The subject's oldest message may be of an earlier epoch;
			// then completeness is not known, and not claimed.
			m, md := r.b.message(r.name, first.Sequence, first.Header, nil)
			res.Complete = m.Offset.Epoch == r.epoch && md.n == 1 && r.kept(m, md)
		}
	}
	if len(newest) > 0 {
		res.Messages = make([]broker.Message, len(newest))
		for i, m := range newest {
			res.Messages[len(newest)-1-i] = m
		}
	}
	return res, nil
}

// PublishJoin delivers a join event to every node subscribed to channel.
func (b *Broker) PublishJoin(ctx context.Context, name string, c broker.ClientInfo) error {
	return b.presenceEvent(ctx, name, c, "join")
}

// PublishLeave delivers a leave event to every node subscribed to channel.
func (b *Broker) PublishLeave(ctx context.Context, name string, c broker.ClientInfo) error {
	return b.presenceEvent(ctx, name, c, "leave")
}

func (b *Broker) presenceEvent(_ context.Context, name string, c broker.ClientInfo, kind string) error {
	nc, _, err := b.state()
	if err != nil {
		return err
	}
	data, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("nats broker: %s %s: %w", kind, name, err)
	}
	m := natsgo.NewMsg(b.liveSubject(token(name)))
	m.Header.Set(hdrKind, kind)
	m.Data = data
	if err := nc.PublishMsg(m); err != nil {
		return b.wrap(kind+" "+name, err)
	}
	return nil
}

func (b *Broker) presenceKey(name, client string) string {
	return token(name) + ".c" + token(client)
}

func (b *Broker) bucket() (jetstream.KeyValue, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed || b.kv == nil {
		return nil, fmt.Errorf("nats broker: %w: closed or not started", broker.ErrUnavailable)
	}
	return b.kv, nil
}

// AddPresence records c in channel for Config.PresenceTTL; adding it again
// renews it.
func (b *Broker) AddPresence(ctx context.Context, name string, c broker.ClientInfo) error {
	kv, err := b.bucket()
	if err != nil {
		return err
	}
	data, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("nats broker: add presence: %w", err)
	}
	if _, err := kv.Put(ctx, b.presenceKey(name, c.Client), data); err != nil {
		return b.wrap("add presence to "+name, err)
	}
	return nil
}

// RemovePresence forgets c in channel; forgetting a client not present is
// not an error.
func (b *Broker) RemovePresence(ctx context.Context, name string, c broker.ClientInfo) error {
	kv, err := b.bucket()
	if err != nil {
		return err
	}
	if err := kv.Purge(ctx, b.presenceKey(name, c.Client)); err != nil {
		return b.wrap("remove presence from "+name, err)
	}
	return nil
}

// Presence lists channel's subscribers in no particular order.
func (b *Broker) Presence(ctx context.Context, name string) ([]broker.ClientInfo, error) {
	kv, err := b.bucket()
	if err != nil {
		return nil, err
	}
	out := []broker.ClientInfo{}
	lister, err := kv.ListKeysFiltered(ctx, token(name)+".*")
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return out, nil
		}
		return nil, b.wrap("presence of "+name, err)
	}
	defer lister.Stop()
	for key := range lister.Keys() {
		e, err := kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // removed or expired meanwhile
		}
		if err != nil {
			return nil, b.wrap("presence of "+name, err)
		}
		var c broker.ClientInfo
		if err := json.Unmarshal(e.Value(), &c); err != nil {
			return nil, fmt.Errorf("nats broker: presence of %s: key %s: %w", name, key, err)
		}
		out = append(out, c)
	}
	return out, nil
}
