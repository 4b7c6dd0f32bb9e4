package ws

import "sync/atomic"

// sock is a connection's own socket descriptor, once Go's net.Conn has let
// go of it (Linux, with the event loop): herald reads, writes and watches
// it itself, and no runtime poller record or net package object stays
// with the connection. Every system call on the descriptor happens
// between acquire and release; close marks it closed at once, refuses
// every later acquire, and the descriptor itself is closed by whoever
// leaves last — close, or the release of the last call under way — so
// that no call ever lands on its number once it has been closed and
// perhaps given to another connection.
type sock struct {
	fd    int32
	state atomic.Int32 // calls under way, plus sockClosed once closed
}

// sockClosed is the bit of sock.state that close sets.
const sockClosed = 1 << 30

// acquire returns the descriptor for one system call, which must be
// followed by release; it reports false once the socket is closed.
func (s *sock) acquire() (int, bool) {
	for {
		st := s.state.Load()
		if st&sockClosed != 0 {
			return -1, false
		}
		if s.state.CompareAndSwap(st, st+1) {
			return int(s.fd), true
		}
	}
}

// release ends a call that acquire began, closing the descriptor if the
// socket was closed meanwhile and this was the last call.
func (s *sock) release() {
	if s.state.Add(-1) == sockClosed {
		closeFD(int(s.fd))
	}
}

// close closes the socket, once: at once when no call is under way, else
// when the last one ends. It does not wait.
func (s *sock) close() {
	for {
		st := s.state.Load()
		if st&sockClosed != 0 {
			return
		}
		if s.state.CompareAndSwap(st, st|sockClosed) {
			if st == 0 {
				closeFD(int(s.fd))
			}
			return
		}
	}
}
