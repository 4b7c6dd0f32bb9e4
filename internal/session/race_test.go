package session_test

import (
	"context"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/memory"
	"github.com/heraldhq/herald/internal/hub"
	"github.com/heraldhq/herald/internal/session"
)

// gatedBroker is a memory broker whose Subscribe to one channel waits
// until the test opens the gate, holding a subscription half made.
type gatedBroker struct {
	*memory.Broker
	channel string
	entered chan struct{} // closed when Subscribe to channel starts waiting
	gate    chan struct{} // closed by the test to let it go on
}

func (b *gatedBroker) Subscribe(ctx context.Context, name string) error {
	if name == b.channel {
		close(b.entered)
		<-b.gate
	}
	return b.Broker.Subscribe(ctx, name)
}

// newGatedHub returns a started hub over a gatedBroker for channel.
func newGatedHub(t *testing.T, channel string) (*hub.Hub, *gatedBroker) {
	t.Helper()
	b := &gatedBroker{Broker: memory.New(), channel: channel, entered: make(chan struct{}), gate: make(chan struct{})}
	h := hub.New(hub.Config{Broker: b})
	if err := h.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Stop(); _ = b.Close() })
	return h, b
}

// observed records what a session's Observer is told.
type observed struct {
	mu     sync.Mutex
	events []string
}

func (o *observed) Subscribed(ch string) {
	o.mu.Lock()
	o.events = append(o.events, "+"+ch)
	o.mu.Unlock()
}

func (o *observed) Unsubscribed(ch string) {
	o.mu.Lock()
	o.events = append(o.events, "-"+ch)
	o.mu.Unlock()
}

func (o *observed) balanced() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for _, e := range o.events {
		if e[0] == '+' {
			n++
		} else {
			n--
		}
	}
	return n == 0
}

// TestUnsubscribeServerDuringSubscribe: a server-side unsubscribe that
// comes while the hub is still making the subscription must not leave
// the hub holding a subscription the session forgot: once the session
// closes, the hub has no subscriber left and the Observer heard every
// start's end.
func TestUnsubscribeServerDuringSubscribe(t *testing.T) {
	h, b := newGatedHub(t, "room")
	obs := &observed{}
	m := newMetrics()
	s := open(t, h, &fakeConn{}, session.Config{Mode: session.ModeJSON, Observer: obs, Client: broker.ClientInfo{Client: "c1"}, Shared: &session.Shared{Metrics: m}})
	done := make(chan error, 1)
	go func() { done <- s.SubscribeServer("room", nil) }()
	<-b.entered
	s.UnsubscribeServer("room")
	close(b.gate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	s.Close()
	if chs := h.Channels(); len(chs) != 0 {
		t.Fatalf("after Close the hub still has subscribers: %v", chs)
	}
	if !obs.balanced() {
		t.Fatalf("observer told %v: a start without its end", obs.events)
	}
	if g := testutil.ToFloat64(m.Subscriptions); g != 0 {
		t.Fatalf("subscriptions gauge %v after Close, want 0", g)
	}
}

// TestCloseDuringSubscribe: a Close while the hub is making a
// subscription undoes it once, and the subscriptions gauge comes back
// to zero.
func TestCloseDuringSubscribe(t *testing.T) {
	h, b := newGatedHub(t, "room")
	m := newMetrics()
	s := open(t, h, &fakeConn{}, session.Config{Mode: session.ModeJSON, Shared: &session.Shared{Metrics: m}})
	done := make(chan struct{})
	go func() { command(s, 1, `"op":"subscribe","channel":"room"`); close(done) }()
	<-b.entered
	s.Close()
	close(b.gate)
	<-done
	if chs := h.Channels(); len(chs) != 0 {
		t.Fatalf("after Close the hub still has subscribers: %v", chs)
	}
	if g := testutil.ToFloat64(m.Subscriptions); g != 0 {
		t.Fatalf("subscriptions gauge %v after Close, want 0", g)
	}
}
