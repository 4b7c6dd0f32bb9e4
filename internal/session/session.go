// Package session is one client connection's protocol state: its
// subscriptions, the commands it sends, and its bounded outgoing queue,
// handed to the transport one batch at a time while there is something to
// write (an idle session runs no goroutine).
//
// Everything queued for the client counts against its bound (Config.
// QueueBytes): live fan-out past it closes the session as a slow consumer,
// unless its channel conflates (wire.Payload.Conflate) and dropping the
// queued messages that a newer one of the same key replaces makes room;
// replies past it stop the session from handling commands until the client
// reads (throttle); history catch-up is paced by the hub a page at a time
// (the session is a hub.Paced). Commands are rate limited, publishes
// apart from the rest (Limits).
//
// A session does not touch the socket: the transport hands it frames
// (HandleText, HandleBinary) and writes what the session gives its Conn.
package session

import (
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/internal/hub"
	"github.com/heraldhq/herald/internal/metrics"
	"github.com/heraldhq/herald/internal/protocol"
	"github.com/heraldhq/herald/internal/wire"
)

var (
	_ hub.Paced         = (*Session)(nil)
	_ hub.Interruptible = (*Session)(nil)
	_ wire.Source       = (*Session)(nil)
)

// Conn is the transport side of a session.
type Conn interface {
	// Send tells the Conn, without blocking, that src has payloads to
	// write. When the write begins the Conn takes them (src.Take), writes
	// them in order, and then calls src.Written, which may call Send
	// again; a connection that fails or has ended before the write began
	// calls Written with the error without taking anything. The session
	// calls Send again only after Written: one write is in flight at a
	// time.
	Send(src wire.Source)
	// Close closes the connection with a close code and reason. It must not
	// block, and may be called more than once.
	Close(code int, reason string)
}

// Mode is how a session speaks.
type Mode uint8

// The session modes.
const (
	// ModeJSON is the JSON protocol, one object per frame (herald.v1).
	ModeJSON Mode = iota
	// ModeJSONL is the JSON protocol, several lines per frame (herald.v1.jsonl).
	ModeJSONL
	// ModeRaw is raw mode: frames are message data of one channel.
	ModeRaw
	// ModeSSE is a Server-Sent Events stream: messages only, subscribed
	// with SubscribeStream; nothing is read from the client.
	ModeSSE
)

// Policy decides what a client may do. Errors of type *protocol.Error reach
// the client as they are; any other error is reported as "internal".
type Policy interface {
	// AuthorizeSubscribe allows or refuses a subscription.
	AuthorizeSubscribe(ctx context.Context, c broker.ClientInfo, channel string) error
	// AuthorizePublish allows or refuses a publish and may rewrite p.
	AuthorizePublish(ctx context.Context, c broker.ClientInfo, channel string, p *broker.Publication) error
	// Refresh replaces the connection's token and returns when the new one
	// expires (zero: never).
	Refresh(ctx context.Context, c broker.ClientInfo, token string) (time.Time, error)
}

// RPCHandler is a Policy that answers the rpc command; without it, rpc is
// a bad_request.
type RPCHandler interface {
	// RPC returns the data of the reply to an rpc of method with data.
	RPC(ctx context.Context, c broker.ClientInfo, method string, data json.RawMessage) (json.RawMessage, error)
}

// Renewer is a Policy that renews the connection's expiry itself, before
// it passes: the session asks it 30 s before (or when a quarter of the
// time left remains, if sooner).
type Renewer interface {
	// Renew returns the connection's new expiry (zero: never). A refusal
	// (a *protocol.Error other than unavailable or internal) closes the
	// connection with its code and message; a failure is tried again
	// while time is left.
	Renew(ctx context.Context, c broker.ClientInfo) (time.Time, error)
}

// Limits bound what one connection may do; zero fields do not limit.
type Limits struct {
	// MaxSubscriptions caps the channels one connection is subscribed to.
	MaxSubscriptions int
	// PublishRate is the publishes per second a connection may make on
	// average, with bursts of PublishBurst.
	PublishRate  rate.Limit
	PublishBurst int
	// CommandRate is the other commands per second a connection may send
	// on average, with bursts of CommandBurst.
	CommandRate  rate.Limit
	CommandBurst int
}

// Config configures a Session: what is its own, and the settings it
// shares with every session of its server.
type Config struct {
	// Shared is required; sessions of one server share one, which they
	// must not modify (but for its pools of queue slices, which are safe
	// for concurrent use).
	*Shared
	Conn   Conn
	Client broker.ClientInfo
	Mode   Mode
	// RawChannel is the channel of a ModeRaw session.
	RawChannel string
	// Policy is consulted for every subscribe and publish; nil allows all.
	Policy Policy
	// Observer, when set, is told of each subscription that starts and
	// ends; nil: nobody is.
	Observer Observer
}

// settings is what a session keeps of its Config: all of it but the
// mode, which it keeps with its other small fields.
type settings struct {
	*Shared
	Conn       Conn
	Client     broker.ClientInfo
	RawChannel string
	Policy     Policy
	Observer   Observer
}

// Shared is what the sessions of one server have in common. A server
// makes one and gives every session a pointer to it, rather than each
// session a copy: it is most of what a session would otherwise hold, and
// an idle server holds its sessions by the hundred thousand.
type Shared struct {
	Hub    *hub.Hub
	Limits Limits
	// QueueMessages and QueueBytes bound the outgoing queue: what waits
	// for the connection's next write to take it (the write in flight is
	// not counted). Live fan-out past either closes the session with 1008
	// (a slow consumer), unless
	// conflation makes room for a conflating channel's message. What
	// the client asked for (replies, history catch-up) counts against
	// QueueBytes too: past it the session stops handling commands, and
	// catch-up waits, until the client reads.
	QueueMessages int
	QueueBytes    int
	Metrics       *metrics.Metrics
	// Logger receives what sessions log; nil discards.
	Logger *slog.Logger

	// The queue slices sessions let go when they fall idle (slicePool).
	queues  slicePool[queued]
	batches slicePool[*wire.Payload]
}

// Observer is told when a session's subscriptions start (the hub took
// them) and end (unsubscribed, or the session closed), in the order they
// do: a subscription's end is never told before its start. Its calls are
// made under the session's lock: they must not block.
type Observer interface {
	Subscribed(channel string)
	Unsubscribed(channel string)
}

// Session is one connection. HandleText and HandleBinary must be called
// from one goroutine at a time; Deliver and Close from any.
//
// A server holds as many sessions as it has idle connections: the struct
// is kept small (the fields are ordered so that small ones share words),
// what every session has in common is in Shared, and state that few
// sessions need is made when first needed.
type Session struct {
	cfg settings

	mu     sync.Mutex          // guards subs, making, serverSubs, closed and expiry
	subs   []string            // a few per connection: a slice is smaller than a map
	making []string            // subs the hub is still making: only their subscribe undoes them
	told   map[string]struct{} // subs whose start the Observer was told; nil without one
	closed bool
	mode   Mode // set by New, never changed: read without mu
	// serverSubs counts the server-side subscriptions, which are the
	// first of subs: they do not count against MaxSubscriptions.
	serverSubs uint16
	// The publishes and other commands counted before their limiter is
	// made (see allow); used by the reading goroutine only, like the
	// limiters.
	earlyPublishes, earlyCommands uint8
	expiry                        *time.Timer   // nil without a token expiry; also the Renewer's
	limiter                       *rate.Limiter // publishes; made after the first few (see allow)
	cmdRate                       *rate.Limiter // other commands; likewise

	qmu       sync.Mutex // guards the outgoing queue
	queue     []queued
	liveLen   int           // live fan-out payloads in queue
	liveBytes int           // and their bytes
	held      int           // bytes of everything queued or in flight
	drained   chan struct{} // closed when held falls; nil unless someone waits
	cause     *Cause        // the first close the session made; nil when none
	writing   bool          // a write was started (Send) and is not yet Written
	closing   bool
	paging    bool  // a catch-up page is reserved (TryRoom, WaitRoom)
	holds     int32 // bytes of held that the hub buffers (Hold), not queued

	// The batch in flight, between Take and Written (used only by the
	// Conn's write in progress).
	batch []*wire.Payload
}

// discard is the Logger of a Shared without one.
var discard = slog.New(slog.DiscardHandler)

// New returns a session; the caller calls Open next.
func New(cfg Config) *Session {
	s := &Session{mode: cfg.Mode, cfg: settings{
		Shared: cfg.Shared, Conn: cfg.Conn, Client: cfg.Client, RawChannel: cfg.RawChannel,
		Policy: cfg.Policy, Observer: cfg.Observer,
	}}
	return s
}

// logger is the sessions' Logger.
func (s *Session) logger() *slog.Logger {
	if s.cfg.Logger == nil {
		return discard
	}
	return s.cfg.Logger
}

// Client returns the session's client and user ids.
func (s *Session) Client() broker.ClientInfo { return s.cfg.Client }

// Open starts the session: a JSON session sends its welcome, a raw session
// subscribes to its channel (resuming after since when it is set). From
// expires on, when it is not zero (the connection's token expires then),
// the session closes the connection with 1008, unless a refresh (or the
// Policy, when it is a Renewer) moves it.
func (s *Session) Open(since *string, expires time.Time) error {
	if !expires.IsZero() {
		s.setExpiry(expires)
	}
	if s.mode == ModeSSE {
		return nil
	}
	if s.mode != ModeRaw {
		s.enqueue(wire.NewPayload(protocol.Welcome(s.cfg.Client.Client, s.cfg.Client.User)), asked)
		return nil
	}
	_, perr := s.subscribe(s.cfg.RawChannel, since, false, hub.SubscribeOptions{}, func(r hub.SubscribeResult) {
		if !r.Recovered {
			s.enqueue(wire.NewPayload(protocol.RawUnrecovered(s.cfg.RawChannel, r.Latest.String())), asked)
		}
	})
	if perr != nil {
		return perr
	}
	return nil
}

// Deliver queues a delivery for the client; called by the hub.
func (s *Session) Deliver(d *hub.Delivery) {
	switch s.mode {
	case ModeRaw:
		if p := d.Raw(); p != nil {
			s.enqueue(p, deliveryKind(d))
		}
		return
	case ModeSSE:
		if p := d.SSE(); p != nil {
			s.enqueue(p, deliveryKind(d))
		}
		return
	}
	s.enqueue(d.JSON(), deliveryKind(d))
}

// SubscribeStream subscribes a ModeSSE session to channel, resuming after
// since when it is set, passing only what f passes (nil: everything), and
// returns where the subscription starts. When
// history no longer reaches back to since, the stream first gets a
// "herald.unrecovered" event for the channel, then what history still
// holds. A server-side subscription (server) skips the Policy and the
// subscription limit. A refused or failed subscription returns a
// *protocol.Error.
func (s *Session) SubscribeStream(channel string, since *string, server bool, f hub.Filter) (hub.SubscribeResult, error) {
	var res hub.SubscribeResult
	ok, perr := s.subscribe(channel, since, server, hub.SubscribeOptions{Filter: f}, func(r hub.SubscribeResult) {
		res = r
		if !r.Recovered {
			s.enqueue(wire.NewPayload(protocol.SSEUnrecovered(channel)), asked)
		}
	})
	if !ok {
		return res, perr
	}
	return res, nil
}

// SubscribeServer makes a server-side subscription of a JSON or SSE
// session to channel, resuming after since when it is set: no Policy or
// subscription limit applies, herald's own namespace excepted. A JSON
// client gets a "subscribed" push, then the channel's messages; an SSE
// stream gets the messages. Subscribing a channel
// the session has already succeeds and changes nothing. A failed
// subscription returns a *protocol.Error.
func (s *Session) SubscribeServer(channel string, since *string) error {
	if e := protocol.Reserved(channel); e != nil {
		return e
	}
	if s.mode == ModeSSE {
		// A stream has no pushes: the channel's messages carry it into
		// the stream's cursor.
		if _, err := s.SubscribeStream(channel, since, true, nil); err != nil && !s.subscribed(channel) {
			return err
		}
		return nil
	}
	ok, perr := s.subscribe(channel, since, true, hub.SubscribeOptions{}, func(r hub.SubscribeResult) {
		s.enqueue(wire.NewPayload(protocol.SubscribedPush(channel, r.Latest.String(), r.Recovered)), asked)
	})
	if !ok && !s.subscribed(channel) {
		return perr
	}
	return nil
}

// UnsubscribeServer ends the session's subscription to channel on the
// server's say, whoever made it: a JSON client gets an "unsubscribed"
// push, an SSE stream stops carrying the channel. It reports whether the
// session was subscribed.
func (s *Session) UnsubscribeServer(channel string) bool {
	s.mu.Lock()
	ok := !s.closed && s.removeSubLocked(channel)
	s.mu.Unlock()
	if !ok {
		return false
	}
	s.cfg.Hub.Unsubscribe(context.Background(), s, s.cfg.Client, channel)
	s.subscriptionsDelta(-1)
	if s.mode == ModeJSON || s.mode == ModeJSONL {
		s.enqueue(wire.NewPayload(protocol.UnsubscribedPush(channel)), asked)
	}
	return true
}

// Channels returns the channels the session is subscribed to.
func (s *Session) Channels() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.subs)
}

// Mode returns how the session speaks.
func (s *Session) Mode() Mode { return s.mode }

// subscribed reports whether the session is subscribed to channel.
func (s *Session) subscribed(channel string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Contains(s.subs, channel)
}

// HandleText handles one text frame.
func (s *Session) HandleText(frame []byte) {
	switch s.mode {
	case ModeRaw:
		s.publishRaw(frame, false)
	case ModeJSONL:
		protocol.SplitLines(frame, s.handleCommand)
	default:
		s.handleCommand(frame)
	}
}

// HandleBinary handles one binary frame: raw mode relays it, the JSON
// protocol refuses it.
func (s *Session) HandleBinary(frame []byte) {
	if s.mode == ModeRaw {
		s.publishRaw(frame, true)
		return
	}
	s.reply(protocol.ErrorReply(0, protocol.Errorf(protocol.CodeBadRequest, "binary frames are not commands: send JSON text")))
}

// Close unsubscribes the session from every channel. Later deliveries are
// dropped.
func (s *Session) Close() {
	s.qmu.Lock()
	s.closeLocked()
	s.qmu.Unlock()

	s.mu.Lock()
	s.closed = true
	subs := s.subs
	s.subs = nil
	made := subs[:0]
	for _, ch := range subs {
		s.tellEndLocked(ch)
		if !slices.Contains(s.making, ch) { // else its subscribe undoes it
			made = append(made, ch)
		}
	}
	if s.expiry != nil {
		s.expiry.Stop()
	}
	s.mu.Unlock()
	for _, ch := range made {
		s.cfg.Hub.Unsubscribe(context.Background(), s, s.cfg.Client, ch)
		s.subscriptionsDelta(-1)
	}
}

// tellStartLocked tells the Observer that channel's subscription started.
func (s *Session) tellStartLocked(channel string) {
	if s.cfg.Observer == nil {
		return
	}
	if s.told == nil {
		s.told = make(map[string]struct{})
	}
	s.told[channel] = struct{}{}
	s.cfg.Observer.Subscribed(channel)
}

// tellEndLocked tells the Observer that channel's subscription ended, if
// it was told it started.
func (s *Session) tellEndLocked(channel string) {
	if _, ok := s.told[channel]; ok {
		delete(s.told, channel)
		s.cfg.Observer.Unsubscribed(channel)
	}
}

// removeSubLocked forgets channel and reports whether it was subscribed.
// A subscription the hub is still making is not subscribed yet: it
// stays.
func (s *Session) removeSubLocked(channel string) bool {
	i := slices.Index(s.subs, channel)
	if i < 0 || slices.Contains(s.making, channel) {
		return false
	}
	s.tellEndLocked(channel)
	s.subs = slices.Delete(s.subs, i, i+1)
	if i < int(s.serverSubs) {
		s.serverSubs--
	}
	return true
}

// setExpiry makes the session close its connection at t (1008, "token
// expired"), replacing an earlier expiry; the zero t removes it. When the
// Policy is a Renewer, it is asked for a new expiry first (renewLead).
func (s *Session) setExpiry(t time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t.IsZero() {
		s.armLocked(time.Time{}, nil)
		return
	}
	if _, ok := s.cfg.Policy.(Renewer); ok {
		left := time.Until(t)
		s.armLocked(t.Add(-min(renewLead, left/4)), func() { s.renew(t) })
		return
	}
	s.armLocked(t, s.expire)
}

// renewLead is how long before a connection's expiry a Renewer is asked,
// at the most: with less time left, it is asked when a quarter remains.
const renewLead = 30 * time.Second

// renewRetry is the shortest wait before a failed renewal is tried again.
const renewRetry = time.Second

// armLocked replaces the expiry timer with one that runs fn at t; a nil
// fn only stops it.
func (s *Session) armLocked(t time.Time, fn func()) {
	if s.expiry != nil {
		s.expiry.Stop()
		s.expiry = nil
	}
	if s.closed || fn == nil {
		return
	}
	s.expiry = time.AfterFunc(time.Until(t), fn)
}

// expire closes the connection whose expiry passed.
func (s *Session) expire() {
	s.refused("token_expired")
	s.closeConn(protocol.CodeUnauthorized.CloseCode(), "token expired")
}

// renew asks the Renewer for the expiry that replaces t, on the expiry
// timer's goroutine. A failure is tried again after a quarter of the time
// left (at least renewRetry), while that comes before t.
func (s *Session) renew(t time.Time) {
	ctx, cancel := context.WithDeadline(context.Background(), t)
	next, err := s.cfg.Policy.(Renewer).Renew(ctx, s.cfg.Client)
	cancel()
	if err == nil {
		s.setExpiry(next)
		return
	}
	pe := s.asProtocolError(err)
	if pe.Code != protocol.CodeUnavailable && pe.Code != protocol.CodeInternal {
		s.refused(string(pe.Code))
		s.closeConn(pe.Code.CloseCode(), pe.Message)
		return
	}
	s.logger().Warn("renewing a connection failed", "client", s.cfg.Client.Client, "err", pe.Message)
	retry := time.Now().Add(max(renewRetry, time.Until(t)/4))
	s.mu.Lock()
	defer s.mu.Unlock()
	if retry.Before(t) {
		s.armLocked(retry, func() { s.renew(t) })
	} else {
		s.armLocked(t, s.expire)
	}
}

// allowCommand takes one command other than publish from the
// connection's command rate limit.
func (s *Session) allowCommand() bool {
	return allow(&s.cmdRate, &s.earlyCommands, s.cfg.Limits.CommandRate, s.cfg.Limits.CommandBurst)
}

// allowPublish takes one publish from the connection's rate limit.
func (s *Session) allowPublish() bool {
	return allow(&s.limiter, &s.earlyPublishes, s.cfg.Limits.PublishRate, s.cfg.Limits.PublishBurst)
}

// earlyEvents is how many events a connection makes before its limiter
// is made: most connections subscribe or publish a few times and never
// need one (a limiter is 80 bytes a connection). Any burst takes them.
const earlyEvents = 8

// allow takes one event from the limiter *l at rate r with bursts of
// burst; a rate of zero or less does not limit. The first events (up to
// earlyEvents, and no more than burst) are only counted in *early; the
// limiter made after them starts with them taken, as if it had existed
// from the first.
func allow(l **rate.Limiter, early *uint8, r rate.Limit, burst int) bool {
	if r <= 0 {
		return true
	}
	burst = max(burst, 1)
	if *l == nil {
		if int(*early) < min(earlyEvents, burst) {
			*early++
			return true
		}
		*l = rate.NewLimiter(r, burst)
		(*l).AllowN(time.Now(), int(*early))
	}
	return (*l).Allow()
}

// refused counts a refusal by reason and logs it at info: one line per
// refusal, never one per message.
func (s *Session) refused(reason string) {
	if s.cfg.Metrics != nil {
		s.cfg.Metrics.Refusals.WithLabelValues(reason).Inc()
	}
	s.logger().Info("refused", "reason", reason, "client", s.cfg.Client.Client, "user", s.cfg.Client.User)
}

// Disconnect closes the connection with a close code and reason.
func (s *Session) Disconnect(code int, reason string) { s.closeConn(code, reason) }

func (s *Session) reply(b []byte) { s.enqueue(wire.NewPayload(b), asked) }

func deliveryKind(d *hub.Delivery) kind {
	if d.Replay {
		return asked
	}
	return live
}

func (s *Session) subscriptionsDelta(d float64) {
	if s.cfg.Metrics != nil {
		s.cfg.Metrics.Subscriptions.Add(d)
	}
}

// publishRaw publishes a raw-mode frame to the session's channel. Raw mode
// has no replies: a refused publish closes the connection with its code's
// close code (1008 for a refusal, 1011 for a failure) and message.
func (s *Session) publishRaw(frame []byte, binary bool) {
	if !s.allowPublish() {
		// Raw mode has no error replies: a client over its rate is told by
		// closing, rather than silently losing what it sends.
		s.refused("rate_limited")
		s.closeConn(protocol.CodeRateLimited.CloseCode(), "publish rate limit exceeded")
		return
	}
	p := broker.Publication{Binary: binary, User: s.cfg.Client.User, Client: s.cfg.Client.Client}
	if binary {
		p.Data = append([]byte(nil), frame...)
	} else {
		p.Data = quoteJSON(frame)
	}
	if _, err := s.publish(context.Background(), s.cfg.RawChannel, p); err != nil {
		pe := s.asProtocolError(err)
		if pe.Code == protocol.CodeForbidden || pe.Code == protocol.CodeUnauthorized {
			s.refused(string(pe.Code))
		}
		s.closeConn(pe.Code.CloseCode(), pe.Message)
	}
}

// asProtocolError turns any error into what a client may see, logging
// what it hides (protocol.Public).
func (s *Session) asProtocolError(err error) *protocol.Error {
	return protocol.Public(err, func(err error) {
		s.logger().Error("command failed", "client", s.cfg.Client.Client, "err", err)
	})
}
