package herald_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/coder/websocket"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/heraldtest"
)

func TestRawEchoesOwnText(t *testing.T) {
	t.Parallel()
	_, base := newServer(t, herald.Config{})
	r := dialRaw(t, base, "echo")
	for _, text := range []string{"hello", "", `{"looks":"like json"}`, "ünïcødé\nline two", `"quoted"`} {
		r.send(websocket.MessageText, text)
		if got := r.nextText(); got != text {
			t.Fatalf("sent %q, got back %q", text, got)
		}
	}
}

func TestRawAndJSONClientsShareAChannel(t *testing.T) {
	t.Parallel()
	_, base := newServer(t, herald.Config{})
	j := dial(t, base)
	j.MustOK(map[string]any{"op": "subscribe", "channel": "lobby"})
	r := dialRaw(t, base, "lobby")
	raw := waitPresent(t, j, "lobby", 2)
	var rawID string
	for _, c := range raw {
		if id := c.(map[string]any)["client"].(string); id != clientID(j) {
			rawID = id
		}
	}

	// Raw text reaches JSON clients as a JSON string.
	r.send(websocket.MessageText, `hi "there"`)
	m := nextMessage(t, j)
	if m["data"] != `hi "there"` || m["channel"] != "lobby" || m["client"] != rawID || m["offset"] == "" {
		t.Fatalf("JSON client got %v, want data %q from client %s", m, `hi "there"`, rawID)
	}
	if got := r.nextText(); got != `hi "there"` {
		t.Fatalf("raw sender got %q, want its own message", got)
	}

	// JSON publishes reach raw clients: strings as themselves, anything
	// else as compact JSON.
	tests := []struct {
		data any
		want string
	}{
		{"plain text", "plain text"},
		{"line\nbreak \"q\" é", "line\nbreak \"q\" é"},
		{map[string]any{"a": 1, "b": []any{1, 2, map[string]any{"c": nil}}}, `{"a":1,"b":[1,2,{"c":null}]}`},
		{42.5, "42.5"},
		{true, "true"},
		{nil, "null"},
		{[]any{"x"}, `["x"]`},
	}
	for _, tt := range tests {
		publish(t, j, "lobby", tt.data)
		if got := r.nextText(); got != tt.want {
			t.Fatalf("published %#v, raw client got %q, want %q", tt.data, got, tt.want)
		}
	}
	// Whitespace in the published JSON does not reach the raw client.
	j.SendRaw(`{"id":999,"op":"publish","channel":"lobby","data":{ "k" : [ 1 , 2 ] }}`)
	if got := r.nextText(); got != `{"k":[1,2]}` {
		t.Fatalf("raw client got %q, want compact JSON", got)
	}
}

func TestRawBinaryRelayedAsBinary(t *testing.T) {
	t.Parallel()
	_, base := newServer(t, herald.Config{})
	a, b := dialRaw(t, base, "bin"), dialRaw(t, base, "bin")
	watcher := dial(t, base)
	waitPresent(t, watcher, "bin", 2)
	payload := string([]byte{0, 1, 2, 0xfe, 0xff, '"', '\n'})
	a.send(websocket.MessageBinary, payload)
	for name, c := range map[string]*rawClient{"other": b, "sender": a} {
		f := c.next()
		if f.typ != websocket.MessageBinary || f.data != payload {
			t.Fatalf("%s raw client got %v %q, want binary %q", name, f.typ, f.data, payload)
		}
	}
	// Text after binary is still text.
	a.send(websocket.MessageText, "txt")
	if got := b.nextText(); got != "txt" {
		t.Fatalf("got %q", got)
	}
}

func TestRawSince(t *testing.T) {
	t.Parallel()
	srv, base := newServer(t, herald.Config{})
	ctx := context.Background()
	var offs []string
	for _, s := range []string{"m1", "m2", "m3"} {
		off, err := srv.Publish(ctx, "resume", s)
		if err != nil {
			t.Fatal(err)
		}
		offs = append(offs, off)
	}
	r := dialRaw(t, base, "resume?since="+url.QueryEscape(offs[0]))
	for _, want := range []string{"m2", "m3"} {
		if got := r.nextText(); got != want {
			t.Fatalf("resumed raw client got %q, want %q", got, want)
		}
	}
	if _, err := srv.Publish(ctx, "resume", "m4"); err != nil {
		t.Fatal(err)
	}
	if got := r.nextText(); got != "m4" {
		t.Fatalf("live message %q, want m4", got)
	}

	all := dialRaw(t, base, "resume?since=")
	for _, want := range []string{"m1", "m2", "m3", "m4"} {
		if got := all.nextText(); got != want {
			t.Fatalf("since=\"\": got %q, want %q", got, want)
		}
	}

	if status, body := dialStatus(t, rawURL(base, "resume?since=garbage")); status != 400 || !strings.Contains(body, "bad_request") {
		t.Fatalf("bad since: HTTP %d %s, want 400 bad_request", status, body)
	}
}

// Raw clients get messages and nothing else: no welcome, no join or leave;
// a refused publish closes the connection with the refusal (raw mode has
// no error frames).
func TestRawGetsOnlyMessages(t *testing.T) {
	t.Parallel()
	srv, base := newServer(t, herald.Config{
		Namespaces: map[string]herald.Namespace{"ev": {JoinLeave: true}},
		Hooks: herald.Hooks{AuthorizePublish: func(_ context.Context, _ herald.Client, _ string, p *herald.Publication) error {
			if string(p.Data) == `"refuse me"` {
				return herald.Errorf(herald.CodeForbidden, "refused")
			}
			return nil
		}},
	})
	r := dialRaw(t, base, "ev:1")
	j := dial(t, base)
	waitPresent(t, j, "ev:1", 1)
	j.MustOK(map[string]any{"op": "subscribe", "channel": "ev:1"})
	j.MustOK(map[string]any{"op": "unsubscribe", "channel": "ev:1"})
	r.send(websocket.MessageText, "accepted")
	if got := r.nextText(); got != "accepted" {
		t.Fatalf("raw client's first frame is %q, want its accepted message", got)
	}
	if _, err := srv.Publish(context.Background(), "ev:1", "from server"); err != nil {
		t.Fatal(err)
	}
	if got := r.nextText(); got != "from server" {
		t.Fatalf("raw client's next frame is %q, want the server's message", got)
	}
	// A JSON client on the channel does get the join/leave pushes.
	j.MustOK(map[string]any{"op": "subscribe", "channel": "ev:1"})
	if m := j.Next(); m["op"] != "join" {
		t.Fatalf("JSON client got %v, want its join", m)
	}
	r.send(websocket.MessageText, "refuse me")
	if code, reason := r.closedWith(); code != websocket.StatusPolicyViolation || reason != "refused" {
		t.Fatalf("raw client after a refused publish: closed %d %q, want 1008 \"refused\"", code, reason)
	}
}

func TestRawBadChannelIs400(t *testing.T) {
	t.Parallel()
	_, base := newServer(t, herald.Config{})
	for _, ch := range []string{
		"a%20b",                  // space
		strings.Repeat("a", 256), // too long
		"caf%C3%A9",              // unicode
		"a%2Fb",                  // slash
		"a%00",                   // NUL
		"a*",
	} {
		status, body := dialStatus(t, rawURL(base, ch))
		if status != 400 || !strings.Contains(body, `"bad_request"`) {
			t.Errorf("raw channel %q: HTTP %d %s, want 400 with bad_request", ch, status, body)
		}
	}
	if status, _ := dialStatus(t, rawURL(base, strings.Repeat("a", 255))); status != 101 {
		t.Errorf("raw channel of 255 bytes: HTTP %d, want an upgrade", status)
	}
	if status, _ := dialStatus(t, heraldtest.WSURL(base, "/ws/a/b")); status == 101 {
		t.Errorf("/ws/a/b was upgraded")
	}
}

// A raw client is subscribed before its first frame is read: what it sends
// at once comes back to it.
func TestRawSubscribedBeforeFirstFrame(t *testing.T) {
	t.Parallel()
	_, base := newServer(t, herald.Config{})
	for i := range 20 {
		ctx, cancel := context.WithTimeout(context.Background(), heraldtest.Timeout)
		conn, _, err := websocket.Dial(ctx, rawURL(base, "quick"), nil)
		if err != nil {
			t.Fatal(err)
		}
		text := fmt.Sprintf("first words %d", i)
		if err := conn.Write(ctx, websocket.MessageText, []byte(text)); err != nil {
			t.Fatal(err)
		}
		_, b, err := conn.Read(ctx)
		cancel()
		_ = conn.CloseNow()
		if err != nil || string(b) != text {
			t.Fatalf("sent %q at once, got back %q, %v", text, b, err)
		}
	}
}

// A raw client whose since is older than history first gets the one
// non-message frame raw mode has, then what history still holds.
func TestRawSinceUnrecoveredSignal(t *testing.T) {
	t.Parallel()
	srv, base := newServer(t, herald.Config{HistorySize: 2})
	ctx := context.Background()
	var offs []string
	for _, s := range []string{"m1", "m2", "m3", "m4"} {
		off, err := srv.Publish(ctx, "lossy", s)
		if err != nil {
			t.Fatal(err)
		}
		offs = append(offs, off)
	}
	r := dialRaw(t, base, "lossy?since="+url.QueryEscape(offs[0]))
	var signal map[string]any
	if err := json.Unmarshal([]byte(r.nextText()), &signal); err != nil {
		t.Fatalf("first frame is not the unrecovered signal: %v", err)
	}
	if signal["herald"] != "unrecovered" || signal["channel"] != "lossy" || signal["offset"] != offs[3] {
		t.Fatalf("signal %v, want unrecovered on lossy at %s", signal, offs[3])
	}
	for _, want := range []string{"m3", "m4"} {
		if got := r.nextText(); got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
	// A resume that history covers gets no signal.
	ok := dialRaw(t, base, "lossy?since="+url.QueryEscape(offs[2]))
	if got := ok.nextText(); got != "m4" {
		t.Fatalf("recovered resume got %q first, want m4", got)
	}
}

// The resume race in raw mode: while a publisher runs flat out, a raw
// client drops its connection again and again and resumes each time after
// the last message it saw; it ends with every message exactly once, in
// order. The publisher goes on until the client has resumed several times.
func TestRawResumeWhilePublishing(t *testing.T) {
	t.Parallel()
	const atLeast, atMost, resumes = 2000, 200000, 6
	srv, base := newServer(t, herald.Config{HistorySize: atMost, QueueMessages: atMost, QueueBytes: 256 << 20})
	ctx := context.Background()

	var mu sync.Mutex
	offsets := map[int]string{}
	var reconnects atomic.Int32
	final := make(chan int, 1)
	go func() {
		defer close(final)
		for i := 1; i <= atMost; i++ {
			off, err := srv.Publish(ctx, "flood", map[string]int{"n": i})
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			offsets[i] = off
			mu.Unlock()
			if i >= atLeast && reconnects.Load() >= resumes {
				final <- i
				return
			}
		}
	}()
	offsetOf := func(n int) string {
		mu.Lock()
		defer mu.Unlock()
		off, ok := offsets[n]
		if !ok {
			// Publish returns after the message is delivered to every
			// subscriber, so a message seen has its offset recorded.
			t.Fatalf("no offset recorded for message %d", n)
		}
		return off
	}

	last, total := 0, atMost+1
	since := ""
	for last < total {
		r := dialRaw(t, base, "flood?since="+url.QueryEscape(since))
		// Read a few hundred messages, then drop the connection mid-stream.
		for i := 0; i < 300 && last < total; i++ {
			if total > atMost {
				select {
				case n, ok := <-final:
					if !ok {
						t.Fatal("the publisher stopped early")
					}
					total = n
				default:
				}
			}
			var m struct{ N int }
			text := r.nextText()
			if err := json.Unmarshal([]byte(text), &m); err != nil {
				t.Fatalf("frame %q: %v", text, err)
			}
			if m.N != last+1 {
				t.Fatalf("after %d resumes: got message %d, want %d", reconnects.Load(), m.N, last+1)
			}
			last = m.N
		}
		_ = r.Conn.CloseNow()
		since = offsetOf(last)
		reconnects.Add(1)
	}
	t.Logf("%d messages over %d connections", total, reconnects.Load())
}
