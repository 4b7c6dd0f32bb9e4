//go:build !linux

package loadtest

import "errors"

// pollers stand for the epoll sets of Linux, which other systems do not
// have: their subscribers read on goroutines of their own.
type pollers struct{}

// newPollers returns nil: there are no sets to read from.
func newPollers(bool) *pollers { return nil }

// watch refuses: the caller reads c itself.
func (*pollers) watch(*subscriber, *wsConn, bool) error { return errors.New("no epoll sets") }

// stop does nothing.
func (*pollers) stop() {}
