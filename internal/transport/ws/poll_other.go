//go:build !linux

package ws

import (
	"errors"
	"net"
)

// poller is the event loop, which only Linux has here; elsewhere every
// connection has a reading goroutine.
type poller struct{}

func newPoller(*Transport) (*poller, error) { return nil, errors.New("no epoll on this system") }

func (p *poller) add(*Conn) error   { return errors.New("no event loop") }
func (p *poller) rearm(*Conn) error { return errors.New("no event loop") }
func (p *poller) remove(*Conn)      {}
func (p *poller) close()            {}

// writeNow is never called without the event loop: no flusher runs.
func (f *flushWorker) writeNow(_ *Conn, bufs net.Buffers) (net.Buffers, error) { return bufs, nil }

// flusherIO is what a flusher needs to write; nothing here.
type flusherIO struct{}

func (f *flushWorker) initIO() {}
