package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/client"
	"github.com/heraldhq/herald/heraldtest"
	"github.com/heraldhq/herald/internal/auth"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), heraldtest.Timeout)
	t.Cleanup(cancel)
	return ctx
}

func dial(t *testing.T, url string, opts *client.Options) *client.Client {
	t.Helper()
	c, err := client.Dial(ctxT(t), url, opts)
	if err != nil {
		t.Fatalf("Dial %s: %v", url, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func number(t *testing.T, m client.Message) int {
	t.Helper()
	var n int
	if err := json.Unmarshal(m.Data, &n); err != nil {
		t.Fatalf("message data %s: %v", m.Data, err)
	}
	return n
}

func TestPublishSubscribeHistoryPresence(t *testing.T) {
	t.Parallel()
	_, hs := heraldtest.NewServer(t, herald.Config{})
	ctx := ctxT(t)
	a, b := dial(t, hs.URL, nil), dial(t, hs.URL+"/ws", nil)
	if a.State() != client.Connected || a.ID() == "" || a.ID() == b.ID() {
		t.Fatalf("after Dial: state %v, ids %q %q", a.State(), a.ID(), b.ID())
	}
	sub, err := a.Subscribe(ctx, "room")
	if err != nil {
		t.Fatal(err)
	}
	off, err := b.Publish(ctx, "room", map[string]string{"text": "hi"}, "greet")
	if err != nil {
		t.Fatal(err)
	}
	m, err := sub.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if m.Channel != "room" || m.Offset != off || string(m.Data) != `{"text":"hi"}` || m.Event != "greet" || m.Client != b.ID() {
		t.Fatalf("message %+v, want b's greeting at %s", m, off)
	}
	if sub.Offset() != off {
		t.Fatalf("subscription offset %q, want %q", sub.Offset(), off)
	}
	hist, err := b.History(ctx, "room", client.HistoryOptions{})
	if err != nil || len(hist) != 1 || hist[0].Offset != off {
		t.Fatalf("history %+v, %v", hist, err)
	}
	who, err := b.Presence(ctx, "room")
	if err != nil || len(who) != 1 || who[0].Client != a.ID() || who[0].Transport != "websocket" {
		t.Fatalf("presence %+v, %v; want a, on ws", who, err)
	}

	// Errors are the server's, with its code.
	var herr *client.Error
	if _, err := b.Publish(ctx, "bad channel", 1, ""); !errors.As(err, &herr) || herr.Code != "bad_request" {
		t.Fatalf("publish to a bad channel: %v, want bad_request", err)
	}
	if _, err := a.Subscribe(ctx, "room"); !errors.As(err, &herr) || herr.Code != "bad_request" {
		t.Fatalf("subscribing twice: %v, want bad_request", err)
	}

	if err := sub.Unsubscribe(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := sub.Next(ctx); !errors.Is(err, client.ErrUnsubscribed) {
		t.Fatalf("Next after Unsubscribe: %v", err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Publish(ctx, "room", 1, ""); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("publish after Close: %v, want ErrClosed", err)
	}
}

func TestSubscribeSince(t *testing.T) {
	t.Parallel()
	_, hs := heraldtest.NewServer(t, herald.Config{})
	ctx := ctxT(t)
	c := dial(t, hs.URL, nil)
	var offs []string
	for i := 1; i <= 3; i++ {
		off, err := c.Publish(ctx, "s", i, "")
		if err != nil {
			t.Fatal(err)
		}
		offs = append(offs, off)
	}
	sub, err := c.Subscribe(ctx, "s", client.Since(offs[0]))
	if err != nil {
		t.Fatal(err)
	}
	for i := 2; i <= 3; i++ {
		m, err := sub.Next(ctx)
		if err != nil || number(t, m) != i {
			t.Fatalf("replayed message: %+v, %v; want %d", m, err, i)
		}
	}
	if !sub.Recovered() {
		t.Fatal("resume within history is not recovered")
	}
}

func TestTokens(t *testing.T) {
	t.Parallel()
	const secret = "client test secret"
	_, hs := heraldtest.NewServer(t, herald.Config{TokenSecret: secret})
	var herr *client.Error
	if _, err := client.Dial(ctxT(t), hs.URL, nil); !errors.As(err, &herr) || herr.Code != "unauthorized" {
		t.Fatalf("Dial without a token: %v, want unauthorized", err)
	}
	tok, err := auth.MintHS256([]byte(secret), auth.Spec{User: "ann", TTL: time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if c := dial(t, hs.URL, &client.Options{Token: tok}); c.User() != "ann" {
		t.Fatalf("user %q, want ann", c.User())
	}
	// GetToken is asked again shortly before exp, and the connection
	// outlives the first token.
	var mu sync.Mutex
	asked := 0
	var firstExp time.Time
	getToken := func(context.Context) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		asked++
		now := time.Now()
		if asked == 1 {
			firstExp = now.Add(2 * time.Second).Truncate(time.Second) // exp is whole seconds
		}
		return auth.MintHS256([]byte(secret), auth.Spec{User: "bob", TTL: 2 * time.Second}, now)
	}
	c := dial(t, hs.URL, &client.Options{GetToken: getToken})
	first := c.ID()
	// The refresh, then the first token's expiry: the server would have
	// closed the connection at exp had the refresh not moved it.
	heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
		mu.Lock()
		defer mu.Unlock()
		if asked < 2 {
			return fmt.Errorf("GetToken asked %d times, want at least 2 (a refresh)", asked)
		}
		if past := time.Since(firstExp); past <= 500*time.Millisecond {
			return fmt.Errorf("%v past the first token's expiry, want more than 500ms", past)
		}
		return nil
	})
	if _, err := c.Publish(ctxT(t), "t", 1, ""); err != nil {
		t.Fatal(err)
	}
	if c.ID() != first {
		t.Fatalf("after exp: connection %q, first %q; want the same connection, refreshed", c.ID(), first)
	}
}

// proxy forwards TCP to target; cut drops every connection and refuses new
// ones until restore.
type proxy struct {
	target string
	ln     net.Listener
	mu     sync.Mutex
	conns  map[net.Conn]bool
	down   bool
	wg     sync.WaitGroup
}

func newProxy(t *testing.T, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{target: target, ln: ln, conns: map[net.Conn]bool{}}
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.forward(c)
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		p.cut()
		p.wg.Wait()
	})
	return p
}

func (p *proxy) forward(c net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down {
		_ = c.Close()
		return
	}
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		_ = c.Close()
		return
	}
	p.conns[c], p.conns[up] = true, true
	for _, pair := range [][2]net.Conn{{c, up}, {up, c}} {
		p.wg.Go(func() {
			_, _ = io.Copy(pair[0], pair[1])
			_ = pair[0].Close()
			_ = pair[1].Close()
		})
	}
}

func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for c := range p.conns {
		_ = c.Close()
	}
	clear(p.conns)
}

func (p *proxy) restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = false
}

// publishWithCut publishes 1…n with publish, cutting p's connections
// after the first third and letting them through again after the second.
func publishWithCut(t *testing.T, p *proxy, n int, publish func(i int) error) {
	t.Helper()
	for i := 1; i <= n; i++ {
		if err := publish(i); err != nil {
			t.Fatal(err)
		}
		switch i {
		case n / 3:
			p.cut()
		case 2 * n / 3:
			p.restore()
		}
	}
}

// readNumbers reads the messages 1…n from s, in order.
func readNumbers(t *testing.T, ctx context.Context, s *client.Subscription, n int) {
	t.Helper()
	for i := 1; i <= n; i++ {
		m, err := s.Next(ctx)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if got := number(t, m); got != i {
			t.Fatalf("message %d is %d", i, got)
		}
	}
}

// A subscriber whose connection is cut while messages are published gets,
// after it reconnects by itself, every message once and in order.
func TestReconnectResumes(t *testing.T) {
	t.Parallel()
	_, hs := heraldtest.NewServer(t, herald.Config{PublishRate: -1, HistorySize: 1000})
	p := newProxy(t, hs.Listener.Addr().String())
	ctx := ctxT(t)
	var states []client.State
	var mu sync.Mutex
	sub := dial(t, "ws://"+p.ln.Addr().String()+"/ws", &client.Options{
		MinRetry: 20 * time.Millisecond,
		MaxRetry: 100 * time.Millisecond,
		OnState: func(s client.State) {
			mu.Lock()
			states = append(states, s)
			mu.Unlock()
		},
	})
	pub := dial(t, hs.URL, nil)
	s, err := sub.Subscribe(ctx, "r")
	if err != nil {
		t.Fatal(err)
	}
	const n = 300
	publishWithCut(t, p, n, func(i int) error {
		_, err := pub.Publish(ctx, "r", i, "")
		return err
	})
	readNumbers(t, ctx, s, n)
	if !s.Recovered() {
		t.Fatal("the resubscription did not recover")
	}
	mu.Lock()
	seen := fmt.Sprint(states)
	mu.Unlock()
	if !strings.Contains(seen, "disconnected") || !strings.HasSuffix(seen, "connecting connected]") {
		t.Fatalf("states %s, want a reconnection ending connected", seen)
	}
	// A history call made while disconnected waits for the connection.
	p.cut()
	heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
		if s := sub.State(); s == client.Connected {
			return fmt.Errorf("state after the cut: %v, want anything but connected", s)
		}
		return nil
	})
	done := make(chan error, 1)
	go func() {
		_, err := sub.History(ctx, "r", client.HistoryOptions{Limit: 1})
		done <- err
	}()
	p.restore()
	if err := <-done; err != nil {
		t.Fatalf("history across a reconnection: %v", err)
	}
}

// Many goroutines share one client.
func TestConcurrentUse(t *testing.T) {
	t.Parallel()
	_, hs := heraldtest.NewServer(t, herald.Config{PublishRate: -1})
	ctx := ctxT(t)
	c := dial(t, hs.URL, nil)
	const workers, each = 8, 50
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			ch := fmt.Sprintf("w%d", w)
			s, err := c.Subscribe(ctx, ch)
			if err != nil {
				t.Error(err)
				return
			}
			for i := range each {
				if _, err := c.Publish(ctx, ch, i, ""); err != nil {
					t.Error(err)
					return
				}
			}
			for i := range each {
				m, err := s.Next(ctx)
				if err != nil || number(t, m) != i {
					t.Errorf("%s message %d: %+v %v", ch, i, m, err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestDialErrors(t *testing.T) {
	t.Parallel()
	if _, err := client.Dial(ctxT(t), "ftp://x", nil); err == nil {
		t.Fatal("Dial ftp:// gave no error")
	}
	hs := httptest.NewServer(nil) // answers 404: no herald here
	defer hs.Close()
	if _, err := client.Dial(ctxT(t), hs.URL, nil); err == nil {
		t.Fatal("Dial of a server that is not herald gave no error")
	}
}

// Subscriptions the server makes at connect (a Connect hook's channels)
// are surfaced as Subscriptions, and resumed across reconnections from the
// last offset seen, without a gap; rpc asks the application.
func TestServerSubscriptionsAndRPC(t *testing.T) {
	t.Parallel()
	srv, hs := heraldtest.NewServer(t, herald.Config{
		PublishRate: -1,
		Hooks: herald.Hooks{
			Connect: func(_ context.Context, req herald.ConnectRequest) (herald.ConnectResult, error) {
				return herald.ConnectResult{User: "ann", Channels: []string{"feed:ann"}, Info: json.RawMessage(`{"plan":"pro"}`)}, nil
			},
			RPC: func(_ context.Context, c herald.Client, method string, data json.RawMessage) (json.RawMessage, error) {
				if method != "echo" {
					return nil, herald.Errorf(herald.CodeNotFound, "no method "+method)
				}
				return json.RawMessage(`{"user":"` + c.User + `","data":` + string(data) + `}`), nil
			},
		},
	})
	p := newProxy(t, hs.Listener.Addr().String())
	ctx := ctxT(t)
	subs := make(chan *client.Subscription, 10)
	c := dial(t, "ws://"+p.ln.Addr().String()+"/ws", &client.Options{
		MinRetry:          20 * time.Millisecond,
		MaxRetry:          100 * time.Millisecond,
		OnServerSubscribe: func(s *client.Subscription) { subs <- s },
	})
	var s *client.Subscription
	select {
	case s = <-subs:
	case <-ctx.Done():
		t.Fatal("no server-side subscription surfaced")
	}
	if s.Channel() != "feed:ann" || !s.Recovered() {
		t.Fatalf("server-side subscription %q, recovered %v", s.Channel(), s.Recovered())
	}
	const n = 60
	publishWithCut(t, p, n, func(i int) error {
		_, err := srv.Publish(ctx, "feed:ann", i)
		return err
	})
	readNumbers(t, ctx, s, n)
	if !s.Recovered() {
		t.Fatal("the server-side subscription was not resumed without a gap")
	}
	select {
	case again := <-subs:
		t.Fatalf("the resumed subscription was surfaced again: %q", again.Channel())
	default:
	}
	if _, err := c.Subscribe(ctx, "feed:ann"); err == nil {
		t.Fatal("subscribing to a server-side subscription's channel succeeded")
	}

	out, err := c.RPC(ctx, "echo", map[string]int{"x": 1})
	if err != nil || string(out) != `{"user":"ann","data":{"x":1}}` {
		t.Fatalf("RPC = %s, %v", out, err)
	}
	var e *client.Error
	if _, err := c.RPC(ctx, "nope", nil); !errors.As(err, &e) || e.Code != "not_found" {
		t.Fatalf("RPC of an unknown method: %v, want not_found", err)
	}
	who, err := c.Presence(ctx, "feed:ann")
	if err != nil || len(who) != 1 || who[0].User != "ann" || string(who[0].Info) != `{"plan":"pro"}` {
		t.Fatalf("presence %+v, %v; want ann with her info", who, err)
	}
}
