//go:build !linux

package loadtest

import "errors"

// pollers stand for the epoll sets of Linux (-spin, -epoll), which other
// systems do not have: their subscribers read on goroutines of their own.
type pollers struct{}

// newPollers returns nil: there are no sets to read from.
func newPollers(bool, bool) *pollers { return nil }

// watch refuses: the caller reads c itself.
func (*pollers) watch(*subscriber, *wsConn, bool) error { return errors.New("no epoll sets") }

// start does nothing.
func (*pollers) start() {}

// watched is none.
func (*pollers) watched() int { return 0 }

// stop does nothing.
func (*pollers) stop() {}

// unstampedReads is none.
func (*pollers) unstampedReads() int64 { return 0 }
