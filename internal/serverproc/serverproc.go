// Package serverproc runs the Redis and NATS servers that some tests need
// of their own — to kill, restart or empty them — each on a port of its
// own, for the tests of herald's brokers and of its behaviour through
// broker faults.
//
// The port is picked below the system's ephemeral range
// (/proc/sys/net/ipv4/ip_local_port_range), from which the kernel gives
// ports to every other test's listeners on port 0 and outgoing
// connections: while a server is down between a kill and its restart,
// none of those can take its port. And a server counts as started only
// once it has said it is ready, not when something accepts connections
// on its port: should another process hold the port anyway, the test
// fails saying so, instead of talking to that process.
package serverproc

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Server is a server process of a test's own, on a fixed port and a data
// directory that outlive its restarts.
type Server struct {
	t     testing.TB
	port  int
	dir   string
	cmd   func(port int, dir string) *exec.Cmd
	ready string // what the server writes once it accepts connections

	mu     sync.Mutex
	proc   *exec.Cmd     // nil while the server is not running
	exited chan struct{} // closed once proc has exited
}

// NATS starts a nats-server with JetStream, and args, and stops it when
// the test ends.
func NATS(t testing.TB, args ...string) *Server {
	return start(t, "Server is ready", func(port int, dir string) *exec.Cmd {
		return exec.Command("nats-server", append([]string{"-a", "127.0.0.1", "-p", strconv.Itoa(port), "-js", "-sd", dir}, args...)...)
	})
}

// Redis starts a redis-server that writes every change to its append-only
// file before it answers (a kill loses nothing it acknowledged), and stops
// it when the test ends.
func Redis(t testing.TB) *Server {
	return start(t, "Ready to accept connections", func(port int, dir string) *exec.Cmd {
		return exec.Command("redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "",
			"--appendonly", "yes", "--appendfsync", "always", "--dir", dir, "--logfile", "")
	})
}

// startTries is how many ports start tries before it gives up.
const startTries = 5

func start(t testing.TB, ready string, cmd func(port int, dir string) *exec.Cmd) *Server {
	t.Helper()
	s := &Server{t: t, dir: t.TempDir(), cmd: cmd, ready: ready}
	t.Cleanup(s.Kill)
	var err error
	for range startTries {
		s.port = freePort(t)
		if err = s.run(); err == nil {
			return s
		}
	}
	t.Fatalf("%v (after %d ports)", err, startTries)
	return nil
}

// Port returns the server's port.
func (s *Server) Port() int { return s.port }

// Addr returns the server's host:port.
func (s *Server) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.port) }

// Dir returns the server's data directory.
func (s *Server) Dir() string { return s.dir }

// Start starts the server again, on its port and data directory, and
// waits until it is ready; it fails the test if it cannot.
func (s *Server) Start() {
	s.t.Helper()
	if err := s.run(); err != nil {
		s.t.Fatal(err)
	}
}

// Signal sends sig to the running server.
func (s *Server) Signal(sig syscall.Signal) {
	s.t.Helper()
	s.mu.Lock()
	proc := s.proc
	s.mu.Unlock()
	if proc == nil {
		s.t.Fatalf("signal %v: the server is not running", sig)
	}
	if err := proc.Process.Signal(sig); err != nil {
		s.t.Fatalf("signal %v: %v", sig, err)
	}
}

// Stop ends the server with sig and waits until it has exited.
func (s *Server) Stop(sig syscall.Signal) {
	s.mu.Lock()
	proc, exited := s.proc, s.exited
	s.proc = nil
	s.mu.Unlock()
	if proc == nil {
		return
	}
	_ = proc.Process.Signal(sig)
	<-exited
}

// Kill ends the server with SIGKILL and waits until it has exited.
func (s *Server) Kill() { s.Stop(syscall.SIGKILL) }

// run starts the process and waits until it says it is ready; an error
// when it exits first, or is not ready within a minute.
func (s *Server) run() error {
	proc := s.cmd(s.port, s.dir)
	out := &output{want: []byte(s.ready), seen: make(chan struct{})}
	proc.Stdout, proc.Stderr = out, out
	if err := proc.Start(); err != nil {
		return fmt.Errorf("start %s (it must be on PATH): %w", proc.Path, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = proc.Wait()
		close(exited)
	}()
	s.mu.Lock()
	s.proc, s.exited = proc, exited
	s.mu.Unlock()
	select {
	case <-out.seen:
		return nil
	case <-exited:
		s.mu.Lock()
		s.proc = nil
		s.mu.Unlock()
		return fmt.Errorf("%s on port %d exited before it was ready:\n%s", proc.Path, s.port, out.tail())
	case <-time.After(time.Minute):
		s.Kill()
		return fmt.Errorf("%s on port %d not ready after a minute:\n%s", proc.Path, s.port, out.tail())
	}
}

// output is where a server writes its log: it notes the first line that
// holds want, and keeps the last lines for an error message.
type output struct {
	mu    sync.Mutex
	want  []byte
	seen  chan struct{} // closed once want was written
	found bool
	part  []byte   // an unfinished line
	lines []string // the last lines written
}

// keptLines is how many of its last lines an output keeps.
const keptLines = 20

func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.part = append(o.part, p...)
	for {
		i := bytes.IndexByte(o.part, '\n')
		if i < 0 {
			break
		}
		line := o.part[:i]
		if !o.found && bytes.Contains(line, o.want) {
			o.found = true
			close(o.seen)
		}
		o.lines = append(o.lines, string(line))
		if len(o.lines) > keptLines {
			o.lines = o.lines[1:]
		}
		o.part = o.part[i+1:]
	}
	return len(p), nil
}

// tail returns the last lines the server wrote.
func (o *output) tail() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return strings.Join(o.lines, "\n")
}

// freePort returns a port below the system's ephemeral range that nothing
// listens on now.
func freePort(t testing.TB) int {
	t.Helper()
	low := ephemeralLow()
	const span = 12000 // ports picked from [low-span, low)
	for range 100 {
		port := low - span + rand.IntN(span)
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			continue
		}
		_ = l.Close()
		return port
	}
	t.Fatalf("no free port below %d", low)
	return 0
}

// ephemeralLow returns the first port of the system's ephemeral range
// (Linux's default when it cannot be read).
func ephemeralLow() int {
	const linuxDefault = 32768
	f, err := os.Open("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return linuxDefault
	}
	defer f.Close()
	line, err := bufio.NewReader(io.LimitReader(f, 64)).ReadString('\n')
	if err != nil && line == "" {
		return linuxDefault
	}
	fields := strings.Fields(line)
	if len(fields) == 0 {
		return linuxDefault
	}
	low, err := strconv.Atoi(fields[0])
	if err != nil || low < 16384 {
		return linuxDefault
	}
	return low
}
