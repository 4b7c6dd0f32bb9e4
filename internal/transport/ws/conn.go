package ws

import (
	"bytes"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lxzan/gws"

	"github.com/heraldhq/herald/internal/hub"
	"github.com/heraldhq/herald/internal/protocol"
)

// Conn is one WebSocket connection.
type Conn struct {
	t  *Transport
	gc *gws.Conn
	h  Handler

	lastRead     atomic.Int64 // coarse unix nanoseconds of the last frame read
	writingSince atomic.Int64 // coarse unix nanoseconds a batch started; 0 when none is in flight
	pinged       atomic.Bool  // a keepalive ping is outstanding
	closed       atomic.Bool  // the read loop has ended
	closing      atomic.Bool  // Close was called
	once         sync.Once

	// The batch in flight: its completion callback, its joined lines, and
	// c.sent bound once so that queueing it does not allocate.
	done   func(error)
	buf    *bytes.Buffer
	sentFn func()
}

// Subprotocol returns the negotiated subprotocol, "" for none.
func (c *Conn) Subprotocol() string { return c.gc.SubProtocol() }

// Send queues ps on the connection's writer, in order, without blocking,
// and calls done on the writer once they are written or have failed; done
// may call Send again. One batch is in flight at a time: the caller waits
// for done before the next Send. A payload shared by many connections is
// framed — and compressed — once for all of them. In herald.v1.jsonl,
// several payloads go out as one frame of lines.
//
// The writer is gws's write queue: a goroutine that exists only while there
// is something to write. A batch still unwritten after WriteTimeout gets its
// connection closed by the keepalive sweep.
func (c *Conn) Send(ps []*hub.Payload, done func(error)) {
	c.done = done
	c.writingSince.Store(c.t.now.Load())
	if len(ps) > 1 && c.gc.SubProtocol() == protocol.SubprotocolJSONL {
		c.buf = c.t.bufs.Get().(*bytes.Buffer)
		for i, p := range ps {
			if i > 0 {
				c.buf.WriteByte('\n')
			}
			c.buf.Write(p.Bytes)
		}
		c.gc.WriteAsync(gws.OpcodeText, c.buf.Bytes(), nil)
	} else {
		for _, p := range ps {
			if p.Shared {
				_ = p.Prepared(newBroadcaster).(*gws.Broadcaster).Broadcast(c.gc)
				continue
			}
			c.gc.WriteAsync(opcode(p), p.Bytes, nil)
		}
	}
	c.gc.Async(c.sentFn)
}

// sent runs on the writer after a batch's frames.
func (c *Conn) sent() {
	c.writingSince.Store(0)
	if c.buf != nil {
		c.t.putBuffer(c.buf)
		c.buf = nil
	}
	var err error
	if c.closed.Load() || c.closing.Load() {
		err = errClosed
	}
	done := c.done
	c.done = nil
	done(err)
}

func newBroadcaster(p *hub.Payload) any { return gws.NewBroadcaster(opcode(p), p.Bytes) }

func opcode(p *hub.Payload) gws.Opcode {
	if p.Binary {
		return gws.OpcodeBinary
	}
	return gws.OpcodeText
}

// Close sends a close frame with code and reason and closes the
// connection, without blocking. A peer that does not read gets WriteTimeout
// to take the frame; then the socket is closed regardless.
func (c *Conn) Close(code int, reason string) {
	c.once.Do(func() {
		c.closing.Store(true)
		_ = c.gc.SetWriteDeadline(time.Now().Add(c.t.cfg.WriteTimeout))
		time.AfterFunc(c.t.cfg.WriteTimeout, func() { _ = c.gc.NetConn().Close() })
		go func() { _ = c.gc.WriteClose(uint16(code), []byte(protocol.CloseReason(reason))) }()
	})
}

// events is gws's event handler, shared by all connections.
type events struct{ t *Transport }

func conn(gc *gws.Conn) *Conn {
	v, _ := gc.Session().Load("")
	return v.(*Conn)
}

func (e *events) OnOpen(*gws.Conn) {}

func (e *events) OnClose(gc *gws.Conn, err error) {
	var coded interface{ Uint16() uint16 }
	if errors.As(err, &coded) && coded.Uint16() == 1009 {
		e.t.refused("too_large")
	}
	c := conn(gc)
	c.closed.Store(true)
	e.t.forget(c)
	c.h.Close()
}

func (e *events) OnPing(gc *gws.Conn, payload []byte) {
	c := conn(gc)
	c.touch()
	gc.WriteAsync(gws.OpcodePong, payload, nil)
}

func (e *events) OnPong(gc *gws.Conn, _ []byte) { conn(gc).touch() }

func (e *events) OnMessage(gc *gws.Conn, m *gws.Message) {
	defer m.Close()
	c := conn(gc)
	c.touch()
	if m.Opcode == gws.OpcodeBinary {
		c.h.HandleBinary(m.Bytes())
		return
	}
	c.h.HandleText(m.Bytes())
}

func (c *Conn) touch() {
	c.lastRead.Store(c.t.now.Load())
	c.pinged.Store(false)
}
