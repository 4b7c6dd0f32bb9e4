package herald_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
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
	heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
		if got := metric(t, base, conns); got != 0 {
			return fmt.Errorf("%s = %v after the drop, want 0", conns, got)
		}
		return nil
	})
}

// A peer whose socket stops taking bytes, with a queue too large to
// overflow first, is closed by the write timeout (the transport's own
// behaviour is pinned in internal/transport/ws), and herald counts the
// close as a write timeout, not as a slow consumer.
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
