//go:build unix

package loadtest

import (
	"errors"
	"io"
	"net"
	"syscall"
)

// readNow reads what the socket has received without waiting: n is 0 when
// nothing is there. It returns io.EOF once the peer has closed.
func readNow(nc net.Conn, buf []byte) (int, error) {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return readSoon(nc, buf)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0, err
	}
	var n int
	var rerr error
	err = rc.Read(func(fd uintptr) bool {
		n, rerr = syscall.Read(int(fd), buf)
		return true // never wait for the poller
	})
	switch {
	case err != nil:
		return 0, err
	case errors.Is(rerr, syscall.EAGAIN):
		return 0, nil
	case rerr != nil:
		return 0, rerr
	case n == 0 && len(buf) > 0:
		return 0, io.EOF
	}
	return n, nil
}
