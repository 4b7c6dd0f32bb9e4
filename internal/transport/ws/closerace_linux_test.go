package ws

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/heraldhq/herald/internal/wire"
	"github.com/heraldhq/herald/internal/wire/wiretest"
)

// Connections closed while flushers write to them, writers wait for their
// sockets to drain and readers read them — as new connections arrive and
// take the descriptors they leave — never touch another connection's
// socket: each client receives only its own connection's frames, whole,
// and each server connection is handed only its own client's messages.
// Every client tags what it sends, and its server connection sends the
// tag back over and over, the client answering each frame with its tag; half the clients read nothing until their
// connection is closed, so that their server connections have a writer
// waiting for room when the close comes.
func TestCloseUnderLoadSparesReusedDescriptors(t *testing.T) {
	const rounds, perRound = 40, 8
	var wrong atomic.Int32
	report := func(format string, args ...any) {
		if wrong.Add(1) <= 5 {
			t.Errorf(format, args...)
		}
	}
	var tagged sync.Map // tag → *tagEcho
	cfg := Config{PingInterval: time.Hour, DisableCompression: true}
	var partial sync.Map // *Conn whose socket a write filled → true
	cfg.hooks.partialWrite = func(c *Conn) { partial.Store(c, true) }
	_, url := serveWith(t, cfg, nil, func(c *Conn) Handler {
		return &tagEcho{c: c, tagged: &tagged, report: report}
	})

	var clients sync.WaitGroup
	var prev []pair
	for round := range rounds {
		var pairs []pair
		for i := range perRound {
			tag := fmt.Sprintf("r%dc%d;", round, i)
			stalled := i%2 == 1
			var conn net.Conn
			if stalled {
				conn = smallReader(t, url)
			}
			nc, br := dialWS(t, url, conn)
			cl := &tagClient{nc: nc, br: br, tag: []byte(tag), stalled: stalled, report: report, start: make(chan struct{})}
			writeClientFrame(t, nc, ws.OpText, cl.tag)
			clients.Add(1)
			go cl.read(&clients)
			var h *tagEcho
			waitFor(t, "the server connection of "+tag, func() bool {
				v, ok := tagged.Load(tag)
				if ok {
					h = v.(*tagEcho)
				}
				return ok
			})
			pairs = append(pairs, pair{h, cl})
		}
		// The last round's connections are closed while this one's
		// start.
		closePairs(prev)
		for _, p := range pairs {
			if p.cl.stalled {
				waitFor(t, "a full socket for "+string(p.cl.tag), func() bool { _, ok := partial.Load(p.h.c); return ok })
			} else {
				waitFor(t, "frames for "+string(p.cl.tag), func() bool { return p.cl.frames.Load() >= 2 })
			}
		}
		prev = pairs
	}
	closePairs(prev)
	clients.Wait()
	if n := wrong.Load(); n > 0 {
		t.Fatalf("%d frames or messages reached the wrong connection", n)
	}
}

// pair is a server connection's Handler and its client.
type pair struct {
	h  *tagEcho
	cl *tagClient
}

// closePairs closes the server connections of ps, all at once, half of
// them with a close frame and half without, and then lets their stalled
// clients read.
func closePairs(ps []pair) {
	var wg sync.WaitGroup
	for i, p := range ps {
		wg.Go(func() {
			if i%4 < 2 {
				p.h.c.gone()
			} else {
				p.h.c.Close(1000, "bye")
			}
		})
	}
	wg.Wait()
	for _, p := range ps {
		close(p.cl.start)
	}
}

// tagEcho is a server connection's Handler: it learns its client's tag
// from the first message, then sends frames of the tag over and over,
// and checks that every later message is the tag too.
type tagEcho struct {
	c      *Conn
	tagged *sync.Map
	report func(format string, args ...any)
	tag    []byte
	sends  int
}

func (h *tagEcho) Opened() {}

func (h *tagEcho) HandleText(b []byte) {
	if h.tag == nil {
		h.tag = append([]byte(nil), b...)
		if err := sendBuffer(h.c, 4<<10); err != nil { // writes fill it often: some wait for room
			h.report("the server connection of %q: %v", b, err)
		}
		h.tagged.Store(string(b), h)
		h.sent(nil)
		return
	}
	if !bytes.Equal(b, h.tag) {
		h.report("the server connection of %q was handed %q", h.tag, b)
	}
}

func (h *tagEcho) HandleBinary(b []byte) {
	h.report("the server connection of %q was handed binary %q", h.tag, b)
}

func (h *tagEcho) Close() {}

// sent sends the next frame of tags, of 1 to 64 KiB, once the last one is
// written; an error ends the sending.
func (h *tagEcho) sent(err error) {
	if err != nil {
		return
	}
	h.sends++
	size := 1 << (10 + h.sends%7)
	h.c.Send(wiretest.Batch([]*wire.Payload{{Bytes: bytes.Repeat(h.tag, size/len(h.tag))}}, h.sent))
}

// tagClient is a client that checks that every frame it receives is made
// of its tag alone, and answers each with its tag, unless it is stalled.
type tagClient struct {
	nc      net.Conn
	br      *bufio.Reader
	tag     []byte
	stalled bool // reads nothing until its connection is closed
	report  func(format string, args ...any)
	frames  atomic.Int32
	start   chan struct{}
}

func (c *tagClient) read(wg *sync.WaitGroup) {
	defer wg.Done()
	defer func() { _ = c.nc.Close() }()
	if c.stalled {
		<-c.start // until the server closes the connection, its socket's buffers fill
	}
	for {
		_ = c.nc.SetReadDeadline(time.Now().Add(waitTimeout))
		f, err := ws.ReadFrame(c.br)
		if err != nil {
			if !endedByServer(err) {
				c.report("client %q: %v", c.tag, err)
			}
			return
		}
		switch f.Header.OpCode {
		case ws.OpClose:
			return
		case ws.OpText:
			for p := f.Payload; len(p) > 0; p = p[len(c.tag):] {
				if !bytes.HasPrefix(p, c.tag) {
					c.report("client %q received %q", c.tag, p[:min(len(p), 32)])
					return
				}
			}
			c.frames.Add(1)
			if !c.stalled && !c.send() {
				return
			}
		default:
			c.report("client %q received a frame of opcode %v", c.tag, f.Header.OpCode)
			return
		}
	}
}

// send sends the client's tag; it reports false once the connection is
// over.
func (c *tagClient) send() bool {
	_ = c.nc.SetWriteDeadline(time.Now().Add(waitTimeout))
	err := ws.WriteFrame(c.nc, ws.MaskFrame(ws.NewTextFrame(c.tag)))
	if err != nil && !endedByServer(err) {
		c.report("client %q: %v", c.tag, err)
	}
	return err == nil
}

// endedByServer reports whether err is how a connection the server
// closed ends for its client.
func endedByServer(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}
