package faults_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/nats"
	"github.com/heraldhq/herald/broker/redis"
	"github.com/heraldhq/herald/heraldtest"
	"github.com/heraldhq/herald/internal/serverproc"
)

// brokerServer is a Redis or NATS server process of the test's own, on a
// fixed port and a data directory that outlive its restarts.
type brokerServer struct {
	*serverproc.Server
	t    *testing.T
	kind string // "redis" or "nats"
}

func newBrokerServer(t *testing.T, kind string) *brokerServer {
	s := &brokerServer{t: t, kind: kind}
	switch kind {
	case "redis":
		s.Server = serverproc.Redis(t)
	case "nats":
		s.Server = serverproc.NATS(t)
	}
	return s
}

// copyData copies the server's data directory to dst (the server stopped).
func (s *brokerServer) copyData(dst string) {
	s.t.Helper()
	if err := os.CopyFS(dst, os.DirFS(s.Dir())); err != nil {
		s.t.Fatal(err)
	}
}

// setData replaces the server's data directory with src (the server
// stopped); src "" empties it.
func (s *brokerServer) setData(src string) {
	s.t.Helper()
	if err := os.RemoveAll(s.Dir()); err != nil {
		s.t.Fatal(err)
	}
	if err := os.MkdirAll(s.Dir(), 0o700); err != nil {
		s.t.Fatal(err)
	}
	if src != "" {
		if err := os.CopyFS(s.Dir(), os.DirFS(src)); err != nil {
			s.t.Fatal(err)
		}
	}
}

// newBroker returns a herald broker on the server, with short timeouts so
// that an outage is noticed quickly.
func (s *brokerServer) newBroker(t *testing.T) broker.Broker {
	var b broker.Broker
	var err error
	switch s.kind {
	case "redis":
		b, err = redis.New(redis.Config{
			URL:    "redis://" + s.Addr() + "/0?dial_timeout=200ms&read_timeout=500ms&write_timeout=500ms&max_retries=0",
			Prefix: "faults:", Logger: testLogger(t),
		})
	case "nats":
		b, err = nats.New(nats.Config{
			URL: "nats://" + s.Addr(), Prefix: "faults",
			DialTimeout: time.Second, ReconnectWait: 50 * time.Millisecond,
			Logger: testLogger(t),
		})
	}
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// testLogger returns a logger whose records go to t's log, shown when the
// test fails (or with -v): the broker's disconnections, reconnections and
// retries, for a failure that happens once in many runs. What is logged
// once the test has ended is dropped.
func testLogger(t *testing.T) *slog.Logger {
	w := &testLogWriter{t: t}
	t.Cleanup(w.end)
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// testLogWriter writes each record to its test's log until end.
type testLogWriter struct {
	mu    sync.Mutex
	t     *testing.T
	ended bool
}

func (w *testLogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.ended {
		w.t.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}

func (w *testLogWriter) end() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.ended = true
}

// A fault is done to the broker server while traffic flows.
type fault struct {
	name string
	do   func(s *brokerServer)
}

var faultsToInject = []fault{
	{"killed", func(s *brokerServer) { s.Kill(); s.Start() }},
	{"restarted", func(s *brokerServer) { s.Stop(syscall.SIGTERM); s.Start() }},
	{"restarted empty", func(s *brokerServer) { s.Kill(); s.setData(""); s.Start() }},
	{"restored to an older state", nil}, // needs a copy taken earlier: see runFault
}

func TestFaultRedis(t *testing.T) { testFaults(t, "redis") }
func TestFaultNATS(t *testing.T)  { testFaults(t, "nats") }

func testFaults(t *testing.T, kind string) {
	for _, f := range faultsToInject {
		t.Run(f.name, func(t *testing.T) { runFault(t, kind, f) })
	}
}

// received is what one subscriber got, one segment per connection: each
// starts with the subscribe reply's recovered flag.
type received struct {
	mu       sync.Mutex
	segments []segment
	last     string // offset of the newest message
	sawEnd   bool
	// acked is the number of the newest message acknowledged so far,
	// shared with the publisher.
	acked *atomic.Int64
}

type segment struct {
	recovered bool
	// ackedBefore is the newest message acknowledged when the subscribe
	// reply arrived: a recovered:false covers it and all before (the
	// subscribe may wait for the broker to come back, and what the broker
	// lost meanwhile is what recovered:false tells of).
	ackedBefore int
	ns          []int
	offsets     []string
}

// runFault runs two herald nodes on one broker server, a publisher on the
// first and three subscribers (one connected to the second throughout,
// two hopping between the nodes and resuming), does the fault, and checks
// what every subscriber got against what was acknowledged.
func runFault(t *testing.T, kind string, f fault) {
	s := newBrokerServer(t, kind)
	older := t.TempDir()
	if f.do == nil { // restored to an older state
		f.do = func(s *brokerServer) { s.Kill(); s.setData(older); s.Start() }
	}
	var nodes []*herald.Server
	var bases []string
	for range 2 {
		srv, hs := heraldtest.NewServer(t, herald.Config{Broker: s.newBroker(t), PublishRate: -1, HistorySize: 1000})
		nodes = append(nodes, srv)
		bases = append(bases, hs.URL)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// Subscribers.
	subs := make([]*received, 3)
	var wg sync.WaitGroup
	var newestAcked atomic.Int64
	for i := range subs {
		subs[i] = &received{acked: &newestAcked}
		wg.Add(1)
		go func() {
			defer wg.Done()
			subscriber(ctx, bases, i, subs[i])
		}()
	}

	// The publisher: acked[n] is the offset message n was acknowledged at.
	var amu sync.Mutex
	acked := map[int]string{}
	n := 0
	publish := func(data any) (string, error) {
		pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
		defer pcancel()
		off, err := nodes[0].Publish(pctx, "f", data)
		return off, err
	}
	pubDone := make(chan struct{})
	stopPub := make(chan struct{})
	go func() {
		defer close(pubDone)
		for {
			select {
			case <-stopPub:
				return
			default:
			}
			n++
			if off, err := publish(map[string]any{"n": n}); err == nil {
				amu.Lock()
				acked[n] = off
				amu.Unlock()
				newestAcked.Store(int64(n))
			}
		}
	}()
	ackedCount := func() int { amu.Lock(); defer amu.Unlock(); return len(acked) }
	ackedAtLeast := func(n int) func() error {
		return func() error {
			if got := ackedCount(); got < n {
				return fmt.Errorf("%d publishes acknowledged, want at least %d", got, n)
			}
			return nil
		}
	}

	heraldtest.WaitFor(t, heraldtest.Timeout, ackedAtLeast(300))
	if f.name == "restored to an older state" {
		s.Stop(syscall.SIGTERM)
		s.copyData(older)
		s.Start()
		mark := ackedCount()
		heraldtest.WaitFor(t, heraldtest.Timeout, ackedAtLeast(mark+300))
	}
	f.do(s)
	mark := ackedCount()
	heraldtest.WaitFor(t, 3*heraldtest.Timeout, ackedAtLeast(mark+300))
	close(stopPub)
	<-pubDone

	// An end marker, then wait for every subscriber to have it.
	heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
		if _, err := publish(map[string]any{"n": -1}); err != nil {
			return fmt.Errorf("publish of the end marker: %w", err)
		}
		return nil
	})
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for i, r := range subs {
			r.mu.Lock()
			t.Logf("subscriber %d: end %v, %s", i, r.sawEnd, r.summaryLocked())
			r.mu.Unlock()
		}
	})
	heraldtest.WaitFor(t, 3*heraldtest.Timeout, func() error {
		for i, r := range subs {
			r.mu.Lock()
			end := r.sawEnd
			r.mu.Unlock()
			if !end {
				return fmt.Errorf("subscriber %d has not received the end marker", i)
			}
		}
		return nil
	})
	cancel()
	wg.Wait()

	amu.Lock()
	defer amu.Unlock()
	for i, r := range subs {
		if err := check(r, acked); err != nil {
			t.Errorf("subscriber %d: %v", i, err)
		}
	}
	resumes, unrecovered := 0, 0
	for _, r := range subs {
		for _, sg := range r.segments[1:] {
			resumes++
			if !sg.recovered {
				unrecovered++
			}
		}
	}
	t.Logf("%d messages acknowledged; %d resumes, %d of them told recovered:false", len(acked), resumes, unrecovered)
}

// summaryLocked describes r's segments: recovered flag, first and last
// message number and offset, for a failure message.
func (r *received) summaryLocked() string {
	var segs []string
	for _, sg := range r.segments {
		if len(sg.ns) == 0 {
			segs = append(segs, fmt.Sprintf("recovered %v: none", sg.recovered))
			continue
		}
		last := len(sg.ns) - 1
		segs = append(segs, fmt.Sprintf("recovered %v: %d (%s) .. %d (%s)", sg.recovered, sg.ns[0], sg.offsets[0], sg.ns[last], sg.offsets[last]))
	}
	return fmt.Sprintf("segments %v, last %q", segs, r.last)
}

// check verifies the invariant for one subscriber: within a segment,
// message numbers rise (no duplicate, no reordering); and every
// acknowledged message is received, unless it was acknowledged before a
// subscribe that said recovered:false (the subscriber was told it may
// have missed something: the broker may have lost it after its ack).
func check(r *received, acked map[int]string) error {
	got := map[int]bool{}
	told := 0 // acknowledged messages up to this number may be missing
	high := 0
	// Messages up to replay may come again: after a recovered:false the
	// subscriber gets what history holds, which may start before what it
	// had, and its next resumes go on from there.
	replay := 0
	for _, sg := range r.segments {
		if !sg.recovered {
			told = max(told, high, sg.ackedBefore)
			replay = max(replay, high)
		}
		prev := 0
		for _, n := range sg.ns {
			if n <= prev {
				return fmt.Errorf("message %d after %d in one connection (offsets %v)", n, prev, sg.offsets[max(0, slices.Index(sg.ns, n)-2):min(len(sg.ns), slices.Index(sg.ns, n)+4)])
			}
			prev = n
			if n <= replay && got[n] {
				continue // a history told to be new may repeat what was seen
			}
			if got[n] {
				return fmt.Errorf("message %d received twice", n)
			}
			got[n] = true
			high = max(high, n)
		}
	}
	for n := range acked {
		if !got[n] && n > told {
			return fmt.Errorf("acknowledged message %d (%s) never received, and no recovered:false covers it; %s", n, acked[n], r.summaryLocked())
		}
	}
	return nil
}

// subscriber reads channel "f" until ctx ends. Subscriber 0 stays on the
// second node (reconnecting only when its connection breaks); the others
// hop between the nodes every 150 messages, resuming from the last offset.
func subscriber(ctx context.Context, bases []string, id int, r *received) {
	for hop := 0; ctx.Err() == nil; hop++ {
		base := bases[1]
		if id > 0 {
			base = bases[(hop+id)%2]
		}
		limit := 150
		if id == 0 {
			limit = -1
		}
		_ = readSegment(ctx, base, r, limit)
	}
}

// readSegment subscribes once (resuming after r.last) and records what
// arrives until limit messages came, the connection fails, or ctx ends.
func readSegment(ctx context.Context, base string, r *received, limit int) error {
	dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	conn, _, err := websocket.Dial(dctx, heraldtest.WSURL(base, "/ws"), nil)
	cancel()
	if err != nil {
		select { // the node or broker is still coming back
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
		return err
	}
	defer conn.CloseNow()
	conn.SetReadLimit(1 << 20)
	r.mu.Lock()
	since := r.last
	r.mu.Unlock()
	cmd, _ := json.Marshal(map[string]any{"id": 1, "op": "subscribe", "channel": "f", "since": since})
	if err := conn.Write(ctx, websocket.MessageText, cmd); err != nil {
		return err
	}
	started := false
	for count := 0; limit < 0 || count < limit; {
		_, b, err := conn.Read(ctx)
		if err != nil {
			return err
		}
		var m struct {
			ID        int    `json:"id"`
			OK        bool   `json:"ok"`
			Recovered bool   `json:"recovered"`
			Op        string `json:"op"`
			Offset    string `json:"offset"`
			Data      struct {
				N int `json:"n"`
			} `json:"data"`
		}
		if json.Unmarshal(b, &m) != nil {
			continue
		}
		r.mu.Lock()
		switch {
		case m.ID == 1 && !m.OK:
			r.mu.Unlock()
			return fmt.Errorf("subscribe refused: %s", b)
		case m.ID == 1:
			r.segments = append(r.segments, segment{recovered: m.Recovered || since == "", ackedBefore: int(r.acked.Load())})
			started = true
		case m.Op == "message" && started:
			if m.Data.N == -1 {
				r.sawEnd = true
			} else {
				sg := &r.segments[len(r.segments)-1]
				sg.ns = append(sg.ns, m.Data.N)
				sg.offsets = append(sg.offsets, m.Offset)
			}
			r.last = m.Offset
			count++
		}
		r.mu.Unlock()
	}
	return nil
}

var _ = filepath.Join
