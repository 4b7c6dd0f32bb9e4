// Package heraldtest helps test herald and applications built on it: a
// server on a real loopback socket, a WebSocket client that speaks the
// JSON protocol, and WaitFor to poll a condition instead of sleeping.
package heraldtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldhq/herald"
)

// Timeout bounds every wait of this package.
const Timeout = 10 * time.Second

// NewServer starts a herald server with cfg on 127.0.0.1 and shuts it down
// when the test ends.
func NewServer(t testing.TB, cfg herald.Config) (*herald.Server, *httptest.Server) {
	t.Helper()
	srv, err := herald.New(cfg)
	if err != nil {
		t.Fatalf("herald.New: %v", err)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), Timeout)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		hs.Close()
	})
	return srv, hs
}

// WSURL turns an http:// base URL and a path into a ws:// URL.
func WSURL(base, path string) string {
	return "ws" + strings.TrimPrefix(base, "http") + path
}

// WaitFor polls cond until it returns nil, failing the test after d with
// the last error cond returned, so the failure says what was not met.
// The error should say what was observed and what is wanted, e.g.
// fmt.Errorf("presence of lobby: %d clients, want 0", n).
func WaitFor(t testing.TB, d time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v: %v", d, err)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// Client is a test client of the JSON protocol. Its methods fail the test
// on errors, except where they return one.
type Client struct {
	t    testing.TB
	Conn *websocket.Conn

	mu      sync.Mutex
	nextID  uint64
	frames  chan map[string]any // everything received, in order
	readErr error               // why reading stopped; set before frames closes
	Welcome map[string]any
}

// Dial connects to url (a /ws endpoint) with subprotocols and waits for
// the welcome push.
func Dial(t testing.TB, url string, subprotocols ...string) *Client {
	t.Helper()
	return DialHeader(t, url, nil, subprotocols...)
}

// DialHeader is Dial with extra request headers (Authorization, Origin).
func DialHeader(t testing.TB, url string, header http.Header, subprotocols ...string) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: subprotocols, HTTPHeader: header})
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	conn.SetReadLimit(64 << 20)
	c := &Client{t: t, Conn: conn, frames: make(chan map[string]any, 100000)}
	t.Cleanup(func() { _ = conn.CloseNow() })
	go c.readLoop()
	c.Welcome = c.Next()
	if c.Welcome["op"] != "welcome" {
		t.Fatalf("first frame is not a welcome: %v", c.Welcome)
	}
	return c
}

func (c *Client) readLoop() {
	defer close(c.frames)
	for {
		_, b, err := c.Conn.Read(context.Background())
		if err != nil {
			c.readErr = err
			return
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.TrimSpace(line) == "" {
				continue
			}
			var m map[string]any
			if err := json.Unmarshal([]byte(line), &m); err != nil {
				m = map[string]any{"unparsed": line}
			}
			c.frames <- m
		}
	}
}

// Next returns the next frame received, failing after Timeout.
func (c *Client) Next() map[string]any {
	c.t.Helper()
	select {
	case m, ok := <-c.frames:
		if !ok {
			c.t.Fatalf("connection closed while waiting for a frame")
		}
		return m
	case <-time.After(Timeout):
		c.t.Fatalf("no frame within %v", Timeout)
		return nil
	}
}

// Poll returns the next frame received within d: nil and no error when
// none came, an error once the connection is closed. Unlike Next it never
// fails the test, so other goroutines may call it.
func (c *Client) Poll(d time.Duration) (map[string]any, error) {
	select {
	case m, ok := <-c.frames:
		if !ok {
			return nil, fmt.Errorf("connection closed: %w", c.readErr)
		}
		return m, nil
	case <-time.After(d):
		return nil, nil
	}
}

// Closed waits until the server closes the connection and returns the
// close status.
func (c *Client) Closed() websocket.StatusCode {
	c.t.Helper()
	for {
		select {
		case _, ok := <-c.frames:
			if !ok {
				return websocket.CloseStatus(c.readErr)
			}
		case <-time.After(Timeout):
			c.t.Fatalf("connection not closed within %v", Timeout)
		}
	}
}

// ClosedWith waits until the server closes the connection and returns
// the close status and reason.
func (c *Client) ClosedWith() (websocket.StatusCode, string) {
	c.t.Helper()
	c.Closed()
	return CloseOf(c.readErr)
}

// CloseOf is the close status and reason of err, the error a read
// returned once the peer closed the connection (-1 and "" for another
// error).
func CloseOf(err error) (websocket.StatusCode, string) {
	var ce websocket.CloseError
	if errors.As(err, &ce) {
		return ce.Code, ce.Reason
	}
	return websocket.CloseStatus(err), ""
}

// Send sends a command with a fresh id (fields without "id") and returns
// the id.
func (c *Client) Send(fields map[string]any) uint64 {
	c.t.Helper()
	c.mu.Lock()
	c.nextID++
	id := c.nextID
	c.mu.Unlock()
	cmd := map[string]any{"id": id}
	for k, v := range fields {
		cmd[k] = v
	}
	b, _ := json.Marshal(cmd)
	c.SendRaw(string(b))
	return id
}

// SendRaw sends one text frame as it is.
func (c *Client) SendRaw(text string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	if err := c.Conn.Write(ctx, websocket.MessageText, []byte(text)); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// Call sends a command and returns its reply; pushes that arrive before
// the reply are passed to onPush (nil drops them).
func (c *Client) Call(fields map[string]any, onPush func(map[string]any)) map[string]any {
	c.t.Helper()
	id := c.Send(fields)
	for {
		m := c.Next()
		if rid, ok := m["id"].(float64); ok && uint64(rid) == id {
			return m
		}
		if onPush != nil {
			onPush(m)
		}
	}
}

// MustOK sends a command and fails unless the reply is ok.
func (c *Client) MustOK(fields map[string]any) map[string]any {
	c.t.Helper()
	r := c.Call(fields, nil)
	if r["ok"] != true {
		c.t.Fatalf("%v: reply %v", fields, r)
	}
	return r
}

// ErrorCode returns the error code of a failed reply, or "".
func ErrorCode(reply map[string]any) string {
	e, _ := reply["error"].(map[string]any)
	code, _ := e["code"].(string)
	return code
}
