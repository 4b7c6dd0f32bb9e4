package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldhq/herald/heraldtest"
)

// runMainEnv makes the test binary run herald's main instead of the tests,
// so that a test can start herald as a process of its own.
const runMainEnv = "HERALD_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// syncBuffer is a bytes.Buffer safe to write from a process's pipe while
// the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startHerald runs `herald serve` with args as a process on a free port and
// waits until it is healthy.
func startHerald(t *testing.T, args ...string) (*exec.Cmd, string, *syncBuffer) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(os.Args[0], append([]string{"serve", "--addr", addr}, args...)...)
	cmd.Env = append(os.Environ(), runMainEnv+"=1")
	logs := &syncBuffer{}
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	waitHealthy(t, addr)
	return cmd, addr, logs
}

// A client that connects and sends no complete request is cut off after
// --handshake-timeout: a half-open connection cannot hold a slot.
func TestHandshakeTimeout(t *testing.T) {
	t.Parallel()
	_, addr, _ := startHerald(t, "--handshake-timeout", "300ms")
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	if _, err := c.Write([]byte("GET /ws HTTP/1.1\r\nHost: x\r\n")); err != nil {
		t.Fatal(err)
	}
	closedAfter300ms(t, "a stalled handshake", c, c, start)
	heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		const want = `herald_refusals_total{reason="handshake_timeout"} 1`
		if !strings.Contains(string(b), want+"\n") {
			got := "none"
			for _, l := range strings.Split(string(b), "\n") {
				if strings.HasPrefix(l, `herald_refusals_total{reason="handshake_timeout"} `) {
					got = l
				}
			}
			return fmt.Errorf("/metrics has %q, want %q", got, want)
		}
		return nil
	})
}

// SIGTERM: every WebSocket gets 1001, every SSE stream ends, and the
// process exits 0 within --shutdown-timeout.
func TestGracefulShutdownOnSIGTERM(t *testing.T) {
	t.Parallel()
	cmd, addr, logs := startHerald(t, "--shutdown-timeout", "5s")
	ws := heraldtest.Dial(t, "ws://"+addr+"/ws")
	ws.MustOK(map[string]any{"op": "subscribe", "channel": "a"})
	resp, err := http.Get("http://" + addr + "/sse?channel=a")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("SSE: %v %v", resp, err)
	}
	sseEnded := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		sseEnded <- err
	}()

	start := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := ws.Closed(); code != websocket.StatusGoingAway {
		t.Fatalf("WebSocket closed with %v, want 1001", code)
	}
	select {
	case err := <-sseEnded:
		if err != nil {
			t.Fatalf("SSE stream ended with %v, want a clean end", err)
		}
	case <-time.After(heraldtest.Timeout):
		t.Fatal("SSE stream still open after SIGTERM")
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("herald exited with %v; log:\n%s", err, logs)
		}
	case <-time.After(5*time.Second + 2*time.Second):
		t.Fatalf("herald still running %v after SIGTERM; log:\n%s", time.Since(start), logs)
	}
}

// herald serve closes a keep-alive connection idle for --idle-timeout.
func TestIdleTimeout(t *testing.T) {
	t.Parallel()
	_, addr, _ := startHerald(t, "--idle-timeout", "300ms")
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	closedAfter300ms(t, "an idle keep-alive connection", c, br, time.Now())
}

// closedAfter300ms reads c (through r) until the server closes it, and
// fails unless that happens about 300ms after start.
func closedAfter300ms(t *testing.T, what string, c net.Conn, r io.Reader, start time.Time) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(heraldtest.Timeout))
	_, err := io.Copy(io.Discard, r)
	waited := time.Since(start)
	if err != nil {
		t.Fatalf("the server did not close %s: %v after %v", what, err, waited)
	}
	if waited < 250*time.Millisecond || waited > 3*time.Second {
		t.Fatalf("%s closed after %v, want about 300ms", what, waited)
	}
}
