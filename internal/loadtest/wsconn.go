package loadtest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"
)

// WebSocket opcodes (RFC 6455 §5.2).
const (
	opContinuation = 0x0
	opText         = 0x1
	opBinary       = 0x2
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xA
)

// maxFrame bounds one frame the client accepts from the server.
const maxFrame = 16 << 20

// wsConn is a lean client-side WebSocket connection: a TCP socket, a
// handshake, masked writes and unmasked reads, no compression and no
// goroutine of its own. The bufio.Reader br is only needed while reading;
// an idle connection may hand its buffered bytes to pend and drop br.
type wsConn struct {
	nc net.Conn
	// sock is the socket once an epoll set reads it (takeSocket): nc is
	// closed then, and writes go here.
	sock         *os.File
	br           *bufio.Reader
	subprotocol  string
	wmu          sync.Mutex // serialises writes
	wbuf         []byte     // guarded by wmu
	pend         []byte     // unread bytes of an idle connection (no br)
	rbuf         []byte     // reused for frames read through br
	fragOp       byte       // opcode of a fragmented message being read
	frag         []byte     // its payload so far
	closedByPeer *closeError
	// appPing is set for servers that ping in the application protocol
	// (Centrifugo sends "{}" and wants "{}" back): such a message is
	// answered and not handed on.
	appPing bool
}

// closeError is a close frame received from the server.
type closeError struct {
	Code   int
	Reason string
}

func (e *closeError) Error() string {
	return fmt.Sprintf("closed by server: %d %s", e.Code, e.Reason)
}

// dialTCP connects to u's host (port 80 when u names none), which must be
// of scheme.
func dialTCP(ctx context.Context, u *url.URL, scheme string) (net.Conn, error) {
	if u.Scheme != scheme {
		return nil, fmt.Errorf("dial %s: only %s:// URLs are supported", u.Redacted(), scheme)
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "80")
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", host)
}

// dialWS opens a WebSocket to u (ws:// only), offering subprotocol when it
// is not empty. readBuf sizes the reader kept for the connection.
func dialWS(ctx context.Context, u *url.URL, subprotocol string, readBuf int) (*wsConn, error) {
	nc, err := dialTCP(ctx, u, "ws")
	if err != nil {
		return nil, err
	}
	c := &wsConn{nc: nc, br: bufio.NewReaderSize(nc, readBuf)}
	if err := c.handshake(ctx, u, subprotocol); err != nil {
		_ = nc.Close()
		return nil, err
	}
	return c, nil
}

func (c *wsConn) handshake(ctx context.Context, u *url.URL, subprotocol string) error {
	if dl, ok := ctx.Deadline(); ok {
		_ = c.nc.SetDeadline(dl)
		defer func() { _ = c.nc.SetDeadline(time.Time{}) }()
	}
	var key [16]byte
	binary.LittleEndian.PutUint64(key[:8], rand.Uint64())
	binary.LittleEndian.PutUint64(key[8:], rand.Uint64())
	k := base64.StdEncoding.EncodeToString(key[:])
	var b strings.Builder
	b.WriteString("GET " + u.RequestURI() + " HTTP/1.1\r\nHost: " + u.Host +
		"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + k + "\r\n")
	if subprotocol != "" {
		b.WriteString("Sec-WebSocket-Protocol: " + subprotocol + "\r\n")
	}
	b.WriteString("\r\n")
	if _, err := io.WriteString(c.nc, b.String()); err != nil {
		return fmt.Errorf("handshake: %w", err)
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return fmt.Errorf("handshake: %w", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
		_ = resp.Body.Close()
		return fmt.Errorf("handshake: %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	if resp.Header.Get("Sec-WebSocket-Accept") != acceptKey(k) {
		return errors.New("handshake: bad Sec-WebSocket-Accept")
	}
	if resp.Header.Get("Sec-WebSocket-Extensions") != "" {
		return errors.New("handshake: server chose an extension the client did not offer")
	}
	c.subprotocol = resp.Header.Get("Sec-WebSocket-Protocol")
	return nil
}

func acceptKey(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h[:])
}

// writeFrame writes one masked frame with FIN set.
func (c *wsConn) writeFrame(op byte, payload []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	b := append(c.wbuf[:0], 0x80|op)
	n := len(payload)
	switch {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n <= 0xFFFF:
		b = append(b, 0x80|126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	mask := rand.Uint32()
	b = binary.BigEndian.AppendUint32(b, mask)
	start := len(b)
	b = append(b, payload...)
	var m [4]byte
	binary.BigEndian.PutUint32(m[:], mask)
	for i := start; i < len(b); i++ {
		b[i] ^= m[(i-start)&3]
	}
	c.wbuf = b
	var err error
	if c.sock != nil {
		_, err = c.sock.Write(b)
	} else {
		_, err = c.nc.Write(b)
	}
	return err
}

// writeText writes one text frame.
func (c *wsConn) writeText(p []byte) error { return c.writeFrame(opText, p) }

// readMessage reads the next data message, answering pings on the way. A
// close frame from the server is returned as a *closeError. The payload is
// only valid until the next call.
func (c *wsConn) readMessage() (op byte, payload []byte, err error) {
	for {
		fin, op, p, err := readFrame(c.br, c.rbuf)
		if err != nil {
			return 0, nil, err
		}
		c.rbuf = p[:0]
		op, p, done, err := c.handleFrame(fin, op, p)
		if err != nil {
			return op, p, err
		}
		if done && !c.answeredAppPing(p) {
			return op, p, nil
		}
	}
}

// answeredAppPing answers an application-level ping ("{}", alone in its
// message or on a line of its own) and reports whether the message was
// nothing else.
func (c *wsConn) answeredAppPing(p []byte) bool {
	if !c.appPing || !bytes.Contains(p, appPing) {
		return false
	}
	only := true
	for line := range bytes.SplitSeq(p, []byte{'\n'}) {
		if bytes.Equal(line, appPing) {
			_ = c.writeText(appPing)
		} else if len(line) > 0 {
			only = false
		}
	}
	return only
}

var appPing = []byte("{}")

// handleFrame deals with control frames and fragments; done is true when a
// whole data message is ready.
func (c *wsConn) handleFrame(fin bool, op byte, p []byte) (byte, []byte, bool, error) {
	switch op {
	case opPing:
		return 0, nil, false, c.writeFrame(opPong, p)
	case opPong:
		return 0, nil, false, nil
	case opClose:
		ce := &closeError{Code: 1005}
		if len(p) >= 2 {
			ce.Code = int(binary.BigEndian.Uint16(p))
			ce.Reason = string(p[2:])
		}
		c.closedByPeer = ce
		return 0, nil, false, ce
	case opText, opBinary:
		if c.fragOp != 0 {
			return 0, nil, false, errors.New("websocket: new message inside a fragmented one")
		}
		if fin {
			return op, p, true, nil
		}
		c.fragOp, c.frag = op, append(c.frag[:0], p...)
		return 0, nil, false, nil
	case opContinuation:
		if c.fragOp == 0 {
			return 0, nil, false, errors.New("websocket: continuation without a message")
		}
		c.frag = append(c.frag, p...)
		if len(c.frag) > maxFrame {
			return 0, nil, false, errors.New("websocket: message too large")
		}
		if !fin {
			return 0, nil, false, nil
		}
		op, msg := c.fragOp, c.frag
		c.fragOp, c.frag = 0, nil
		return op, msg, true, nil
	default:
		return 0, nil, false, fmt.Errorf("websocket: unknown opcode %#x", op)
	}
}

// readFrame reads one frame from a server (unmasked) into buf's array
// when it is large enough.
func readFrame(r *bufio.Reader, buf []byte) (fin bool, op byte, payload []byte, err error) {
	var h [8]byte
	if _, err := io.ReadFull(r, h[:2]); err != nil {
		return false, 0, nil, err
	}
	fin, op = h[0]&0x80 != 0, h[0]&0x0F
	if h[0]&0x70 != 0 {
		return false, 0, nil, errors.New("websocket: reserved bits set (no extension was negotiated)")
	}
	if h[1]&0x80 != 0 {
		return false, 0, nil, errors.New("websocket: server frame is masked")
	}
	n := uint64(h[1] & 0x7F)
	switch n {
	case 126:
		if _, err := io.ReadFull(r, h[:2]); err != nil {
			return false, 0, nil, err
		}
		n = uint64(binary.BigEndian.Uint16(h[:2]))
	case 127:
		if _, err := io.ReadFull(r, h[:8]); err != nil {
			return false, 0, nil, err
		}
		n = binary.BigEndian.Uint64(h[:8])
	}
	if n > maxFrame {
		return false, 0, nil, fmt.Errorf("websocket: frame of %d bytes is too large", n)
	}
	if uint64(cap(buf)) >= n {
		payload = buf[:n]
	} else {
		payload = make([]byte, n)
	}
	if _, err := io.ReadFull(r, payload); err != nil {
		return false, 0, nil, err
	}
	return fin, op, payload, nil
}

// parseFrame parses one whole frame at the start of b; n is 0 when b holds
// only part of a frame.
func parseFrame(b []byte) (fin bool, op byte, payload []byte, n int, err error) {
	if len(b) < 2 {
		return false, 0, nil, 0, nil
	}
	fin, op = b[0]&0x80 != 0, b[0]&0x0F
	if b[0]&0x70 != 0 || b[1]&0x80 != 0 {
		return false, 0, nil, 0, errors.New("websocket: bad frame header")
	}
	size, hl := uint64(b[1]&0x7F), 2
	switch size {
	case 126:
		if len(b) < 4 {
			return false, 0, nil, 0, nil
		}
		size, hl = uint64(binary.BigEndian.Uint16(b[2:4])), 4
	case 127:
		if len(b) < 10 {
			return false, 0, nil, 0, nil
		}
		size, hl = binary.BigEndian.Uint64(b[2:10]), 10
	}
	if size > maxFrame {
		return false, 0, nil, 0, fmt.Errorf("websocket: frame of %d bytes is too large", size)
	}
	if uint64(len(b)-hl) < size {
		return false, 0, nil, 0, nil
	}
	end := hl + int(size)
	return fin, op, b[hl:end], end, nil
}

// detach drops the reader of a connection that will sit idle, keeping
// what it had buffered in pend.
func (c *wsConn) detach() {
	if c.br == nil {
		return
	}
	if n := c.br.Buffered(); n > 0 {
		b, _ := c.br.Peek(n)
		c.pend = append([]byte(nil), b...)
	}
	c.br = nil
}

// poll handles whatever an idle (detached) connection has received,
// without blocking: it answers pings and returns the error that ended the
// connection, if any.
func (c *wsConn) poll(buf []byte) error {
	for {
		n, rerr := readNow(c.nc, buf)
		if err := c.frames(buf[:n], nil); err != nil {
			return err
		}
		if rerr != nil {
			return rerr
		}
		if n < len(buf) {
			return nil
		}
	}
}

// frames handles the whole frames of c's unread bytes (pend) followed by
// b — answering pings, gathering fragments — and hands each data message
// to each, when set; the payload is valid only during the call. What is
// left, part of a frame, stays in pend for the bytes that follow; an
// empty pend is dropped, as an idle connection keeps none.
func (c *wsConn) frames(b []byte, each func(msg []byte)) error {
	if len(c.pend) > 0 {
		c.pend = append(c.pend, b...)
		b = c.pend
	}
	for len(b) > 0 {
		fin, op, p, used, err := parseFrame(b)
		if err != nil {
			return err
		}
		if used == 0 {
			break
		}
		b = b[used:]
		_, p, done, err := c.handleFrame(fin, op, p)
		if err != nil {
			return err
		}
		if done && !c.answeredAppPing(p) && each != nil {
			each(p)
		}
	}
	if len(b) == 0 {
		c.pend = nil
	} else {
		c.pend = append(c.pend[:0], b...) // moves b down when it is in pend
	}
	return nil
}

// close sends a normal close frame and closes the socket; not for a
// connection an epoll set took (takeSocket), which polled.close ends.
func (c *wsConn) close() {
	_ = c.nc.SetWriteDeadline(time.Now().Add(time.Second))
	_ = c.writeFrame(opClose, []byte{0x03, 0xE8}) // 1000
	_ = c.nc.Close()
}
