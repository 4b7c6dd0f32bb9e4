package herald_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/heraldtest"
)

// newUnstartedServer returns a server and an unstarted test server for
// it, both shut down when the test ends.
func newUnstartedServer(t *testing.T, cfg herald.Config) (*herald.Server, *httptest.Server) {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = panicWatcher(t)
	}
	srv, err := herald.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewUnstartedServer(srv)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), heraldtest.Timeout)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		hs.Close()
	})
	return srv, hs
}

// newWiredServer starts a server behind an http.Server wired as herald
// serve wires it: ConnState, ConnContext and an IdleTimeout.
func newWiredServer(t *testing.T, cfg herald.Config, idleTimeout time.Duration) string {
	t.Helper()
	srv, hs := newUnstartedServer(t, cfg)
	hs.Config.ConnState = srv.ConnState
	hs.Config.ConnContext = srv.ConnContext
	hs.Config.IdleTimeout = idleTimeout
	hs.Start()
	return hs.URL
}

// keepAlive is a client's HTTP/1.1 connection left open after a request.
type keepAlive struct {
	net.Conn
	r *bufio.Reader
}

// idleConn sends one request on a new connection, reads the answer, and
// leaves the connection open and idle.
func idleConn(t *testing.T, base string) keepAlive {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	k := keepAlive{c, bufio.NewReader(c)}
	resp, err := http.ReadResponse(k.r, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Close {
		t.Fatalf("keep-alive request: %s, close %v", resp.Status, resp.Close)
	}
	return k
}

// heldIdle keeps n idle connections open to base. ensure replaces those
// the server closed: a connection is counted toward the limits only once
// the server has marked it idle, which it may do after the client read
// its answer, so a dial right after may take the place first — and the
// server then closes the idle connection, which had none.
type heldIdle struct {
	base  string
	conns []keepAlive
}

func holdIdle(t *testing.T, base string, n int) *heldIdle {
	t.Helper()
	h := &heldIdle{base: base}
	for range n {
		h.conns = append(h.conns, idleConn(t, base))
	}
	return h
}

// ensure reopens the connections the server closed.
func (h *heldIdle) ensure(t *testing.T) {
	t.Helper()
	for i, k := range h.conns {
		if k.closedNow() {
			h.conns[i] = idleConn(t, h.base)
		}
	}
}

// closedNow reports whether the server has closed k, without waiting.
func (k keepAlive) closedNow() bool {
	_ = k.SetReadDeadline(time.Now().Add(time.Millisecond))
	defer func() { _ = k.SetReadDeadline(time.Time{}) }()
	_, err := k.r.Peek(1)
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

// closedWithin waits for the server to close k and returns how long that
// took; it fails the test if k is still open after d.
func (k keepAlive) closedWithin(t *testing.T, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	_ = k.SetReadDeadline(start.Add(d))
	_, err := k.r.ReadByte()
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("idle connection still open after %v", d)
	}
	if err == nil {
		t.Fatal("the server sent bytes on an idle connection")
	}
	return time.Since(start)
}

// An idle keep-alive connection holds a file descriptor like any other:
// it counts toward MaxConnections while it is open, so that idle
// connections cannot exhaust what the limit protects; one over the limit
// is closed; and closing one frees its place.
func TestIdleKeepAliveCountsTowardConnectionLimit(t *testing.T) {
	t.Parallel()
	base := newWiredServer(t, herald.Config{MaxConnections: 2}, time.Minute)
	held := holdIdle(t, base, 2)
	ws := heraldtest.WSURL(base, "/ws")
	heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
		held.ensure(t)
		status, body := dialStatus(t, ws)
		if status != http.StatusServiceUnavailable {
			return fmt.Errorf("dial with two idle connections held: status %d %q, want 503", status, body)
		}
		return nil
	})
	// A third idle connection has no place: the server closes it at once,
	// long before the idle timeout.
	idleConn(t, base).closedWithin(t, heraldtest.Timeout)
	_ = held.conns[0].Close()
	heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
		status, body := dialStatus(t, ws)
		if status != http.StatusSwitchingProtocols {
			return fmt.Errorf("dial after an idle connection closed: status %d %q, want 101", status, body)
		}
		return nil
	})
}

// The per-address limit counts idle keep-alive connections too.
func TestIdleKeepAliveCountsTowardPerAddressLimit(t *testing.T) {
	t.Parallel()
	base := newWiredServer(t, herald.Config{MaxConnectionsPerIP: 1}, time.Minute)
	held := holdIdle(t, base, 1)
	heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
		held.ensure(t)
		status, body := dialStatus(t, heraldtest.WSURL(base, "/ws"))
		if status != http.StatusTooManyRequests {
			return fmt.Errorf("dial with an idle connection from this address: status %d %q, want 429", status, body)
		}
		return nil
	})
}

// The http.Server's IdleTimeout closes an idle keep-alive connection, and
// that frees its place.
func TestIdleKeepAliveClosedAfterIdleTimeout(t *testing.T) {
	t.Parallel()
	const idle = 300 * time.Millisecond
	base := newWiredServer(t, herald.Config{MaxConnections: 1}, idle)
	k := idleConn(t, base)
	if waited := k.closedWithin(t, heraldtest.Timeout); waited < idle/2 {
		t.Fatalf("idle connection closed after %v, before the idle timeout %v", waited, idle)
	}
	heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
		status, body := dialStatus(t, heraldtest.WSURL(base, "/ws"))
		if status != http.StatusSwitchingProtocols {
			return fmt.Errorf("dial after the idle connection timed out: status %d %q, want 101", status, body)
		}
		return nil
	})
}
