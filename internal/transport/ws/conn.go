package ws

import (
	"bytes"
	"errors"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"

	"github.com/heraldhq/herald/internal/protocol"
	"github.com/heraldhq/herald/internal/wire"
)

// Conn is one WebSocket connection.
type Conn struct {
	t           *Transport
	nc          net.Conn // Go's connection where herald does not own the socket (no event loop, or TLS); nil when it does
	sock        sock     // the socket herald owns when nc is nil
	h           Handler
	subprotocol string
	deflate     bool   // permessage-deflate; what herald sends is compressed message by message
	zipBits     uint8  // server_max_window_bits below 15, else 0: only messages of up to 2^zipBits bytes are compressed
	id          uint64 // the Transport's name for it, never reused

	lastRead     atomic.Int64 // coarse unix nanoseconds of the last bytes read
	writingSince atomic.Int64 // coarse unix nanoseconds a write started; 0 when none is in flight
	pinged       atomic.Bool  // a keepalive ping is outstanding
	closed       atomic.Bool  // the connection is gone; the Handler was told (set once, by gone)
	closing      atomic.Bool  // a close frame was sent or is on its way (set once)

	hmu    sync.Mutex // orders setting h with the connection ending
	handed bool       // setHandler was called
	isGone bool

	// Reader state, touched only by the one goroutine serving a readiness
	// event at a time. rmu is never contended (the poller arms a socket
	// for one event at a time); it makes that order visible to the memory
	// model, which knows nothing of epoll.
	rmu  sync.Mutex
	asm  *assembly // a frame or message not complete yet; nil between messages
	hist *history  // the client's window when it keeps its compression context; nil when it does not

	wmu sync.Mutex // one write on the socket at a time

	bmu     sync.Mutex // guards batch and writing
	batch   batch      // the batch Send handed over, not yet taken
	writing bool       // a batch is being written
}

// Subprotocol returns the negotiated subprotocol, "" for none.
func (c *Conn) Subprotocol() string { return c.subprotocol }

func (c *Conn) touch() {
	c.lastRead.Store(c.t.now.Load())
	c.pinged.Store(false)
}

// Send starts a write of what src has queued, without blocking the
// caller; when the write ends, or fails, it calls src.Written, which may
// call Send again. One write is in flight at a time: the caller waits for
// Written before the next Send. The payloads are taken (src.Take) when
// the write begins — by the connection's flusher when its turn comes, or
// by a writer goroutine while the socket is full — so that what was
// queued meanwhile goes in the same write. A push payload (Payload.Push)
// is framed — and compressed — once for all connections; in
// herald.v1.jsonl several payloads go out as one frame of lines. The
// frames of a write go to the socket in one write; a write that has
// not ended after WriteTimeout gets its connection closed by the
// keepalive sweep.
func (c *Conn) Send(src wire.Source) {
	c.writingSince.Store(c.t.now.Load())
	c.bmu.Lock()
	c.batch = batch{src: src}
	start := !c.writing
	c.writing = true
	c.bmu.Unlock()
	if start && (c.nc != nil || c.t.flusher == nil || !c.t.flusher.add(c)) { // flushers write only sockets herald owns
		go c.writer(batch{})
	}
}

// batch is one write: where its payloads come from, the payloads once
// taken, and their frames once prepared.
type batch struct {
	src   wire.Source
	ps    []*wire.Payload // taken, not framed yet; nil once prepare framed them
	bufs  net.Buffers     // the frames; may be shared with other connections: never modified
	lines *lineFrame      // the pooled frame bufs belongs to, if any
}

// prepare frames b's payloads, once.
func (c *Conn) prepare(b *batch) {
	ps := b.ps
	b.ps = nil
	switch {
	case len(ps) == 1 && ps[0].Push:
		b.bufs = ps[0].Prepared(newPrepared).(*prepared).get(c.zips(len(ps[0].Bytes))) // shared: written, never modified
	case len(ps) > 1 && c.subprotocol == protocol.SubprotocolJSONL:
		b.lines = c.lines(ps)
		b.bufs = b.lines.bufs
	default:
		for _, p := range ps {
			if p.Push {
				b.bufs = append(b.bufs, p.Prepared(newPrepared).(*prepared).get(c.zips(len(p.Bytes)))...)
				continue
			}
			b.bufs = c.frame(opcode(p), p.Bytes, b.bufs)
		}
	}
}

// compressesMuch reports whether framing ps means compressing more than
// maxFlusherZip bytes of replies for this connection alone (a push is
// compressed once for every connection, and is one message at most): a
// flusher hands such a batch to a writer goroutine rather than hold up
// every other connection's write while it compresses.
func (c *Conn) compressesMuch(ps []*wire.Payload) bool {
	if !c.deflate {
		return false
	}
	n := 0
	for _, p := range ps {
		if !p.Push && c.zips(len(p.Bytes)) {
			n += len(p.Bytes)
		}
	}
	return n > maxFlusherZip
}

// maxFlusherZip is the most bytes of replies a flusher compresses for one
// write (a history reply can be megabytes).
const maxFlusherZip = 64 << 10

// takeBatch takes the write Send started and its payloads (not framed
// yet); when there is none it ends the write cycle and reports false.
func (c *Conn) takeBatch() (batch, bool) {
	c.bmu.Lock()
	if !c.pendingLocked() {
		c.bmu.Unlock()
		return batch{}, false
	}
	b := c.batch
	c.batch = batch{}
	c.bmu.Unlock()
	b.ps = b.src.Take()
	return b, true
}

// hasBatch reports whether Send handed over another batch; when it has
// not, it ends the write cycle.
func (c *Conn) hasBatch() bool {
	c.bmu.Lock()
	defer c.bmu.Unlock()
	return c.pendingLocked()
}

// pendingLocked reports whether a batch waits; when none does, the write
// cycle ends: the next Send starts one.
func (c *Conn) pendingLocked() bool {
	if c.batch.src == nil {
		c.writing = false
		return false
	}
	return true
}

// writer writes b, if it is set (taken already, framed or not), and then
// batches while Send keeps starting them (Written usually starts the next
// one at once), waiting for the socket as long as it takes; then it ends.
// It serves connections a flusher cannot: those whose socket is full,
// those with much to compress, or that have no event loop.
func (c *Conn) writer(b batch) {
	for {
		if b.src == nil {
			var ok bool
			if b, ok = c.takeBatch(); !ok {
				return
			}
		}
		c.prepare(&b)
		bufs := slices.Clone(b.bufs) // writing consumes the slice, which may be shared
		c.finish(b, c.write(&bufs))
		b = batch{}
	}
}

// writeRest writes rest, what the socket did not take of b at once, with
// wmu held by the caller, which hands it over; then it goes on as c's
// writer.
func (c *Conn) writeRest(b batch, rest net.Buffers) {
	bufs := slices.Clone(rest) // writing consumes the slice, which may be shared
	err := c.writeLocked(&bufs)
	c.wmu.Unlock()
	c.finish(b, err)
	c.writer(batch{})
}

// finish ends a batch once it is written or has failed.
func (c *Conn) finish(b batch, err error) {
	if b.lines != nil {
		b.lines.release()
	}
	c.writingSince.Store(0)
	if err == nil && (c.closed.Load() || c.closing.Load()) {
		err = errClosed
	}
	b.src.Written(err)
}

// lineFrame is one herald.v1.jsonl frame of several payloads, built
// without copying them: its header, then each payload's bytes with a
// newline between. On a connection that compresses, each payload is
// compressed on its own — once for every connection, when it is a push —
// and the pieces are joined by empty stored blocks (RFC 1951 3.2.4), which
// keeps them one deflate stream. Pooled: a batch allocates nothing.
type lineFrame struct {
	bufs net.Buffers
	hdr  sliceWriter
}

var lineFrames = sync.Pool{New: func() any { return &lineFrame{hdr: sliceWriter{b: make([]byte, 0, ws.MaxHeaderSize)}} }}

// lines returns ps framed as one message of lines.
func (c *Conn) lines(ps []*wire.Payload) *lineFrame {
	zip := c.deflate
	for _, p := range ps {
		zip = zip && c.fits(len(p.Bytes))
	}
	sep := newline
	if zip {
		sep = zippedNewline
	}
	f := lineFrames.Get().(*lineFrame)
	f.bufs = append(f.bufs[:0], nil) // the header, once the length is known
	n := 0
	for i, p := range ps {
		if i > 0 {
			f.bufs = append(f.bufs, sep)
			n += len(sep)
		}
		body := p.Bytes
		if zip {
			body = zippedBody(p)
		}
		f.bufs = append(f.bufs, body)
		n += len(body)
	}
	h := ws.Header{Fin: true, OpCode: ws.OpText, Length: int64(n), Rsv: ws.Rsv(zip, false, false)}
	f.hdr.b = f.hdr.b[:0]
	_ = ws.WriteHeader(&f.hdr, h)
	f.bufs[0] = f.hdr.b
	return f
}

// release returns f to the pool once its frame is written.
func (f *lineFrame) release() {
	clear(f.bufs) // keep no payload alive
	if cap(f.bufs) <= 1024 {
		lineFrames.Put(f)
	}
}

// sliceWriter appends what is written to b.
type sliceWriter struct{ b []byte }

func (w *sliceWriter) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}

// zippedBody returns p's bytes compressed on their own, without the tail
// that would end the stream.
func zippedBody(p *wire.Payload) []byte {
	if p.Push {
		return p.Prepared(newPrepared).(*prepared).zippedBody()
	}
	return compress(p.Bytes)
}

// write writes bufs to the socket, whole: no other write goes between
// their bytes. A failure ends the connection.
func (c *Conn) write(bufs *net.Buffers) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.writeLocked(bufs)
}

// writeLocked is write with wmu held.
func (c *Conn) writeLocked(bufs *net.Buffers) error {
	if c.closed.Load() {
		return errClosed
	}
	// No deadline per write: the keepalive sweep ends a connection whose
	// write has taken longer than WriteTimeout.
	if err := c.writeAll(bufs, 0, true); err != nil {
		go c.gone() // not under wmu: gone waits for nothing, but keep writes short
		return err
	}
	return nil
}

// writeAll writes bufs whole, with wmu held, waiting for the socket as
// long as it takes — or timeout, when it is not 0 — and tells Traffic of
// the bytes written when count is set.
func (c *Conn) writeAll(bufs *net.Buffers, timeout time.Duration, count bool) error {
	if c.nc == nil {
		return c.writeRaw(bufs, timeout, count)
	}
	if timeout > 0 {
		_ = c.nc.SetWriteDeadline(time.Now().Add(timeout))
		defer func() { _ = c.nc.SetWriteDeadline(time.Time{}) }()
	}
	n, err := bufs.WriteTo(c.nc)
	if count {
		c.t.traffic(0, int(n))
	}
	return err
}

// respond writes an HTTP response on the hijacked connection within
// HandshakeTimeout, with wmu held.
func (c *Conn) respond(resp []byte) error {
	bufs := net.Buffers{resp}
	return c.writeAll(&bufs, c.t.cfg.HandshakeTimeout, false)
}

// frame appends the frame of one message to bufs — its header, then the
// payload itself, not copied — compressed when the connection compresses.
func (c *Conn) frame(op ws.OpCode, payload []byte, bufs net.Buffers) net.Buffers {
	zip := c.zips(len(payload))
	if zip {
		payload = compress(payload)
	}
	return append(bufs, header(op, len(payload), zip), payload)
}

// zips reports whether a message of n bytes goes out compressed: on a
// connection that compresses, when it is worth it and fits the window.
func (c *Conn) zips(n int) bool { return c.deflate && n >= minCompress && c.fits(n) }

// fits reports whether a message of n bytes, compressed on its own, keeps
// within the window the client asked for (server_max_window_bits): no
// back-reference can reach further back than the message is long.
func (c *Conn) fits(n int) bool { return c.zipBits == 0 || n <= 1<<c.zipBits }

// header encodes the header of a final, unmasked frame.
func header(op ws.OpCode, n int, zip bool) []byte {
	h := ws.Header{Fin: true, OpCode: op, Length: int64(n)}
	if zip {
		h.Rsv = ws.Rsv(true, false, false)
	}
	b := bytes.NewBuffer(make([]byte, 0, ws.MaxHeaderSize))
	_ = ws.WriteHeader(b, h)
	return b.Bytes()
}

// control writes a control frame (ping, pong, close; never compressed)
// without waiting, then runs then. A frame with nothing to run after it
// goes out at once when no other write is under way and the socket takes
// it (an idle connection's ping: a sweep pings thousands); the rest is
// written on a goroutine of its own.
func (c *Conn) control(op ws.OpCode, payload []byte, then func()) {
	bufs := controlFrame(op, payload)
	if then == nil && c.writeIdle(&bufs) {
		return
	}
	go func() {
		_ = c.write(&bufs)
		if then != nil {
			then()
		}
	}()
}

// writeIdle writes bufs without waiting when nothing else is being
// written, and reports whether it is done with them. When the socket
// takes part of them only, a goroutine writes the rest, holding the write
// lock until it has (frames are never interleaved); when it takes none,
// bufs are left to the caller.
func (c *Conn) writeIdle(bufs *net.Buffers) bool {
	if c.nc != nil || !c.wmu.TryLock() {
		return false
	}
	if c.closed.Load() {
		c.wmu.Unlock()
		return true // as write would: nothing goes out
	}
	var s sender
	rest, n, err := s.writeNow(c, *bufs)
	if n > 0 {
		c.t.traffic(0, n)
	}
	switch {
	case err != nil:
		c.wmu.Unlock()
		go c.gone()
		return true
	case len(rest) == 0:
		c.wmu.Unlock()
		return true
	case n == 0:
		c.wmu.Unlock()
		return false
	}
	*bufs = rest
	go func() {
		defer c.wmu.Unlock()
		_ = c.writeLocked(bufs)
	}()
	return true
}

func controlFrame(op ws.OpCode, payload []byte) net.Buffers {
	return net.Buffers{header(op, len(payload), false), payload}
}

// Close sends a close frame with code and reason and closes the
// connection, without blocking. A peer that does not read gets WriteTimeout
// to take the frame; then the socket is closed regardless.
func (c *Conn) Close(code int, reason string) {
	if !c.closing.CompareAndSwap(false, true) {
		return
	}
	timer := time.AfterFunc(c.t.cfg.WriteTimeout, c.gone)
	body := ws.NewCloseFrameBody(ws.StatusCode(code), protocol.CloseReason(reason))
	c.control(ws.OpClose, body, func() {
		timer.Stop()
		c.gone()
	})
}

// setHandler gives c its Handler, nil when accept failed; one that
// arrives after c ended is released at once.
func (c *Conn) setHandler(h Handler) {
	c.hmu.Lock()
	c.h, c.handed = h, true
	over := c.isGone
	c.hmu.Unlock()
	if over {
		c.release(h)
	}
}

// gone ends the connection, once, whoever sees the end first: it leaves
// the poller and closes the socket at once, and tells the Handler on a
// goroutine of its own, since its Close may wait (on a broker, say): the
// keepalive sweep that finds many connections dead, or any other caller,
// never waits for it. Every path that closes the socket goes through
// here, since the poller reports nothing for a socket closed under it.
func (c *Conn) gone() {
	if !c.closed.CompareAndSwap(false, true) {
		return
	}
	if c.t.loop != nil {
		c.t.loop.remove(c)
	}
	if c.nc != nil {
		_ = c.nc.Close()
	} else {
		c.sock.close()
	}
	c.hmu.Lock()
	c.isGone = true
	h, handed := c.h, c.handed
	c.hmu.Unlock()
	if handed {
		go c.release(h)
	}
}

// release tells h, if set, that c is gone, then forgets c: until then c
// counts as open, so that WaitEmpty waits for its Handler too.
func (c *Conn) release(h Handler) {
	defer c.t.forget(c)
	defer func() {
		if v := recover(); v != nil {
			c.t.cfg.Logger.Error("panic in connection handler", "panic", v)
		}
	}()
	if h != nil {
		h.Close()
	}
}

// readBlocking reads once, waiting for data: the reader of a connection
// whose socket stays Go's.
func (c *Conn) readBlocking(buf []byte) bool {
	n, err := c.nc.Read(buf)
	if n > 0 {
		c.touch()
		c.t.traffic(n, 0)
		if !c.consume(buf[:n]) {
			return false
		}
	}
	return err == nil
}

// consume parses data (after what was pending) into frames and handles
// them; what is left of an incomplete frame stays pending. It reports
// false when the connection must end.
func (c *Conn) consume(data []byte) bool {
	a := c.asm
	kept := a != nil && len(a.pend) > 0
	if kept {
		data = append(a.pend, data...) // amortized: a frame that trickles in is not copied per read
	}
	for len(data) > 0 {
		r := bytes.NewReader(data)
		h, err := ws.ReadHeader(r)
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				break // incomplete header
			}
			return c.fail(ws.StatusProtocolError, "bad frame header")
		}
		state := ws.StateServerSide
		if c.deflate {
			state |= ws.StateExtended
		}
		fragSize := 0
		if c.asm != nil && c.asm.op != 0 {
			state |= ws.StateFragmented
			fragSize = len(c.asm.msg)
		}
		if err := ws.CheckHeader(h, state); err != nil {
			return c.fail(ws.StatusProtocolError, err.Error())
		}
		// CheckHeader lets any RSV bit through once an extension is
		// negotiated; permessage-deflate defines RSV1 alone, on the first
		// frame of a data message alone (RFC 7692 6).
		if h.Rsv2() || h.Rsv3() || h.Rsv1() && (h.OpCode.IsControl() || h.OpCode == ws.OpContinuation) {
			return c.fail(ws.StatusProtocolError, "unexpected RSV bits")
		}
		if h.Length > int64(c.t.cfg.MaxMessageSize) || (h.OpCode.IsData() || h.OpCode == ws.OpContinuation) && int64(fragSize)+h.Length > int64(c.t.cfg.MaxMessageSize) {
			c.t.refused("too_large")
			return c.fail(ws.StatusMessageTooBig, "message too big")
		}
		hlen := len(data) - r.Len()
		if int64(len(data)-hlen) < h.Length {
			break // incomplete payload
		}
		payload := data[hlen : hlen+int(h.Length)]
		data = data[hlen+int(h.Length):]
		ws.Cipher(payload, h.Mask, 0)
		if !c.handleFrame(h, payload) {
			return false
		}
	}
	switch {
	case len(data) == 0:
		if c.asm != nil {
			c.asm.pend = nil
			c.tidy()
		}
	case kept:
		c.asm.pend = data // the end of pend's own array
	default:
		c.assembling().pend = append([]byte(nil), data...) // data is the caller's buffer
	}
	return true
}

// assembly is what a connection holds of input not complete yet: the
// bytes of a frame that has not fully arrived, and the fragments of a
// message whose last frame has not. Most connections read whole messages
// in one frame and one read, and never need one: it is made when first
// needed and dropped once it is empty again (tidy).
type assembly struct {
	pend []byte    // bytes of an incomplete frame
	op   ws.OpCode // the fragmented message's opcode; 0 when none is under way
	zip  bool      // the fragmented message is compressed
	msg  []byte    // its payload so far
}

// assembling returns c's assembly, making it when c has none.
func (c *Conn) assembling() *assembly {
	if c.asm == nil {
		c.asm = &assembly{}
	}
	return c.asm
}

// tidy drops c's assembly once nothing is left in it.
func (c *Conn) tidy() {
	if a := c.asm; a != nil && len(a.pend) == 0 && a.op == 0 {
		c.asm = nil
	}
}

// handleFrame handles one complete frame.
func (c *Conn) handleFrame(h ws.Header, payload []byte) bool {
	switch h.OpCode {
	case ws.OpPing:
		// Answered before anything read after it is handled, so a pong
		// keeps its place among the replies.
		bufs := controlFrame(ws.OpPong, payload)
		_ = c.write(&bufs)
		return true
	case ws.OpPong:
		return true
	case ws.OpClose:
		code, reason := ws.ParseCloseFrameData(payload)
		if len(payload) > 0 {
			if err := ws.CheckCloseFrameData(code, reason); err != nil {
				return c.fail(ws.StatusProtocolError, "bad close frame")
			}
		}
		echo := ws.NewCloseFrameBody(code, "")
		if len(payload) == 0 {
			echo = nil
		}
		if c.closing.CompareAndSwap(false, true) {
			c.control(ws.OpClose, echo, c.gone)
		}
		return false
	}
	if h.Fin && h.OpCode != ws.OpContinuation { // a message in one frame
		return c.message(h.OpCode, h.Rsv1(), payload)
	}
	a := c.assembling()
	if h.OpCode != ws.OpContinuation { // the first frame of a fragmented message
		a.op, a.zip = h.OpCode, h.Rsv1()
	}
	a.msg = append(a.msg, payload...)
	if !h.Fin {
		return true
	}
	op, zip, msg := a.op, a.zip, a.msg
	a.op, a.zip, a.msg = 0, false, nil
	c.tidy()
	return c.message(op, zip, msg)
}

// message handles one complete message of opcode op, compressed when zip
// is set.
func (c *Conn) message(op ws.OpCode, zip bool, msg []byte) bool {
	if zip {
		var err error
		var hist []byte
		if c.hist != nil {
			hist = c.hist.b
		}
		if msg, err = decompress(msg, hist, c.t.cfg.MaxMessageSize); err != nil {
			if errors.Is(err, errTooBig) {
				c.t.refused("too_large")
				return c.fail(ws.StatusMessageTooBig, "message too big")
			}
			return c.fail(ws.StatusInvalidFramePayloadData, "bad compressed data")
		}
		if c.hist != nil {
			c.hist.add(msg)
		}
	}
	if op == ws.OpText {
		if !utf8.Valid(msg) {
			return c.fail(ws.StatusInvalidFramePayloadData, "invalid UTF-8")
		}
		c.h.HandleText(msg)
	} else {
		c.h.HandleBinary(msg)
	}
	return true
}

// fail closes the connection with code for a peer's protocol error.
func (c *Conn) fail(code ws.StatusCode, reason string) bool {
	c.Close(int(code), reason)
	return false
}

func opcode(p *wire.Payload) ws.OpCode {
	if p.Binary {
		return ws.OpBinary
	}
	return ws.OpText
}

// prepared is a push payload's frame, made once for every connection
// that sends it: plain, and compressed for connections that compress. Each
// form is kept as a batch of one buffer, which connections share: a
// broadcast allocates nothing per connection.
type prepared struct {
	p         *wire.Payload
	plainOnce sync.Once
	zipOnce   sync.Once
	plain     net.Buffers
	zipped    net.Buffers // a compressed frame
	zbody     []byte      // zipped's payload, for frames of lines
}

func newPrepared(p *wire.Payload) any { return &prepared{p: p} }

// get returns the frame, compressed when zip is set, as a batch of one
// buffer, which the caller must not modify.
func (f *prepared) get(zip bool) net.Buffers {
	if zip {
		f.zip()
		return f.zipped
	}
	f.plainOnce.Do(func() {
		f.plain = net.Buffers{append(header(opcode(f.p), len(f.p.Bytes), false), f.p.Bytes...)}
	})
	return f.plain
}

// zippedBody returns the compressed payload without a frame header.
func (f *prepared) zippedBody() []byte {
	f.zip()
	return f.zbody
}

func (f *prepared) zip() {
	f.zipOnce.Do(func() {
		z := compress(f.p.Bytes)
		h := header(opcode(f.p), len(z), true)
		frame := append(h, z...)
		f.zipped, f.zbody = net.Buffers{frame}, frame[len(h):]
	})
}
