package ws

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/heraldhq/herald/internal/wire"
	"github.com/heraldhq/herald/internal/wire/wiretest"
)

// A server shutting down closes every connection and then its Transport
// (herald.Server.Shutdown: CloseAll, Close, WaitEmpty). A client behind
// at that moment — its socket full, a batch half written — still gets the
// rest of the batch and then the close frame, as long as it reads within
// WriteTimeout: the writer waits for room without the event loop once
// the Transport is closed. Before, the closing Transport woke the writer
// with an error, and the client got half a frame and a reset.
func TestShutdownLetsWriterWaitingForRoomFinish(t *testing.T) {
	tr, url, conns := testServer(t, Config{WriteTimeout: 5 * time.Second, PingInterval: time.Hour, DisableCompression: true}, nil)
	nc, br := dialWS(t, url, smallReader(t, url))
	s := accepted(t, conns)
	setSendBuffer(t, s.c, 4<<10)
	sent := make(chan error, 1)
	const size = 1 << 20
	s.c.Send(wiretest.Batch([]*wire.Payload{{Bytes: make([]byte, size), Binary: true}}, func(err error) { sent <- err }))
	waitFor(t, "the writer to wait for room", func() bool {
		tr.loop.mu.Lock()
		defer tr.loop.mu.Unlock()
		return tr.loop.writers[s.c.id] != nil
	})
	tr.CloseAll(int(ws.StatusGoingAway), "server shutting down")
	tr.Close()
	_ = nc.SetReadDeadline(time.Now().Add(waitTimeout))
	f, err := ws.ReadFrame(br)
	if err != nil || f.Header.OpCode != ws.OpBinary || len(f.Payload) != size {
		t.Fatalf("the frame in flight: op %v, %d bytes, %v; want the whole %d-byte binary frame", f.Header.OpCode, len(f.Payload), err, size)
	}
	<-sent // reports the close under way, although the frame went out whole
	f, err = ws.ReadFrame(br)
	if err != nil {
		t.Fatalf("the close frame: %v", err)
	}
	if code, _ := ws.ParseCloseFrameData(f.Payload); f.Header.OpCode != ws.OpClose || code != ws.StatusGoingAway {
		t.Fatalf("got op %v code %v, want close 1001", f.Header.OpCode, code)
	}
}

// A connection still being accepted when the server shuts down is told
// so with a close frame, although the event loop it would join is gone.
func TestShutdownDuringAcceptSendsCloseFrame(t *testing.T) {
	tr := newTransport(t, Config{PingInterval: time.Hour})
	h := holdAccept(t, tr)
	dialed := dialAsync(h.url)
	<-h.entered
	tr.CloseAll(int(ws.StatusGoingAway), "server shutting down")
	tr.Close()
	close(h.release)
	d := <-dialed
	if d.err != nil {
		t.Fatal(d.err)
	}
	defer d.nc.Close()
	if err := <-h.upgraded; err != nil {
		t.Errorf("Upgrade during shutdown: %v, want nil (the close frame ends it)", err)
	}
	expectClose(t, d.nc, d.br, ws.StatusGoingAway)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := tr.WaitEmpty(ctx); err != nil {
		t.Fatal(err)
	}
}

// A connection accepted after its Transport closed is refused, and never
// lands in another Transport's epoll set that took the closed one's
// descriptor number: the sets are used only while their files are open.
func TestClosedEpollSetNumberNotReused(t *testing.T) {
	tr := newTransport(t, Config{PingInterval: time.Hour})
	h := holdAccept(t, tr)
	dialed := dialAsync(h.url)
	<-h.entered
	old := []int{tr.loop.rd.fd, tr.loop.wr.fd}
	tr.Close() // without CloseAll
	tr2 := newTransport(t, Config{PingInterval: time.Hour})
	defer tr2.Close()
	close(h.release)
	if d := <-dialed; d.err == nil {
		defer d.nc.Close()
	}
	if err := <-h.upgraded; err == nil {
		t.Error("Upgrade after its Transport closed returned nil, want an error")
	}
	for _, fd := range []int{tr2.loop.rd.fd, tr2.loop.wr.fd} {
		info, err := os.ReadFile("/proc/self/fdinfo/" + strconv.Itoa(fd))
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(info), "tfd:") {
			t.Errorf("the second Transport's epoll set %d (the first's were %v) watches a socket it never accepted:\n%s", fd, old, info)
		}
	}
}
