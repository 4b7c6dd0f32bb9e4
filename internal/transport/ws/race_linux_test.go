package ws

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"github.com/heraldhq/herald/internal/wire"
	"github.com/heraldhq/herald/internal/wire/wiretest"
)

// A frame the socket only partly takes is finished before any other frame
// goes out: a control frame written meanwhile (a keepalive ping here; a
// pong or a close is written the same way) waits for the rest of it. The
// hook widens the window between the partial write and the rest.
func TestPartialWriteIsNotInterleaved(t *testing.T) {
	const size = 1 << 20
	cfg := Config{DisableCompression: true, PingInterval: time.Hour}
	cfg.hooks.partialWrite = func(c *Conn) {
		c.control(ws.OpPing, []byte("hook"), nil)
		time.Sleep(5 * time.Millisecond) // widen the window: let the ping try to get in
	}
	_, url, conns := testServer(t, cfg, nil)
	msg := bytes.Repeat([]byte{'a'}, size)
	for round := range 5 {
		nc, br := dialWS(t, url, smallReader(t, url))
		s := accepted(t, conns)
		setSendBuffer(t, s.c, 4<<10)

		sent := make(chan error, 1)
		s.c.Send(wiretest.Batch([]*wire.Payload{wire.NewPayload(msg)}, func(err error) { sent <- err }))
		var gotText, gotPing bool
		for !gotText || !gotPing {
			_ = nc.SetReadDeadline(time.Now().Add(waitTimeout))
			h, err := ws.ReadHeader(br)
			if err != nil {
				t.Fatalf("round %d: read header: %v", round, err)
			}
			if h.Length > size || h.Rsv != 0 || !h.Fin {
				t.Fatalf("round %d: a frame header %+v is not one the server sends: frames were interleaved", round, h)
			}
			p := make([]byte, h.Length)
			if n, err := io.ReadFull(br, p); err != nil {
				t.Fatalf("round %d: read payload: %v after %d bytes of %+v: %q", round, err, n, h, p[max(0, n-20):n])
			}
			switch {
			case h.OpCode == ws.OpText && h.Fin && bytes.Equal(p, msg):
				gotText = true
			case h.OpCode == ws.OpPing && string(p) == "hook":
				gotPing = true
			default:
				i := max(bytes.IndexFunc(p, func(r rune) bool { return r != 'a' }), 0)
				t.Fatalf("round %d: a frame (op %v, %d bytes) is neither the message nor the ping, % x at byte %d: frames were interleaved",
					round, h.OpCode, len(p), p[i:min(i+8, len(p))], i)
			}
		}
		if err := <-sent; err != nil {
			t.Fatalf("round %d: send: %v", round, err)
		}
		_ = nc.Close()
	}
}

// A connection that is closed while its reader is about to watch it again,
// and whose descriptor number a new connection gets at once, leaves the new
// connection alone: the new one's messages are read.
func TestRearmAfterCloseSparesReusedDescriptor(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := newGatedListener(inner)
	ln.gate <- struct{}{} // the first connection is accepted at once

	type reuse struct {
		s   served
		nc  net.Conn
		err error
	}
	var target atomic.Pointer[served]
	reused := make(chan reuse, 1)
	var reopen func(*Conn) reuse
	cfg := Config{PingInterval: time.Hour}
	cfg.hooks.rearm = func(c *Conn) {
		// The re-arm after the target's message was handled.
		if s := target.Load(); s != nil && s.c == c && len(s.h.msgs) > 0 && target.CompareAndSwap(s, nil) {
			reused <- reopen(c)
		}
	}
	tr, url, conns := testServer(t, cfg, ln)
	// A descriptor held from before the first connection, below its
	// socket's: reopen frees it for the new connection's accept, so that
	// the duplicate the transport keeps gets the next free one, c's.
	spare, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	var spareClosed atomic.Bool
	closeSpare := func() {
		if !spareClosed.Swap(true) {
			_ = unix.Close(spare)
		}
	}
	t.Cleanup(closeSpare)
	// reopen closes c and makes a new connection take its descriptor: its
	// client socket is made before c closes, every free descriptor below
	// c's but the spare is taken, and the server accepts it after, when
	// the lowest free descriptors are the spare's and then c's.
	reopen = func(c *Conn) reuse {
		old := rawFD(t, c)
		pre, err := net.Dial("tcp", inner.Addr().String())
		if err != nil {
			return reuse{err: err}
		}
		filled, err := fillBelow(old)
		defer closeAll(filled)
		if err != nil {
			return reuse{err: err}
		}
		closeSpare()
		c.gone()
		ln.gate <- struct{}{}
		dialed := make(chan reuse, 1)
		go func() {
			nc, _, _, err := ws.Dialer{
				Timeout: waitTimeout,
				NetDial: func(context.Context, string, string) (net.Conn, error) { return pre, nil },
			}.Dial(context.Background(), url)
			dialed <- reuse{nc: nc, err: err}
		}()
		var s served
		select {
		case s = <-conns:
		case <-time.After(waitTimeout):
			return reuse{err: fmt.Errorf("no connection upgraded within %v", waitTimeout)}
		}
		d := <-dialed
		if d.err != nil {
			return d
		}
		d.s = s
		if fd := rawFD(t, s.c); fd != old {
			d.err = fmt.Errorf("the new connection got descriptor %d, not the closed one's %d", fd, old)
			return d
		}
		for deadline := time.Now().Add(waitTimeout); !watching(tr.loop, s.c); time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				d.err = fmt.Errorf("the new connection is not watched within %v", waitTimeout)
				return d
			}
		}
		return d
	}

	nc, _ := dialWS(t, url, nil)
	s := accepted(t, conns)
	waitFor(t, "the first connection is watched", func() bool { return watching(tr.loop, s.c) })
	target.Store(&s)
	writeClientFrame(t, nc, ws.OpText, []byte("wake"))
	var r reuse
	select {
	case r = <-reused:
	case <-time.After(waitTimeout):
		t.Fatal("the first connection was not re-armed")
	}
	if got := s.h.next(t); got != "wake" {
		t.Fatalf("first connection handled %q", got)
	}
	if r.nc != nil {
		t.Cleanup(func() { _ = r.nc.Close() })
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	for i := range 3 {
		msg := fmt.Sprint("hello ", i)
		writeClientFrame(t, r.nc, ws.OpText, []byte(msg))
		if got := r.s.h.next(t); got != msg {
			t.Fatalf("new connection handled %q, want %q", got, msg)
		}
	}
}

// fillBelow opens /dev/null until every descriptor below fd is taken,
// and returns the descriptors it took.
func fillBelow(fd int) ([]int, error) {
	var filled []int
	for {
		f, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return filled, fmt.Errorf("open /dev/null: %w", err)
		}
		if f > fd {
			_ = unix.Close(f)
			return filled, nil
		}
		filled = append(filled, f)
	}
}

// closeAll closes the descriptors fds.
func closeAll(fds []int) {
	for _, fd := range fds {
		_ = unix.Close(fd)
	}
}

// smallReader connects to url's host with a receive buffer of a few KiB,
// set before connecting: shrinking it later can stall the connection.
func smallReader(t *testing.T, url string) net.Conn {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4<<10) })
		return errors.Join(err, serr)
	}}
	nc, err := d.Dial("tcp", strings.TrimPrefix(url, "ws://"))
	if err != nil {
		t.Fatal(err)
	}
	return nc
}

// gatedListener accepts one connection for each value sent on gate.
type gatedListener struct {
	net.Listener
	gate   chan struct{}
	closed chan struct{}
}

func newGatedListener(inner net.Listener) *gatedListener {
	return &gatedListener{Listener: inner, gate: make(chan struct{}, 1), closed: make(chan struct{})}
}

func (l *gatedListener) Accept() (net.Conn, error) {
	select {
	case <-l.gate:
		return l.Listener.Accept()
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *gatedListener) Close() error {
	select {
	case <-l.closed:
	default:
		close(l.closed)
	}
	return l.Listener.Close()
}

// rawFD returns the descriptor of c's socket, herald's own.
func rawFD(t *testing.T, c *Conn) int {
	fd, ok := c.sock.acquire()
	if !ok {
		t.Errorf("descriptor of a closed socket")
		return -1
	}
	c.sock.release()
	return fd
}

// setSendBuffer sets the send buffer of c's socket, herald's own, to n
// bytes, or fails t.
func setSendBuffer(t *testing.T, c *Conn, n int) {
	if err := sendBuffer(c, n); err != nil {
		t.Fatal(err)
	}
}

// sendBuffer sets the send buffer of c's socket, herald's own, to n
// bytes.
func sendBuffer(c *Conn, n int) error {
	fd, ok := c.sock.acquire()
	if !ok {
		return errClosed
	}
	defer c.sock.release()
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, n); err != nil {
		return fmt.Errorf("set send buffer: %w", err)
	}
	return nil
}

// watching reports whether p watches c.
func watching(p *poller, c *Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.conns[c.id] == c
}
