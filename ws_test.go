package herald_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/heraldtest"
)

func TestSmokePublishSubscribe(t *testing.T) {
	_, hs := heraldtest.NewServer(t, herald.Config{})
	a := heraldtest.Dial(t, heraldtest.WSURL(hs.URL, "/ws"))
	b := heraldtest.Dial(t, heraldtest.WSURL(hs.URL, "/ws"), "herald.v1.jsonl")
	b.MustOK(map[string]any{"op": "subscribe", "channel": "news"})
	r := a.MustOK(map[string]any{"op": "publish", "channel": "news", "data": map[string]any{"x": 1}})
	m := b.Next()
	if m["op"] != "message" || m["offset"] != r["offset"] {
		t.Fatalf("push %v, publish reply %v", m, r)
	}
}

// In herald.v1.jsonl a subscriber that falls behind gets many messages per
// frame; with and without permessage-deflate every line of every frame is
// one whole message, none is lost or repeated, and order holds. (How the
// transport frames a batch as lines is pinned in internal/transport/ws;
// this is the session batching what queued while its subscriber lagged.)
func TestJSONLBatchesArriveWhole(t *testing.T) {
	t.Parallel()
	for _, mode := range []websocket.CompressionMode{websocket.CompressionDisabled, websocket.CompressionNoContextTakeover} {
		t.Run(fmt.Sprint("compression=", mode != websocket.CompressionDisabled), func(t *testing.T) {
			t.Parallel()
			srv, hs := heraldtest.NewServer(t, herald.Config{QueueMessages: 10000, QueueBytes: 64 << 20})
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			// A small receive buffer, so that the server's writes soon
			// wait for the subscriber.
			smallBuffer := func(ctx context.Context, network, addr string) (net.Conn, error) {
				nc, err := (&net.Dialer{}).DialContext(ctx, network, addr)
				if err == nil {
					_ = nc.(*net.TCPConn).SetReadBuffer(16 << 10)
				}
				return nc, err
			}
			c, _, err := websocket.Dial(ctx, heraldtest.WSURL(hs.URL, "/ws"), &websocket.DialOptions{
				Subprotocols:    []string{"herald.v1.jsonl"},
				CompressionMode: mode,
				HTTPClient:      &http.Client{Transport: &http.Transport{DialContext: smallBuffer}},
			})
			if err != nil {
				t.Fatal(err)
			}
			defer c.CloseNow()
			c.SetReadLimit(64 << 20)
			if err := c.Write(ctx, websocket.MessageText, []byte(`{"id":1,"op":"subscribe","channel":"lines"}`)); err != nil {
				t.Fatal(err)
			}
			for reply := []byte(nil); !bytes.Contains(reply, []byte(`"id":1`)); { // after the welcome
				if _, reply, err = c.Read(ctx); err != nil {
					t.Fatalf("subscribe: %v", err)
				}
			}
			// Published before the subscriber reads again: 2 MB of
			// messages that compress to about half, more than the
			// sockets between hold, so the rest queues and goes out in
			// frames of many lines.
			const total = 1000
			pad := make([]byte, 1024)
			for n := 1; n <= total; n++ {
				_, _ = rand.Read(pad)
				if _, err := srv.Publish(ctx, "lines", map[string]any{"n": n, "pad": hex.EncodeToString(pad)}); err != nil {
					t.Fatal(err)
				}
			}
			next, most := 1, 0
			for next <= total {
				_, frame, err := c.Read(ctx)
				if err != nil {
					t.Fatalf("after message %d: %v", next-1, err)
				}
				lines := bytes.Split(frame, []byte("\n"))
				most = max(most, len(lines))
				for _, line := range lines {
					var m struct {
						Op   string `json:"op"`
						Data struct {
							N   int    `json:"n"`
							Pad string `json:"pad"`
						} `json:"data"`
					}
					if err := json.Unmarshal(line, &m); err != nil {
						t.Fatalf("a line that is not one message: %v: %.80q", err, line)
					}
					if m.Op != "message" || m.Data.N != next || len(m.Data.Pad) != 2*len(pad) {
						t.Fatalf("got message %d (%d bytes of padding), want %d", m.Data.N, len(m.Data.Pad), next)
					}
					next++
				}
			}
			if most < 2 {
				t.Fatal("every frame held one message: no batch was tested")
			}
		})
	}
}

// A client that keeps its compression context between messages (it
// offers permessage-deflate without client_no_context_takeover, as
// browsers do) gets no client_no_context_takeover in the answer, and its
// publishes, each referring back to the one before, are understood;
// subscribers that compress with and without context takeover get every
// message. herald answers server_no_context_takeover to all of them.
func TestDeflateClientContextTakeover(t *testing.T) {
	t.Parallel()
	_, hs := heraldtest.NewServer(t, herald.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dial := func(mode websocket.CompressionMode) *websocket.Conn {
		c, resp, err := websocket.Dial(ctx, heraldtest.WSURL(hs.URL, "/ws"), &websocket.DialOptions{CompressionMode: mode})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.CloseNow() })
		want := "permessage-deflate;server_no_context_takeover"
		if mode == websocket.CompressionNoContextTakeover {
			want += ";client_no_context_takeover"
		}
		if got := strings.ReplaceAll(resp.Header.Get("Sec-WebSocket-Extensions"), " ", ""); got != want {
			t.Fatalf("answer %q, want %q", got, want)
		}
		return c
	}
	// call sends a command and reads until its reply.
	call := func(c *websocket.Conn, id int, cmd string) {
		if err := c.Write(ctx, websocket.MessageText, []byte(cmd)); err != nil {
			t.Fatal(err)
		}
		for {
			_, reply, err := c.Read(ctx)
			if err != nil {
				t.Fatalf("command %d: %v", id, err)
			}
			if bytes.Contains(reply, []byte(fmt.Sprintf(`"id":%d,`, id))) {
				if bytes.Contains(reply, []byte(`"error"`)) {
					t.Fatalf("command %d: %s", id, reply)
				}
				return
			}
		}
	}
	subs := []*websocket.Conn{dial(websocket.CompressionContextTakeover), dial(websocket.CompressionNoContextTakeover)}
	for _, s := range subs {
		call(s, 1, `{"id":1,"op":"subscribe","channel":"zip"}`)
	}
	pub := dial(websocket.CompressionContextTakeover)
	pad := make([]byte, 300)
	_, _ = rand.Read(pad)
	text := hex.EncodeToString(pad) // the same 600 bytes in every publish: later ones refer back
	const n = 20
	for i := 1; i <= n; i++ {
		call(pub, i, fmt.Sprintf(`{"id":%d,"op":"publish","channel":"zip","data":{"i":%d,"text":%q}}`, i, i, text))
	}
	for k, s := range subs {
		for i := 1; i <= n; {
			_, m, err := s.Read(ctx)
			if err != nil {
				t.Fatalf("subscriber %d, message %d: %v", k, i, err)
			}
			if bytes.Contains(m, []byte(fmt.Sprintf(`"i":%d,`, i))) && bytes.Contains(m, []byte(text)) {
				i++
			}
		}
	}
}
