//go:build !unix

package loadtest

import "net"

// readNow reads what the socket has received, waiting at most a moment.
func readNow(nc net.Conn, buf []byte) (int, error) { return readSoon(nc, buf) }
