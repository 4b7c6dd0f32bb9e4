//go:build !linux

package ws

import (
	"errors"
	"net"
	"time"
)

// poller is the event loop, which only Linux has here; elsewhere every
// connection has a reading goroutine, and its socket stays Go's (Conn.nc).
type poller struct{}

func newPoller(*Transport) (*poller, error) { return nil, errors.New("no epoll on this system") }

func (p *poller) add(*Conn) error   { return errors.New("no event loop") }
func (p *poller) rearm(*Conn) error { return errors.New("no event loop") }
func (p *poller) remove(*Conn)      {}
func (p *poller) close()            {}

// detach is never called without the event loop: sockets stay Go's.
func detach(net.Conn) (int, error) { return -1, errors.New("no event loop") }

// closeFD is never called: no socket is herald's own here.
func closeFD(int) {}

// readable is never called without the event loop.
func (c *Conn) readable([]byte) bool { return false }

// writeRaw is never called: no socket is herald's own here.
func (c *Conn) writeRaw(*net.Buffers, time.Duration, bool) error { return errClosed }

// sender is what a flusher needs to write: here only the setting the
// flushers give it, for they never write (see writeNow).
type sender struct{ gather bool }

// writeNow is never called without the event loop: no flusher runs.
func (s *sender) writeNow(_ *Conn, bufs net.Buffers) (net.Buffers, int, error) { return bufs, 0, nil }
