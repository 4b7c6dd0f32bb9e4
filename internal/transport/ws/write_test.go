package ws

import (
	"crypto/rand"
	"encoding/binary"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/heraldhq/herald/internal/wire"
	"github.com/heraldhq/herald/internal/wire/wiretest"
)

// A peer whose socket stops taking bytes is closed once a write has waited
// WriteTimeout — not before — even with keepalive out of the way: the
// batch's done gets an error, the Handler is told, the socket is closed,
// and Refused is told "write_timeout" once.
func TestWriteTimeoutCloses(t *testing.T) {
	t.Parallel()
	const writeTimeout = 500 * time.Millisecond
	var refused refusals
	_, url, conns := testServer(t, Config{
		WriteTimeout:       writeTimeout,
		PingInterval:       time.Hour,
		DisableCompression: true,
		Refused:            refused.add,
	}, nil)
	nc, _ := dialWS(t, url, nil)
	_ = nc.(*net.TCPConn).SetReadBuffer(4096)
	s := accepted(t, conns)

	// 32 MiB: more than the socket buffers between hold.
	sent := make(chan error, 1)
	start := time.Now()
	s.c.Send(wiretest.Batch([]*wire.Payload{{Bytes: make([]byte, 32<<20), Binary: true}}, func(err error) { sent <- err }))
	select {
	case err := <-sent:
		if err == nil {
			t.Fatal("32 MiB written to a peer that reads nothing")
		}
	case <-time.After(waitTimeout + writeTimeout):
		t.Fatalf("a write to a peer that reads nothing has not ended after %v", waitTimeout+writeTimeout)
	}
	// The sweep's clock is coarse: it may see the write a tick (a
	// quarter of WriteTimeout here) later than it started.
	if waited := time.Since(start); waited < writeTimeout/2 {
		t.Fatalf("the write failed after %v, before WriteTimeout (%v)", waited, writeTimeout)
	}
	waitClosed(t, s.h.closed, "the stuck peer's Handler")
	if got := refused.get(); len(got) != 1 || got[0] != "write_timeout" {
		t.Fatalf("refusals %q, want one write_timeout", got)
	}
	// Its socket is closed: the server can write nothing more on it. (The
	// client, whose small window drains the server's send buffer slowly,
	// would take long to see the end.)
	if !socketClosed(s.c) {
		t.Fatal("the stuck peer's socket is still open")
	}
}

// A peer that pauses reading until the server's writes to it no longer fit
// in its socket, and then reads again, gets every message, whole and in
// order: a write the socket only partly takes goes on, from where it
// stopped, once the socket drains.
func TestPausedReaderGetsEverythingInOrder(t *testing.T) {
	var partial atomic.Int32
	cfg := Config{}
	cfg.hooks.partialWrite = func(*Conn) { partial.Add(1) }
	tr, url, conns := testServer(t, cfg, nil)
	nc, br := dialWS(t, url, nil)
	_ = nc.(*net.TCPConn).SetReadBuffer(64 << 10)
	s := accepted(t, conns)

	// 300 messages of 32 KiB that do not compress: 9.6 MB, more than the
	// two socket buffers between the server and the paused reader hold.
	// Each goes out once the one before is written, as a session sends.
	const total = 300
	msgs := make([][]byte, total)
	for n := range msgs {
		msgs[n] = make([]byte, 32<<10)
		_, _ = rand.Read(msgs[n])
		binary.BigEndian.PutUint32(msgs[n], uint32(n+1))
	}
	sent := make(chan error, 1)
	var send func(n int) func(error)
	send = func(n int) func(error) {
		return func(err error) {
			if err != nil || n == total {
				sent <- err
				return
			}
			s.c.Send(wiretest.Batch([]*wire.Payload{{Bytes: msgs[n], Binary: true}}, send(n+1)))
		}
	}
	send(0)(nil)
	if tr.flusher != nil { // where there is no event loop, a writer goroutine blocks instead
		waitFor(t, "a write the socket only partly takes", func() bool { return partial.Load() > 0 })
	}

	for want := 1; want <= total; want++ {
		f := readFrame(t, nc, br)
		if f.Header.OpCode != ws.OpBinary || !f.Header.Fin {
			t.Fatalf("frame %d: %+v, want one whole binary frame", want, f.Header)
		}
		if len(f.Payload) != len(msgs[want-1]) || binary.BigEndian.Uint32(f.Payload) != uint32(want) {
			t.Fatalf("frame %d: message %d of %d bytes, want message %d of %d", want,
				binary.BigEndian.Uint32(f.Payload), len(f.Payload), want, len(msgs[want-1]))
		}
		if string(f.Payload) != string(msgs[want-1]) {
			t.Fatalf("frame %d: the message's bytes differ from those sent", want)
		}
	}
	waitWritten(t, sent, waitTimeout)
}
