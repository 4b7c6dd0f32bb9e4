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

	done := dialAsync("ws" + strings.TrimPrefix(hs.URL, "http"))
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
	expectClose(t, d.nc, d.br, ws.StatusGoingAway)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := tr.WaitEmpty(ctx); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, rec.closed, "the Handler of the connection accepted during CloseAll")
}

// heldAccept is a server whose first upgrade stops in accept until
// release is closed.
type heldAccept struct {
	url      string
	entered  chan struct{} // closed when the upgrade is in accept
	release  chan struct{} // close to let it go on
	upgraded chan error    // what Upgrade returned
}

func holdAccept(t *testing.T, tr *Transport) *heldAccept {
	t.Helper()
	h := &heldAccept{entered: make(chan struct{}), release: make(chan struct{}), upgraded: make(chan error, 1)}
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.upgraded <- tr.Upgrade(w, r, func(*Conn) (Handler, error) {
			close(h.entered)
			<-h.release
			return newRecorder(), nil
		})
	}))
	t.Cleanup(hs.Close)
	h.url = "ws" + strings.TrimPrefix(hs.URL, "http")
	return h
}

// dialResult is what dialing a WebSocket gave.
type dialResult struct {
	nc  net.Conn
	br  *bufio.Reader // reads nc, with what the handshake read beyond its response
	err error
}

// dialAsync dials url on a goroutine of its own.
func dialAsync(url string) <-chan dialResult {
	done := make(chan dialResult, 1)
	go func() {
		nc, br, _, err := ws.Dialer{Timeout: waitTimeout}.Dial(context.Background(), url)
		if err == nil && br == nil {
			br = bufio.NewReader(nc)
		}
		done <- dialResult{nc, br, err}
	}()
	return done
}
