// Package ws is herald's WebSocket transport, the only code that touches a
// WebSocket. It keeps github.com/lxzan/gws behind a small surface: Upgrade
// turns a request into a Conn whose frames go to a Handler, and Conn writes
// the batches a session gives it.
//
// Per idle connection there is one goroutine (gws's read loop) and no timer:
// keepalive is one ticker for all connections, which pings connections that
// were quiet for PingInterval and closes those quiet for PingInterval +
// PongTimeout. Commands are handled off the read loop so its stack stays
// small, one at a time per connection, in order.
package ws

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lxzan/gws"
)

// Handler receives one connection's frames. Frames are handed over one at a
// time, in order; the slice is only valid during the call.
type Handler interface {
	HandleText(frame []byte)
	HandleBinary(frame []byte)
	// Close is called once, when the connection is gone.
	Close()
}

// Config configures a Transport. Zero fields take the defaults in brackets.
type Config struct {
	// MaxMessageSize bounds one incoming message in bytes [65536]; a larger
	// one closes the connection with 1009.
	MaxMessageSize int
	// ReadBufferSize is the read buffer per connection [512]; memory per
	// idle connection grows with it. Frames larger than it are read
	// straight into their own buffer, so it need only fit typical commands.
	ReadBufferSize int
	// PingInterval is how long a connection may be quiet before the server
	// pings it [25s]; PongTimeout how much longer it may stay quiet before
	// it is closed as dead [10s].
	PingInterval time.Duration
	PongTimeout  time.Duration
	// WriteTimeout bounds one batch of writes [10s]; a connection that
	// takes longer is closed.
	WriteTimeout time.Duration
	// HandshakeTimeout bounds writing the upgrade response [5s].
	HandshakeTimeout time.Duration
	// DisableCompression turns permessage-deflate off.
	DisableCompression bool
	// Logger receives handler panics; nil discards.
	Logger *slog.Logger
	// Refused, when set, is told of each connection the transport cuts
	// off: "too_large" (a message over MaxMessageSize) or
	// "write_timeout" (a batch not written within WriteTimeout).
	Refused func(reason string)
}

func (c *Config) setDefaults() {
	if c.MaxMessageSize <= 0 {
		c.MaxMessageSize = 65536
	}
	if c.ReadBufferSize <= 0 {
		c.ReadBufferSize = 512
	}
	if c.PingInterval <= 0 {
		c.PingInterval = 25 * time.Second
	}
	if c.PongTimeout <= 0 {
		c.PongTimeout = 10 * time.Second
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Transport upgrades requests and keeps its connections alive.
type Transport struct {
	cfg          Config
	upgraders    map[string]*gws.Upgrader // "ours" when the client offers one of subprotocols, "" otherwise
	subprotocols []string
	now          atomic.Int64 // coarse clock, unix nanoseconds, set by the ticker

	mu    sync.Mutex
	conns map[*Conn]struct{}
	drain *closeInfo // set by CloseAll: how to close connections still arriving

	bufs sync.Pool // *bytes.Buffer for frames of several lines

	stop chan struct{}
	done chan struct{}
}

// New returns a Transport speaking subprotocols (in the server's order of
// preference) and starts its keepalive ticker; Close stops it.
func New(cfg Config, subprotocols ...string) *Transport {
	cfg.setDefaults()
	t := &Transport{
		cfg:       cfg,
		upgraders: make(map[string]*gws.Upgrader, 2),
		conns:     make(map[*Conn]struct{}),
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
	}
	t.now.Store(time.Now().UnixNano())
	t.bufs.New = func() any { return new(bytes.Buffer) }
	events := &events{t: t}
	for _, protos := range [][]string{nil, subprotocols} {
		opt := &gws.ServerOption{
			ParallelEnabled:    true,
			ParallelGolimit:    1, // one command at a time per connection, in order
			ReadMaxPayloadSize: cfg.MaxMessageSize,
			ReadBufferSize:     cfg.ReadBufferSize,
			CheckUtf8Enabled:   true,
			HandshakeTimeout:   cfg.HandshakeTimeout,
			NewSession:         func() gws.SessionStorage { return &slot{} },
			Recovery:           t.recover,
			SubProtocols:       protos,
			PermessageDeflate: gws.PermessageDeflate{
				Enabled: !cfg.DisableCompression,
				// The server keeps its compression context (what it sends
				// is most of the traffic) in a 4 KiB window; clients
				// compress each message on its own, so the server holds
				// no decompression window per connection.
				ServerContextTakeover: true,
				ServerMaxWindowBits:   serverWindowBits,
				ClientContextTakeover: false,
				ClientMaxWindowBits:   15,
				PoolSize:              4, // per upgrader: enough for 2 cores; each deflater holds ~0.9 MB
			},
		}
		key := ""
		if protos != nil {
			key = "ours"
		}
		t.upgraders[key] = gws.NewUpgrader(events, opt)
	}
	t.subprotocols = subprotocols
	go t.keepalive()
	return t
}

// Upgrade upgrades the request. accept is called with the new connection
// before it reads anything and returns the connection's Handler; an error
// from accept closes the connection with 1011. Upgrade returns once the
// connection is handed to its read loop; after an error the response has
// been written.
func (t *Transport) Upgrade(w http.ResponseWriter, r *http.Request, accept func(*Conn) (Handler, error)) error {
	u := t.upgraders[t.negotiate(r.Header.Get("Sec-WebSocket-Protocol"))]
	sanitizeDeflateOffer(r.Header)
	gc, err := u.Upgrade(w, r)
	if err != nil {
		return fmt.Errorf("ws: upgrade: %w", err)
	}
	c := &Conn{t: t, gc: gc}
	c.sentFn = c.sent
	c.lastRead.Store(t.now.Load())
	gc.Session().Store("", c)
	// Counted from here on, so that a shutdown while accept runs closes
	// and waits for this connection too.
	t.mu.Lock()
	t.conns[c] = struct{}{}
	drain := t.drain
	t.mu.Unlock()
	h, err := accept(c)
	if err != nil {
		t.forget(c)
		_ = gc.WriteClose(1011, []byte("internal error"))
		return fmt.Errorf("ws: accept: %w", err)
	}
	c.h = h
	if drain != nil {
		c.Close(drain.code, drain.reason)
	}
	go gc.ReadLoop()
	return nil
}

func (t *Transport) forget(c *Conn) {
	t.mu.Lock()
	delete(t.conns, c)
	t.mu.Unlock()
}

// negotiate returns "ours" when the client offers one of the server's
// subprotocols (gws then picks the server's first choice among them), ""
// when it offers none of them: such a client gets no subprotocol.
func (t *Transport) negotiate(header string) string {
	for _, p := range strings.Split(header, ",") {
		if slices.Contains(t.subprotocols, strings.TrimSpace(p)) {
			return "ours"
		}
	}
	return ""
}

// serverWindowBits is the server's LZ77 window: 4 KiB per compressing
// connection instead of 32 KiB.
const serverWindowBits = 12

// sanitizeDeflateOffer keeps gws's permessage-deflate negotiation within
// RFC 7692: only the client's first offer is considered, and an offer gws
// would answer wrongly is removed, so that connection goes uncompressed.
// Declined: anything but permessage-deflate first, and a server window
// smaller than the server's (server_max_window_bits below 12).
func sanitizeDeflateOffer(h http.Header) {
	const key = "Sec-WebSocket-Extensions"
	offer, _, _ := strings.Cut(strings.Join(h.Values(key), ","), ",")
	h.Del(key)
	params := strings.Split(offer, ";")
	if strings.TrimSpace(params[0]) != "permessage-deflate" {
		return
	}
	for _, p := range params[1:] {
		name, val, _ := strings.Cut(strings.TrimSpace(p), "=")
		if name == "server_max_window_bits" {
			if n, err := strconv.Atoi(strings.Trim(val, `"`)); err != nil || n < serverWindowBits {
				return
			}
		}
	}
	h.Set(key, offer)
}

// Len returns the number of open connections.
func (t *Transport) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.conns)
}

// CloseAll closes every connection with code and reason, without waiting,
// and every connection upgraded after it too.
func (t *Transport) CloseAll(code int, reason string) {
	t.mu.Lock()
	t.drain = &closeInfo{code: code, reason: reason}
	conns := make([]*Conn, 0, len(t.conns))
	for c := range t.conns {
		conns = append(conns, c)
	}
	t.mu.Unlock()
	for _, c := range conns {
		c.Close(code, reason)
	}
}

// WaitEmpty waits until every connection has closed, or ctx is done.
func (t *Transport) WaitEmpty(ctx context.Context) error {
	tk := time.NewTicker(5 * time.Millisecond)
	defer tk.Stop()
	for t.Len() > 0 {
		select {
		case <-ctx.Done():
			return fmt.Errorf("ws: %d connections still open: %w", t.Len(), ctx.Err())
		case <-tk.C:
		}
	}
	return nil
}

// Close stops the keepalive ticker. Connections stay open: close them with
// CloseAll.
func (t *Transport) Close() {
	select {
	case <-t.stop:
	default:
		close(t.stop)
		<-t.done
	}
}

func (t *Transport) refused(reason string) {
	if t.cfg.Refused != nil {
		t.cfg.Refused(reason)
	}
}

func (t *Transport) recover(gws.Logger) {
	if v := recover(); v != nil {
		t.cfg.Logger.Error("panic in connection handler", "panic", v)
	}
}

// keepalive is the one timer of all connections.
func (t *Transport) keepalive() {
	defer close(t.done)
	tick := min(t.cfg.PingInterval, t.cfg.PongTimeout, t.cfg.WriteTimeout) / 2
	tk := time.NewTicker(tick)
	defer tk.Stop()
	for {
		select {
		case <-t.stop:
			return
		case now := <-tk.C:
			t.now.Store(now.UnixNano())
			t.sweep(now.UnixNano())
		}
	}
}

// sweep pings quiet connections and closes dead ones: those quiet for
// PingInterval + PongTimeout, and those whose batch has not been written
// within WriteTimeout.
func (t *Transport) sweep(now int64) {
	ping := int64(t.cfg.PingInterval)
	dead := ping + int64(t.cfg.PongTimeout)
	writeTimeout := int64(t.cfg.WriteTimeout)
	t.mu.Lock()
	var quiet, gone []*Conn
	for c := range t.conns {
		since := c.writingSince.Load()
		switch idle := now - c.lastRead.Load(); {
		case idle >= dead, since != 0 && now-since > writeTimeout:
			gone = append(gone, c)
		case idle >= ping && !c.pinged.Load():
			quiet = append(quiet, c)
		}
	}
	t.mu.Unlock()
	for _, c := range quiet {
		c.pinged.Store(true)
		c.gc.WriteAsync(gws.OpcodePing, nil, nil)
	}
	for _, c := range gone {
		if since := c.writingSince.Load(); since != 0 && now-since > writeTimeout {
			t.refused("write_timeout")
		}
		_ = c.gc.NetConn().Close() // a peer that reads nothing gets no close frame
	}
}

// closeInfo is a close code and reason.
type closeInfo struct {
	code   int
	reason string
}

// maxPooledBuffer keeps one huge batch from pinning its buffer forever.
const maxPooledBuffer = 64 << 10

func (t *Transport) putBuffer(b *bytes.Buffer) {
	if b.Cap() > maxPooledBuffer {
		return
	}
	b.Reset()
	t.bufs.Put(b)
}

// errClosed is returned by writes on a closed connection.
var errClosed = errors.New("ws: connection closed")

// slot is the per-connection session storage gws asks for, holding just
// the *Conn (gws's default is a map).
type slot struct{ v any }

func (s *slot) Len() int                       { return 1 }
func (s *slot) Load(string) (any, bool)        { return s.v, s.v != nil }
func (s *slot) Delete(string)                  { s.v = nil }
func (s *slot) Store(_ string, v any)          { s.v = v }
func (s *slot) Range(f func(string, any) bool) { f("", s.v) }
