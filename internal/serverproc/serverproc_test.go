package serverproc

import (
	"net"
	"strings"
	"testing"
)

// A server restarted after a kill is on the same port and data directory,
// and accepts connections again.
func TestRestartKeepsPortAndDir(t *testing.T) {
	for name, start := range map[string]func(testing.TB) *Server{
		"nats":  func(t testing.TB) *Server { return NATS(t) },
		"redis": Redis,
	} {
		t.Run(name, func(t *testing.T) {
			s := start(t)
			port, dir := s.Port(), s.Dir()
			if low := ephemeralLow(); port >= low {
				t.Fatalf("port %d is in the ephemeral range (from %d)", port, low)
			}
			s.Kill()
			if c, err := net.Dial("tcp", s.Addr()); err == nil {
				_ = c.Close()
				t.Fatalf("%s accepts connections after the kill", s.Addr())
			}
			s.Start()
			if s.Port() != port || s.Dir() != dir {
				t.Fatalf("restarted on port %d, dir %s; want %d, %s", s.Port(), s.Dir(), port, dir)
			}
			c, err := net.Dial("tcp", s.Addr())
			if err != nil {
				t.Fatalf("after the restart: %v", err)
			}
			_ = c.Close()
		})
	}
}

// A server whose port another process holds is not taken for started,
// though something accepts connections there: its start fails, saying
// why.
func TestPortHeldElsewhereFailsTheStart(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	s := NATS(t)
	s.Kill()
	s.port = l.Addr().(*net.TCPAddr).Port
	err = s.run()
	if err == nil || !strings.Contains(err.Error(), "exited before it was ready") {
		t.Fatalf("start on a held port: %v, want it to have exited before it was ready", err)
	}
}
