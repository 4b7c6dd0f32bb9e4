package herald_test

// RFC 6455 checks against raw mode, written frame by frame over a plain TCP
// socket. A client alone on its channel gets its own messages back, so raw
// mode is an echo server; these are the cases of the Autobahn testsuite's
// sections that matter most, runnable without it.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/heraldtest"
)

const (
	opCont   = 0x0
	opText   = 0x1
	opBinary = 0x2
	opClose  = 0x8
	opPing   = 0x9
	opPong   = 0xA
)

type frameConn struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func dialFrames(t *testing.T, base, path string) *frameConn {
	c := dialSilent(t, base, path)
	return &frameConn{t: t, c: c, br: bufio.NewReader(c)}
}

// write sends one masked frame.
func (f *frameConn) write(fin bool, op byte, payload []byte) {
	f.t.Helper()
	var hdr []byte
	b0 := op
	if fin {
		b0 |= 0x80
	}
	hdr = append(hdr, b0)
	switch n := len(payload); {
	case n < 126:
		hdr = append(hdr, 0x80|byte(n))
	case n < 1<<16:
		hdr = append(hdr, 0x80|126, byte(n>>8), byte(n))
	default:
		hdr = append(hdr, 0x80|127)
		hdr = binary.BigEndian.AppendUint64(hdr, uint64(n))
	}
	var mask [4]byte
	_, _ = rand.Read(mask[:])
	hdr = append(hdr, mask[:]...)
	masked := make([]byte, len(payload))
	for i := range payload {
		masked[i] = payload[i] ^ mask[i%4]
	}
	_ = f.c.SetWriteDeadline(time.Now().Add(heraldtest.Timeout))
	if _, err := f.c.Write(append(hdr, masked...)); err != nil {
		f.t.Fatalf("write frame: %v", err)
	}
}

// read returns the next frame from the server (servers never mask).
func (f *frameConn) read() (fin bool, op byte, payload []byte) {
	f.t.Helper()
	_ = f.c.SetReadDeadline(time.Now().Add(heraldtest.Timeout))
	var h [2]byte
	if _, err := io.ReadFull(f.br, h[:]); err != nil {
		f.t.Fatalf("read frame header: %v", err)
	}
	fin, op = h[0]&0x80 != 0, h[0]&0x0f
	if h[1]&0x80 != 0 {
		f.t.Fatal("server frame is masked")
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		_, _ = io.ReadFull(f.br, b[:])
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		_, _ = io.ReadFull(f.br, b[:])
		n = binary.BigEndian.Uint64(b[:])
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(f.br, payload); err != nil {
		f.t.Fatalf("read frame payload: %v", err)
	}
	return fin, op, payload
}

// expectClose reads until a close frame and checks its code.
func (f *frameConn) expectClose(code uint16) {
	f.t.Helper()
	for {
		_, op, p := f.read()
		if op != opClose {
			continue
		}
		if len(p) < 2 || binary.BigEndian.Uint16(p) != code {
			f.t.Fatalf("close frame %v, want code %d", p, code)
		}
		return
	}
}

func echoServer(t *testing.T, cfg herald.Config) string {
	_, hs := heraldtest.NewServer(t, cfg)
	return hs.URL
}

func TestConformanceFragmentedTextIsReassembled(t *testing.T) {
	f := dialFrames(t, echoServer(t, herald.Config{}), "/ws/frag")
	f.write(false, opText, []byte("Hel"))
	f.write(false, opCont, []byte("lo, "))
	f.write(true, opPing, []byte("mid")) // control frames may interleave
	f.write(true, opCont, []byte("world"))
	var got []string
	for len(got) < 2 {
		_, op, p := f.read()
		got = append(got, string(rune('0'+op))+":"+string(p))
	}
	if got[0] != string(rune('0'+opPong))+":mid" || got[1] != "1:Hello, world" {
		t.Fatalf("frames %q", got)
	}
}

func TestConformanceInvalidUTF8Closes1007(t *testing.T) {
	f := dialFrames(t, echoServer(t, herald.Config{}), "/ws/utf8")
	f.write(true, opText, []byte{0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xce, 0xbc, 0xce, 0xb5, 0xed, 0xa0, 0x80, 0x65})
	f.expectClose(1007)
}

func TestConformanceReservedOpcodeCloses1002(t *testing.T) {
	f := dialFrames(t, echoServer(t, herald.Config{}), "/ws/op")
	f.write(true, 0x3, []byte("x"))
	f.expectClose(1002)
}

func TestConformancePingGetsPongWithPayload(t *testing.T) {
	f := dialFrames(t, echoServer(t, herald.Config{}), "/ws/ping")
	payload := bytes.Repeat([]byte{0xfe}, 125)
	f.write(true, opPing, payload)
	_, op, p := f.read()
	if op != opPong || !bytes.Equal(p, payload) {
		t.Fatalf("got op %d payload %d bytes, want pong with the ping's 125 bytes", op, len(p))
	}
}

func TestConformanceOversizedControlFrameCloses1002(t *testing.T) {
	f := dialFrames(t, echoServer(t, herald.Config{}), "/ws/ctl")
	f.write(true, opPing, bytes.Repeat([]byte{1}, 126))
	f.expectClose(1002)
}

func TestConformanceCloseIsEchoed(t *testing.T) {
	f := dialFrames(t, echoServer(t, herald.Config{}), "/ws/close")
	f.write(true, opClose, []byte{0x03, 0xe8, 'b', 'y', 'e'})
	f.expectClose(1000)
}

func TestConformanceBinaryEcho(t *testing.T) {
	f := dialFrames(t, echoServer(t, herald.Config{}), "/ws/bin")
	payload := []byte{0, 1, 2, 0xff, 0xfe}
	f.write(true, opBinary, payload)
	_, op, p := f.read()
	if op != opBinary || !bytes.Equal(p, payload) {
		t.Fatalf("got op %d %v", op, p)
	}
}

// TestConformanceLargeCompressedMessages echoes messages up to 16 MiB over
// permessage-deflate, with a client that keeps its compression context.
func TestConformanceLargeCompressedMessages(t *testing.T) {
	base := echoServer(t, herald.Config{MaxMessageSize: 16 << 20, QueueBytes: 64 << 20})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, heraldtest.WSURL(base, "/ws/big"), &websocket.DialOptions{
		CompressionMode: websocket.CompressionContextTakeover,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if ext := resp.Header.Get("Sec-WebSocket-Extensions"); !strings.Contains(ext, "permessage-deflate") {
		t.Fatalf("permessage-deflate not negotiated: %q", ext)
	}
	c.SetReadLimit(17 << 20)
	for _, size := range []int{0, 125, 126, 65535, 65536, 1 << 20, 16 << 20} {
		msg := bytes.Repeat([]byte("herald "), size/7+1)[:size]
		if err := c.Write(ctx, websocket.MessageText, msg); err != nil {
			t.Fatalf("write %d bytes: %v", size, err)
		}
		_, got, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("read %d bytes: %v", size, err)
		}
		if !bytes.Equal(got, msg) {
			t.Fatalf("echo of %d bytes came back as %d bytes", size, len(got))
		}
	}
}

func TestConformanceOverMaxMessageSizeCloses1009(t *testing.T) {
	f := dialFrames(t, echoServer(t, herald.Config{MaxMessageSize: 1024}), "/ws/max")
	f.write(true, opText, bytes.Repeat([]byte("a"), 1025))
	f.expectClose(1009)
}
