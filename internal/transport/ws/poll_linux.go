package ws

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// poller is the event loop: one epoll set, and one goroutine waiting on it
// that hands each readable connection to a goroutine of its own. Sockets
// are armed one-shot, so a connection is served by one goroutine at a
// time and re-armed when that goroutine is done with it.
//
// The goroutine waits the way Go's own sockets do: the epoll set's
// descriptor is itself watched by the runtime's poller, which wakes the
// goroutine when the set has events, so no thread sits blocked in
// epoll_wait. The sockets stay Go's too (the runtime's poller watches them
// for writes); herald's epoll set only tells when they are readable.
type poller struct {
	t    *Transport
	epfd int
	set  *os.File // epfd, for the runtime's poller
	rc   syscall.RawConn

	mu    sync.Mutex
	conns map[uint64]*Conn // by Conn.id: ids are never reused, unlike fds

	closed atomic.Bool
	done   chan struct{}
}

func newPoller(t *Transport) (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		_ = unix.Close(epfd)
		return nil, fmt.Errorf("epoll set non-blocking: %w", err)
	}
	set := os.NewFile(uintptr(epfd), "epoll")
	rc, err := set.SyscallConn()
	if err != nil {
		_ = set.Close()
		return nil, fmt.Errorf("epoll set: %w", err)
	}
	p := &poller{t: t, epfd: epfd, set: set, rc: rc, conns: make(map[uint64]*Conn), done: make(chan struct{})}
	go p.run()
	return p, nil
}

const armed = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT

func event(c *Conn) *unix.EpollEvent {
	return &unix.EpollEvent{Events: armed, Fd: int32(c.id), Pad: int32(c.id >> 32)}
}

// add starts watching c.
func (p *poller) add(c *Conn) error {
	p.mu.Lock()
	p.conns[c.id] = c
	p.mu.Unlock()
	if err := p.ctl(c, unix.EPOLL_CTL_ADD); err != nil {
		p.mu.Lock()
		delete(p.conns, c.id)
		p.mu.Unlock()
		return fmt.Errorf("epoll_ctl add: %w", err)
	}
	if c.closed.Load() { // gone meanwhile, perhaps before it was listed
		p.remove(c)
	}
	return nil
}

// rearm watches c again after one of its events was served.
func (p *poller) rearm(c *Conn) error {
	if hook := p.t.cfg.hooks.rearm; hook != nil {
		hook(c)
	}
	if err := p.ctl(c, unix.EPOLL_CTL_MOD); err != nil {
		return fmt.Errorf("epoll_ctl mod: %w", err)
	}
	return nil
}

// remove stops watching c; call it before its socket is closed.
func (p *poller) remove(c *Conn) {
	p.mu.Lock()
	_, ok := p.conns[c.id]
	delete(p.conns, c.id)
	p.mu.Unlock()
	if ok {
		_ = p.ctl(c, unix.EPOLL_CTL_DEL)
	}
}

// ctl changes c's entry in the epoll set. The descriptor is used inside
// the socket's Control, which keeps it from being closed meanwhile: once
// the socket is closed its number may be a new connection's, and ctl
// fails instead of touching that one.
func (p *poller) ctl(c *Conn, op int) error {
	var cerr error
	err := c.rc.Control(func(fd uintptr) {
		var ev *unix.EpollEvent
		if op != unix.EPOLL_CTL_DEL {
			ev = event(c)
		}
		cerr = unix.EpollCtl(p.epfd, op, int(fd), ev)
	})
	return errors.Join(err, cerr)
}

// run waits for events until close.
func (p *poller) run() {
	defer close(p.done)
	events := make([]unix.EpollEvent, 128)
	for {
		var n int
		var werr error
		err := p.rc.Read(func(fd uintptr) bool {
			n, werr = unix.EpollWait(int(fd), events, 0)
			// Nothing yet: the runtime's poller waits until there is.
			return n > 0 || werr != nil && !errors.Is(werr, unix.EINTR)
		})
		if err != nil || p.closed.Load() {
			return // the set was closed
		}
		if werr != nil {
			p.t.cfg.Logger.Error("ws: epoll_wait", "err", werr)
			return
		}
		p.mu.Lock()
		for _, ev := range events[:n] {
			id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			if c := p.conns[id]; c != nil {
				go p.t.serve(c)
			}
		}
		p.mu.Unlock()
	}
}

// close stops the loop; connections still watched are left to their
// owners.
func (p *poller) close() {
	if p.closed.Swap(true) {
		return
	}
	_ = p.set.Close() // wakes run
	<-p.done
}

// flusherIO is what a flusher needs to write: an iovec array reused for
// every send, and the callback given to the socket's raw descriptor,
// made once, with its results.
type flusherIO struct {
	iov     []unix.Iovec
	msg     unix.Msghdr
	writeFn func(fd uintptr) bool
	n       int
	werr    error
}

func (f *flushWorker) initIO() { f.writeFn = f.write }

// writeNow writes what c's socket takes of bufs without waiting and
// returns the rest. It allocates nothing: the buffers go to the kernel
// through the worker's own iovec array.
func (f *flushWorker) writeNow(c *Conn, bufs net.Buffers) (net.Buffers, error) {
	for len(bufs) > 0 {
		chunk := bufs[:min(len(bufs), maxIovecs)]
		f.iov = f.iov[:0]
		total := 0
		for _, b := range chunk {
			if len(b) > 0 {
				v := unix.Iovec{Base: &b[0]}
				v.SetLen(len(b))
				f.iov = append(f.iov, v)
				total += len(b)
			}
		}
		f.n, f.werr = 0, nil
		err := c.rc.Write(f.writeFn)
		clear(f.iov) // keep no pointer into the buffers
		n := f.n
		if n > 0 {
			c.t.traffic(0, n)
		}
		switch {
		case err != nil:
			return bufs, err
		case errors.Is(f.werr, unix.EAGAIN) || errors.Is(f.werr, unix.EINTR):
			return bufs, nil
		case f.werr != nil:
			return bufs, f.werr
		}
		if n < total {
			return advance(bufs, n), nil
		}
		bufs = bufs[len(chunk):]
	}
	return nil, nil
}

// write is the flusher's callback for the socket's raw descriptor: one
// send of f.iov, never waiting (a full socket goes to a writer goroutine).
func (f *flushWorker) write(fd uintptr) bool {
	if len(f.iov) == 0 {
		return true
	}
	// send(2) and sendmsg(2) rather than write(2) and writev(2): the
	// socket calls skip the file layer's work on every call.
	const flags = unix.MSG_DONTWAIT | unix.MSG_NOSIGNAL
	var r uintptr
	var errno unix.Errno
	if len(f.iov) == 1 {
		r, _, errno = unix.Syscall6(unix.SYS_SENDTO, fd, uintptr(unsafe.Pointer(f.iov[0].Base)), uintptr(f.iov[0].Len), flags, 0, 0)
	} else {
		f.msg = unix.Msghdr{Iov: &f.iov[0]}
		f.msg.SetIovlen(len(f.iov))
		r, _, errno = unix.Syscall(unix.SYS_SENDMSG, fd, uintptr(unsafe.Pointer(&f.msg)), flags)
		f.msg = unix.Msghdr{} // keep no pointer into the buffers
	}
	if errno != 0 {
		f.werr = errno
		return true
	}
	f.n = int(r)
	return true
}

// maxIovecs is the most buffers one sendmsg takes (IOV_MAX).
const maxIovecs = 1024
