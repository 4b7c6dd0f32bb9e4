// Package client is herald's Go client: one connection to a herald server's
// JSON protocol on /ws that reconnects by itself and resumes every
// subscription from the last offset it saw, so a reader gets every message
// once, in order, across reconnects, while the server's history holds them.
// It does not reconnect after the application disconnected it (ErrKicked).
//
// All methods are safe for concurrent use. Every call that waits for the
// server takes a context; while the connection is down, calls wait for the
// next one (or for their context), except that a publish sent on a
// connection that was lost before its ack fails with the unavailable code:
// it may or may not have been published.
package client

import (
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// Options configure a Client. The zero Options connect anonymously.
type Options struct {
	// Token is a JWT sent with every connection (Authorization: Bearer).
	Token string
	// GetToken, when set, is called before every connection for the token
	// to send, and shortly before a JWT's exp to refresh it on the live
	// connection. It takes precedence over Token.
	GetToken func(ctx context.Context) (string, error)
	// Header is added to every handshake request (an Origin, say).
	Header http.Header
	// MinRetry and MaxRetry bound the jittered, doubling delay between
	// reconnection attempts [250ms, 10s].
	MinRetry, MaxRetry time.Duration
	// OnState, when set, is told of every state change. It runs on the
	// client's own goroutine: it must not block.
	OnState func(State)
	// OnServerSubscribe, when set, is given each subscription the server
	// makes for the client (an application's server-side channels), once,
	// when it first appears; read its messages with Next, as those of
	// Subscribe. It runs on the client's own goroutine: it must not block.
	// The Client resumes server-side subscriptions after a reconnection
	// from the last offset seen (/ws?since=), as it resubscribes its own.
	OnServerSubscribe func(*Subscription)
	// Logger receives what goes wrong in the background (a failed
	// reconnect); nil discards.
	Logger *slog.Logger
}

// State is the connection's state.
type State int

// The states of a Client.
const (
	// Connecting: dialling, or waiting for the server's welcome.
	Connecting State = iota
	// Connected: commands go out as they are made.
	Connected
	// Disconnected: waiting to reconnect, or closed.
	Disconnected
)

func (s State) String() string {
	switch s {
	case Connecting:
		return "connecting"
	case Connected:
		return "connected"
	}
	return "disconnected"
}

// Error is an error the server answered a command with.
type Error struct {
	// Code is the contract's error code: bad_request, unauthorized,
	// forbidden, not_found, too_large, rate_limited, unavailable, internal.
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return "herald: " + e.Code + ": " + e.Message }

// ErrClosed is returned by calls on a closed Client.
var ErrClosed = errors.New("herald client: closed")

// ErrKicked ends a Client the application disconnected (herald's server
// API, POST /api/disconnect, which closes the connection with code 4000):
// it does not reconnect. Dial, every call waiting or made later, and each
// subscription's Next once its queue is empty return an error that wraps
// it, with the server's reason: test it with errors.Is.
var ErrKicked = errors.New("herald client: disconnected by the application")

// closeKicked is the close code of a connection the application
// disconnected.
const closeKicked = 4000

// kickedError is the error of a connection that closed with closeKicked,
// or nil when err says nothing of the kind.
func kickedError(err error) error {
	var ce websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != closeKicked {
		return nil
	}
	if ce.Reason == "" {
		return ErrKicked
	}
	return fmt.Errorf("%w: %s", ErrKicked, ce.Reason)
}

// errLost fails a publish whose connection was lost before its ack.
var errLost = &Error{Code: "unavailable", Message: "connection lost before the reply: the publish may or may not have happened"}

// Message is one message of a channel.
type Message struct {
	Channel string          `json:"channel"`
	Offset  string          `json:"offset"`
	Data    json.RawMessage `json:"data"`
	Event   string          `json:"event,omitempty"`
	User    string          `json:"user,omitempty"`
	Client  string          `json:"client,omitempty"`
	// Tags are the publisher's tags (WithTags); nil for none.
	Tags map[string]string `json:"tags,omitempty"`
	// Key is the publisher's conflation key (WithKey); "" for none.
	Key string `json:"key,omitempty"`
	// Binary marks data published as a binary frame in raw mode; Data is
	// then its base64 as a JSON string.
	Binary bool `json:"binary,omitempty"`
}

// Presence is one subscribed connection.
type Presence struct {
	Client string `json:"client"`
	User   string `json:"user"`
	// Transport is how it is connected: "websocket" (the JSON protocol), "raw" (a raw WebSocket) or
	// "sse" (a stream that only reads); empty from servers that do not
	// say.
	Transport string `json:"transport,omitempty"`
	// Info is what the application said of the connection when it let it
	// in; nil for none.
	Info json.RawMessage `json:"info,omitempty"`
}

// Client is one connection to a herald server; see the package doc.
type Client struct {
	url  string
	opts Options
	log  *slog.Logger

	mu        sync.Mutex
	conn      *websocket.Conn // nil unless connected
	state     State
	token     string // sent with the current connection
	clientID  string
	user      string
	nextID    uint64
	pending   map[uint64]*call
	subs      map[string]*Subscription
	connected chan struct{} // closed while connected
	closed    bool
	err       error // why calls fail once closed: ErrClosed, or a kick

	stop   chan struct{}   // closed by Close
	ctx    context.Context // done at Close: ends a reconnect in progress
	cancel context.CancelFunc
	done   chan struct{} // closed when the run loop ends
}

// call is one command waiting for its reply.
type call struct {
	id    uint64
	op    string
	frame []byte
	sent  bool                         // written on the current connection
	once  bool                         // belongs to the connection it is made on: never sent on a later one
	done  func(json.RawMessage, error) // called once, with the reply or why there is none
}

// Dial connects to url — a ws:// or wss:// /ws endpoint, or an http(s)://
// base URL, to which /ws is added — and returns once the server's welcome
// arrived. A refused first connection (a bad token, say) is an error; after
// that the Client reconnects by itself until Close, or until the server
// closes a connection with 4000: the application disconnected the client,
// and it ends with ErrKicked.
func Dial(ctx context.Context, rawURL string, opts *Options) (*Client, error) {
	u, err := wsURL(rawURL)
	if err != nil {
		return nil, err
	}
	c := &Client{
		url:       u,
		pending:   make(map[uint64]*call),
		subs:      make(map[string]*Subscription),
		connected: make(chan struct{}),
		state:     Disconnected,
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	if opts != nil {
		c.opts = *opts
	}
	if c.opts.MinRetry <= 0 {
		c.opts.MinRetry = 250 * time.Millisecond
	}
	if c.opts.MaxRetry <= 0 {
		c.opts.MaxRetry = 10 * time.Second
	}
	c.log = c.opts.Logger
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	conn, welcome, err := c.connect(ctx)
	if err != nil {
		c.cancel()
		return nil, err
	}
	c.online(conn, welcome)
	go c.run(conn, welcome.rest)
	return c, nil
}

// wsURL turns a server URL into its /ws endpoint.
func wsURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("herald client: url: %w", err)
	}
	switch u.Scheme {
	case "http":
		u.Scheme = "ws"
	case "https":
		u.Scheme = "wss"
	case "ws", "wss":
	default:
		return "", fmt.Errorf("herald client: url %q: want ws://, wss://, http:// or https://", raw)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/ws"
	}
	return u.String(), nil
}

// connect dials once and reads the welcome.
func (c *Client) connect(ctx context.Context) (*websocket.Conn, welcome, error) {
	c.setState(Connecting)
	token := c.opts.Token
	if c.opts.GetToken != nil {
		t, err := c.opts.GetToken(ctx)
		if err != nil {
			return nil, welcome{}, fmt.Errorf("herald client: get token: %w", err)
		}
		token = t
	}
	h := http.Header{}
	for k, v := range c.opts.Header {
		h[k] = v
	}
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
	conn, resp, err := websocket.Dial(ctx, c.resumeURL(), &websocket.DialOptions{
		Subprotocols: []string{"herald.v1.jsonl", "herald.v1"},
		HTTPHeader:   h,
	})
	if err != nil {
		return nil, welcome{}, dialError(resp, err)
	}
	conn.SetReadLimit(-1) // the server bounds what it sends
	_, b, err := conn.Read(ctx)
	var w welcome
	if err == nil {
		var first []byte
		first, w.rest, _ = bytes.Cut(b, []byte("\n"))
		err = json.Unmarshal(first, &w)
	}
	if err != nil || w.Op != "welcome" {
		_ = conn.CloseNow()
		if kicked := kickedError(err); kicked != nil {
			return nil, welcome{}, kicked
		}
		return nil, welcome{}, fmt.Errorf("herald client: no welcome from %s: %v", c.url, err)
	}
	c.mu.Lock()
	c.token = token
	c.mu.Unlock()
	return conn, w, nil
}

// resumeURL is the URL to connect to: with ?since= naming the last offset
// seen of every subscription that has one, so that the server resumes its
// server-side subscriptions without a gap (it reads only theirs).
func (c *Client) resumeURL() string {
	c.mu.Lock()
	offs := make(map[string]string, len(c.subs))
	for ch, s := range c.subs {
		if last, ok := s.lastOffset(); ok {
			offs[ch] = last
		}
	}
	c.mu.Unlock()
	if len(offs) == 0 {
		return c.url
	}
	b, _ := json.Marshal(offs) // strings always encode
	sep := "?"
	if strings.Contains(c.url, "?") {
		sep = "&"
	}
	return c.url + sep + "since=" + url.QueryEscape(string(b))
}

type welcome struct {
	Op     string `json:"op"`
	Client string `json:"client"`
	User   string `json:"user"`
	// rest is what followed the welcome in its frame: in herald.v1.jsonl
	// the server may send the next lines with it (the server-side
	// subscriptions, say).
	rest []byte
}

// dialError turns a refused handshake into the server's *Error when the
// response carries one.
func dialError(resp *http.Response, err error) error {
	if resp != nil {
		var body struct {
			Error *Error `json:"error"`
		}
		if resp.Body != nil {
			_ = json.NewDecoder(resp.Body).Decode(&body)
		}
		if body.Error != nil {
			return fmt.Errorf("herald client: connect: %w", body.Error)
		}
	}
	return fmt.Errorf("herald client: connect: %w", err)
}

// run serves one connection after another, from conn (first: what
// followed its welcome in the welcome's frame), until Close, or until the
// server closes one with closeKicked.
func (c *Client) run(conn *websocket.Conn, first []byte) {
	defer close(c.done)
	for {
		err := c.read(conn, first)
		c.offline(conn, err)
		if kicked := kickedError(err); kicked != nil {
			c.shut(kicked)
			return
		}
		for retries := 0; ; retries++ {
			select {
			case <-c.stop:
				return
			case <-time.After(c.backoff(retries)):
			}
			ctx, cancel := context.WithTimeout(c.ctx, c.opts.MaxRetry+10*time.Second)
			var w welcome
			conn, w, err = c.connect(ctx)
			cancel()
			if err == nil {
				c.online(conn, w)
				first = w.rest
				break
			}
			if errors.Is(err, ErrKicked) {
				c.shut(err)
				return
			}
			c.log.Warn("herald client: reconnect", "url", c.url, "err", err)
			c.setState(Disconnected)
		}
	}
}

// backoff is the jittered delay before reconnection attempt n.
func (c *Client) backoff(n int) time.Duration {
	d := c.opts.MinRetry << min(n, 16)
	d = min(d, c.opts.MaxRetry)
	return d/2 + rand.N(d/2+1)
}

// online makes conn the current connection: subscriptions are resumed
// first, then the commands that waited go out, in order.
func (c *Client) online(conn *websocket.Conn, w welcome) {
	c.mu.Lock()
	select {
	case <-c.stop:
		c.mu.Unlock()
		_ = conn.CloseNow()
		return
	default:
	}
	c.conn, c.clientID, c.user = conn, w.Client, w.User
	subs := make([]*Subscription, 0, len(c.subs))
	for _, s := range c.subs {
		subs = append(subs, s)
	}
	var waiting []*call
	for id, p := range c.pending {
		switch {
		case p.sent:
		case p.op == "subscribe" || p.once:
			delete(c.pending, id) // every subscription is made again below
		default:
			waiting = append(waiting, p)
		}
	}
	c.mu.Unlock()
	for _, s := range subs {
		if !s.isServer() { // the server makes its own again
			c.subscribeCmd(s)
		}
	}
	slices.SortFunc(waiting, func(a, b *call) int { return cmp.Compare(a.id, b.id) })
	for _, p := range waiting {
		c.write(conn, p)
	}
	c.setState(Connected)
	c.scheduleRefresh(conn)
}

// offline forgets conn. A publish, rpc or refresh that was sent on it fails
// (it may or may not have happened); a subscribe is made again by the next
// connection's resubscribe; a call made for this connection only (once) is
// dropped; everything else that was sent waits to be sent again.
func (c *Client) offline(conn *websocket.Conn, err error) {
	_ = conn.CloseNow()
	var lost []*call
	c.mu.Lock()
	if c.conn == conn {
		c.conn = nil
	}
	for id, p := range c.pending {
		if !p.sent {
			continue
		}
		p.sent = false
		switch p.op {
		case "publish", "refresh", "rpc":
			delete(c.pending, id)
			lost = append(lost, p)
		case "subscribe":
			delete(c.pending, id)
		default:
			if p.once {
				delete(c.pending, id)
			}
		}
	}
	c.mu.Unlock()
	for _, p := range lost {
		p.done(nil, errLost)
	}
	c.setState(Disconnected)
	c.log.Info("herald client: connection lost", "url", c.url, "err", err)
}

func (c *Client) setState(s State) {
	c.mu.Lock()
	changed := c.state != s
	c.state = s
	if s == Connected {
		select {
		case <-c.connected:
		default:
			close(c.connected)
		}
	} else {
		select {
		case <-c.connected:
			c.connected = make(chan struct{})
		default:
		}
	}
	c.mu.Unlock()
	if changed && c.opts.OnState != nil {
		c.opts.OnState(s)
	}
}

// State returns the connection's state.
func (c *Client) State() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

// ID returns the server's id for the current connection; it is new on
// every reconnection.
func (c *Client) ID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.clientID
}

// User returns the user id of the connection ("" for anonymous).
func (c *Client) User() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.user
}

// read handles first, the lines that followed the welcome in its frame,
// then frames until the connection fails.
func (c *Client) read(conn *websocket.Conn, first []byte) error {
	c.handleLines(first)
	for {
		_, b, err := conn.Read(context.Background())
		if err != nil {
			return err
		}
		c.handleLines(b)
	}
}

// handleLines handles each line of a frame, in order.
func (c *Client) handleLines(b []byte) {
	for line := range bytes.SplitSeq(b, []byte("\n")) {
		if len(bytes.TrimSpace(line)) != 0 {
			c.handle(line)
		}
	}
}

// frame is what the server sends: a reply (id set) or a push (op set).
type frame struct {
	ID    uint64 `json:"id"`
	OK    bool   `json:"ok"`
	Error *Error `json:"error"`
	Op    string `json:"op"`
}

func (c *Client) handle(line []byte) {
	var f frame
	if err := json.Unmarshal(line, &f); err != nil {
		c.log.Warn("herald client: bad frame", "err", err)
		return
	}
	if f.ID != 0 {
		c.mu.Lock()
		p := c.pending[f.ID]
		delete(c.pending, f.ID)
		c.mu.Unlock()
		if p == nil {
			return
		}
		if !f.OK {
			if f.Error == nil {
				f.Error = &Error{Code: "internal", Message: "reply without ok or error"}
			}
			p.done(nil, f.Error)
			return
		}
		p.done(line, nil)
		return
	}
	switch f.Op {
	case "message":
	case "subscribed", "unsubscribed":
		c.serverSubscription(f.Op, line)
		return
	default:
		return // join and leave are not surfaced by this client
	}
	var m struct {
		Message
		Delta bool `json:"delta"` // Data is a Fossil delta, as a JSON string
	}
	if err := json.Unmarshal(line, &m); err != nil {
		c.log.Warn("herald client: bad message", "err", err)
		return
	}
	c.mu.Lock()
	s := c.subs[m.Channel]
	c.mu.Unlock()
	if s != nil {
		s.push(m.Message, m.Delta)
	}
}

// serverSubscription handles the server's subscribed and unsubscribed
// pushes: a subscription it made (or made again after a reconnection), or
// one it ended.
func (c *Client) serverSubscription(op string, line []byte) {
	var p struct {
		Channel   string `json:"channel"`
		Offset    string `json:"offset"`
		Recovered bool   `json:"recovered"`
		Receipts  bool   `json:"receipts"`
	}
	if err := json.Unmarshal(line, &p); err != nil {
		c.log.Warn("herald client: bad "+op+" push", "err", err)
		return
	}
	c.mu.Lock()
	s := c.subs[p.Channel]
	if op == "unsubscribed" {
		if s != nil {
			delete(c.subs, p.Channel)
		}
		c.mu.Unlock()
		if s != nil {
			s.end(ErrUnsubscribed)
		}
		return
	}
	fresh := s == nil
	if fresh {
		s = newSubscription(c, p.Channel)
		c.subs[p.Channel] = s
	}
	c.mu.Unlock()
	s.madeByServer(p.Offset, p.Recovered, p.Receipts)
	if fresh && c.opts.OnServerSubscribe != nil {
		c.opts.OnServerSubscribe(s)
	}
}

// send makes a command; it goes out now when connected, else on the next
// connection. done gets its reply.
func (c *Client) send(op string, fields map[string]any, done func(json.RawMessage, error)) (*call, error) {
	return c.sendCall(&call{op: op, done: done}, fields)
}

// sendCall sends p, whose op and done are set, with fields; it goes out
// now when connected, else on the next connection (unless p.once).
func (c *Client) sendCall(p *call, fields map[string]any) (*call, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, c.err
	}
	c.nextID++
	fields["id"], fields["op"] = c.nextID, p.op
	b, err := json.Marshal(fields)
	if err != nil {
		c.mu.Unlock()
		return nil, fmt.Errorf("herald client: encode %s: %w", p.op, err)
	}
	p.id, p.frame = c.nextID, b
	c.pending[p.id] = p
	conn := c.conn
	c.mu.Unlock()
	if conn != nil {
		c.write(conn, p)
	}
	return p, nil
}

// write sends p on conn, unless it was sent already.
func (c *Client) write(conn *websocket.Conn, p *call) {
	c.mu.Lock()
	if p.sent || c.conn != conn {
		c.mu.Unlock()
		return
	}
	p.sent = true
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := conn.Write(ctx, websocket.MessageText, p.frame); err != nil {
		_ = conn.CloseNow() // the read loop sees it and reconnects
	}
}

// do sends a command and waits for its reply.
func (c *Client) do(ctx context.Context, op string, fields map[string]any) (json.RawMessage, error) {
	type response struct {
		raw json.RawMessage
		err error
	}
	replies := make(chan response, 1)
	p, err := c.send(op, fields, func(raw json.RawMessage, err error) { replies <- response{raw, err} })
	if err != nil {
		return nil, err
	}
	select {
	case r := <-replies:
		return r.raw, r.err
	case <-ctx.Done():
		c.forget(p)
		return nil, ctx.Err()
	case <-c.stop:
		return nil, c.closedErr()
	}
}

// closedErr is why calls fail once the Client is closed.
func (c *Client) closedErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// forget drops a call nobody waits for.
func (c *Client) forget(p *call) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.pending, p.id)
}

// PublishOption adds to a Publish.
type PublishOption func(*publication)

// publication is what PublishOptions set.
type publication struct {
	tags map[string]string
	key  string
}

// WithTags gives the message tags, which subscribers' filters match (at
// most 16; each key and value at most 128 bytes, or the server refuses the
// publish with bad_request). Nil or empty tags send none.
func WithTags(tags map[string]string) PublishOption {
	return func(p *publication) { p.tags = tags }
}

// WithKey gives the message a conflation key (at most 128 bytes): in a
// namespace that conflates, a slow subscriber may skip a message for a
// newer one of the same key. "" sends none.
func WithKey(key string) PublishOption {
	return func(p *publication) { p.key = key }
}

// Publish publishes data (any value that encodes to JSON, or a
// json.RawMessage) to channel and returns its offset once the server
// acknowledged it. event, when not empty, names the message's event; opts
// add tags (WithTags) and a key (WithKey).
func (c *Client) Publish(ctx context.Context, channel string, data any, event string, opts ...PublishOption) (string, error) {
	raw, err := encodeData(data)
	if err != nil {
		return "", err
	}
	fields := map[string]any{"channel": channel, "data": raw}
	if event != "" {
		fields["event"] = event
	}
	var p publication
	for _, o := range opts {
		o(&p)
	}
	if len(p.tags) > 0 {
		fields["tags"] = p.tags
	}
	if p.key != "" {
		fields["key"] = p.key
	}
	b, err := c.do(ctx, "publish", fields)
	if err != nil {
		return "", err
	}
	var r struct {
		Offset string `json:"offset"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return "", fmt.Errorf("herald client: publish reply: %w", err)
	}
	return r.Offset, nil
}

func encodeData(data any) (json.RawMessage, error) {
	if raw, ok := data.(json.RawMessage); ok {
		if !json.Valid(raw) {
			return nil, errors.New("herald client: data is not valid JSON")
		}
		return raw, nil
	}
	b, err := json.Marshal(data)
	if err != nil {
		return nil, fmt.Errorf("herald client: encode data: %w", err)
	}
	return b, nil
}

// RPC asks the server's application (its RPC hook, or herald serve's
// --proxy-rpc) method with data (any value that encodes to JSON, or a
// json.RawMessage; nil sends null) and returns the data it answered. A
// refusal is an *Error. An rpc sent on a connection that was lost before
// its reply fails with the unavailable code: it may or may not have been
// answered.
func (c *Client) RPC(ctx context.Context, method string, data any) (json.RawMessage, error) {
	raw, err := encodeData(data)
	if err != nil {
		return nil, err
	}
	b, err := c.do(ctx, "rpc", map[string]any{"method": method, "data": raw})
	if err != nil {
		return nil, err
	}
	var r struct {
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("herald client: rpc reply: %w", err)
	}
	return r.Data, nil
}

// HistoryOptions select messages from a channel's history.
type HistoryOptions struct {
	// Since returns the messages after this offset; "" with HasSince
	// returns them from the start of history.
	Since    string
	HasSince bool
	// Limit caps how many are returned (counting only matching messages
	// under Filter); 0 returns all.
	Limit int
	// Filter, when not empty, returns only the messages whose tags match
	// it: a JSON filter object of the protocol ({"tag":K,"eq":V}, …), as
	// Subscribe's Filter takes.
	Filter json.RawMessage
}

// History returns messages of channel's history, oldest first.
func (c *Client) History(ctx context.Context, channel string, o HistoryOptions) ([]Message, error) {
	fields := map[string]any{"channel": channel}
	if o.HasSince || o.Since != "" {
		fields["since"] = o.Since
	}
	if o.Limit > 0 {
		fields["limit"] = o.Limit
	}
	if len(o.Filter) > 0 {
		fields["filter"] = o.Filter
	}
	b, err := c.do(ctx, "history", fields)
	if err != nil {
		return nil, err
	}
	var r struct {
		Messages []Message `json:"messages"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("herald client: history reply: %w", err)
	}
	return r.Messages, nil
}

// Presence lists the connections subscribed to channel, across the
// cluster.
func (c *Client) Presence(ctx context.Context, channel string) ([]Presence, error) {
	b, err := c.do(ctx, "presence", map[string]any{"channel": channel})
	if err != nil {
		return nil, err
	}
	var r struct {
		Clients []Presence `json:"clients"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("herald client: presence reply: %w", err)
	}
	return r.Clients, nil
}

// Close closes the connection for good; calls waiting on it return
// ErrClosed, and so do later ones (after a kick, they keep its error).
func (c *Client) Close() error {
	if conn := c.shut(ErrClosed); conn != nil {
		_ = conn.Close(websocket.StatusNormalClosure, "")
	}
	c.cancel()
	<-c.done
	c.setState(Disconnected)
	return nil
}

// shut ends the Client for good with err, unless it ended already: calls
// waiting and later ones fail with err, and every subscription ends with
// it. It returns the connection still open, for the caller to close.
func (c *Client) shut(err error) *websocket.Conn {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed, c.err = true, err
	close(c.stop)
	conn := c.conn
	subs := c.subs
	c.subs = map[string]*Subscription{}
	c.mu.Unlock()
	for _, s := range subs {
		s.end(err)
	}
	return conn
}

// scheduleRefresh replaces the connection's token shortly before it
// expires, when GetToken can give a new one.
func (c *Client) scheduleRefresh(conn *websocket.Conn) {
	c.mu.Lock()
	token := c.token
	c.mu.Unlock()
	if c.opts.GetToken == nil {
		return
	}
	exp := tokenExpiry(token)
	if exp.IsZero() {
		return
	}
	left := time.Until(exp)
	time.AfterFunc(max(0, left-min(time.Minute, left/5)), func() {
		c.mu.Lock()
		current := c.conn == conn
		c.mu.Unlock()
		if !current {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		t, err := c.opts.GetToken(ctx)
		if err == nil {
			_, err = c.do(ctx, "refresh", map[string]any{"token": t})
		}
		if err != nil {
			c.log.Warn("herald client: refresh token", "err", err)
			return
		}
		c.mu.Lock()
		c.token = t
		c.mu.Unlock()
		c.scheduleRefresh(conn)
	})
}

// tokenExpiry reads a JWT's exp without verifying it; zero when it has
// none or is no JWT.
func tokenExpiry(token string) time.Time {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return time.Time{}
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return time.Time{}
	}
	var claims struct {
		Exp float64 `json:"exp"`
	}
	if json.Unmarshal(b, &claims) != nil || claims.Exp <= 0 {
		return time.Time{}
	}
	return time.Unix(int64(claims.Exp), 0)
}
