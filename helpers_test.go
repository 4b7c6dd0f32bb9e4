package herald_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/heraldtest"
)

// newServer starts a server whose logger fails the test if a connection
// handler panics, and returns it with its base http:// URL.
func newServer(t *testing.T, cfg herald.Config) (*herald.Server, string) {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = panicWatcher(t)
	}
	srv, hs := heraldtest.NewServer(t, cfg)
	return srv, hs.URL
}

// panicWatcher returns a logger that fails t, once the test is over, if
// anything was logged about a panic.
func panicWatcher(t *testing.T) *slog.Logger {
	h := &panicHandler{}
	t.Cleanup(func() {
		if msg := h.seen.Load(); msg != nil {
			t.Errorf("the server logged a panic: %v", *msg)
		}
	})
	return slog.New(h)
}

type panicHandler struct{ seen atomic.Pointer[string] }

func (h *panicHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *panicHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *panicHandler) WithGroup(string) slog.Handler            { return h }
func (h *panicHandler) Handle(_ context.Context, r slog.Record) error {
	text := r.Message
	r.Attrs(func(a slog.Attr) bool {
		text += " " + a.String()
		return true
	})
	if strings.Contains(strings.ToLower(text), "panic") {
		h.seen.CompareAndSwap(nil, &text)
	}
	return nil
}

func dial(t *testing.T, base string, subprotocols ...string) *heraldtest.Client {
	t.Helper()
	return heraldtest.Dial(t, heraldtest.WSURL(base, "/ws"), subprotocols...)
}

// clientID is the connection's id from its welcome.
func clientID(c *heraldtest.Client) string {
	id, _ := c.Welcome["client"].(string)
	return id
}

// publish publishes data and returns the offset of the ack; pushes that
// arrive before the ack are dropped.
func publish(t *testing.T, c *heraldtest.Client, channel string, data any) string {
	t.Helper()
	r := c.MustOK(map[string]any{"op": "publish", "channel": channel, "data": data})
	off, _ := r["offset"].(string)
	if off == "" {
		t.Fatalf("publish ack without an offset: %v", r)
	}
	return off
}

// nextMessage returns the next frame, which must be a message push.
func nextMessage(t *testing.T, c *heraldtest.Client) map[string]any {
	t.Helper()
	m := c.Next()
	if m["op"] != "message" {
		t.Fatalf("want a message push, got %v", m)
	}
	return m
}

// counter returns the "n" of a message whose data is {"n": N}.
func counter(t *testing.T, m map[string]any) int {
	t.Helper()
	d, _ := m["data"].(map[string]any)
	n, ok := d["n"].(float64)
	if !ok {
		t.Fatalf("message without a counter: %v", m)
	}
	return int(n)
}

// fence proves nothing is queued for c before the reply to a ping: every
// frame that arrives first is returned.
func fence(t *testing.T, c *heraldtest.Client) []map[string]any {
	t.Helper()
	var before []map[string]any
	c.Call(map[string]any{"op": "ping"}, func(m map[string]any) { before = append(before, m) })
	return before
}

func errorMessage(reply map[string]any) string {
	e, _ := reply["error"].(map[string]any)
	msg, _ := e["message"].(string)
	return msg
}

func equalJSON(a, b any) bool { return reflect.DeepEqual(a, b) }

// rawClient is a raw-mode (/ws/{channel}) client.
type rawClient struct {
	t       *testing.T
	Conn    *websocket.Conn
	frames  chan rawFrame
	readErr error // why reading stopped; set before frames closes
}

type rawFrame struct {
	typ  websocket.MessageType
	data string
}

func rawURL(base, channelAndQuery string) string {
	return heraldtest.WSURL(base, "/ws/"+channelAndQuery)
}

func dialRaw(t *testing.T, base, channelAndQuery string) *rawClient {
	t.Helper()
	return dialRawHeader(t, base, channelAndQuery, nil)
}

// dialRawHeader is dialRaw with extra request headers.
func dialRawHeader(t *testing.T, base, channelAndQuery string, header http.Header) *rawClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), heraldtest.Timeout)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, rawURL(base, channelAndQuery), &websocket.DialOptions{HTTPHeader: header})
	if err != nil {
		t.Fatalf("dial raw %s: %v", channelAndQuery, err)
	}
	conn.SetReadLimit(64 << 20)
	t.Cleanup(func() { _ = conn.CloseNow() })
	r := &rawClient{t: t, Conn: conn, frames: make(chan rawFrame, 10000)}
	go func() {
		defer close(r.frames)
		for {
			typ, b, err := conn.Read(context.Background())
			if err != nil {
				r.readErr = err
				return
			}
			r.frames <- rawFrame{typ, string(b)}
		}
	}()
	return r
}

func (r *rawClient) send(typ websocket.MessageType, data string) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), heraldtest.Timeout)
	defer cancel()
	if err := r.Conn.Write(ctx, typ, []byte(data)); err != nil {
		r.t.Fatalf("raw write: %v", err)
	}
}

func (r *rawClient) next() rawFrame {
	r.t.Helper()
	select {
	case f, ok := <-r.frames:
		if !ok {
			r.t.Fatalf("raw connection closed while waiting for a frame")
		}
		return f
	case <-time.After(heraldtest.Timeout):
		r.t.Fatalf("no raw frame within %v", heraldtest.Timeout)
	}
	return rawFrame{}
}

// nextText returns the next frame, which must be text.
func (r *rawClient) nextText() string {
	r.t.Helper()
	f := r.next()
	if f.typ != websocket.MessageText {
		r.t.Fatalf("want a text frame, got %v %q", f.typ, f.data)
	}
	return f.data
}

// closed waits for the server to close the connection and returns the
// close status.
func (r *rawClient) closed() websocket.StatusCode {
	r.t.Helper()
	for {
		select {
		case _, ok := <-r.frames:
			if !ok {
				return websocket.CloseStatus(r.readErr)
			}
		case <-time.After(heraldtest.Timeout):
			r.t.Fatalf("raw connection not closed within %v", heraldtest.Timeout)
		}
	}
}

// closedWith waits for the server to close the connection and returns the
// close status and reason.
func (r *rawClient) closedWith() (websocket.StatusCode, string) {
	r.t.Helper()
	r.closed()
	return heraldtest.CloseOf(r.readErr)
}

// waitPresent polls presence of channel through c until it lists n
// clients. Raw clients have no reply to their implicit subscription: this
// is how a test knows they are subscribed. Pushes c receives meanwhile are
// dropped.
func waitPresent(t *testing.T, c *heraldtest.Client, channel string, n int) []any {
	t.Helper()
	var clients []any
	heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
		r := c.MustOK(map[string]any{"op": "presence", "channel": channel})
		clients, _ = r["clients"].([]any)
		if len(clients) != n {
			return fmt.Errorf("presence of %s: %d clients %v, want %d", channel, len(clients), clients, n)
		}
		return nil
	})
	return clients
}

// dialStatus tries a WebSocket handshake and returns the HTTP status and
// body of a refusal (101 and "" when the upgrade went through).
func dialStatus(t *testing.T, u string) (int, string) {
	t.Helper()
	return dialStatusHeader(t, u, nil)
}

// dialStatusHeader is dialStatus with extra request headers.
func dialStatusHeader(t *testing.T, u string, header http.Header) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), heraldtest.Timeout)
	defer cancel()
	conn, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPHeader: header})
	if err == nil {
		_ = conn.CloseNow()
		return http.StatusSwitchingProtocols, ""
	}
	if resp == nil {
		t.Fatalf("dial %s: %v", u, err)
	}
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// scrape reads /metrics and returns each series' value by its name and
// labels as the text format writes them, e.g. herald_connections{transport="ws"}.
func scrape(t *testing.T, base string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	out := make(map[string]float64)
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

// metric returns one series from /metrics, 0 when absent.
func metric(t *testing.T, base, series string) float64 {
	t.Helper()
	return scrape(t, base)[series]
}
