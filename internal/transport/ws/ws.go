// Package ws is herald's WebSocket transport, the only code that touches a
// WebSocket. Frames are read and written with github.com/gobwas/ws; Upgrade
// turns a request into a Conn whose messages go to a Handler, and Conn
// writes what a session has queued, taking it when each write begins.
//
// An idle connection costs no goroutine and no timer. On Linux, once the
// handshake is read, a plain TCP connection's socket is taken from Go's
// net package and becomes the Conn's own descriptor (sock.go): neither
// the runtime's poller nor net's objects keep anything of it. It waits in
// an epoll set of the Transport's own; when it becomes readable a
// goroutine reads what is there, handles every complete frame — commands
// one at a time, in order — and returns, leaving the socket to the poller
// again. Writes go out from a few flusher goroutines, one per processor
// but one (flusherCount), which take the connections that have a batch
// to write from one shared queue and write with non-blocking writes; a
// connection whose socket is full gets a writer goroutine until it
// drains, which waits for room in a second epoll set of the Transport's.
// Keepalive is one ticker for all connections, which pings connections
// that were quiet for PingInterval and closes those quiet for
// PingInterval + PongTimeout, or whose write is stuck past WriteTimeout. Where there is no epoll, and for a
// connection that is not plain TCP (TLS served by herald itself), the
// socket stays Go's: each such connection has a reading goroutine and its
// writes a writer goroutine.
//
// permessage-deflate is negotiated for any offer RFC 7692 permits, always
// with server_no_context_takeover: every message herald sends is
// compressed on its own, so a message for many connections is compressed
// once for all of them, and no connection keeps a compression window for
// what it sends. A client that keeps its own context between messages
// (it did not offer client_no_context_takeover) costs its connection the
// client's window of what it sent, at most 32 KiB (compress.go).
//
// Four WebSocket codecs live in herald's tree, each for a reason: this
// package, the server side, frames with github.com/gobwas/ws; the Go client
// (package client) uses github.com/coder/websocket, a complete client; the
// load tool (internal/loadtest) has a lean client codec of its own, with
// no goroutine and no buffer per idle connection, so that ten thousand
// connections fit beside the server on one machine; and the tests write
// raw frames by hand (frameConn), to send what no library will: malformed,
// misfragmented or oversized frames.
package ws

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"

	"github.com/heraldhq/herald/internal/protocol"
)

// Handler receives one connection's messages. They are handed over one at
// a time, in order; the slice is only valid during the call.
type Handler interface {
	// Opened is called once the handshake response is written (or has
	// failed to be), before anything is read; Close follows it.
	Opened()
	HandleText(frame []byte)
	HandleBinary(frame []byte)
	// Close is called once, when the connection is gone, on a goroutine
	// of its own: it may take its time (wait on a broker, say) without
	// holding up the transport. The connection counts in Len, and
	// WaitEmpty waits for it, until Close returns.
	Close()
}

// Config configures a Transport. MaxMessageSize and the four durations
// are required: herald's Server passes its own Config's (their defaults,
// in brackets, live there, in one place), and New refuses a zero one.
type Config struct {
	// MaxMessageSize bounds one incoming message in bytes [65536]; a larger
	// one closes the connection with 1009.
	MaxMessageSize int
	// ReadBufferSize is how much one read takes from a socket; zero takes
	// 16384, the transport's own default (it is no herald setting). The
	// buffer is pooled, not per connection: only the bytes of a frame that
	// has not fully arrived stay with its connection.
	ReadBufferSize int
	// PingInterval is how long a connection may be quiet before the server
	// pings it [25s]; PongTimeout how much longer it may stay quiet before
	// it is closed as dead [10s].
	PingInterval time.Duration
	PongTimeout  time.Duration
	// WriteTimeout bounds one batch of writes [10s]; a connection that
	// takes longer is closed.
	WriteTimeout time.Duration
	// HandshakeTimeout bounds writing the handshake response [10s].
	HandshakeTimeout time.Duration
	// DisableCompression turns permessage-deflate off.
	DisableCompression bool
	// Logger receives handler panics; nil discards.
	Logger *slog.Logger
	// Refused, when set, is told of each connection the transport cuts
	// off: "too_large" (a message over MaxMessageSize) or
	// "write_timeout" (a batch not written within WriteTimeout).
	Refused func(reason string)
	// Traffic, when set, is told of the bytes read from (in) and written
	// to (out) connections, as they are.
	Traffic func(in, out int)

	hooks testHooks // set only by this package's tests
}

// testHooks are called where a race window opens, so that this package's
// tests can widen it; nil ones are skipped.
type testHooks struct {
	partialWrite func(*Conn) // the flusher wrote part of a batch; the rest is yet to go
	rearm        func(*Conn) // a served connection is about to be watched again
}

// check refuses a Config without a required field, and fills the
// transport's own ReadBufferSize and a nil Logger.
func (c *Config) check() error {
	if c.MaxMessageSize <= 0 || c.PingInterval <= 0 || c.PongTimeout <= 0 || c.WriteTimeout <= 0 || c.HandshakeTimeout <= 0 {
		return fmt.Errorf("ws: MaxMessageSize (%d), PingInterval (%v), PongTimeout (%v), WriteTimeout (%v) and HandshakeTimeout (%v) must be set",
			c.MaxMessageSize, c.PingInterval, c.PongTimeout, c.WriteTimeout, c.HandshakeTimeout)
	}
	if c.ReadBufferSize <= 0 {
		c.ReadBufferSize = 16 << 10
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Transport upgrades requests and keeps its connections alive.
type Transport struct {
	cfg          Config
	subprotocols []string
	now          atomic.Int64 // coarse clock, unix nanoseconds, set by the ticker
	loop         *poller      // nil where there is no event loop
	flusher      *flusher     // with the event loop: writes connections' batches
	reads        sync.Pool    // *[]byte of ReadBufferSize

	mu     sync.Mutex
	conns  map[*Conn]struct{}
	drain  *closeInfo // set by CloseAll: how to close connections still arriving
	nextID uint64

	stop chan struct{}
	done chan struct{}
}

// New returns a Transport speaking subprotocols (in the server's order of
// preference) and starts its keepalive ticker and event loop; Close stops
// them. It returns an error naming the required Config fields when one
// is not set.
func New(cfg Config, subprotocols ...string) (*Transport, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	t := &Transport{
		cfg:          cfg,
		subprotocols: subprotocols,
		conns:        make(map[*Conn]struct{}),
		stop:         make(chan struct{}),
		done:         make(chan struct{}),
	}
	t.now.Store(time.Now().UnixNano())
	t.reads.New = func() any { b := make([]byte, cfg.ReadBufferSize); return &b }
	loop, err := newPoller(t)
	if err != nil {
		cfg.Logger.Warn("ws: no event loop, one goroutine per connection", "err", err)
	}
	t.loop = loop
	if loop != nil {
		t.flusher = newFlusher(flusherCount(runtime.GOMAXPROCS(0)))
	}
	go t.keepalive()
	return t, nil
}

// Upgrade upgrades the request. accept is called with the new connection
// before the handshake response is written, and returns the connection's
// Handler: what the connection is sent meanwhile goes out after the
// response, so that a client that sees its connection open finds it ready
// (subscribed, say). An error from accept refuses the upgrade with an HTTP
// response instead: a *Refusal's, or 500. Then the Handler's Opened is
// called, and the connection is read. Upgrade returns once the connection
// is handed to the poller; after an error a response has been written.
func (t *Transport) Upgrade(w http.ResponseWriter, r *http.Request, accept func(*Conn) (Handler, error)) error {
	proto := t.negotiate(r.Header.Values("Sec-WebSocket-Protocol"))
	var neg negotiation
	u := ws.HTTPUpgrader{Protocol: func(p string) bool { return p == proto }}
	if !t.cfg.DisableCompression {
		u.Negotiate = neg.negotiate
	}
	// The upgrader checks the request and writes its response — 101, or
	// an error — to held, not to the socket.
	held := &heldResponse{ResponseWriter: w}
	nc, rw, hs, err := u.Upgrade(r, held)
	if err != nil {
		if nc != nil {
			_ = t.respond(nc, held.buf.Bytes())
			_ = nc.Close()
		}
		return fmt.Errorf("ws: upgrade: %w", err)
	}
	// Bytes the client sent right after its request are read already.
	var early []byte
	if n := rw.Reader.Buffered(); n > 0 {
		b, _ := rw.Reader.Peek(n)
		early = append([]byte(nil), b...)
	}
	if hs.Protocol != proto {
		proto = "" // the client offered none of ours
	}
	c, drain := t.newConn(nc, proto, neg.got) // proto, not hs.Protocol: that is a copy of it, 16 bytes a connection
	// Nothing is written before the response: writes wait for wmu.
	c.wmu.Lock()
	h, err := accept(c)
	if err != nil {
		var ref *Refusal
		if !errors.As(err, &ref) {
			ref = &Refusal{Status: http.StatusInternalServerError, Body: []byte("internal error\n")}
		}
		_ = c.respond(ref.response())
		// Gone before the write lock is let go: a write the accept
		// started (a welcome queued before the refusal) finds the
		// connection closed, and nothing follows the HTTP response.
		c.gone()
		c.wmu.Unlock()
		c.setHandler(nil)
		return fmt.Errorf("ws: accept: %w", err)
	}
	werr := c.respond(held.buf.Bytes())
	c.wmu.Unlock()
	h.Opened()
	c.setHandler(h)
	if werr != nil {
		c.gone()
		return fmt.Errorf("ws: write handshake response: %w", werr)
	}
	if drain != nil {
		c.Close(drain.code, drain.reason)
	}
	c.rmu.Lock()
	ok := len(early) == 0 || c.consume(early)
	c.rmu.Unlock()
	if !ok {
		if !c.closing.Load() {
			c.gone()
		}
		return nil
	}
	if c.nc != nil {
		go t.readLoop(c)
		return nil
	}
	if err := t.loop.add(c); err != nil { // the socket is herald's: only the event loop reads it
		if c.closing.Load() {
			// A shutdown closed the Transport while this connection was
			// accepted: its close frame is on its way, and Close ends
			// the connection once it is written or its time is up.
			return nil
		}
		c.gone()
		return fmt.Errorf("ws: watch connection: %w", err)
	}
	return nil
}

// newConn returns a connection over nc, counted from here on, so that a
// shutdown while it is being accepted closes and waits for it too; and
// how to close it if a shutdown is under way. With the event loop, a
// plain TCP connection's socket becomes the connection's own, and nc is
// closed; any other (TLS, say) stays Go's.
func (t *Transport) newConn(nc net.Conn, subprotocol string, z deflate) (*Conn, *closeInfo) {
	c := &Conn{t: t, nc: nc, subprotocol: subprotocol, deflate: z.on, zipBits: z.zipBits}
	if z.window > 0 {
		c.hist = &history{max: z.window}
	}
	c.lastRead.Store(t.now.Load())
	c.sock.state.Store(sockClosed) // until it is the connection's own: never touched while nc is Go's
	if t.loop != nil {
		if fd, err := detach(nc); err == nil {
			c.nc, c.sock.fd = nil, int32(fd)
			c.sock.state.Store(0)
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.conns[c] = struct{}{}
	t.nextID++
	c.id = t.nextID
	return c, t.drain
}

// respond writes an HTTP response on a hijacked connection within
// HandshakeTimeout.
func (t *Transport) respond(nc net.Conn, resp []byte) error {
	_ = nc.SetWriteDeadline(time.Now().Add(t.cfg.HandshakeTimeout))
	_, err := nc.Write(resp)
	_ = nc.SetWriteDeadline(time.Time{})
	return err
}

// Refusal is an error for Upgrade's accept to return: the upgrade is
// refused with this HTTP response.
type Refusal struct {
	Status int
	Header http.Header
	Body   []byte
}

func (r *Refusal) Error() string { return fmt.Sprintf("upgrade refused with HTTP %d", r.Status) }

// Refuse is the Refusal that answers with e as the contract's HTTP error
// (protocol.WriteHTTP's status, header and body).
func Refuse(e *protocol.Error) *Refusal {
	return &Refusal{
		Status: e.Code.HTTPStatus(),
		Header: http.Header{"Content-Type": {"application/json"}},
		Body:   protocol.ErrorBody(e),
	}
}

// response returns r as HTTP/1.1 bytes; the connection closes after it.
func (r *Refusal) response() []byte {
	var b bytes.Buffer
	resp := &http.Response{
		StatusCode:    r.Status,
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        r.Header,
		ContentLength: int64(len(r.Body)),
		Body:          io.NopCloser(bytes.NewReader(r.Body)),
		Close:         true,
	}
	_ = resp.Write(&b)
	return b.Bytes()
}

// heldResponse is the ResponseWriter the upgrader gets: once it hijacks
// the connection, what it writes is kept in buf, for Upgrade to send once
// the connection is accepted.
type heldResponse struct {
	http.ResponseWriter
	buf bytes.Buffer
}

func (h *heldResponse) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, rw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, fmt.Errorf("ws: hijack: %w", err)
	}
	// The hijacked writer is ours now: point it at buf rather than make a
	// new one (4 KiB a handshake).
	rw.Writer.Reset(&h.buf)
	return nc, rw, nil
}

// serve handles a readiness event of c; it runs on a goroutine of its own.
func (t *Transport) serve(c *Conn) {
	defer func() {
		if v := recover(); v != nil {
			t.cfg.Logger.Error("panic in connection handler", "panic", v)
			c.gone()
		}
	}()
	bp := t.reads.Get().(*[]byte)
	c.rmu.Lock()
	alive := c.readable(*bp)
	c.rmu.Unlock()
	t.reads.Put(bp)
	switch {
	case !alive && c.closing.Load():
		// A close frame is on its way; its writer ends the connection.
	case !alive || c.closed.Load() || t.loop.rearm(c) != nil:
		c.gone()
	}
}

// readLoop is the reader of a connection whose socket stays Go's: where
// there is no event loop, or the connection is not plain TCP.
func (t *Transport) readLoop(c *Conn) {
	defer func() {
		if v := recover(); v != nil {
			t.cfg.Logger.Error("panic in connection handler", "panic", v)
			c.gone()
		}
	}()
	buf := make([]byte, 4096)
	for c.readBlocking(buf) && !c.closed.Load() {
	}
	if !c.closing.Load() { // else a close frame is on its way; its writer ends the connection
		c.gone()
	}
}

// forget takes c out of the connection count.
func (t *Transport) forget(c *Conn) {
	t.mu.Lock()
	delete(t.conns, c)
	t.mu.Unlock()
}

// negotiate returns the server's first subprotocol among those the client
// offers, "" when it offers none of them: such a client gets no
// subprotocol.
func (t *Transport) negotiate(values []string) string {
	offered := map[string]bool{}
	for _, v := range values {
		for _, p := range strings.Split(v, ",") {
			offered[strings.TrimSpace(p)] = true
		}
	}
	for _, p := range t.subprotocols {
		if offered[p] {
			return p
		}
	}
	return ""
}

// Len returns the number of open connections, counting those that are
// closed but whose Handler's Close has not returned.
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
		if !c.closed.Load() {
			conns = append(conns, c)
		}
	}
	t.mu.Unlock()
	for _, c := range conns {
		c.Close(code, reason)
	}
}

// WaitEmpty waits until every connection has closed and its Handler's
// Close has returned, or ctx is done.
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

// Close stops the keepalive ticker and the event loop. Connections stay
// open: close them with CloseAll first.
func (t *Transport) Close() {
	select {
	case <-t.stop:
	default:
		close(t.stop)
		<-t.done
		if t.flusher != nil {
			t.flusher.stop()
		}
		if t.loop != nil {
			t.loop.close()
		}
	}
}

func (t *Transport) traffic(in, out int) {
	if t.cfg.Traffic != nil {
		t.cfg.Traffic(in, out)
	}
}

func (t *Transport) refused(reason string) {
	if t.cfg.Refused != nil {
		t.cfg.Refused(reason)
	}
}

// tick is how often keepalive sweeps.
func (t *Transport) tick() time.Duration {
	return min(t.cfg.PingInterval, t.cfg.PongTimeout, t.cfg.WriteTimeout) / 2
}

// keepalive is the one timer of all connections.
func (t *Transport) keepalive() {
	defer close(t.done)
	tk := time.NewTicker(t.tick())
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

// sweep closes dead connections — those quiet for PingInterval +
// PongTimeout, and those whose batch has not been written within
// WriteTimeout — and then pings quiet ones. It waits for nothing but the
// pauses between batches of pings (see ping): a dead connection's socket
// is closed at once, its Handler told on a goroutine of its own, and a
// ping is written at once or on a goroutine of its own.
func (t *Transport) sweep(now int64) {
	ping := int64(t.cfg.PingInterval)
	dead := ping + int64(t.cfg.PongTimeout)
	writeTimeout := int64(t.cfg.WriteTimeout)
	t.mu.Lock()
	var quiet, gone []*Conn
	for c := range t.conns {
		since := c.writingSince.Load()
		switch idle := now - c.lastRead.Load(); {
		case c.closed.Load(): // its Handler is being told
		case idle >= dead, since != 0 && now-since > writeTimeout:
			gone = append(gone, c)
		case idle >= ping && !c.pinged.Load():
			quiet = append(quiet, c)
		}
	}
	t.mu.Unlock()
	for _, c := range gone {
		if since := c.writingSince.Load(); since != 0 && now-since > writeTimeout {
			t.refused("write_timeout")
		}
		c.gone() // a peer that reads nothing gets no close frame
	}
	t.ping(quiet)
}

// pingBatch is how many pings a sweep sends at once, and pingPause how
// long it waits before the next batch (at least: see ping).
const (
	pingBatch = 128
	pingPause = time.Millisecond
)

// ping pings quiet, a batch at a time. Sent together, the pings of
// connections that were opened together (a deploy, a reconnect storm)
// come back as pongs together, and the event loop starts a goroutine for
// each readable connection: a round over a hundred thousand idle
// connections would hold a hundred thousand stacks at once, and the
// server keep that memory after. A batch's pongs are back and read well
// within the pause on loopback, and a round's pings go out within about a
// fifth of the sweep's tick (when the tick is 5 ms or more): a bigger
// round sends bigger batches. A connection that began closing meanwhile
// is not pinged (nothing follows a close frame). Close stops a round.
func (t *Transport) ping(quiet []*Conn) {
	batch := pingBatch
	if batches := int(t.tick() / 5 / pingPause); batches > 0 && len(quiet) > batches*batch {
		batch = (len(quiet) + batches - 1) / batches
	}
	for i, c := range quiet {
		if i > 0 && i%batch == 0 {
			select {
			case <-t.stop:
				return
			case <-time.After(pingPause):
			}
		}
		if c.closing.Load() {
			continue
		}
		c.pinged.Store(true)
		c.control(ws.OpPing, nil, nil)
	}
}

// closeInfo is a close code and reason.
type closeInfo struct {
	code   int
	reason string
}

// errClosed is returned by writes on a closed connection.
var errClosed = errors.New("ws: connection closed")
