package sse_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/internal/protocol"
	"github.com/heraldhq/herald/internal/transport/sse"
	"github.com/heraldhq/herald/internal/wire"
	"github.com/heraldhq/herald/internal/wire/wiretest"
)

// timeout bounds every wait of these tests.
const timeout = 5 * time.Second

// server serves one Stream per request over a Transport, with the
// channels of the request's "channel" parameters at the zero offset, and
// hands each stream to the test.
type server struct {
	t       *sse.Transport
	url     string
	streams chan *sse.Stream
	served  chan error // what each Serve returned
}

func newServer(t *testing.T, cfg sse.Config) *server {
	t.Helper()
	// herald's Server passes every duration; the tests pass the ones they
	// are about.
	if cfg.Retry == 0 {
		cfg.Retry = 2 * time.Second
	}
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = 10 * time.Second
	}
	tr, err := sse.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := &server{t: tr, streams: make(chan *sse.Stream, 16), served: make(chan error, 16)}
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st, err := s.t.NewStream(w)
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		defer st.Release()
		for _, ch := range r.URL.Query()["channel"] {
			st.SetPosition(ch, broker.Offset{})
		}
		s.streams <- st
		s.served <- st.Serve(r.Context())
	}))
	t.Cleanup(func() {
		s.t.Shutdown()
		hs.Close()
	})
	s.url = hs.URL
	return s
}

// waitReleased fails the test unless every stream is released within
// timeout.
func (s *server) waitReleased(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := s.t.Wait(ctx); err != nil {
		t.Fatal(err)
	}
}

// client is a stream's reader.
type client struct {
	resp *http.Response
	r    *bufio.Reader
}

// open opens a stream and returns its reader and the server's Stream.
func (s *server) open(t *testing.T, query string) (*client, *sse.Stream) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url+"/?"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("stream: %s", resp.Status)
	}
	select {
	case st := <-s.streams:
		return &client{resp: resp, r: bufio.NewReader(resp.Body)}, st
	case <-time.After(timeout):
		t.Fatal("no stream was served")
		return nil, nil
	}
}

// block reads one block of lines up to its blank line, without it.
func (c *client) block(t *testing.T) []string {
	t.Helper()
	var lines []string
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			t.Fatalf("after %q: %v", lines, err)
		}
		line = strings.TrimSuffix(line, "\n")
		if line == "" {
			return lines
		}
		lines = append(lines, line)
	}
}

// ended fails the test unless the stream ends (EOF) within timeout.
func (c *client) ended(t *testing.T) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, c.r)
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("stream ended with %v, want its end", err)
		}
	case <-time.After(timeout):
		c.resp.Body.Close()
		<-done
		t.Fatal("the stream did not end")
	}
}

// send sends ps on st and returns what done reported.
func send(t *testing.T, st *sse.Stream, ps ...*wire.Payload) error {
	t.Helper()
	done := make(chan error, 1)
	st.Send(wiretest.Batch(ps, func(err error) { done <- err }))
	select {
	case err := <-done:
		return err
	case <-time.After(timeout):
		t.Fatal("a batch was neither written nor failed")
		return nil
	}
}

// event returns an SSE payload of channel at offset seq.
func event(channel string, seq uint64, data string) *wire.Payload {
	return &wire.Payload{Bytes: []byte("data: " + data + "\n\n"), Channel: channel, Offset: broker.Offset{Seq: seq, Epoch: "e"}}
}

// The response head, then at once the opening block: the retry delay,
// and the stream's starting cursor as its id, with no data (EventSource
// takes the id and dispatches no event). Moved from the root package's
// TestSSEHeadersAndRetry, which keeps the metrics.
func TestNewRefusesAMissingDuration(t *testing.T) {
	for _, cfg := range []sse.Config{
		{Retry: time.Second, WriteTimeout: time.Second},
		{Heartbeat: time.Second, WriteTimeout: time.Second},
		{Heartbeat: time.Second, Retry: time.Second},
	} {
		if _, err := sse.New(cfg); err == nil {
			t.Errorf("New(%+v) gave no error", cfg)
		}
	}
}

func TestHeadersAndOpening(t *testing.T) {
	srv := newServer(t, sse.Config{Retry: 1500 * time.Millisecond, Heartbeat: time.Hour})
	c, _ := srv.open(t, "channel=news&channel=chat:a")
	for k, want := range map[string]string{
		"Content-Type":      "text/event-stream; charset=utf-8",
		"Cache-Control":     "no-cache",
		"X-Accel-Buffering": "no",
	} {
		if got := c.resp.Header.Get(k); got != want {
			t.Errorf("%s: %q, want %q", k, got, want)
		}
	}
	b := c.block(t)
	if len(b) != 2 || b[0] != "retry: 1500" || !strings.HasPrefix(b[1], "id: ") {
		t.Fatalf("opening block %q, want retry: 1500 and an id", b)
	}
	cur, err := protocol.ParseSSECursor(strings.TrimPrefix(b[1], "id: "))
	if err != nil || len(cur) != 2 || cur[0].Channel != "news" || cur[1].Channel != "chat:a" || !cur[0].Offset.IsZero() || !cur[1].Offset.IsZero() {
		t.Fatalf("opening id %q: %v %v, want news and chat:a at the zero offset", b[1], cur, err)
	}
}

// Every message of a channel comes after an id: line holding the cursor
// of all the stream's channels, each one's latest offset; a payload of no
// channel (an unrecovered notice) gets no id.
func TestEventsCarryTheCursor(t *testing.T) {
	srv := newServer(t, sse.Config{Heartbeat: time.Hour})
	c, st := srv.open(t, "channel=news&channel=chat:a")
	c.block(t) // opening
	steps := []struct {
		p    *wire.Payload
		want map[string]uint64 // the id's offsets; nil: no id
	}{
		{event("news", 1, "a"), map[string]uint64{"news": 1, "chat:a": 0}},
		{event("chat:a", 7, "b"), map[string]uint64{"news": 1, "chat:a": 7}},
		{wire.NewPayload([]byte("event: herald.unrecovered\ndata: news\n\n")), nil},
		{event("news", 2, "c"), map[string]uint64{"news": 2, "chat:a": 7}},
	}
	for i, s := range steps {
		if err := send(t, st, s.p); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		b := c.block(t)
		body := strings.TrimSuffix(string(s.p.Bytes), "\n\n")
		if s.want == nil {
			if strings.Join(b, "\n") != body {
				t.Fatalf("step %d: got %q, want %q alone", i, b, body)
			}
			continue
		}
		if len(b) != 2 || b[1] != body || !strings.HasPrefix(b[0], "id: ") {
			t.Fatalf("step %d: got %q, want an id then %q", i, b, body)
		}
		cur, err := protocol.ParseSSECursor(strings.TrimPrefix(b[0], "id: "))
		if err != nil {
			t.Fatalf("step %d: id %q: %v", i, b[0], err)
		}
		got := map[string]uint64{}
		for _, p := range cur {
			got[p.Channel] = p.Offset.Seq
		}
		if len(cur) != 2 || cur[0].Channel != "news" || fmt.Sprint(got) != fmt.Sprint(s.want) {
			t.Fatalf("step %d: id %q holds %v, want %v in the stream's order", i, b[0], got, s.want)
		}
	}
}

// An idle stream gets a heartbeat comment every Heartbeat. Moved from the
// root package's TestSSEHeartbeat.
func TestHeartbeat(t *testing.T) {
	srv := newServer(t, sse.Config{Heartbeat: 50 * time.Millisecond})
	c, st := srv.open(t, "channel=quiet")
	c.block(t) // opening
	start := time.Now()
	for range 3 {
		if b := c.block(t); len(b) != 1 || b[0] != ": ping" {
			t.Fatalf("got %q on an idle stream, want a comment", b)
		}
	}
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Fatalf("3 heartbeats in %v, want about 50ms apart", d)
	}
	// A message is written at once, between heartbeats.
	if err := send(t, st, event("quiet", 1, "x")); err != nil {
		t.Fatal(err)
	}
	for {
		b := c.block(t)
		if len(b) == 1 && b[0] == ": ping" {
			continue // one may have been under way
		}
		if len(b) != 2 || b[1] != "data: x" {
			t.Fatalf("got %q, want the message", b)
		}
		break
	}
}

// A batch whose encoding is larger than a chunk is written a chunk at a
// time, not joined whole: every message carries the cursor of all the
// stream's channels, so a batch can encode to many times its size.
func TestLargeBatchIsWrittenInChunks(t *testing.T) {
	var mu sync.Mutex
	var writes []int
	srv := newServer(t, sse.Config{Heartbeat: time.Hour, Wrote: func(n int) {
		mu.Lock()
		writes = append(writes, n)
		mu.Unlock()
	}})
	var q strings.Builder
	for i := range 32 {
		fmt.Fprintf(&q, "channel=%s%02d&", strings.Repeat("c", 60), i)
	}
	c, st := srv.open(t, q.String())
	c.block(t) // opening
	mu.Lock()
	writes = nil
	mu.Unlock()

	const n = 200 // each message ~2.6 KB with its id: ~520 KB in all
	ps := make([]*wire.Payload, n)
	for i := range ps {
		ps[i] = event(fmt.Sprintf("%s%02d", strings.Repeat("c", 60), i%32), uint64(i+1), fmt.Sprint(i))
	}
	errc := make(chan error, 1)
	st.Send(wiretest.Batch(ps, func(err error) { errc <- err }))
	total := 0
	for i := range n {
		b := c.block(t)
		if len(b) != 2 || b[1] != fmt.Sprintf("data: %d", i) {
			t.Fatalf("message %d: %.100q", i, b)
		}
		total += len(b[0]) + len(b[1]) + 3
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	sum, largest := 0, 0
	for _, w := range writes {
		sum += w
		largest = max(largest, w)
	}
	if sum != total {
		t.Fatalf("Wrote was told %d bytes, the client read %d", sum, total)
	}
	if len(writes) < total/(64<<10) || largest > 64<<10+4<<10 {
		t.Fatalf("%d bytes in %d writes, the largest %d: want chunks of about 64 KiB", total, len(writes), largest)
	}
}

// Shutdown ends every open stream and refuses new ones; Wait returns once
// they are released. CloseAll ends the open streams but takes new ones.
func TestShutdownAndCloseAll(t *testing.T) {
	srv := newServer(t, sse.Config{Heartbeat: time.Hour})
	var cs []*client
	for range 3 {
		c, _ := srv.open(t, "channel=a&channel=b")
		c.block(t)
		cs = append(cs, c)
	}
	if n := srv.t.Len(); n != 3 {
		t.Fatalf("Len %d, want 3", n)
	}
	srv.t.CloseAll()
	for _, c := range cs {
		c.ended(t)
	}
	c, _ := srv.open(t, "channel=a")
	c.block(t)

	srv.t.Shutdown()
	c.ended(t)
	srv.waitReleased(t)
	if _, err := srv.t.NewStream(httptest.NewRecorder()); !errors.Is(err, sse.ErrClosing) {
		t.Fatalf("NewStream after Shutdown: %v, want ErrClosing", err)
	}
	resp, err := http.Get(srv.url + "/?channel=a")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("a stream opened after Shutdown: %s", resp.Status)
	}
}

// A client that goes away ends its stream; a batch sent after the stream
// ended, or still pending when it is released, fails instead of waiting.
func TestClientGoneAndSendAfterRelease(t *testing.T) {
	srv := newServer(t, sse.Config{Heartbeat: time.Hour})
	c, st := srv.open(t, "channel=a")
	c.block(t)
	c.resp.Body.Close()
	select {
	case err := <-srv.served:
		if err != nil {
			t.Fatalf("Serve of a stream whose client went away: %v", err)
		}
	case <-time.After(timeout):
		t.Fatal("Serve did not return when the client went away")
	}
	srv.waitReleased(t)
	if err := send(t, st, event("a", 1, "late")); err == nil {
		t.Fatal("a batch sent to a released stream succeeded")
	}
}

// A reader that stops reading ends its stream: a batch that cannot be
// written within WriteTimeout fails, Serve returns the error, and the
// stream is released.
func TestSlowReaderIsClosed(t *testing.T) {
	const writeTimeout = 200 * time.Millisecond
	srv := newServer(t, sse.Config{Heartbeat: time.Hour, WriteTimeout: writeTimeout})
	conn, err := net.Dial("tcp", strings.TrimPrefix(srv.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.(*net.TCPConn).SetReadBuffer(4096)
	// Ask for a stream, then never read it.
	if _, err := fmt.Fprintf(conn, "GET /?channel=slow HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	var st *sse.Stream
	select {
	case st = <-srv.streams:
	case <-time.After(timeout):
		t.Fatal("no stream was served")
	}
	big := &wire.Payload{Bytes: []byte("data: " + strings.Repeat("x", 256<<10) + "\n\n"), Channel: "slow"}
	deadline := time.Now().Add(timeout)
	start := time.Now()
	for send(t, st, big) == nil {
		if time.Now().After(deadline) {
			t.Fatal("a stream nobody reads still takes batches")
		}
		start = time.Now()
	}
	if d := time.Since(start); d < writeTimeout/2 || d > timeout {
		t.Errorf("the stuck batch failed after %v, want about WriteTimeout (%v)", d, writeTimeout)
	}
	select {
	case err := <-srv.served:
		if err == nil {
			t.Fatal("Serve of a stuck stream returned no error")
		}
	case <-time.After(timeout):
		t.Fatal("Serve of a stuck stream did not return")
	}
	srv.waitReleased(t)
}
