package client_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/client"
	"github.com/heraldhq/herald/heraldtest"
)

// closeKicked is the close code of a connection the application
// disconnected (herald's POST /api/disconnect).
const closeKicked = 4000

// When kickServer closes a connection with 4000.
type kickAt int

const (
	kickBeforeWelcome kickAt = iota
	kickBeforeReply          // when the first subscribe comes, not answering it
)

// kickServer stands in for herald disconnecting a client at a moment that
// a herald server does not make happen on demand: it closes each
// connection with 4000 and reason at the point when says. It counts the
// connections it took.
func kickServer(t *testing.T, reason string, when kickAt) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var conns atomic.Int32
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{"herald.v1.jsonl"}})
		if err != nil {
			return
		}
		defer conn.CloseNow()
		n := conns.Add(1)
		ctx := r.Context()
		if when == kickBeforeWelcome {
			_ = conn.Close(closeKicked, reason)
			return
		}
		welcome := fmt.Sprintf(`{"op":"welcome","client":"c%d","user":"ann"}`, n)
		if conn.Write(ctx, websocket.MessageText, []byte(welcome)) != nil {
			return
		}
		for {
			_, b, err := conn.Read(ctx)
			if err != nil {
				return
			}
			for _, line := range strings.Split(string(b), "\n") {
				var cmd struct {
					ID uint64 `json:"id"`
					Op string `json:"op"`
				}
				if json.Unmarshal([]byte(line), &cmd) != nil || cmd.Op != "subscribe" {
					continue
				}
				_ = conn.Close(closeKicked, reason)
				return
			}
		}
	}))
	t.Cleanup(hs.Close)
	return hs, &conns
}

func TestKickedClientDoesNotReconnect(t *testing.T) {
	t.Parallel()
	var conns atomic.Int32
	srv, hs := heraldtest.NewServer(t, herald.Config{Hooks: herald.Hooks{
		Connected: func(herald.Client) { conns.Add(1) },
	}})
	ctx := ctxT(t)
	var (
		mu     sync.Mutex
		states []client.State
	)
	// Reconnects would come at once: a client that tried again would be
	// waiting on its second connection when the test looks.
	c := dial(t, hs.URL, &client.Options{
		MinRetry: time.Millisecond, MaxRetry: time.Millisecond,
		OnState: func(s client.State) {
			mu.Lock()
			defer mu.Unlock()
			states = append(states, s)
		},
	})
	sub, err := c.Subscribe(ctx, "room")
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Disconnect(ctx, herald.ByClient(c.ID()), "banned"); err != nil {
		t.Fatal(err)
	}
	_, err = sub.Next(ctx)
	if !errors.Is(err, client.ErrKicked) || !strings.Contains(err.Error(), "banned") {
		t.Fatalf("Next after the disconnect: %v, want ErrKicked with the reason banned", err)
	}
	if s := c.State(); s != client.Disconnected {
		t.Fatalf("state %v, want disconnected", s)
	}
	// Calls fail at once rather than wait for a connection that is not
	// coming.
	if _, err := c.Publish(ctx, "room", 1, ""); !errors.Is(err, client.ErrKicked) {
		t.Fatalf("Publish after the disconnect: %v, want ErrKicked", err)
	}
	if _, err := c.Subscribe(ctx, "other"); !errors.Is(err, client.ErrKicked) {
		t.Fatalf("Subscribe after the disconnect: %v, want ErrKicked", err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("%d connections, want 1: the client reconnected after 4000", n)
	}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(states) != "[connecting connected disconnected]" {
		t.Fatalf("states %v, want connecting, connected, disconnected and no more", states)
	}
}

func TestDialKicked(t *testing.T) {
	t.Parallel()
	hs, conns := kickServer(t, "go away", kickBeforeWelcome)
	_, err := client.Dial(ctxT(t), hs.URL, &client.Options{MinRetry: time.Millisecond, MaxRetry: time.Millisecond})
	if !errors.Is(err, client.ErrKicked) || !strings.Contains(err.Error(), "go away") {
		t.Fatalf("Dial closed with 4000: %v, want ErrKicked with the reason", err)
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("%d connections, want 1", n)
	}
}

func TestKickedDuringSubscribe(t *testing.T) {
	t.Parallel()
	hs, _ := kickServer(t, "", kickBeforeReply)
	c := dial(t, hs.URL, &client.Options{MinRetry: time.Millisecond, MaxRetry: time.Millisecond})
	// The subscribe waiting for its reply fails with the kick, without a
	// reason, rather than wait for ctx.
	if _, err := c.Subscribe(ctxT(t), "room"); !errors.Is(err, client.ErrKicked) {
		t.Fatalf("Subscribe cut by the disconnect: %v, want ErrKicked", err)
	}
}

// In herald.v1.jsonl the server may send more lines in the welcome's
// frame (a server-side subscription and its first message, say): the
// client handles each of them, as it does the lines of any later frame,
// on its own goroutine.
// A stand-in server sends them, since herald packs them only when they
// are ready at the same moment.
func TestLinesAfterTheWelcomeAreHandled(t *testing.T) {
	t.Parallel()
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{"herald.v1.jsonl"}})
		if err != nil {
			return
		}
		defer conn.CloseNow()
		first := `{"op":"welcome","client":"c1","user":"ann"}` + "\n" +
			`{"op":"subscribed","channel":"feed:ann","offset":"e:0","recovered":true}` + "\n" +
			`{"op":"message","channel":"feed:ann","offset":"e:1","data":1}`
		if conn.Write(r.Context(), websocket.MessageText, []byte(first)) != nil {
			return
		}
		_, _, _ = conn.Read(r.Context()) // until the client goes
	}))
	t.Cleanup(hs.Close)
	// The callback runs on the client's goroutine, not Dial's: it may
	// wait for Dial to return.
	subs, dialed := make(chan *client.Subscription, 1), make(chan struct{})
	c := dial(t, hs.URL, &client.Options{OnServerSubscribe: func(s *client.Subscription) {
		select {
		case <-dialed:
			subs <- s
		case <-time.After(heraldtest.Timeout):
			t.Error("OnServerSubscribe ran before Dial returned")
		}
	}})
	close(dialed)
	if c.ID() != "c1" {
		t.Fatalf("client id %q, want c1 from the welcome", c.ID())
	}
	ctx := ctxT(t)
	var s *client.Subscription
	select {
	case s = <-subs:
	case <-ctx.Done():
		t.Fatal("the subscription in the welcome's frame was not surfaced")
	}
	m, err := s.Next(ctx)
	if err != nil || m.Channel != "feed:ann" || m.Offset != "e:1" || string(m.Data) != "1" {
		t.Fatalf("first message %+v, %v; want feed:ann e:1 with data 1", m, err)
	}
}
