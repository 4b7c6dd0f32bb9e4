package herald_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/heraldtest"
)

// A peer that stops reading is disconnected within about WriteTimeout of
// the server giving up on it — whether the queue limit or the write
// timeout notices first — not left open until keepalive (switched off
// here) would find it. Once it is gone it leaves presence and the
// connection count.
func TestStuckPeerIsClosedPromptly(t *testing.T) {
	t.Parallel()
	var disconnected atomic.Int32
	const writeTimeout = time.Second
	srv, base := newServer(t, herald.Config{
		QueueMessages: 16,
		WriteTimeout:  writeTimeout,
		PingInterval:  time.Hour,
		Hooks:         herald.Hooks{Disconnected: func(herald.Client) { disconnected.Add(1) }},
	})
	healthy := dial(t, base)
	healthy.MustOK(map[string]any{"op": "subscribe", "channel": "flood"})
	stuck := dialFrames(t, base, "/ws/flood")
	_ = stuck.c.(*net.TCPConn).SetReadBuffer(4096)
	waitPresent(t, healthy, "flood", 2)
	conns := `herald_connections{transport="raw"}`
	if got := metric(t, base, conns); got != 1 {
		t.Fatalf("%s = %v, want 1", conns, got)
	}

	pad := make([]byte, 16<<10)
	deadline := time.Now().Add(heraldtest.Timeout + 10*writeTimeout)
	for n := 1; disconnected.Load() == 0; n++ {
		if time.Now().After(deadline) {
			t.Fatalf("a peer that reads nothing is still connected after %d messages", n)
		}
		_, _ = rand.Read(pad)
		if _, err := srv.Publish(context.Background(), "flood", map[string]any{"n": n, "pad": hex.EncodeToString(pad)}); err != nil {
			t.Fatal(err)
		}
		if got := counter(t, nextMessage(t, healthy)); got != n {
			t.Fatalf("healthy subscriber got message %d, want %d", got, n)
		}
	}
	if present := waitPresent(t, healthy, "flood", 1); present[0].(map[string]any)["client"] != clientID(healthy) {
		t.Errorf("presence after the drop: %v", present)
	}
	heraldtest.WaitFor(t, heraldtest.Timeout, func() bool { return metric(t, base, conns) == 0 })
}

// A peer whose socket stops taking bytes, with a queue too large to
// overflow first, is closed once a write has waited WriteTimeout, and the
// close is counted as a write timeout.
func TestWriteTimeoutClosesAndCounts(t *testing.T) {
	t.Parallel()
	const writeTimeout = 500 * time.Millisecond
	srv, base := newServer(t, herald.Config{
		QueueMessages: 1 << 20,
		QueueBytes:    1 << 30,
		WriteTimeout:  writeTimeout,
		PingInterval:  time.Hour,
	})
	stuck := dialFrames(t, base, "/ws/stall")
	_ = stuck.c.(*net.TCPConn).SetReadBuffer(4096)
	watcher := dial(t, base)
	waitPresent(t, watcher, "stall", 1)

	pad := strings.Repeat("x", 64<<10)
	deadline := time.Now().Add(heraldtest.Timeout)
	for metric(t, base, `herald_connections{transport="raw"}`) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("a peer that takes no bytes is still connected")
		}
		for range 16 {
			if _, err := srv.Publish(context.Background(), "stall", pad); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(writeTimeout / 5) // let the sweep see the stalled write
	}
	if got := metric(t, base, `herald_refusals_total{reason="write_timeout"}`); got != 1 {
		t.Fatalf("write_timeout counted %v, want 1", got)
	}
	if got := metric(t, base, "herald_slow_consumer_disconnects_total"); got != 0 {
		t.Fatalf("slow consumer disconnects %v, want 0: the write timeout closed it", got)
	}
}

// A subscriber that pauses reading until the server's writes to it no
// longer fit in its socket, and then reads again, gets every message,
// whole and in order: a write the socket only partly takes goes on, from
// where it stopped, once the socket drains.
func TestPausedReaderGetsEverythingInOrder(t *testing.T) {
	t.Parallel()
	srv, base := newServer(t, herald.Config{QueueMessages: 4096, QueueBytes: 64 << 20})
	paused := dialFrames(t, base, "/ws/pause")
	_ = paused.c.(*net.TCPConn).SetReadBuffer(64 << 10)
	watcher := dial(t, base)
	waitPresent(t, watcher, "pause", 1)

	// 300 messages of 32 KiB that do not compress: 9.6 MB, more than the
	// two socket buffers between the server and the paused reader hold.
	const total = 300
	pad := make([]byte, 16<<10)
	for n := 1; n <= total; n++ {
		_, _ = rand.Read(pad)
		if _, err := srv.Publish(context.Background(), "pause", map[string]any{"n": n, "pad": hex.EncodeToString(pad)}); err != nil {
			t.Fatal(err)
		}
	}
	for want := 1; want <= total; want++ {
		_, op, payload := paused.read()
		if op != opText {
			t.Fatalf("frame %d: opcode %d, want text", want, op)
		}
		var m struct {
			N   int    `json:"n"`
			Pad string `json:"pad"`
		}
		if err := json.Unmarshal(payload, &m); err != nil {
			t.Fatalf("frame %d is not whole: %v", want, err)
		}
		if m.N != want || len(m.Pad) != 2*len(pad) {
			t.Fatalf("got message %d with %d bytes of padding, want message %d with %d", m.N, len(m.Pad), want, 2*len(pad))
		}
	}
}
