package herald_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/heraldtest"
)

// While attackers flood the server — garbage instead of HTTP, half-open
// handshakes, subscribers that never read, subscribers cut off mid-stream
// — a normal client receives a clean sequence: every message, once, in
// order. Afterwards the server is back to the normal client's connections
// alone. (Garbage frames after a good handshake are the transport's to
// close: internal/transport/ws's TestGarbageFramesLeaveOthersClean.)
func TestFloodOfBadClientsLeavesOthersClean(t *testing.T) {
	t.Parallel()
	_, base := newServer(t, herald.Config{
		PingInterval:  300 * time.Millisecond,
		PongTimeout:   300 * time.Millisecond,
		WriteTimeout:  time.Second,
		QueueMessages: 64,
		PublishRate:   -1,
	})
	host := mustHost(t, base)
	clean := dial(t, base)
	clean.MustOK(map[string]any{"op": "subscribe", "channel": "clean"})
	pub := dial(t, base)

	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var attacks atomic.Int64
	attack := func(name string, f func() error) {
		wg.Go(func() {
			for ctx.Err() == nil {
				if err := f(); err != nil && ctx.Err() == nil {
					t.Errorf("%s: %v", name, err)
					return
				}
				attacks.Add(1)
			}
		})
	}
	junk := func(n int) []byte {
		b := make([]byte, n)
		_, _ = rand.Read(b)
		return b
	}
	// Garbage instead of an HTTP request.
	attack("junk", func() error {
		c, err := net.Dial("tcp", host)
		if err != nil {
			return err
		}
		_, _ = c.Write(append(junk(512), "\r\n\r\n"...))
		_ = c.SetReadDeadline(time.Now().Add(heraldtest.Timeout))
		var ne net.Error
		if _, err := io.Copy(io.Discard, c); errors.As(err, &ne) && ne.Timeout() {
			return fmt.Errorf("the server did not answer garbage: %w", err)
		}
		return c.Close()
	})
	// Handshakes that stop half-way, held open until the end.
	var halfOpen []net.Conn
	for range 20 {
		c, err := net.Dial("tcp", host)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n", host)
		halfOpen = append(halfOpen, c)
	}
	// Raw subscribers that never read: slow consumers or dead peers.
	attack("silent subscriber", func() error {
		c, err := upgrade(base, "/ws/clean")
		if err != nil {
			return err
		}
		_ = c.SetReadDeadline(time.Now().Add(heraldtest.Timeout))
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
		return c.Close()
	})
	// Subscribers cut off without a close frame after a few messages.
	attack("abrupt", func() error {
		c, err := upgrade(base, "/ws/clean")
		if err != nil {
			return err
		}
		_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		_, _ = c.Read(make([]byte, 256))
		return c.Close()
	})

	const n = 300
	for i := 1; i <= n; i++ {
		pub.Send(map[string]any{"op": "publish", "channel": "clean", "data": map[string]int{"n": i}})
		if i%10 == 0 {
			time.Sleep(50 * time.Millisecond) // spread the publishes over the attack
		}
	}
	for i := 1; i <= n; i++ {
		m := nextMessage(t, clean)
		if got := counter(t, m); got != i {
			t.Fatalf("the clean client got message %d, want %d", got, i)
		}
	}
	stop()
	wg.Wait()
	for _, c := range halfOpen {
		_ = c.Close()
	}
	if extra := fence(t, clean); len(extra) != 0 {
		t.Fatalf("the clean client got more: %v", extra)
	}
	for range n {
		if r := pub.Next(); r["ok"] != true {
			t.Fatalf("publish reply %v", r)
		}
	}
	t.Logf("%d attacking connections meanwhile", attacks.Load())
	heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
		m := scrape(t, base)
		ws, raw := m[`herald_connections{transport="ws"}`], m[`herald_connections{transport="raw"}`]
		if ws != 2 || raw != 0 {
			return fmt.Errorf("connections after the flood: ws %v, raw %v; want ws 2, raw 0", ws, raw)
		}
		return nil
	})
}

func mustHost(t *testing.T, base string) string {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}
