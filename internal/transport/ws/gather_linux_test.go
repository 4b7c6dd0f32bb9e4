package ws

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// socketPair returns a Conn owning one end of a stream socket pair, and
// the other end's descriptor; both are closed when the test ends.
func socketPair(t *testing.T, sndbuf int) (*Conn, int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatalf("socketpair: %v", err)
	}
	if err := unix.SetNonblock(fds[1], true); err != nil {
		t.Fatalf("nonblocking peer: %v", err)
	}
	if sndbuf > 0 {
		if err := unix.SetsockoptInt(fds[0], unix.SOL_SOCKET, unix.SO_SNDBUF, sndbuf); err != nil {
			t.Fatalf("SO_SNDBUF: %v", err)
		}
	}
	c := &Conn{}
	c.sock.fd = int32(fds[0])
	t.Cleanup(func() {
		c.sock.close()
		_ = unix.Close(fds[1])
	})
	return c, fds[1]
}

// readAvailable reads what fd holds now, without waiting.
func readAvailable(t *testing.T, fd int, into *bytes.Buffer) {
	t.Helper()
	buf := make([]byte, 64<<10)
	for {
		n, err := unix.Read(fd, buf)
		if n > 0 {
			into.Write(buf[:n])
		}
		if n <= 0 || err != nil {
			return
		}
	}
}

// pieces returns n buffers alternating between a line of size bytes and a
// one-byte separator, as a frame of herald.v1.jsonl lines is, and their
// bytes end to end.
func pieces(n, size int) (net.Buffers, []byte) {
	var bufs net.Buffers
	var all []byte
	for i := range n {
		b := bytes.Repeat([]byte{byte('a' + i%26)}, size)
		copy(b, fmt.Sprintf("%06d", i))
		if i > 0 {
			bufs = append(bufs, []byte{'\n'})
			all = append(all, '\n')
		}
		bufs = append(bufs, b)
		all = append(all, b...)
	}
	return bufs, all
}

// A gathering sender sends many small buffers copied into one, and the
// peer gets their bytes in order; large buffers, or two, go as they are.
func TestGatheringSenderCopiesSmallPieces(t *testing.T) {
	cases := []struct {
		name    string
		n, size int
		gather  bool
	}{
		{"jsonl lines", 40, 200, true},
		{"one line", 1, 200, false}, // a single buffer
		{"large lines", 4, 40 << 10, false},
		{"lines over gatherPiece on average", 5, 3000, false},
		{"more than maxGather", 400, 200, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, peer := socketPair(t, 1<<20)
			bufs, want := pieces(tc.n, tc.size)
			s := sender{gather: true}
			rest, n, err := s.writeNow(c, bufs)
			if err != nil || len(rest) != 0 || n != len(want) {
				t.Fatalf("writeNow: %d of %d bytes, %d buffers left, err %v; want all", n, len(want), len(rest), err)
			}
			if got := len(s.flat) > 0; got != tc.gather {
				t.Fatalf("gathered %v (%d bytes copied), want %v", got, len(s.flat), tc.gather)
			}
			var got bytes.Buffer
			readAvailable(t, peer, &got) // all of it: the socket took it whole
			if !bytes.Equal(got.Bytes(), want) {
				t.Fatalf("the peer got %d bytes, want the %d sent, in order", got.Len(), len(want))
			}
		})
	}
}

// Empty buffers among the pieces, as a frame may hold, are skipped.
func TestGatheringSenderSkipsEmptyPieces(t *testing.T) {
	c, peer := socketPair(t, 1<<20)
	bufs := net.Buffers{[]byte("ab"), nil, []byte("c"), {}, []byte("de")}
	s := sender{gather: true}
	rest, n, err := s.writeNow(c, bufs)
	if err != nil || len(rest) != 0 || n != 5 || string(s.flat) != "abcde" {
		t.Fatalf("writeNow: %d bytes, %d buffers left, err %v, gathered %q; want 5, none, nil, \"abcde\"", n, len(rest), err, s.flat)
	}
	var got bytes.Buffer
	readAvailable(t, peer, &got)
	if got.String() != "abcde" {
		t.Fatalf("the peer got %q, want \"abcde\"", got.String())
	}
}

// A gathered send on a closed connection fails, and says so.
func TestGatheredSendOnClosedSocketFails(t *testing.T) {
	c, _ := socketPair(t, 0)
	c.sock.close()
	bufs, _ := pieces(10, 100)
	s := sender{gather: true}
	rest, n, err := s.writeNow(c, bufs)
	if err == nil || n != 0 || len(rest) != len(bufs) {
		t.Fatalf("writeNow on a closed socket: %d bytes, %d of %d buffers left, err %v; want an error, nothing sent", n, len(rest), len(bufs), err)
	}
}

// A gathered send the socket takes only part of leaves the rest in the
// caller's buffers, from the first byte not sent: sending that rest as
// the socket drains delivers every byte once, in order, though the
// sender's own buffer is reused by every send.
func TestGatheredPartialSendGoesOnFromWhereItStopped(t *testing.T) {
	c, peer := socketPair(t, 4<<10)
	bufs, want := pieces(300, 150) // ~45 KiB, far more than the socket holds
	s := sender{gather: true}
	var got bytes.Buffer
	partial, sent := 0, 0
	for rest := bufs; len(rest) > 0; {
		var n int
		var err error
		rest, n, err = s.writeNow(c, rest)
		if err != nil {
			t.Fatalf("writeNow: %v", err)
		}
		sent += n
		if len(rest) > 0 && n > 0 {
			partial++
			if len(s.flat) == 0 {
				t.Fatal("the partial send did not gather")
			}
		}
		// What a send to another connection leaves in the buffer.
		s.flat = append(s.flat[:0], bytes.Repeat([]byte{'X'}, cap(s.flat))...)[:0]
		readAvailable(t, peer, &got)
	}
	if partial == 0 {
		t.Fatal("every send was taken whole; the test needs a socket that fills")
	}
	if sent != len(want) || !bytes.Equal(got.Bytes(), want) {
		t.Fatalf("writeNow counted %d bytes and the peer got %d; want %d, the same in order", sent, got.Len(), len(want))
	}
}

// BenchmarkSendLines sends a frame of 24 lines of 232 bytes (the batch a
// subscriber gets in the two-node closed loop) on a loopback TCP
// connection whose peer reads it, as 47 iovecs and gathered into one
// buffer; cpu-µs/op is the sending thread's CPU time, the kernel's work
// included.
func BenchmarkSendLines(b *testing.B) {
	for _, gather := range []bool{false, true} {
		b.Run(fmt.Sprintf("gather=%v", gather), func(b *testing.B) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			go func() {
				peer, err := ln.Accept()
				if err != nil {
					return
				}
				defer peer.Close()
				_, _ = io.Copy(io.Discard, peer)
			}()
			nc, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			defer nc.Close()
			raw, err := nc.(*net.TCPConn).SyscallConn()
			if err != nil {
				b.Fatal(err)
			}
			bufs, all := pieces(24, 232)
			s := sender{gather: gather}
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			b.ReportAllocs()
			b.SetBytes(int64(len(all)))
			cpu0 := threadCPU(b)
			b.ResetTimer()
			c := &Conn{}
			for b.Loop() {
				rest := bufs
				var werr error
				// A full socket waits in Go's poller, as a write goroutine
				// would, rather than spinning.
				if err := raw.Write(func(fd uintptr) bool {
					c.sock.fd = int32(fd)
					rest, _, werr = s.writeNow(c, rest)
					return len(rest) == 0 || werr != nil
				}); err != nil || werr != nil {
					b.Fatal(err, werr)
				}
			}
			b.ReportMetric(float64(threadCPU(b)-cpu0)/1e3/float64(b.N), "cpu-µs/op")
		})
	}
}

// threadCPU returns the CPU time the calling thread has used.
func threadCPU(b *testing.B) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_THREAD, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
