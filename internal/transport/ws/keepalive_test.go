package ws

import (
	"bufio"
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// A peer that answers nothing is closed after PingInterval + PongTimeout;
// one that answers the server's pings stays connected however long that
// is, and is still served afterwards.
func TestKeepaliveClosesDeadPeersAndKeepsLiveOnes(t *testing.T) {
	t.Parallel()
	// Pings go out often; a peer has two seconds to answer, so the live
	// client keeps up even on a loaded machine.
	const ping, pong = 50 * time.Millisecond, 2 * time.Second
	tr, url, conns := testServer(t, Config{PingInterval: ping, PongTimeout: pong}, nil)
	start := time.Now()
	live := dialPonger(t, url)
	liveS := accepted(t, conns)
	silent, _ := dialWS(t, url, nil) // never reads, never answers a ping
	silentS := accepted(t, conns)
	if n := tr.Len(); n != 2 {
		t.Fatalf("Len = %d, want 2", n)
	}

	// The silent peer is closed after PingInterval+PongTimeout: its
	// Handler is told, and its socket closed.
	waitClosed(t, silentS.h.closed, "the silent peer")
	waitFor(t, "Len back to 1", func() bool { return tr.Len() == 1 })
	_ = silent.SetReadDeadline(time.Now().Add(waitTimeout))
	buf := make([]byte, 4096)
	for {
		if _, err := silent.Read(buf); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatal("the silent peer's socket is still open")
			}
			break
		}
	}

	// The live client, connected for longer than PingInterval+PongTimeout
	// and answering several pings meanwhile, stays: only answering them
	// keeps it connected.
	waitFor(t, "the live client answers pings past PingInterval+PongTimeout", func() bool {
		return live.pings.Load() >= 3 && time.Since(start) > ping+pong+500*time.Millisecond
	})
	select {
	case <-liveS.h.closed:
		t.Fatalf("live client dropped after answering %d pings", live.pings.Load())
	default:
	}
	if n := tr.Len(); n != 1 {
		t.Fatalf("Len = %d, want 1: the live client only", n)
	}
	live.send(t, "still here")
	if got := liveS.h.next(t); got != "still here" {
		t.Fatalf("the live client's message arrived as %q", got)
	}
}

// ponger is a client that reads everything the server sends and answers
// its pings, counting them.
type ponger struct {
	nc    net.Conn
	mu    sync.Mutex // one frame written at a time
	pings atomic.Int32
}

// dialPonger connects a ponger to url; its reader ends with the
// connection, closed when the test ends.
func dialPonger(t *testing.T, url string) *ponger {
	t.Helper()
	nc, br := dialWS(t, url, nil)
	p := &ponger{nc: nc}
	go p.read(br)
	return p
}

func (p *ponger) read(br *bufio.Reader) {
	for {
		f, err := ws.ReadFrame(br)
		if err != nil {
			return
		}
		if f.Header.OpCode == ws.OpPing {
			p.pings.Add(1)
			if p.write(ws.NewPongFrame(f.Payload)) != nil {
				return
			}
		}
	}
}

func (p *ponger) write(f ws.Frame) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	_ = p.nc.SetWriteDeadline(time.Now().Add(waitTimeout))
	return ws.WriteFrame(p.nc, ws.MaskFrame(f))
}

func (p *ponger) send(t *testing.T, text string) {
	t.Helper()
	if err := p.write(ws.NewTextFrame([]byte(text))); err != nil {
		t.Fatalf("write: %v", err)
	}
}
