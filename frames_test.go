package herald_test

// A client that writes and reads WebSocket frames by hand over a plain TCP
// socket, for tests whose peer misbehaves on purpose: one that stops
// reading, or floods commands. The transport's own frame rules (RFC 6455)
// are tested in internal/transport/ws.

import (
	"bufio"
	"crypto/rand"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"github.com/heraldhq/herald/heraldtest"
)

// opText is the opcode of a text frame.
const opText = 0x1

type frameConn struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
	// wait is how long a read waits for a frame; 0: heraldtest.Timeout.
	wait time.Duration
}

func dialFrames(t *testing.T, base, path string) *frameConn {
	c := dialSilent(t, base, path)
	return &frameConn{t: t, c: c, br: bufio.NewReader(c)}
}

// write sends one masked frame.
func (f *frameConn) write(fin bool, op byte, payload []byte) {
	f.t.Helper()
	_ = f.c.SetWriteDeadline(time.Now().Add(heraldtest.Timeout))
	if _, err := f.c.Write(clientFrame(fin, op, payload)); err != nil {
		f.t.Fatalf("write frame: %v", err)
	}
}

// clientFrame is one frame as a client sends it: masked.
func clientFrame(fin bool, op byte, payload []byte) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	hdr := []byte{b0}
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
	for i, b := range payload {
		hdr = append(hdr, b^mask[i%4])
	}
	return hdr
}

// read returns the next frame from the server (servers never mask).
func (f *frameConn) read() (fin bool, op byte, payload []byte) {
	f.t.Helper()
	wait := f.wait
	if wait == 0 {
		wait = heraldtest.Timeout
	}
	_ = f.c.SetReadDeadline(time.Now().Add(wait))
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
