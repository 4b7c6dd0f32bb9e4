package ws

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// A connection still being accepted when CloseAll runs counts from its
// upgrade: Len counts it and WaitEmpty waits for it; once accepted it is
// closed with CloseAll's code right after its handshake response, and its
// Handler is told. So is a connection upgraded after CloseAll.
func TestCloseAllClosesConnectionsBeingAccepted(t *testing.T) {
	tr := newTransport(t, Config{PingInterval: time.Hour})
	t.Cleanup(tr.Close)
	entered, release := make(chan struct{}), make(chan struct{})
	rec, late := newRecorder(), newRecorder()
	first := true
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = tr.Upgrade(w, r, func(*Conn) (Handler, error) {
			if !first { // the one dialed after CloseAll
				return late, nil
			}
			first = false
			close(entered)
			<-release
			return rec, nil
		})
	}))
	t.Cleanup(hs.Close)

	type dialed struct {
		nc  net.Conn
		br  *bufio.Reader
		err error
	}
	done := make(chan dialed, 1)
	go func() {
		nc, br, _, err := ws.Dialer{Timeout: waitTimeout}.Dial(context.Background(), "ws"+strings.TrimPrefix(hs.URL, "http"))
		done <- dialed{nc, br, err}
	}()
	select {
	case <-entered:
	case <-time.After(waitTimeout):
		close(release)
		t.Fatalf("no upgrade reached accept within %v", waitTimeout)
	}
	tr.CloseAll(int(ws.StatusGoingAway), "shutting down")
	if n := tr.Len(); n != 1 {
		close(release)
		t.Fatalf("Len = %d while a connection is being accepted, want 1", n)
	}
	// Upgraded after CloseAll, while the first is still being accepted.
	lateNC, lateBR := dialWS(t, "ws"+strings.TrimPrefix(hs.URL, "http"), nil)
	expectClose(t, lateNC, lateBR, ws.StatusGoingAway)
	waitClosed(t, late.closed, "the Handler of the connection upgraded after CloseAll")
	close(release)

	d := <-done
	if d.err != nil {
		t.Fatalf("dial: %v", d.err)
	}
	t.Cleanup(func() { _ = d.nc.Close() })
	if d.br == nil {
		d.br = bufio.NewReader(d.nc)
	}
	expectClose(t, d.nc, d.br, ws.StatusGoingAway)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := tr.WaitEmpty(ctx); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, rec.closed, "the Handler of the connection accepted during CloseAll")
}
