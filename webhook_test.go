package herald_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/heraldtest"
	"github.com/heraldhq/herald/webhook"
)

const hookSecret = "hook-secret"

// hookApp is an application's webhook endpoint: it checks signatures and
// keeps the events, once per id.
type hookApp struct {
	t      *testing.T
	mu     sync.Mutex
	events []webhook.Event
	seen   map[string]bool
}

func newHookApp(t *testing.T) (*hookApp, string) {
	a := &hookApp{t: t, seen: map[string]bool{}}
	hs := httptest.NewServer(a)
	t.Cleanup(hs.Close)
	return a, hs.URL
}

func (a *hookApp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if err := webhook.Verify([]byte(hookSecret), r.Header.Get(webhook.SignatureHeader), body, time.Now()); err != nil {
		a.t.Errorf("webhook with a bad signature: %v", err)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	var e webhook.Event
	if err := json.Unmarshal(body, &e); err != nil {
		a.t.Errorf("webhook body %q: %v", body, err)
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.seen[e.ID] {
		a.seen[e.ID] = true
		a.events = append(a.events, e)
	}
}

// pick returns, in order, what keep says of each event it keeps.
func (a *hookApp) pick(keep func(e webhook.Event) (string, bool)) []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	for _, e := range a.events {
		if s, ok := keep(e); ok {
			out = append(out, s)
		}
	}
	return out
}

// of returns client's events as "type channel/reason/transport" strings.
func (a *hookApp) of(client string) []string {
	return a.pick(func(e webhook.Event) (string, bool) {
		s := e.Type
		for _, f := range []string{e.Channel, e.Reason, e.Transport} {
			if f != "" {
				s += " " + f
			}
		}
		if e.User == nil {
			s += " (no user)"
		}
		return s, e.Client == client
	})
}

// waitList waits until list returns want; what names the list in the
// failure.
func waitList(t *testing.T, what string, list func() []string, want ...string) {
	t.Helper()
	heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
		if got := list(); !slices.Equal(got, want) {
			return fmt.Errorf("%s %q, want %q", what, got, want)
		}
		return nil
	})
}

// waitEvents waits until client's events are want, in that order.
func (a *hookApp) waitEvents(t *testing.T, client string, want ...string) {
	t.Helper()
	waitList(t, "client "+client+"'s events", func() []string { return a.of(client) }, want...)
}

func hookConfig(url string) herald.Config {
	return herald.Config{Webhook: herald.Webhook{URL: url, Secret: hookSecret}}
}

// A JSON client's life reaches the app in order: connect, its subscribes
// and unsubscribes, those its close ends, and the disconnect with why.
func TestWebhookClientLife(t *testing.T) {
	t.Parallel()
	app, url := newHookApp(t)
	_, base := newServer(t, hookConfig(url))
	c := dial(t, base)
	id := clientID(c)
	c.MustOK(map[string]any{"op": "subscribe", "channel": "a"})
	c.MustOK(map[string]any{"op": "subscribe", "channel": "b"})
	c.MustOK(map[string]any{"op": "unsubscribe", "channel": "a"})
	c.MustOK(map[string]any{"op": "subscribe", "channel": "a"})
	_ = c.Conn.Close(websocket.StatusNormalClosure, "")
	app.waitEvents(t, id,
		"connect websocket", "subscribe a", "subscribe b", "unsubscribe a", "subscribe a",
		"unsubscribe b", "unsubscribe a", "disconnect closed")

	// Every event has its own id; a refused subscription is no event.
	app.mu.Lock()
	ids := map[string]bool{}
	for _, e := range app.events {
		if ids[e.ID] {
			t.Errorf("two events with id %s", e.ID)
		}
		ids[e.ID] = true
	}
	app.mu.Unlock()
}

// A reader too slow for its channel is reported as slow; an SSE stream
// and a raw connection name their transports.
func TestWebhookReasonsAndTransports(t *testing.T) {
	t.Parallel()
	app, url := newHookApp(t)
	cfg := hookConfig(url)
	cfg.QueueMessages = 1
	srv, base := newServer(t, cfg)

	r := dialRaw(t, base, "raw-room")
	sse := openSSE(t, nil, base+"/sse?channel=x&channel=y", nil)
	slow := dial(t, base)
	slowID := clientID(slow)
	slow.MustOK(map[string]any{"op": "subscribe", "channel": "flood"})
	// The slow client never reads: a burst of pushes overflows its queue.
	for i := range 200 {
		if _, err := srv.Publish(context.Background(), "flood", strings.Repeat("x", 1000)+fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
	}
	app.waitEvents(t, slowID, "connect websocket", "subscribe flood", "unsubscribe flood", "disconnect slow")

	var rawID, sseID string
	heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
		app.mu.Lock()
		defer app.mu.Unlock()
		for _, e := range app.events {
			if e.Type == webhook.Connect && e.Transport == "raw" {
				rawID = e.Client
			}
			if e.Type == webhook.Connect && e.Transport == "sse" {
				sseID = e.Client
			}
		}
		if rawID == "" || sseID == "" {
			return fmt.Errorf("connects of raw %q and sse %q", rawID, sseID)
		}
		return nil
	})
	_ = r.Conn.Close(websocket.StatusNormalClosure, "")
	sse.Close()
	app.waitEvents(t, rawID, "connect raw", "subscribe raw-room", "unsubscribe raw-room", "disconnect closed")
	app.waitEvents(t, sseID, "connect sse", "subscribe x", "subscribe y", "unsubscribe x", "unsubscribe y", "disconnect closed")
}

// A node's shutdown reports its clients' disconnects as shutdown: on one
// node (memory broker) it delivers them before it stops; on Redis another
// node delivers what the stopped one queued.
func TestWebhookShutdown(t *testing.T) {
	t.Parallel()
	for name, brokers := range map[string]func(*testing.T) func() broker.Broker{
		"memory": nil,
		"redis":  redisBrokers,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			app, url := newHookApp(t)
			cfg := hookConfig(url)
			if brokers != nil {
				newBroker := brokers(t)
				cfg.Broker = newBroker()
				other := hookConfig(url)
				other.Broker = newBroker()
				newServer(t, other) // stands by to deliver
			}
			srv, base := newServer(t, cfg)
			c := dial(t, base)
			id := clientID(c)
			c.MustOK(map[string]any{"op": "subscribe", "channel": "s"})
			ctx, cancel := context.WithTimeout(context.Background(), heraldtest.Timeout)
			defer cancel()
			if err := srv.Shutdown(ctx); err != nil {
				t.Fatal(err)
			}
			app.waitEvents(t, id, "connect websocket", "subscribe s", "unsubscribe s", "disconnect shutdown")
		})
	}
}

// Without a secret a webhook URL is refused; without a URL nothing runs.
func TestWebhookConfig(t *testing.T) {
	t.Parallel()
	if _, err := herald.New(herald.Config{Webhook: herald.Webhook{URL: "http://127.0.0.1:1"}}); err == nil || !strings.Contains(err.Error(), "Secret") {
		t.Fatalf("a webhook URL without a secret: %v", err)
	}
	if _, err := herald.New(herald.Config{Webhook: herald.Webhook{URL: "http://127.0.0.1:1", Secret: "s", Events: []string{"conect"}}}); err == nil {
		t.Fatal("an unknown event type was accepted")
	}
}

// A connect hook's server-side channels are subscribed while the
// connection opens: their subscribes still come after the connect, with
// the hook's user.
func TestWebhookServerSideChannelsAfterConnect(t *testing.T) {
	t.Parallel()
	app, url := newHookApp(t)
	cfg := hookConfig(url)
	cfg.Hooks.Connect = func(context.Context, herald.ConnectRequest) (herald.ConnectResult, error) {
		return herald.ConnectResult{User: "ann", Channels: []string{"inbox:ann"}}, nil
	}
	_, base := newServer(t, cfg)
	c := dial(t, base)
	id := clientID(c)
	app.waitEvents(t, id, "connect websocket", "subscribe inbox:ann")
	_ = c.Conn.Close(websocket.StatusNormalClosure, "")
	app.waitEvents(t, id, "connect websocket", "subscribe inbox:ann", "unsubscribe inbox:ann", "disconnect closed")
	app.mu.Lock()
	defer app.mu.Unlock()
	for _, e := range app.events {
		if e.Client == "" {
			continue // occupied and vacated are the channel's
		}
		if e.User == nil || *e.User != "ann" {
			t.Errorf("event %s %s with user %v, want ann", e.Type, e.Channel, e.User)
		}
	}
}

// onChannel returns channel's occupied and vacated events, in order.
func (a *hookApp) onChannel(channel string) []string {
	return a.pick(func(e webhook.Event) (string, bool) { return e.Type, e.Client == "" && e.Channel == channel })
}

func (a *hookApp) waitChannel(t *testing.T, channel string, want ...string) {
	t.Helper()
	waitList(t, "channel "+channel+"'s events", func() []string { return a.onChannel(channel) }, want...)
}

// A channel's first subscriber across the cluster sends occupied, its last
// leaving sends vacated after a grace, and the two alternate: a channel
// occupied again within the grace sends neither. On one node, and across
// two nodes on Redis.
func TestWebhookOccupiedVacated(t *testing.T) {
	t.Parallel()
	for name, brokers := range map[string]func(*testing.T) func() broker.Broker{
		"memory": nil,
		"redis":  redisBrokers,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			app, url := newHookApp(t)
			cfgA, cfgB := hookConfig(url), hookConfig(url)
			var nodeB string
			if brokers != nil {
				newBroker := brokers(t)
				cfgA.Broker, cfgB.Broker = newBroker(), newBroker()
				_, nodeB = newServer(t, cfgB)
			}
			_, nodeA := newServer(t, cfgA)
			if nodeB == "" {
				nodeB = nodeA
			}
			const room = "room:occ"
			a, b := dial(t, nodeA), dial(t, nodeB)
			a.MustOK(map[string]any{"op": "subscribe", "channel": room})
			b.MustOK(map[string]any{"op": "subscribe", "channel": room})
			app.waitChannel(t, room, "occupied")
			a.MustOK(map[string]any{"op": "unsubscribe", "channel": room})
			// b leaves and comes back within the grace: no vacated, no
			// second occupied.
			b.MustOK(map[string]any{"op": "unsubscribe", "channel": room})
			b.MustOK(map[string]any{"op": "subscribe", "channel": room})
			b.MustOK(map[string]any{"op": "unsubscribe", "channel": room})
			app.waitChannel(t, room, "occupied", "vacated")
			a.MustOK(map[string]any{"op": "subscribe", "channel": room})
			app.waitChannel(t, room, "occupied", "vacated", "occupied")
		})
	}
}
