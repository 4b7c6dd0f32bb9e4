package herald_test

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/heraldtest"
)

// upgrade opens a WebSocket to path by hand, for tests that open many or
// misbehave on purpose; it reports errors rather than failing the test.
func upgrade(base, path string) (net.Conn, error) {
	u, err := url.Parse(base)
	if err != nil {
		return nil, err
	}
	c, err := net.DialTimeout("tcp", u.Host, heraldtest.Timeout)
	if err != nil {
		return nil, err
	}
	var key [16]byte
	_, _ = rand.Read(key[:])
	_ = c.SetDeadline(time.Now().Add(heraldtest.Timeout))
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", path, u.Host, base64.StdEncoding.EncodeToString(key[:]))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		_ = c.Close()
		return nil, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		_ = c.Close()
		return nil, fmt.Errorf("handshake status %d", resp.StatusCode)
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

// closeFrame is a masked close frame with code 1000.
var closeFrame = []byte{0x88, 0x82, 1, 2, 3, 4, 0x03 ^ 1, 0xe8 ^ 2}

// After 10,000 connections come and go — half closing properly, half cut
// off — the server holds no more goroutines and no more memory than
// before. Not parallel: the goroutine count must be this test's alone.
func TestNoLeakAfterManyConnections(t *testing.T) {
	_, base := newServer(t, herald.Config{})
	const cycles, workers = 10000, 8
	cycle := func(i int) error {
		path := "/ws"
		if i%2 == 0 {
			path = "/ws/leak" // raw: subscribed to a channel, present in it
		}
		c, err := upgrade(base, path)
		if err != nil {
			return err
		}
		if i%4 < 2 {
			_, err = c.Write(closeFrame)
		}
		return errors.Join(err, c.Close())
	}
	for i := range 100 { // warm pools and maps up
		if err := cycle(i); err != nil {
			t.Fatal(err)
		}
	}
	waitNoConnections(t, base)
	goroutines, heap := settle()

	start := time.Now()
	var next atomic.Int64
	var failed atomic.Value
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := int(next.Add(1)); i <= cycles; i = int(next.Add(1)) {
				if err := cycle(i); err != nil {
					failed.CompareAndSwap(nil, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := failed.Load(); err != nil {
		t.Fatalf("a connection failed: %v", err)
	}
	elapsed := time.Since(start)
	waitNoConnections(t, base)
	var goroutinesAfter int
	var heapAfter uint64
	heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
		goroutinesAfter, heapAfter = settle()
		if goroutinesAfter > goroutines {
			return fmt.Errorf("%d goroutines after the connections closed, want at most %d as before", goroutinesAfter, goroutines)
		}
		return nil
	})
	growth := int64(heapAfter) - int64(heap)
	t.Logf("%d connections in %v; goroutines %d → %d; live heap %d → %d bytes (%+d)",
		cycles, elapsed.Round(time.Millisecond), goroutines, goroutinesAfter, heap, heapAfter, growth)
	if growth > 1<<20 {
		t.Fatalf("live heap grew by %d bytes over %d connections", growth, cycles)
	}
}

// settle collects garbage and returns the goroutine count and live heap.
func settle() (int, uint64) {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return runtime.NumGoroutine(), ms.HeapAlloc
}

func waitNoConnections(t *testing.T, base string) {
	t.Helper()
	heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
		m := scrape(t, base)
		ws, raw, subs := m[`herald_connections{transport="ws"}`], m[`herald_connections{transport="raw"}`], m["herald_subscriptions"]
		if ws != 0 || raw != 0 || subs != 0 {
			return fmt.Errorf("connections ws %v, raw %v, subscriptions %v; want all 0", ws, raw, subs)
		}
		return nil
	})
}

// An idle connection costs no goroutine: its socket waits in the
// transport's poller. Not parallel: the count must be this test's alone.
func TestIdleConnectionsHoldNoGoroutine(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the event loop is Linux's; elsewhere each connection has a reader")
	}
	_, base := newServer(t, herald.Config{})
	before, _ := settle()
	const n = 500
	conns := make([]net.Conn, 0, n)
	for i := range n {
		path := "/ws"
		if i%2 == 0 {
			path = "/ws/idle" // raw: subscribed
		}
		c, err := upgrade(base, path)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
		m := scrape(t, base)
		if got := m[`herald_connections{transport="ws"}`] + m[`herald_connections{transport="raw"}`]; got != n {
			return fmt.Errorf("%v connections open, want %d", got, n)
		}
		return nil
	})
	var after int
	heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
		after, _ = settle()
		if after-before >= n/10 {
			return fmt.Errorf("goroutines: %d before, %d with %d idle connections; want fewer than %d more", before, after, n, n/10)
		}
		return nil
	})
	t.Logf("goroutines: %d before, %d with %d idle connections", before, after, n)
}

// idleHeapBound is the most live heap one idle subscribed WebSocket may
// cost, the test's own end of the socket included (about 300 bytes of
// it). Measured at 1,400–1,425 bytes, down from 1,550 before the session,
// presence, hub entry and client bookkeeping were cut, and from 2,150–2,200
// before that: the bound leaves room for noise, not for the old sizes.
const idleHeapBound = 1536

// An idle connection subscribed to a channel — the server's most common
// state, held by the hundred thousand — costs at most idleHeapBound bytes
// of live heap: its socket, transport connection, session, client,
// subscription and presence entry. Not parallel: the heap must be this
// test's alone.
func TestIdleSubscribedConnectionHeap(t *testing.T) {
	_, base := newServer(t, herald.Config{})
	const warm, n = 100, 2000
	subscribe := clientFrame(true, opText, []byte(`{"id":1,"op":"subscribe","channel":"idle"}`))
	conns := make([]net.Conn, 0, warm+n)
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	open := func(k int) {
		t.Helper()
		for range k {
			c, err := upgrade(base, "/ws")
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, c)
			if _, err := c.Write(subscribe); err != nil {
				t.Fatal(err)
			}
		}
		heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
			if got := metric(t, base, "herald_subscriptions"); got != float64(len(conns)) {
				return fmt.Errorf("%v subscriptions, want %d", got, len(conns))
			}
			return nil
		})
	}
	open(warm) // pools, maps and the channel itself exist before the count
	_, before := settle()
	open(n)
	_, after := settle()
	per := (int64(after) - int64(before)) / n
	t.Logf("live heap %d → %d bytes with %d more idle subscribed connections: %d bytes each", before, after, n, per)
	if per > idleHeapBound {
		t.Fatalf("an idle subscribed connection costs %d bytes of heap, want at most %d", per, idleHeapBound)
	}
}
