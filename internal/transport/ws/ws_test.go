package ws

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// waitTimeout bounds every wait of these tests.
const waitTimeout = 10 * time.Second

// recorder is a Handler that keeps what it is handed.
type recorder struct {
	msgs   chan string
	opened chan struct{}
	closed chan struct{}
	once   sync.Once
}

func newRecorder() *recorder {
	return &recorder{msgs: make(chan string, 1024), opened: make(chan struct{}), closed: make(chan struct{})}
}

func (r *recorder) Opened()               { close(r.opened) }
func (r *recorder) HandleText(b []byte)   { r.msgs <- string(b) }
func (r *recorder) HandleBinary(b []byte) { r.msgs <- string(b) }
func (r *recorder) Close()                { r.once.Do(func() { close(r.closed) }) }

// next returns the next message handed to r.
func (r *recorder) next(t *testing.T) string {
	t.Helper()
	select {
	case m := <-r.msgs:
		return m
	case <-time.After(waitTimeout):
		t.Fatalf("no message handled within %v", waitTimeout)
		return ""
	}
}

// served is one upgraded connection of a test server, with its Handler.
type served struct {
	c *Conn
	h *recorder
}

// testServer serves WebSocket upgrades with a Transport of cfg on
// 127.0.0.1 and hands each connection to the returned channel. ln, when
// set, is the listener to serve on.
func testServer(t *testing.T, cfg Config, ln net.Listener) (*Transport, string, chan served) {
	t.Helper()
	conns := make(chan served, 64)
	tr, url := serveWith(t, cfg, ln, func(c *Conn) Handler {
		h := newRecorder()
		conns <- served{c, h}
		return h
	})
	return tr, url, conns
}

// newTransport returns a Transport of cfg, with the values herald's
// Server would pass for the required fields a test leaves zero.
func newTransport(t testing.TB, cfg Config, subprotocols ...string) *Transport {
	t.Helper()
	if cfg.MaxMessageSize == 0 {
		cfg.MaxMessageSize = 65536
	}
	if cfg.PingInterval == 0 {
		cfg.PingInterval = 25 * time.Second
	}
	if cfg.PongTimeout == 0 {
		cfg.PongTimeout = 10 * time.Second
	}
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = 10 * time.Second
	}
	if cfg.HandshakeTimeout == 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
	tr, err := New(cfg, subprotocols...)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// serveWith serves WebSocket upgrades with a Transport of cfg speaking
// subprotocols on 127.0.0.1 (on ln, when set), each connection with the
// Handler newHandler returns for it, and returns the Transport and the
// ws:// URL. Every connection is closed, and the Transport and server
// stopped, when the test ends.
func serveWith(t *testing.T, cfg Config, ln net.Listener, newHandler func(*Conn) Handler, subprotocols ...string) (*Transport, string) {
	t.Helper()
	tr := newTransport(t, cfg, subprotocols...)
	hs := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		err := tr.Upgrade(w, r, func(c *Conn) (Handler, error) { return newHandler(c), nil })
		if err != nil {
			t.Logf("upgrade: %v", err)
		}
	}))
	if ln != nil {
		_ = hs.Listener.Close()
		hs.Listener = ln
	}
	hs.Start()
	t.Cleanup(func() {
		tr.CloseAll(1001, "test over")
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		if err := tr.WaitEmpty(ctx); err != nil {
			t.Error(err)
		}
		tr.Close()
		hs.Close()
	})
	return tr, "ws" + strings.TrimPrefix(hs.URL, "http")
}

// accepted returns the next connection the server upgraded, once its
// handshake is over.
func accepted(t *testing.T, conns chan served) served {
	t.Helper()
	select {
	case s := <-conns:
		select {
		case <-s.h.opened:
			return s
		case <-time.After(waitTimeout):
		}
	case <-time.After(waitTimeout):
	}
	t.Fatalf("no connection upgraded within %v", waitTimeout)
	return served{}
}

// dialWS opens a client connection to url, over conn when it is set.
func dialWS(t *testing.T, url string, conn net.Conn) (net.Conn, *bufio.Reader) {
	t.Helper()
	d := ws.Dialer{Timeout: waitTimeout}
	if conn != nil {
		d.NetDial = func(context.Context, string, string) (net.Conn, error) { return conn, nil }
	}
	nc, br, _, err := d.Dial(context.Background(), url)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	if br == nil {
		br = bufio.NewReader(nc)
	}
	return nc, br
}

// writeClientFrame sends one masked frame.
func writeClientFrame(t *testing.T, nc net.Conn, op ws.OpCode, payload []byte) {
	t.Helper()
	_ = nc.SetWriteDeadline(time.Now().Add(waitTimeout))
	if err := ws.WriteFrame(nc, ws.MaskFrame(ws.NewFrame(op, true, payload))); err != nil {
		t.Fatalf("write frame: %v", err)
	}
}

// waitFor polls cond until it holds, failing t after waitTimeout.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, waitTimeout)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestNewRefusesAMissingField(t *testing.T) {
	full := Config{MaxMessageSize: 1, PingInterval: 1, PongTimeout: 1, WriteTimeout: 1, HandshakeTimeout: 1}
	for _, clear := range []func(*Config){
		func(c *Config) { c.MaxMessageSize = 0 },
		func(c *Config) { c.PingInterval = 0 },
		func(c *Config) { c.PongTimeout = 0 },
		func(c *Config) { c.WriteTimeout = 0 },
		func(c *Config) { c.HandshakeTimeout = 0 },
	} {
		cfg := full
		clear(&cfg)
		if tr, err := New(cfg); err == nil {
			tr.Close()
			t.Errorf("New(%+v) gave no error", cfg)
		}
	}
}

// socketClosed reports whether the server has closed c's socket: nothing
// more can be written on it.
func socketClosed(c *Conn) bool {
	if c.nc != nil {
		_, err := c.nc.Write([]byte{0})
		return errors.Is(err, net.ErrClosed)
	}
	return c.sock.state.Load()&sockClosed != 0
}
