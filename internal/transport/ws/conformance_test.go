package ws

// RFC 6455 checks against an echo Handler, written frame by frame over a
// plain TCP socket: the cases of the Autobahn testsuite's sections that
// matter most, runnable without it.

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/gobwas/ws"

	"github.com/heraldhq/herald/internal/wire"
	"github.com/heraldhq/herald/internal/wire/wiretest"
)

// echo is a Handler that writes every message back, in order, as its
// session would: one batch in flight at a time, the rest queued meanwhile.
// With twice set, each message goes back as a reply and then as a push
// (framed once for every connection), in one batch.
type echo struct {
	c      *Conn
	closed chan struct{}
	twice  bool

	mu    sync.Mutex
	busy  bool // a batch is in flight
	queue []*wire.Payload
}

func (e *echo) Opened()               {}
func (e *echo) HandleText(b []byte)   { e.handle(b, false) }
func (e *echo) HandleBinary(b []byte) { e.handle(b, true) }
func (e *echo) Close()                { close(e.closed) }

func (e *echo) handle(b []byte, binary bool) {
	ps := []*wire.Payload{{Bytes: bytes.Clone(b), Binary: binary}} // b is only valid during the call
	if e.twice {
		ps = append(ps, &wire.Payload{Bytes: ps[0].Bytes, Binary: binary, Push: true})
	}
	e.mu.Lock()
	if e.busy {
		e.queue = append(e.queue, ps...)
		e.mu.Unlock()
		return
	}
	e.busy = true
	e.mu.Unlock()
	e.c.Send(wiretest.Batch(ps, e.sent))
}

// sent sends what was queued while the last batch was in flight.
func (e *echo) sent(err error) {
	e.mu.Lock()
	ps := e.queue
	e.queue = nil
	if err != nil || len(ps) == 0 {
		e.busy = false
		e.mu.Unlock()
		return
	}
	e.mu.Unlock()
	e.c.Send(wiretest.Batch(ps, e.sent))
}

// echoServer serves an echo Handler on each connection with a Transport
// of cfg, and hands the first 64 Handlers to the returned channel.
func echoServer(t *testing.T, cfg Config) (*Transport, string, chan *echo) {
	t.Helper()
	echoes := make(chan *echo, 64)
	tr, url := serveWith(t, cfg, nil, func(c *Conn) Handler {
		e := &echo{c: c, closed: make(chan struct{})}
		select {
		case echoes <- e:
		default: // a test with many connections watches none of them
		}
		return e
	})
	return tr, url, echoes
}

// sendFrame sends f masked, as a client must.
func sendFrame(t *testing.T, nc net.Conn, f ws.Frame) {
	t.Helper()
	_ = nc.SetWriteDeadline(time.Now().Add(waitTimeout))
	if err := ws.WriteFrame(nc, ws.MaskFrame(f)); err != nil {
		t.Fatalf("write frame: %v", err)
	}
}

// readFrame returns the next frame from the server, which never masks.
func readFrame(t *testing.T, nc net.Conn, br *bufio.Reader) ws.Frame {
	t.Helper()
	_ = nc.SetReadDeadline(time.Now().Add(waitTimeout))
	f, err := ws.ReadFrame(br)
	if err != nil {
		t.Fatalf("read frame: %v", err)
	}
	if f.Header.Masked {
		t.Fatal("server frame is masked")
	}
	return f
}

// expectClose reads until a close frame and checks its code.
func expectClose(t *testing.T, nc net.Conn, br *bufio.Reader, code ws.StatusCode) {
	t.Helper()
	for {
		f := readFrame(t, nc, br)
		if f.Header.OpCode != ws.OpClose {
			continue
		}
		if got, _ := ws.ParseCloseFrameData(f.Payload); len(f.Payload) < 2 || got != code {
			t.Fatalf("close frame %v, want code %d", f.Payload, code)
		}
		return
	}
}

func TestConformanceFragmentedTextIsReassembled(t *testing.T) {
	_, url, _ := echoServer(t, Config{})
	nc, br := dialWS(t, url, nil)
	sendFrame(t, nc, ws.NewFrame(ws.OpText, false, []byte("Hel")))
	sendFrame(t, nc, ws.NewFrame(ws.OpContinuation, false, []byte("lo, ")))
	sendFrame(t, nc, ws.NewPingFrame([]byte("mid"))) // control frames may interleave
	sendFrame(t, nc, ws.NewFrame(ws.OpContinuation, true, []byte("world")))
	pong, text := readFrame(t, nc, br), readFrame(t, nc, br)
	if pong.Header.OpCode != ws.OpPong || string(pong.Payload) != "mid" ||
		text.Header.OpCode != ws.OpText || !text.Header.Fin || string(text.Payload) != "Hello, world" {
		t.Fatalf("frames %v %q, %v %q; want the pong of mid, then text Hello, world",
			pong.Header.OpCode, pong.Payload, text.Header.OpCode, text.Payload)
	}
}

func TestConformanceInvalidUTF8Closes1007(t *testing.T) {
	_, url, _ := echoServer(t, Config{})
	nc, br := dialWS(t, url, nil)
	sendFrame(t, nc, ws.NewTextFrame([]byte{0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xce, 0xbc, 0xce, 0xb5, 0xed, 0xa0, 0x80, 0x65}))
	expectClose(t, nc, br, ws.StatusInvalidFramePayloadData)
}

func TestConformanceReservedOpcodeCloses1002(t *testing.T) {
	_, url, _ := echoServer(t, Config{})
	nc, br := dialWS(t, url, nil)
	sendFrame(t, nc, ws.NewFrame(ws.OpCode(0x3), true, []byte("x")))
	expectClose(t, nc, br, ws.StatusProtocolError)
}

func TestConformancePingGetsPongWithPayload(t *testing.T) {
	_, url, _ := echoServer(t, Config{})
	nc, br := dialWS(t, url, nil)
	payload := bytes.Repeat([]byte{0xfe}, 125)
	sendFrame(t, nc, ws.NewPingFrame(payload))
	f := readFrame(t, nc, br)
	if f.Header.OpCode != ws.OpPong || !bytes.Equal(f.Payload, payload) {
		t.Fatalf("got op %v payload %d bytes, want pong with the ping's 125 bytes", f.Header.OpCode, len(f.Payload))
	}
}

func TestConformanceOversizedControlFrameCloses1002(t *testing.T) {
	_, url, _ := echoServer(t, Config{})
	nc, br := dialWS(t, url, nil)
	sendFrame(t, nc, ws.NewPingFrame(bytes.Repeat([]byte{1}, 126)))
	expectClose(t, nc, br, ws.StatusProtocolError)
}

func TestConformanceCloseIsEchoed(t *testing.T) {
	_, url, echoes := echoServer(t, Config{})
	nc, br := dialWS(t, url, nil)
	e := <-echoes
	sendFrame(t, nc, ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusNormalClosure, "bye")))
	expectClose(t, nc, br, ws.StatusNormalClosure)
	waitClosed(t, e.closed, "the Handler after the close handshake")
}

// waitClosed waits for a Handler's closed channel.
func waitClosed(t *testing.T, closed chan struct{}, what string) {
	t.Helper()
	select {
	case <-closed:
	case <-time.After(waitTimeout):
		t.Fatalf("%s: not closed within %v", what, waitTimeout)
	}
}

func TestConformanceBinaryEcho(t *testing.T) {
	_, url, _ := echoServer(t, Config{})
	nc, br := dialWS(t, url, nil)
	payload := []byte{0, 1, 2, 0xff, 0xfe}
	sendFrame(t, nc, ws.NewBinaryFrame(payload))
	f := readFrame(t, nc, br)
	if f.Header.OpCode != ws.OpBinary || !bytes.Equal(f.Payload, payload) {
		t.Fatalf("got op %v %v", f.Header.OpCode, f.Payload)
	}
}

// TestConformanceLargeCompressedMessages echoes messages up to 16 MiB over
// permessage-deflate, with a client that keeps its compression context.
func TestConformanceLargeCompressedMessages(t *testing.T) {
	t.Parallel()
	_, url, echoes := echoServer(t, Config{MaxMessageSize: 16 << 20})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{
		CompressionMode: websocket.CompressionContextTakeover,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if ext := resp.Header.Get("Sec-WebSocket-Extensions"); !strings.Contains(ext, "permessage-deflate") {
		t.Fatalf("permessage-deflate not negotiated: %q", ext)
	}
	if e := <-echoes; !e.c.deflate {
		t.Fatal("the server's connection does not compress")
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
	var refused refusals
	_, url, _ := echoServer(t, Config{MaxMessageSize: 1024, Refused: refused.add})
	nc, br := dialWS(t, url, nil)
	sendFrame(t, nc, ws.NewTextFrame(bytes.Repeat([]byte("a"), 1025)))
	expectClose(t, nc, br, ws.StatusMessageTooBig)
	if got := refused.get(); len(got) != 1 || got[0] != "too_large" {
		t.Fatalf("refusals %q, want one too_large", got)
	}
}

// refusals keeps the reasons a Transport's Refused is told.
type refusals struct {
	mu      sync.Mutex
	reasons []string
}

func (r *refusals) add(reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reasons = append(r.reasons, reason)
}

func (r *refusals) get() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.reasons...)
}
