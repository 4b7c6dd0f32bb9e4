package ws

import (
	"bytes"
	"net"
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

	lastRead atomic.Int64 // coarse unix nanoseconds of the last frame read
	pinged   atomic.Bool  // a keepalive ping is outstanding
	closed   atomic.Bool  // the read loop has ended
	closing  atomic.Bool  // Close was called
	once     sync.Once

	written chan struct{} // signalled when a batch has gone through gws's write queue
}

// Subprotocol returns the negotiated subprotocol, "" for none.
func (c *Conn) Subprotocol() string { return c.gc.SubProtocol() }

// RemoteAddr returns the peer's address.
func (c *Conn) RemoteAddr() net.Addr { return c.gc.RemoteAddr() }

// WriteBatch writes ps in order and waits until they are written. A payload
// shared by many connections is framed — and compressed — once for all of
// them. In herald.v1.jsonl, several payloads go out as one frame of lines.
// It must not be called concurrently.
func (c *Conn) WriteBatch(ps []*hub.Payload) error {
	if c.closed.Load() {
		return errClosed
	}
	_ = c.gc.SetWriteDeadline(time.Now().Add(c.t.cfg.WriteTimeout))
	if len(ps) > 1 && c.gc.SubProtocol() == protocol.SubprotocolJSONL {
		buf := c.t.bufs.Get().(*bytes.Buffer)
		defer c.t.putBuffer(buf) // after the wait below: gws has written it
		for i, p := range ps {
			if i > 0 {
				buf.WriteByte('\n')
			}
			buf.Write(p.Bytes)
		}
		c.gc.WriteAsync(gws.OpcodeText, buf.Bytes(), nil)
	} else {
		for _, p := range ps {
			if p.Shared {
				_ = p.Prepared(newBroadcaster).(*gws.Broadcaster).Broadcast(c.gc)
				continue
			}
			c.gc.WriteAsync(opcode(p), p.Bytes, nil)
		}
	}
	c.gc.Async(c.batchDone)
	<-c.written
	if c.closed.Load() {
		return errClosed
	}
	return nil
}

// batchDone runs in gws's write queue after a batch's frames. It clears the
// batch's deadline unless the connection is closing, whose deadline bounds
// the close frame.
func (c *Conn) batchDone() {
	if !c.closing.Load() {
		_ = c.gc.SetWriteDeadline(time.Time{})
	}
	c.written <- struct{}{}
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

func (e *events) OnClose(gc *gws.Conn, _ error) {
	c := conn(gc)
	c.closed.Store(true)
	e.t.mu.Lock()
	delete(e.t.conns, c)
	e.t.mu.Unlock()
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
