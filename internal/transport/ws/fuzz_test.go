package ws

import (
	"bytes"
	"compress/flate"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// The fuzz targets feed bytes to herald's own read path — the reader of a
// connection, which parses frames, answers pings, reassembles fragments,
// inflates permessage-deflate and closes on a protocol error — over a
// scripted connection that hands the reader one chunk per read, so that a
// stream can be split at every byte boundary.

// fuzzMax is the MaxMessageSize of the fuzzed transport.
const fuzzMax = 1024

// FuzzFrames feeds arbitrary bytes, whole and split at every byte, with
// and without permessage-deflate: herald never panics, handles the same
// messages and writes the same frames however the bytes arrive, and
// writes nothing but pongs and one final close of a code that fits.
func FuzzFrames(f *testing.F) {
	for _, s := range frameSeeds() {
		f.Add(s, false)
		f.Add(s, true)
	}
	tr, logs := fuzzTransport(f)
	f.Fuzz(func(t *testing.T, data []byte, deflate bool) {
		whole := feed(t, tr, [][]byte{data}, deflate)
		bytewise := feed(t, tr, splitEvery(data, 1), deflate)
		if !whole.equal(bytewise) {
			t.Fatalf("whole: %v\nbyte by byte: %v", whole, bytewise)
		}
		for i, fr := range whole.frames {
			switch {
			case fr.op == ws.OpPong:
			case fr.op == ws.OpClose && i == len(whole.frames)-1:
				if !closeCodeFits(fr.payload) {
					t.Fatalf("closed with % x", fr.payload)
				}
			default:
				t.Fatalf("wrote %v", whole.frames)
			}
		}
		logs.check(t)
	})
}

// closeCodeFits reports whether a close frame the server writes has a
// code it may send for what it read: a protocol error, bad data, a message
// too big, or the echo of the client's own valid close.
func closeCodeFits(p []byte) bool {
	if len(p) == 0 {
		return true // the echo of an empty close
	}
	code, _ := ws.ParseCloseFrameData(p)
	switch code {
	case ws.StatusProtocolError, ws.StatusInvalidFramePayloadData, ws.StatusMessageTooBig:
		return true
	}
	return ws.CheckCloseFrameData(code, "") == nil
}

// FuzzMessages encodes the messages, pings and faults a script describes
// as a client would send them — fragmented, compressed or not, with
// pings between fragments — and checks that herald handles exactly the
// messages, answers each ping, and closes with the code RFC 6455 and RFC
// 7692 give the first fault, however the bytes are split.
func FuzzMessages(f *testing.F) {
	for _, s := range [][]byte{
		{0, 5, 0}, {0x30, 40, 0, 3, 4}, {0x88, 200, 1}, {0x0a, 255, 3, 3, 2, 1}, {1, 0xff, 0xff},
		{3, 10}, {4, 3}, {5, 1}, {5, 3}, {6, 0}, {7, 5}, {8, 11}, {9, 12}, {0xf0, 100, 0, 6, 2},
	} {
		f.Add(s, false)
		f.Add(s, true)
	}
	tr, logs := fuzzTransport(f)
	f.Fuzz(func(t *testing.T, script []byte, deflate bool) {
		stream, want := encodeScript(script, deflate)
		for _, stride := range []int{len(stream), 1, 1 + len(script)%7} {
			got := feed(t, tr, splitEvery(stream, max(stride, 1)), deflate)
			if !got.equal(want) {
				t.Fatalf("script % x (deflate %v), fed %d bytes at a time:\ngot  %v\nwant %v", script, deflate, stride, got, want)
			}
		}
		logs.check(t)
	})
}

// outcome is what a connection did with a stream: the messages it
// handled and the frames it wrote, close frames by their code alone.
type outcome struct {
	msgs   []string
	frames []frame
}

type frame struct {
	op      ws.OpCode
	payload []byte
}

func (o outcome) equal(p outcome) bool {
	return slices.Equal(o.msgs, p.msgs) && slices.EqualFunc(o.frames, p.frames, func(a, b frame) bool {
		return a.op == b.op && bytes.Equal(a.payload, b.payload)
	})
}

func (o outcome) String() string {
	s := fmt.Sprintf("%d messages", len(o.msgs))
	for _, m := range o.msgs {
		s += fmt.Sprintf(" %.40q", m)
	}
	for _, f := range o.frames {
		s += fmt.Sprintf(" [op %v % x]", f.op, f.payload)
	}
	return s
}

// feed runs a connection whose reads return chunks, one per read, then
// the end of the stream, and returns what it did once its Handler is
// closed.
func feed(t *testing.T, tr *Transport, chunks [][]byte, zip bool) outcome {
	t.Helper()
	sc := &scriptConn{chunks: chunks}
	c, _ := tr.newConn(sc, "", deflate{on: zip})
	h := &logHandler{closed: make(chan struct{})}
	c.setHandler(h)
	tr.readLoop(c)
	select {
	case <-h.closed:
	case <-time.After(waitTimeout):
		t.Fatalf("the connection did not end within %v", waitTimeout)
	}
	h.mu.Lock()
	o := outcome{msgs: h.msgs}
	h.mu.Unlock()
	sc.mu.Lock()
	out := bytes.NewReader(sc.out.Bytes())
	sc.mu.Unlock()
	for out.Len() > 0 {
		fr, err := ws.ReadFrame(out)
		if err != nil {
			t.Fatalf("the server wrote a bad frame: %v", err)
		}
		if fr.Header.Masked || !fr.Header.Fin || fr.Header.Rsv != 0 {
			t.Fatalf("the server wrote a frame with header %+v", fr.Header)
		}
		if fr.Header.OpCode == ws.OpClose && len(fr.Payload) > 2 {
			fr.Payload = fr.Payload[:2] // the code; the reason is the server's own
		}
		o.frames = append(o.frames, frame{fr.Header.OpCode, fr.Payload})
	}
	return o
}

// logHandler keeps the messages it is handed.
type logHandler struct {
	mu     sync.Mutex
	msgs   []string
	closed chan struct{}
}

func (h *logHandler) Opened()               {}
func (h *logHandler) HandleText(b []byte)   { h.add("t:" + string(b)) }
func (h *logHandler) HandleBinary(b []byte) { h.add("b:" + string(b)) }
func (h *logHandler) Close()                { close(h.closed) }
func (h *logHandler) add(m string) {
	h.mu.Lock()
	h.msgs = append(h.msgs, m)
	h.mu.Unlock()
}

// scriptConn is a net.Conn whose reads return its chunks, one per read,
// then io.EOF; what is written to it is kept.
type scriptConn struct {
	chunks [][]byte // read by one goroutine only

	mu     sync.Mutex
	out    bytes.Buffer
	closed bool
}

func (s *scriptConn) Read(p []byte) (int, error) {
	for len(s.chunks) > 0 && len(s.chunks[0]) == 0 {
		s.chunks = s.chunks[1:]
	}
	if len(s.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, s.chunks[0])
	s.chunks[0] = s.chunks[0][n:]
	return n, nil
}

func (s *scriptConn) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, net.ErrClosed
	}
	return s.out.Write(p)
}

func (s *scriptConn) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	return nil
}

func (s *scriptConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (s *scriptConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (s *scriptConn) SetDeadline(time.Time) error      { return nil }
func (s *scriptConn) SetReadDeadline(time.Time) error  { return nil }
func (s *scriptConn) SetWriteDeadline(time.Time) error { return nil }

// splitEvery cuts b into chunks of n bytes.
func splitEvery(b []byte, n int) [][]byte {
	var out [][]byte
	for len(b) > n {
		out = append(out, b[:n])
		b = b[n:]
	}
	return append(out, b)
}

// fuzzTransport returns a transport for the fuzz targets and the log that
// must stay empty: the transport logs a handler's panic there.
func fuzzTransport(f *testing.F) (*Transport, *panicLog) {
	logs := &panicLog{}
	tr := newTransport(f, Config{MaxMessageSize: fuzzMax, PingInterval: time.Hour, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	f.Cleanup(tr.Close)
	return tr, logs
}

// panicLog is a log output that fails the test once anything is written.
type panicLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *panicLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *panicLog) check(t *testing.T) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.buf.Len() > 0 {
		t.Fatalf("logged: %s", l.buf.String())
	}
}

// script reads a fuzz script a byte at a time; past its end it reads 0.
type script struct{ b []byte }

func (s *script) next() byte {
	if len(s.b) == 0 {
		return 0
	}
	c := s.b[0]
	s.b = s.b[1:]
	return c
}

func (s *script) more() bool { return len(s.b) > 0 }

// clientFrame encodes one frame as a client sends it: masked, with a mask
// from the script.
func clientFrame(s *script, h ws.Header, payload []byte) []byte {
	h.Masked = true
	h.Length = int64(len(payload))
	h.Mask = [4]byte{s.next(), s.next(), s.next(), s.next()}
	var b bytes.Buffer
	_ = ws.WriteHeader(&b, h)
	p := slices.Clone(payload)
	ws.Cipher(p, h.Mask, 0)
	b.Write(p)
	return b.Bytes()
}

// encodeScript turns a script into the bytes a client sends and the
// outcome RFC 6455 and RFC 7692 prescribe for them.
func encodeScript(b []byte, deflate bool) ([]byte, outcome) {
	s := &script{b: b}
	var stream []byte
	var want outcome
	send := func(h ws.Header, p []byte) { stream = append(stream, clientFrame(s, h, p)...) }
	fail := func(code ws.StatusCode) {
		want.frames = append(want.frames, frame{ws.OpClose, binary.BigEndian.AppendUint16(nil, uint16(code))})
	}
	ping := func(p []byte) {
		send(ws.Header{Fin: true, OpCode: ws.OpPing}, p)
		want.frames = append(want.frames, frame{ws.OpPong, p})
	}
	for s.more() {
		op := s.next()
		switch op % 10 {
		case 0, 1, 2: // a message
			binaryMsg := op%10 == 2
			n := int(s.next()) | int(s.next()&7)<<8
			msg := make([]byte, n)
			for i := range msg {
				msg[i] = 'a' + byte(i%26)
			}
			if op&0x10 != 0 { // bytes of the script: perhaps not UTF-8
				for i := range msg {
					msg[i] = s.next()
				}
			}
			wire, zip := msg, deflate && op&0x08 != 0
			if zip {
				wire = deflateMessage(msg, int(s.next()%11)-1, s.next()&1 == 1)
			}
			pieces := 1 + int(op>>5)%4
			size := 0
			for i := range pieces {
				part := wire[len(wire)*i/pieces : len(wire)*(i+1)/pieces]
				h := ws.Header{Fin: i == pieces-1, OpCode: ws.OpContinuation}
				if i == 0 {
					h.OpCode = ws.OpText
					if binaryMsg {
						h.OpCode = ws.OpBinary
					}
					h.Rsv = ws.Rsv(zip, false, false)
				}
				send(h, part)
				if size += len(part); size > fuzzMax {
					fail(ws.StatusMessageTooBig)
					return stream, want
				}
				if i == 0 && pieces > 1 && op&0x80 != 0 {
					ping([]byte{'p', byte(i)})
				}
			}
			switch {
			case len(msg) > fuzzMax:
				fail(ws.StatusMessageTooBig)
				return stream, want
			case !binaryMsg && !utf8.Valid(msg):
				fail(ws.StatusInvalidFramePayloadData)
				return stream, want
			case binaryMsg:
				want.msgs = append(want.msgs, "b:"+string(msg))
			default:
				want.msgs = append(want.msgs, "t:"+string(msg))
			}
		case 3:
			ping(bytes.Repeat([]byte{s.next()}, int(s.next())%126))
		case 4: // a pong: nothing to do
			send(ws.Header{Fin: true, OpCode: ws.OpPong}, bytes.Repeat([]byte{'q'}, int(s.next())%126))
		case 5: // the client closes
			switch s.next() % 3 {
			case 0:
				send(ws.Header{Fin: true, OpCode: ws.OpClose}, nil)
				want.frames = append(want.frames, frame{ws.OpClose, []byte{}})
			case 1:
				send(ws.Header{Fin: true, OpCode: ws.OpClose}, ws.NewCloseFrameBody(4000, "bye"))
				want.frames = append(want.frames, frame{ws.OpClose, binary.BigEndian.AppendUint16(nil, 4000)})
			default: // 1005 must not be sent
				send(ws.Header{Fin: true, OpCode: ws.OpClose}, []byte{0x03, 0xed})
				fail(ws.StatusProtocolError)
			}
			return stream, want
		default:
			b, code := fault(s, deflate)
			stream = append(stream, b...)
			fail(code)
			return stream, want
		}
	}
	return stream, want
}

// faults is how many kinds of frame fault knows.
const faults = 12

// fault encodes a frame a server must fail the connection for, of the
// kind the script names, and returns it with the close code it gets.
func fault(s *script, deflate bool) ([]byte, ws.StatusCode) {
	text := func(rsv byte, fin bool) ws.Header { return ws.Header{Fin: fin, OpCode: ws.OpText, Rsv: rsv} }
	switch s.next() % faults {
	case 0: // a reserved data opcode
		return clientFrame(s, ws.Header{Fin: true, OpCode: ws.OpCode(3 + s.next()%5)}, []byte("x")), ws.StatusProtocolError
	case 1: // a reserved control opcode
		return clientFrame(s, ws.Header{Fin: true, OpCode: ws.OpCode(0xb + s.next()%5)}, nil), ws.StatusProtocolError
	case 2: // RSV2, which no extension here defines
		return clientFrame(s, text(ws.Rsv(false, true, false), true), []byte("x")), ws.StatusProtocolError
	case 3: // RSV3
		return clientFrame(s, text(ws.Rsv(false, false, true), true), []byte("x")), ws.StatusProtocolError
	case 4: // RSV1 without permessage-deflate; with it, RSV1 on a control frame
		if deflate {
			return clientFrame(s, ws.Header{Fin: true, OpCode: ws.OpPing, Rsv: ws.Rsv(true, false, false)}, nil), ws.StatusProtocolError
		}
		return clientFrame(s, text(ws.Rsv(true, false, false), true), []byte("x")), ws.StatusProtocolError
	case 5: // not masked
		var b bytes.Buffer
		_ = ws.WriteFrame(&b, ws.NewTextFrame([]byte("x")))
		return b.Bytes(), ws.StatusProtocolError
	case 6: // a control frame over 125 bytes
		return clientFrame(s, ws.Header{Fin: true, OpCode: ws.OpPing}, make([]byte, 126)), ws.StatusProtocolError
	case 7: // a fragmented control frame
		return clientFrame(s, ws.Header{OpCode: ws.OpPing}, nil), ws.StatusProtocolError
	case 8: // a continuation with no message begun
		return clientFrame(s, ws.Header{Fin: true, OpCode: ws.OpContinuation}, []byte("x")), ws.StatusProtocolError
	case 9: // a new message while one is fragmented
		return append(clientFrame(s, text(0, false), []byte("x")), clientFrame(s, text(0, true), []byte("y"))...), ws.StatusProtocolError
	case 10: // a close frame of one byte
		return clientFrame(s, ws.Header{Fin: true, OpCode: ws.OpClose}, []byte{3}), ws.StatusProtocolError
	default: // compressed data that does not inflate; RSV1 on a continuation
		if deflate && s.next()%2 == 0 {
			return clientFrame(s, text(ws.Rsv(true, false, false), true), []byte{0xff}), ws.StatusInvalidFramePayloadData
		}
		return append(clientFrame(s, text(0, false), []byte("x")), clientFrame(s, ws.Header{Fin: true, Rsv: ws.Rsv(true, false, false)}, []byte("y"))...), ws.StatusProtocolError
	}
}

// deflateMessage compresses msg as a permessage-deflate sender may: at
// any level, ended by a flush (whose empty block is then dropped) or by a
// final block.
func deflateMessage(msg []byte, level int, final bool) []byte {
	var b bytes.Buffer
	w, _ := flate.NewWriter(&b, level)
	_, _ = w.Write(msg)
	if final {
		_ = w.Close()
		return b.Bytes()
	}
	_ = w.Flush()
	return bytes.TrimSuffix(b.Bytes(), []byte{0, 0, 0xff, 0xff})
}

// frameSeeds are client streams of real frames.
func frameSeeds() [][]byte {
	s := &script{b: []byte{1, 2, 3, 4}}
	hello := clientFrame(s, ws.Header{Fin: true, OpCode: ws.OpText}, []byte("hello"))
	zipped := clientFrame(s, ws.Header{Fin: true, OpCode: ws.OpText, Rsv: ws.Rsv(true, false, false)}, deflateMessage([]byte("hello hello hello"), 1, false))
	frag := slices.Concat(
		clientFrame(s, ws.Header{OpCode: ws.OpText}, []byte("Hel")),
		clientFrame(s, ws.Header{Fin: true, OpCode: ws.OpPing}, []byte("mid")),
		clientFrame(s, ws.Header{Fin: true, OpCode: ws.OpContinuation}, []byte("lo")),
	)
	bin := clientFrame(s, ws.Header{Fin: true, OpCode: ws.OpBinary}, []byte{0, 0xff})
	closing := clientFrame(s, ws.Header{Fin: true, OpCode: ws.OpClose}, ws.NewCloseFrameBody(1000, "bye"))
	big := clientFrame(s, ws.Header{Fin: true, OpCode: ws.OpText}, bytes.Repeat([]byte{'a'}, fuzzMax+1))
	badUTF8 := clientFrame(s, ws.Header{Fin: true, OpCode: ws.OpText}, []byte{0xce, 0xba, 0xed, 0xa0, 0x80})
	return [][]byte{hello, zipped, frag, bin, slices.Concat(hello, closing), big[:20], badUTF8, slices.Concat(frag, zipped, bin)}
}

// A message that arrives a byte at a time costs memory in proportion to
// its size, not to its size squared: the bytes of an incomplete frame
// are kept, not copied again on every read.
func TestTrickledMessageIsNotCopiedPerByte(t *testing.T) {
	const size = 32 << 10
	tr := newTransport(t, Config{MaxMessageSize: size, PingInterval: time.Hour})
	t.Cleanup(tr.Close)
	msg := bytes.Repeat([]byte{'a'}, size)
	stream := clientFrame(&script{}, ws.Header{Fin: true, OpCode: ws.OpText}, msg)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	got := feed(t, tr, splitEvery(stream, 1), false)
	runtime.ReadMemStats(&after)
	if len(got.msgs) != 1 || got.msgs[0] != "t:"+string(msg) {
		t.Fatalf("got %v", got)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 256*size {
		t.Fatalf("reading a %d-byte message a byte at a time allocated %d bytes", size, alloc)
	}
}
