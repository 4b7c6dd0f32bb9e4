package herald_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/heraldtest"
)

// dialSilent opens a WebSocket by hand and then never reads or answers a
// ping: a peer that went away without closing its socket.
func dialSilent(t testing.TB, base, path string) net.Conn {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	var key [16]byte
	_, _ = rand.Read(key[:])
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", path, u.Host, base64.StdEncoding.EncodeToString(key[:]))
	// Read the response a byte at a time, so that frames the server sends
	// right behind it stay in the socket for the caller.
	resp, err := http.ReadResponse(bufio.NewReader(byteReader{c}), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake status %d", resp.StatusCode)
	}
	return c
}

// byteReader reads at most one byte per Read.
type byteReader struct{ r io.Reader }

func (b byteReader) Read(p []byte) (int, error) { return b.r.Read(p[:min(len(p), 1)]) }

func TestShutdownSends1001(t *testing.T) {
	srv, err := herald.New(herald.Config{})
	if err != nil {
		t.Fatal(err)
	}
	hs := newHTTPServer(t, srv)
	a := heraldtest.Dial(t, heraldtest.WSURL(hs, "/ws"))
	ctx, cancel := context.WithTimeout(context.Background(), heraldtest.Timeout)
	defer cancel()
	raw, _, err := websocket.Dial(ctx, heraldtest.WSURL(hs, "/ws/room"), nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Shutdown(ctx) }()
	if got := a.Closed(); got != websocket.StatusGoingAway {
		t.Fatalf("JSON client close status %v, want 1001", got)
	}
	_, _, err = raw.Read(ctx)
	if got := websocket.CloseStatus(err); got != websocket.StatusGoingAway {
		t.Fatalf("raw client close status %v (%v), want 1001", got, err)
	}
	if err := <-done; err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	resp, err := http.Get(hs + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("healthz after shutdown: %d, want 503", resp.StatusCode)
	}
}

// newHTTPServer serves h on a loopback port for the test's duration and
// returns its base URL.
func newHTTPServer(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() { _ = hs.Close() })
	return "http://" + ln.Addr().String()
}
