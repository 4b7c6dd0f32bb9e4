package loadtest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/heraldhq/herald/heraldtest"
)

// serverFrame returns one unmasked frame as a server sends it.
func serverFrame(op byte, payload []byte) []byte {
	b := []byte{0x80 | op}
	switch n := len(payload); {
	case n < 126:
		b = append(b, byte(n))
	default:
		b = append(b, 126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	}
	return append(b, payload...)
}

// acceptWS answers a WebSocket handshake by hand and returns the
// connection, which then carries frames as the test writes them; nil
// when it cannot be taken over.
func acceptWS(w http.ResponseWriter, r *http.Request) net.Conn {
	nc, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return nil
	}
	_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " +
		acceptKey(r.Header.Get("Sec-WebSocket-Key")) + "\r\n\r\n")
	if err := brw.Flush(); err != nil {
		_ = nc.Close()
		return nil
	}
	return nc
}

// polledSubscriber dials the test server at base and hands the
// connection to a new run's epoll sets, which start reading.
func polledSubscriber(t *testing.T, base string, spin bool) (*fanoutRun, *subscriber, *wsConn) {
	t.Helper()
	r, s, c := watchedSubscriber(t, base, spin, false)
	r.pollers.start()
	return r, s, c
}

// watchedSubscriber dials the test server at base and hands the
// connection to a new run's epoll sets, timing by the kernel's receive
// time with stamps; the sets are not started.
func watchedSubscriber(t *testing.T, base string, spin, stamps bool) (*fanoutRun, *subscriber, *wsConn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), heraldtest.Timeout)
	defer cancel()
	u, err := url.Parse(heraldtest.WSURL(base, "/"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := dialWS(ctx, u, "", 4096)
	if err != nil {
		t.Fatal(err)
	}
	r := &fanoutRun{lat: new(shardedHistogram), pollers: newPollers(spin, stamps)}
	if r.pollers == nil {
		t.Fatal("no epoll sets")
	}
	t.Cleanup(r.pollers.stop)
	s := r.newSubscriber(c.close)
	r.readWS(s, c, true)
	if got := r.pollers.watched(); got != 1 {
		t.Fatalf("the sets took %d subscribers, want 1", got)
	}
	return r, s, c
}

// A subscriber read from an epoll set handles frames that arrive a byte
// at a time, answers a ping, and ends on the server's close frame with
// its code counted.
func TestPolledSubscriberReadsSplitFrames(t *testing.T) {
	forEachSet(t, testPolledSubscriberReadsSplitFrames)
}

// forEachSet runs test with sets that spin and with sets that sleep.
func forEachSet(t *testing.T, test func(t *testing.T, spin bool)) {
	for _, spin := range []bool{true, false} {
		t.Run(fmt.Sprintf("spin=%v", spin), func(t *testing.T) { test(t, spin) })
	}
}

func testPolledSubscriberReadsSplitFrames(t *testing.T, spin bool) {
	pong := make(chan []byte, 1)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		nc := acceptWS(w, r)
		if nc == nil {
			return
		}
		defer nc.Close()
		var out []byte
		for seq := 1; seq <= 3; seq++ {
			push := `{"bench_ts":` + strconv.FormatInt(time.Now().UnixNano(), 10) + `,"bench_seq":` + strconv.Itoa(seq) + `}`
			out = append(out, serverFrame(opText, []byte(push+"\n"+push))...) // a duplicate line, counted as one
		}
		out = append(out, serverFrame(opPing, []byte("hi"))...)
		for i := range out { // a byte at a time: every frame arrives in parts
			if _, err := nc.Write(out[i : i+1]); err != nil {
				return
			}
			time.Sleep(50 * time.Microsecond) // spread the bytes over many reads
		}
		// The pong: a masked frame of the two bytes sent.
		br := bufio.NewReader(nc)
		h := make([]byte, 2+4+2)
		_ = nc.SetReadDeadline(time.Now().Add(heraldtest.Timeout))
		if _, err := io.ReadFull(br, h); err == nil && h[0] == 0x80|opPong {
			p := []byte{h[6] ^ h[2], h[7] ^ h[3]}
			pong <- p
		}
		_, _ = nc.Write(serverFrame(opClose, []byte{0x03, 0xF0})) // 1008
		_, _ = io.Copy(io.Discard, br)                            // until the client closes
	}))
	defer hs.Close()
	r, s, c := polledSubscriber(t, hs.URL, spin)
	if c.sock == nil {
		t.Fatal("the subscriber was not handed to an epoll set")
	}
	select {
	case p := <-pong:
		if string(p) != "hi" {
			t.Fatalf("pong carries %q, want %q", p, "hi")
		}
	case <-time.After(heraldtest.Timeout):
		t.Fatal("no pong")
	}
	select {
	case <-s.done:
	case <-time.After(heraldtest.Timeout):
		t.Fatal("the subscriber did not end on the server's close frame")
	}
	r.pollers.stop()
	if s.distinct != 3 || s.dups != 3 || s.ooo != 0 || s.high.Load() != 3 {
		t.Fatalf("distinct %d, duplicates %d, out of order %d, high %d; want 3, 3, 0, 3", s.distinct, s.dups, s.ooo, s.high.Load())
	}
	if got := r.closed.Load(); got != 1 {
		t.Fatalf("%d subscribers closed by the server, want 1", got)
	}
	if got := r.lat.merged().quantile(0.5); got <= 0 {
		t.Fatalf("median latency %v, want above zero", got)
	}
}

// Closing a polled subscriber (the end of a run) ends its reader, and its
// socket is closed.
func TestPolledSubscriberClose(t *testing.T) { forEachSet(t, testPolledSubscriberClose) }

func testPolledSubscriberClose(t *testing.T, spin bool) {
	closed := make(chan struct{})
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		nc := acceptWS(w, r)
		if nc == nil {
			return
		}
		defer nc.Close()
		_, _ = io.Copy(io.Discard, nc)
		close(closed)
	}))
	defer hs.Close()
	r, s, c := polledSubscriber(t, hs.URL, spin)
	r.closing.Store(true)
	s.close()
	for _, ch := range []chan struct{}{s.done, closed} {
		select {
		case <-ch:
		case <-time.After(heraldtest.Timeout):
			t.Fatal("close did not end the reader and the connection")
		}
	}
	r.pollers.stop()
	if _, err := c.sock.Write([]byte{0}); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("writing after the end: %v, want the socket closed", err)
	}
}

// With -spin the subscribers' readers poll without sleeping: every
// message still arrives once, every subscriber was read by a spinning set
// ("spin" says so only then), and the run ends (the spinning sets stop).
// SSE streams cannot spin.
func TestFanoutSpin(t *testing.T) {
	res := runBench(t, "fanout", "-subs", "10", "-rate", "100", "-duration", "500ms", "-proto", "jsonl", "-spin")
	published := res["published"].(float64)
	if published < 40 || res["spin"] != true || res["lost"] != 0.0 || res["received"] != published*10 || res["duplicates"] != 0.0 {
		t.Fatalf("published %v, result %v", published, res)
	}
	refusedNaming(t, "-spin", "sse", "-spin")
}

// With -epoll the subscribers are read from sets that sleep in Go's
// poller: every message still arrives once, "epoll" says so, and the run
// ends (stop wakes the sleeping sets). SSE streams cannot use them, nor
// can -spin be asked for as well.
func TestFanoutEpoll(t *testing.T) {
	res := runBench(t, "fanout", "-subs", "10", "-rate", "100", "-duration", "500ms", "-proto", "jsonl", "-epoll")
	published := res["published"].(float64)
	if published < 40 || res["epoll"] != true || res["spin"] != nil || res["lost"] != 0.0 || res["received"] != published*10 || res["duplicates"] != 0.0 {
		t.Fatalf("published %v, result %v", published, res)
	}
	refusedNaming(t, "-epoll", "sse", "-epoll")
	refusedNaming(t, "-epoll", "fanout", "-epoll", "-spin")
}

// With kernel stamps a message is timed by when it reached the tool's
// socket, not by when a set got to read it: a push that waits 100 ms in
// the socket before the sets start counts far less than that; without,
// it counts the wait.
func TestKernelStampsTimeArrivalNotRead(t *testing.T) {
	for _, stamps := range []bool{true, false} {
		t.Run(fmt.Sprintf("stamps=%v", stamps), func(t *testing.T) {
			watched, written := make(chan struct{}), make(chan struct{})
			hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				nc := acceptWS(w, r)
				if nc == nil {
					return
				}
				defer nc.Close()
				select { // not with the handshake, which the dial reads whole
				case <-watched:
				case <-time.After(heraldtest.Timeout):
					return
				}
				push := `{"bench_ts":` + strconv.FormatInt(time.Now().UnixNano(), 10) + `,"bench_seq":1}`
				if _, err := nc.Write(serverFrame(opText, []byte(push))); err != nil {
					return
				}
				close(written)
				_, _ = io.Copy(io.Discard, nc) // until the client closes
			}))
			defer hs.Close()
			if stamps {
				stampsOn(t)
			}
			r, s, _ := watchedSubscriber(t, hs.URL, false, stamps)
			close(watched)
			select {
			case <-written:
			case <-time.After(heraldtest.Timeout):
				t.Fatal("the server wrote no push")
			}
			const wait = 100 * time.Millisecond
			time.Sleep(wait) // the read comes late: that is what is measured
			r.pollers.start()
			deadline := time.Now().Add(heraldtest.Timeout)
			for s.high.Load() != 1 {
				if time.Now().After(deadline) {
					t.Fatal("the push was never read")
				}
				runtime.Gosched()
			}
			r.closing.Store(true)
			s.close()
			<-s.done
			if n := r.pollers.unstampedReads(); n != 0 {
				t.Fatalf("%d reads came without the kernel's time", n)
			}
			lat := r.lat.merged().quantile(0.5)
			switch {
			case stamps && lat >= wait/2:
				t.Fatalf("with kernel stamps the push counted %v, want well under the %v it waited to be read", lat, wait)
			case !stamps && lat < wait:
				t.Fatalf("timed by its read the push counted %v, want at least the %v it waited", lat, wait)
			}
		})
	}
}

// -kernel-stamps needs the epoll sets: alone it is refused, and with
// -epoll a run says every subscriber was timed by them, and no read came
// without the kernel's time.
func TestFanoutKernelStamps(t *testing.T) {
	stampsOn(t)
	res := runBench(t, "fanout", "-subs", "10", "-rate", "100", "-duration", "500ms", "-proto", "jsonl", "-epoll", "-kernel-stamps")
	published := res["published"].(float64)
	if published < 40 || res["kernel_stamps"] != true || res["unstamped_reads"] != nil || res["lost"] != 0.0 || res["received"] != published*10 || res["p99_ms"].(float64) <= 0 {
		t.Fatalf("published %v, result %v", published, res)
	}
	refusedNaming(t, "-kernel-stamps", "fanout", "-kernel-stamps")
}

// refusedNaming runs the tool with args (and a URL nothing serves) and
// fails unless it refuses them with an error naming flag.
func refusedNaming(t *testing.T, flag string, args ...string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := Run(context.Background(), append(args, "-url", "ws://127.0.0.1:1/ws"), &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), flag) {
		t.Fatalf("bench %v: %v, want a refusal naming %s", args, err, flag)
	}
}

// stampsOn waits until the kernel stamps what it receives, which it
// begins a moment after the first socket asks for it (a deferred switch),
// and keeps it so until the test ends: a TCP socket of its own asks, and
// bytes go to it until a read comes with their time. (TCP, because a UDP
// socket is given the time of its read when the kernel had none.)
func stampsOn(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	tx, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tx.Close() })
	rx, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rx.Close() })
	rc, err := rx.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPNS_NEW, 1) }); err != nil || serr != nil {
		t.Fatalf("SO_TIMESTAMPNS_NEW: %v %v", err, serr)
	}
	buf, oob := make([]byte, 16), make([]byte, unix.CmsgSpace(stampSize))
	deadline := time.Now().Add(heraldtest.Timeout)
	for time.Now().Before(deadline) {
		if _, err := tx.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		var oobn int
		var rerr error
		if err := rc.Read(func(fd uintptr) bool {
			_, oobn, _, _, rerr = unix.Recvmsg(int(fd), buf, oob, 0)
			return !errors.Is(rerr, unix.EAGAIN)
		}); err != nil || rerr != nil {
			t.Fatalf("reading the stamped socket: %v %v", err, rerr)
		}
		if receivedAt(oob[:oobn]) != 0 {
			return
		}
		runtime.Gosched()
	}
	t.Fatal("the kernel never stamped a segment")
}
