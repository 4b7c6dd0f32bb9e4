package herald_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/nats"
	"github.com/heraldhq/herald/broker/redis"
	"github.com/heraldhq/herald/heraldtest"
)

// These tests put a TCP proxy between a herald node and its broker, cut it
// to make the broker unreachable, and restore it: the node must report the
// outage on /healthz, refuse publishes with `unavailable` instead of
// acknowledging and losing them, reconnect by itself, and let a client
// resume from its last offset with every acknowledged message, once.

func TestBrokerOutageOnRedis(t *testing.T) {
	t.Parallel()
	p := newFaultProxy(t, redisAddr())
	prefix := testPrefix() + ":"
	t.Cleanup(func() { dropRedisKeys(prefix) })
	b, err := redis.New(redis.Config{
		URL:    "redis://" + p.addr + "/0?dial_timeout=200ms&read_timeout=500ms&write_timeout=500ms&max_retries=0",
		Prefix: prefix,
	})
	if err != nil {
		t.Fatal(err)
	}
	testBrokerOutage(t, p, b)
}

func TestBrokerOutageOnNATS(t *testing.T) {
	t.Parallel()
	p := newFaultProxy(t, strings.TrimPrefix(natsURL(), "nats://"))
	prefix := testPrefix()
	t.Cleanup(func() { dropNATSPrefix(prefix) })
	b, err := nats.New(nats.Config{
		URL:           "nats://" + p.addr,
		Prefix:        prefix,
		DialTimeout:   time.Second,
		ReconnectWait: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	testBrokerOutage(t, p, b)
}

func testBrokerOutage(t *testing.T, p *faultProxy, b broker.Broker) {
	_, base := newServer(t, herald.Config{Broker: b})
	const ch = "faults:a"

	sub := dial(t, base)
	sub.MustOK(map[string]any{"op": "subscribe", "channel": ch})
	pub := dial(t, base)

	acked := map[string]bool{} // offsets the server acknowledged
	var before []string
	for i := 1; i <= 3; i++ {
		off := publish(t, pub, ch, map[string]int{"n": i})
		acked[off] = true
		before = append(before, off)
	}
	var last string // the last offset sub saw
	for i := 1; i <= 3; i++ {
		m := nextMessage(t, sub)
		if counter(t, m) != i || m["offset"] != before[i-1] {
			t.Fatalf("message %d before the outage: %v, want offset %s", i, m, before[i-1])
		}
		last = m["offset"].(string)
	}
	if status, _ := health(t, base); status != http.StatusOK {
		t.Fatalf("/healthz before the outage: %d, want 200", status)
	}

	p.cut()
	heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
		status, body := health(t, base)
		if status != http.StatusServiceUnavailable || !strings.HasPrefix(body, "unavailable") {
			return fmt.Errorf("/healthz during the outage: %d %q, want 503 \"unavailable…\"", status, body)
		}
		return nil
	})
	if status, _ := ready(t, base); status != http.StatusServiceUnavailable {
		t.Fatalf("/readyz while the broker is away: %d, want 503", status)
	}
	failedBefore := metric(t, base, `herald_broker_errors_total{op="publish"}`)
	// Publishes made during the outage (n ≥ 100) fail and are never seen.
	r := pub.Call(map[string]any{"op": "publish", "channel": ch, "data": map[string]int{"n": 100}}, nil)
	if heraldtest.ErrorCode(r) != "unavailable" {
		t.Fatalf("publish during the outage: %v, want error unavailable", r)
	}
	if r := apiCall(t, http.MethodPost, base+"/api/publish", `{"channel":"`+ch+`","data":{"n":101}}`); r.status != http.StatusServiceUnavailable {
		t.Fatalf("POST /api/publish during the outage: %d %s, want 503", r.status, r.raw)
	}
	if got := metric(t, base, `herald_broker_errors_total{op="publish"}`) - failedBefore; got != 2 {
		t.Fatalf("broker publish errors during the outage: %v, want 2", got)
	}

	p.restore()
	heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
		status, body := health(t, base)
		if status != http.StatusOK {
			return fmt.Errorf("/healthz after the outage: %d %q, want 200", status, body)
		}
		return nil
	})
	// The node reconnected by itself: publishing works again. The first
	// publishes may still race the reconnection of a pool connection, so
	// wait for one to be acknowledged.
	var after []string
	heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
		r := pub.Call(map[string]any{"op": "publish", "channel": ch, "data": map[string]int{"n": 4}}, nil)
		if r["ok"] != true {
			if heraldtest.ErrorCode(r) != "unavailable" {
				t.Fatalf("publish after the outage: %v", r)
			}
			return fmt.Errorf("publish after the outage: %v, want acknowledged", r)
		}
		after = append(after, r["offset"].(string))
		return nil
	})
	for i := 5; i <= 6; i++ {
		after = append(after, publish(t, pub, ch, map[string]int{"n": i}))
	}
	after = append(after, apiPublish(t, base, `{"channel":"`+ch+`","data":{"n":7}}`))
	for _, off := range after {
		acked[off] = true
	}

	// The subscriber from before the cut was told nothing false: whatever
	// it received live is acknowledged, and came once. Live delivery
	// may have missed messages across the reconnection; that is what
	// resuming is for.
	seen := map[string]bool{}
	for _, m := range fence(t, sub) {
		if m["op"] != "message" {
			continue
		}
		off, _ := m["offset"].(string)
		if !acked[off] || seen[off] || counter(t, m) >= 100 {
			t.Fatalf("subscriber from before the outage got %v: not acknowledged, or twice", m)
		}
		seen[off] = true
	}

	// A client resuming from the last offset it saw gets every message
	// acknowledged after it, exactly once, in order.
	resumed := dial(t, base)
	r = resumed.MustOK(map[string]any{"op": "subscribe", "channel": ch, "since": last})
	if r["recovered"] != true || r["offset"] != after[len(after)-1] {
		t.Fatalf("resume from %s: %v, want recovered at %s", last, r, after[len(after)-1])
	}
	for i, want := range after {
		m := nextMessage(t, resumed)
		if m["offset"] != want || counter(t, m) != i+4 {
			t.Fatalf("resumed message %d: %v, want n=%d at %s", i+1, m, i+4, want)
		}
	}
	if extra := fence(t, resumed); len(extra) != 0 {
		t.Fatalf("resumed client got more than the acknowledged messages: %v", extra)
	}

	// The node's own subscription to the broker came back too: the
	// subscriber from before the cut gets live messages again, and only
	// acknowledged ones.
	heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
		acked[publish(t, pub, ch, map[string]int{"n": 50})] = true
		live := false
		for _, m := range fence(t, sub) {
			if m["op"] != "message" {
				continue
			}
			if off, _ := m["offset"].(string); !acked[off] || seen[off] {
				t.Fatalf("subscriber from before the outage got %v: not acknowledged, or twice", m)
			}
			seen[m["offset"].(string)] = true
			live = true
		}
		if !live {
			return fmt.Errorf("subscriber from before the outage got no live message (%d seen in all)", len(seen))
		}
		return nil
	})
}

func TestLiveGapFilledAfterOutageOnRedis(t *testing.T) {
	t.Parallel()
	p := newFaultProxy(t, redisAddr())
	prefix := testPrefix() + ":"
	t.Cleanup(func() { dropRedisKeys(prefix) })
	node := func(addr string) broker.Broker {
		b, err := redis.New(redis.Config{
			URL:    "redis://" + addr + "/0?dial_timeout=200ms&read_timeout=500ms&write_timeout=500ms&max_retries=0",
			Prefix: prefix,
		})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	testLiveGapFilled(t, p, node(redisAddr()), node(p.addr))
}

func TestLiveGapFilledAfterOutageOnNATS(t *testing.T) {
	t.Parallel()
	p := newFaultProxy(t, strings.TrimPrefix(natsURL(), "nats://"))
	prefix := testPrefix()
	t.Cleanup(func() { dropNATSPrefix(prefix) })
	node := func(url string) broker.Broker {
		b, err := nats.New(nats.Config{URL: url, Prefix: prefix, DialTimeout: time.Second, ReconnectWait: 50 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	testLiveGapFilled(t, p, node(natsURL()), node("nats://"+p.addr))
}

// testLiveGapFilled cuts one node (sub) off the broker while another
// (pub) keeps publishing. Once the connection is back, sub's subscriber,
// which never disconnected from herald, receives every message published
// meanwhile, in order and once, without waiting for another publish.
func testLiveGapFilled(t *testing.T, p *faultProxy, direct, proxied broker.Broker) {
	_, pubBase := newServer(t, herald.Config{Broker: direct})
	_, subBase := newServer(t, herald.Config{Broker: proxied})
	const ch = "faults:gap"
	sub := dial(t, subBase)
	sub.MustOK(map[string]any{"op": "subscribe", "channel": ch})
	pub := dial(t, pubBase)

	first := publish(t, pub, ch, map[string]int{"n": 1})
	if m := nextMessage(t, sub); m["offset"] != first {
		t.Fatalf("first message across nodes: %v, want offset %s", m, first)
	}

	p.cut()
	heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
		status, body := health(t, subBase)
		if status != http.StatusServiceUnavailable {
			return fmt.Errorf("subscriber node's /healthz during the outage: %d %q, want 503", status, body)
		}
		return nil
	})
	var missed []string
	for n := 2; n <= 6; n++ {
		missed = append(missed, publish(t, pub, ch, map[string]int{"n": n}))
	}
	p.restore()

	for i, want := range missed {
		m := nextMessage(t, sub)
		if m["offset"] != want || counter(t, m) != i+2 {
			t.Fatalf("message %d after the outage: %v, want n=%d at %s", i+2, m, i+2, want)
		}
	}
	if extra := fence(t, sub); len(extra) != 0 {
		t.Fatalf("more than the missed messages: %v", extra)
	}
	last := publish(t, pub, ch, map[string]int{"n": 7})
	if m := nextMessage(t, sub); m["offset"] != last {
		t.Fatalf("live message after the repair: %v, want offset %s", m, last)
	}
}

// health returns the status and body of /healthz.
func health(t *testing.T, base string) (int, string) {
	t.Helper()
	resp, err := http.Get(base + "/healthz")
	if err != nil {
		t.Fatalf("GET /healthz: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// faultProxy forwards TCP connections from addr to a broker until cut,
// which closes every forwarded connection and refuses new ones until
// restore listens on the same address again; or until stall, which
// closes them too but accepts new ones and never answers them.
type faultProxy struct {
	t      *testing.T
	target string
	addr   string

	mu      sync.Mutex
	ln      net.Listener // nil while cut
	stalled bool
	conns   map[net.Conn]bool
	wg      sync.WaitGroup
}

func newFaultProxy(t *testing.T, target string) *faultProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &faultProxy{t: t, target: target, addr: ln.Addr().String(), conns: make(map[net.Conn]bool)}
	p.start(ln)
	t.Cleanup(func() {
		p.cut()
		p.wg.Wait()
	})
	return p
}

func (p *faultProxy) start(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return // closed by cut
			}
			p.forward(c)
		}
	}()
}

// forward connects c to the target and copies both ways until either side
// closes or the proxy is cut.
func (p *faultProxy) forward(c net.Conn) {
	p.mu.Lock()
	if p.stalled {
		// Held, read and never answered, until restore or cut.
		p.conns[c] = true
		p.wg.Add(1)
		p.mu.Unlock()
		go func() {
			defer p.wg.Done()
			_, _ = io.Copy(io.Discard, c)
		}()
		return
	}
	p.mu.Unlock()
	up, err := net.DialTimeout("tcp", p.target, time.Second)
	if err != nil {
		_ = c.Close()
		return
	}
	p.mu.Lock()
	if p.ln == nil || p.stalled { // cut or stalled meanwhile
		p.mu.Unlock()
		_ = c.Close()
		_ = up.Close()
		return
	}
	p.conns[c], p.conns[up] = true, true
	p.mu.Unlock()
	pipe := func(dst, src net.Conn) {
		defer p.wg.Done()
		_, _ = io.Copy(dst, src)
		_ = dst.Close()
		_ = src.Close()
		p.mu.Lock()
		delete(p.conns, dst)
		delete(p.conns, src)
		p.mu.Unlock()
	}
	p.wg.Add(2)
	go pipe(up, c)
	go pipe(c, up)
}

// cut closes the listener and every forwarded connection.
func (p *faultProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		_ = p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		_ = c.Close()
	}
	clear(p.conns)
}

// stall closes every forwarded connection and holds new ones without an
// answer: the broker's clients connect, and every call waits for its
// timeout.
func (p *faultProxy) stall() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stalled = true
	for c := range p.conns {
		_ = c.Close()
	}
	clear(p.conns)
}

// restore listens on the proxy's address again, or forwards again after
// stall.
func (p *faultProxy) restore() {
	p.t.Helper()
	p.mu.Lock()
	if p.stalled {
		p.stalled = false
		for c := range p.conns {
			_ = c.Close()
		}
		clear(p.conns)
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	var ln net.Listener
	heraldtest.WaitFor(p.t, heraldtest.Timeout, func() error {
		var err error
		ln, err = net.Listen("tcp", p.addr)
		if err != nil && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "address already in use") {
			p.t.Fatalf("proxy: listen again on %s: %v", p.addr, err)
		}
		if err != nil {
			return fmt.Errorf("proxy: listen again on %s: %w", p.addr, err)
		}
		return nil
	})
	p.start(ln)
}
