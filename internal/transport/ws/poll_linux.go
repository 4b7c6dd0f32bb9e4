package ws

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// poller is the event loop: two epoll sets of the Transport's own, each
// with one goroutine waiting on it. The read set hands each readable
// connection to a goroutine of its own; its sockets are armed one-shot, so
// a connection is served by one goroutine at a time and re-armed when
// that goroutine is done with it. The write set holds the sockets whose
// writer waits for room, armed one-shot while it waits: the event wakes
// that writer.
//
// The goroutines wait the way Go's own sockets do: each set's descriptor
// is itself watched by the runtime's poller, which wakes the goroutine
// when the set has events, so no thread sits blocked in epoll_wait. The
// connections' sockets are not Go's: each is its Conn's own (sock), and
// the runtime's poller knows nothing of them.
type poller struct {
	t  *Transport
	rd epollSet // sockets watched for reading
	wr epollSet // sockets whose writer waits for room

	mu      sync.Mutex
	conns   map[uint64]*Conn         // watched for reading, by Conn.id: ids are never reused, unlike fds
	writers map[uint64]chan struct{} // writers waiting for room, by Conn.id; closed to wake them

	closed  atomic.Bool
	running sync.WaitGroup
}

// epollSet is one epoll set, its descriptor watched by the runtime's
// poller.
type epollSet struct {
	fd   int
	file *os.File // fd, for the runtime's poller
	rc   syscall.RawConn
}

func openEpollSet() (epollSet, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return epollSet{}, fmt.Errorf("epoll_create1: %w", err)
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		_ = unix.Close(epfd)
		return epollSet{}, fmt.Errorf("epoll set non-blocking: %w", err)
	}
	file := os.NewFile(uintptr(epfd), "epoll")
	rc, err := file.SyscallConn()
	if err != nil {
		_ = file.Close()
		return epollSet{}, fmt.Errorf("epoll set: %w", err)
	}
	return epollSet{fd: epfd, file: file, rc: rc}, nil
}

func newPoller(t *Transport) (*poller, error) {
	rd, err := openEpollSet()
	if err != nil {
		return nil, err
	}
	wr, err := openEpollSet()
	if err != nil {
		_ = rd.file.Close()
		return nil, err
	}
	p := &poller{t: t, rd: rd, wr: wr, conns: make(map[uint64]*Conn), writers: make(map[uint64]chan struct{})}
	p.running.Add(2)
	go p.run(rd, p.readableLocked)
	go p.run(wr, p.writableLocked)
	return p, nil
}

const (
	armed    = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT
	writable = unix.EPOLLOUT | unix.EPOLLONESHOT
)

// add starts watching c.
func (p *poller) add(c *Conn) error {
	p.mu.Lock()
	p.conns[c.id] = c
	p.mu.Unlock()
	if err := p.ctl(&p.rd, c, unix.EPOLL_CTL_ADD, armed); err != nil {
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
	if err := p.ctl(&p.rd, c, unix.EPOLL_CTL_MOD, armed); err != nil {
		return fmt.Errorf("epoll_ctl mod: %w", err)
	}
	return nil
}

// remove stops watching c, and wakes its writer if it waits for room;
// call it before its socket is closed.
func (p *poller) remove(c *Conn) {
	p.mu.Lock()
	_, ok := p.conns[c.id]
	delete(p.conns, c.id)
	w := p.writers[c.id]
	delete(p.writers, c.id)
	p.mu.Unlock()
	if w != nil {
		close(w)
	}
	if ok {
		_ = p.ctl(&p.rd, c, unix.EPOLL_CTL_DEL, 0)
	}
	// The write set's entry, if any, goes when the socket is closed:
	// nothing else holds the socket open.
}

// ctl changes c's entry in set. The socket's descriptor is used between
// its acquire and release, which keep it from being closed meanwhile: once
// the socket is closed its number may be a new connection's, and ctl
// fails instead of touching that one. The set's own descriptor is used
// inside its file's Control, for the same reason: once the poller closed
// it, ctl fails instead of changing whatever set took its number.
func (p *poller) ctl(set *epollSet, c *Conn, op int, events uint32) error {
	fd, ok := c.sock.acquire()
	if !ok {
		return errClosed
	}
	defer c.sock.release()
	var ev *unix.EpollEvent
	if op != unix.EPOLL_CTL_DEL {
		ev = &unix.EpollEvent{Events: events, Fd: int32(c.id), Pad: int32(c.id >> 32)}
	}
	var cerr error
	if err := set.rc.Control(func(epfd uintptr) { cerr = unix.EpollCtl(int(epfd), op, fd, ev) }); err != nil {
		return fmt.Errorf("epoll set: %w", err)
	}
	return cerr
}

// waitWritable waits until c's socket has room, c is gone, or timeout
// passes when it is not 0. The keepalive sweep ends connections whose
// write takes longer than WriteTimeout, which wakes the wait. Once the
// poller is closed (the Transport closed, its connections not yet) it
// waits without it (pollWritable); a wait under way when it closes
// returns early, and the caller's next try waits that way.
func (p *poller) waitWritable(c *Conn, timeout time.Duration) error {
	ch := make(chan struct{})
	p.mu.Lock()
	if c.closed.Load() { // gone sets closed before it takes mu to wake writers
		p.mu.Unlock()
		return errClosed
	}
	if p.closed.Load() {
		p.mu.Unlock()
		return pollWritable(c, timeout)
	}
	p.writers[c.id] = ch
	p.mu.Unlock()
	// Armed one-shot, the entry stays, disarmed, after its event:
	// modify it, or add it the first time.
	err := p.ctl(&p.wr, c, unix.EPOLL_CTL_MOD, writable)
	if errors.Is(err, unix.ENOENT) {
		err = p.ctl(&p.wr, c, unix.EPOLL_CTL_ADD, writable)
	}
	if err != nil {
		p.stopWaiting(c.id, ch)
		return fmt.Errorf("epoll_ctl for writing: %w", err)
	}
	if timeout > 0 {
		tm := time.NewTimer(timeout)
		defer tm.Stop()
		select {
		case <-ch:
		case <-tm.C:
			p.stopWaiting(c.id, ch)
			return os.ErrDeadlineExceeded
		}
	} else {
		<-ch
	}
	if c.closed.Load() {
		return errClosed
	}
	return nil
}

// pollSlice is how long pollWritable waits at a time before it looks
// whether the connection is gone.
const pollSlice = 100 * time.Millisecond

// pollWritable waits for room on c's socket with poll(2), for a
// connection that outlives its Transport's event loop: a slice at a time,
// so that a connection closed meanwhile ends the wait, until timeout when
// it is not 0.
func pollWritable(c *Conn, timeout time.Duration) error {
	var end time.Time
	if timeout > 0 {
		end = time.Now().Add(timeout)
	}
	for {
		wait := pollSlice
		if !end.IsZero() {
			if wait = min(wait, time.Until(end)); wait <= 0 {
				return os.ErrDeadlineExceeded
			}
		}
		fd, ok := c.sock.acquire()
		if !ok || c.closed.Load() {
			if ok {
				c.sock.release()
			}
			return errClosed
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
		n, err := unix.Poll(fds, int(wait.Milliseconds())+1)
		c.sock.release()
		if err != nil && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("poll for writing: %w", err)
		}
		if n > 0 {
			return nil // room, or an error the next send reports
		}
	}
}

// stopWaiting forgets the writer waiting on ch, unless it was woken.
func (p *poller) stopWaiting(id uint64, ch chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.writers[id] == ch {
		delete(p.writers, id)
	}
}

// readableLocked serves a readiness event of the connection id.
func (p *poller) readableLocked(id uint64) {
	if c := p.conns[id]; c != nil {
		go p.t.serve(c)
	}
}

// writableLocked wakes the writer of the connection id.
func (p *poller) writableLocked(id uint64) {
	if w := p.writers[id]; w != nil {
		delete(p.writers, id)
		close(w)
	}
}

// run waits for the events of s until close, handing each connection's
// id to handle, with mu held.
func (p *poller) run(s epollSet, handle func(id uint64)) {
	defer p.running.Done()
	events := make([]unix.EpollEvent, 128)
	for {
		var n int
		var werr error
		err := s.rc.Read(func(fd uintptr) bool {
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
			handle(uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32)
		}
		p.mu.Unlock()
	}
}

// close stops the loop and wakes every writer waiting for room: each
// tries its send again and, if it must still wait, waits without the
// loop (pollWritable). Connections still watched are left to their
// owners, which close them.
func (p *poller) close() {
	if p.closed.Swap(true) {
		return
	}
	_ = p.rd.file.Close() // wakes run
	_ = p.wr.file.Close()
	p.running.Wait()
	p.mu.Lock()
	writers := p.writers
	p.writers = make(map[uint64]chan struct{})
	p.mu.Unlock()
	for _, w := range writers {
		close(w)
	}
}

// detach takes the socket of a plain TCP (or Unix) connection from Go:
// it returns a duplicate of its descriptor and closes nc, so that the
// runtime's poller and the net package let go of it; the socket itself
// stays open through the duplicate alone. Any other connection (TLS, or
// a listener's wrapper with a Close of its own) is left as it is.
func detach(nc net.Conn) (int, error) {
	var rc syscall.RawConn
	var err error
	switch nc := nc.(type) {
	case *net.TCPConn:
		rc, err = nc.SyscallConn()
	case *net.UnixConn:
		rc, err = nc.SyscallConn()
	default:
		return -1, errors.New("not a plain TCP or Unix connection")
	}
	if err != nil {
		return -1, fmt.Errorf("raw connection: %w", err)
	}
	fd, derr := -1, error(nil)
	if err := rc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return -1, fmt.Errorf("raw connection: %w", err)
	}
	if derr != nil {
		return -1, fmt.Errorf("dup socket: %w", derr)
	}
	if err := unix.SetNonblock(fd, true); err != nil { // shared with nc's, so set already; be sure
		_ = unix.Close(fd)
		return -1, fmt.Errorf("socket non-blocking: %w", err)
	}
	_ = nc.Close()
	return fd, nil
}

// closeFD closes a socket's descriptor.
func closeFD(fd int) { _ = unix.Close(fd) }

// readable reads what the socket has without blocking and handles every
// complete frame. It reports false once the connection is over.
func (c *Conn) readable(buf []byte) bool {
	for {
		fd, ok := c.sock.acquire()
		if !ok {
			return false
		}
		n, rerr := unix.Read(fd, buf)
		c.sock.release()
		switch {
		case errors.Is(rerr, unix.EAGAIN) || errors.Is(rerr, unix.EINTR):
			return true // the poller says when there is more
		case rerr != nil || n <= 0:
			return false
		}
		c.touch()
		c.t.traffic(n, 0)
		if !c.consume(buf[:n]) {
			return false
		}
		if n < len(buf) {
			return true
		}
	}
}

// writeRaw writes bufs whole on c's own socket, waiting for room through
// the event loop as long as it takes, or timeout when it is not 0.
func (c *Conn) writeRaw(bufs *net.Buffers, timeout time.Duration, count bool) error {
	var s sender
	var end time.Time
	for {
		rest, n, err := s.writeNow(c, *bufs)
		if count && n > 0 {
			c.t.traffic(0, n)
		}
		*bufs = rest
		if err != nil || len(rest) == 0 {
			return err
		}
		var wait time.Duration
		if timeout > 0 {
			if end.IsZero() {
				end = time.Now().Add(timeout)
			}
			if wait = time.Until(end); wait <= 0 {
				return os.ErrDeadlineExceeded
			}
		}
		if err := c.t.loop.waitWritable(c, wait); err != nil {
			return err
		}
	}
}

// sender is what a writer needs to send: an iovec array reused for every
// send, the message header sendmsg takes, and, for a sender that gathers
// (a flusher's), a buffer to copy small pieces into.
type sender struct {
	iov    []unix.Iovec
	msg    unix.Msghdr
	gather bool   // copy many small buffers into flat and send it whole
	flat   []byte // grown to what gathered sends needed (a little over maxGather at most)
}

// maxGather is the most bytes a gathering sender copies into one buffer,
// and gatherPiece the largest average piece it copies: a frame of many
// short lines (a batch of herald.v1.jsonl messages: each message and each
// newline a buffer of its own) costs the kernel more as an iovec per
// piece than copied once into one buffer here — BenchmarkSendLines, 24
// lines to a loopback peer: 6.9–7.2 µs of CPU as 47 iovecs, 6.2–6.4
// copied — while a frame of one large buffer would only be copied twice.
const (
	maxGather   = 64 << 10
	gatherPiece = 1 << 10
)

// writeNow writes what c's socket takes of bufs without waiting, and
// returns the rest and how many bytes it wrote. It allocates nothing
// once its iovec array (and gathering buffer) has grown: the buffers go
// to the kernel through the iovecs, or copied into the gathering buffer.
func (s *sender) writeNow(c *Conn, bufs net.Buffers) (net.Buffers, int, error) {
	if s.gather && len(bufs) > 2 {
		if rest, n, ok, err := s.gathered(c, bufs); ok {
			return rest, n, err
		}
	}
	written := 0
	for len(bufs) > 0 {
		chunk := bufs[:min(len(bufs), maxIovecs)]
		s.iov = s.iov[:0]
		total := 0
		for _, b := range chunk {
			if len(b) > 0 {
				v := unix.Iovec{Base: &b[0]}
				v.SetLen(len(b))
				s.iov = append(s.iov, v)
				total += len(b)
			}
		}
		n, err := s.send(c)
		clear(s.iov) // keep no pointer into the buffers
		written += n
		switch {
		case errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR):
			return bufs, written, nil
		case err != nil:
			return bufs, written, err
		}
		if n < total {
			return advance(bufs, n), written, nil
		}
		bufs = bufs[len(chunk):]
	}
	return nil, written, nil
}

// gathered sends bufs copied into one buffer, as writeNow would send
// them, when they are small enough (maxGather, gatherPiece); ok is false
// when they are not, and nothing was sent.
func (s *sender) gathered(c *Conn, bufs net.Buffers) (rest net.Buffers, n int, ok bool, err error) {
	total := 0
	for _, b := range bufs {
		total += len(b)
	}
	if total == 0 || total > maxGather || total > gatherPiece*len(bufs) {
		return bufs, 0, false, nil
	}
	s.flat = s.flat[:0]
	for _, b := range bufs {
		s.flat = append(s.flat, b...)
	}
	v := unix.Iovec{Base: &s.flat[0]}
	v.SetLen(total)
	s.iov = append(s.iov[:0], v)
	n, err = s.send(c)
	s.iov[0] = unix.Iovec{}
	switch {
	case errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR):
		return bufs, 0, true, nil
	case err != nil:
		return bufs, 0, true, err
	case n < total:
		return advance(bufs, n), n, true, nil // the rest is still in bufs
	}
	return nil, n, true, nil
}

// send sends s.iov on c's socket once, never waiting.
func (s *sender) send(c *Conn) (int, error) {
	if len(s.iov) == 0 {
		return 0, nil
	}
	fd, ok := c.sock.acquire()
	if !ok {
		return 0, errClosed
	}
	defer c.sock.release()
	// send(2) and sendmsg(2) rather than write(2) and writev(2): the
	// socket calls skip the file layer's work on every call.
	const flags = unix.MSG_DONTWAIT | unix.MSG_NOSIGNAL
	var r uintptr
	var errno unix.Errno
	if len(s.iov) == 1 {
		r, _, errno = unix.Syscall6(unix.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(s.iov[0].Base)), uintptr(s.iov[0].Len), flags, 0, 0)
	} else {
		s.msg = unix.Msghdr{Iov: &s.iov[0]}
		s.msg.SetIovlen(len(s.iov))
		r, _, errno = unix.Syscall(unix.SYS_SENDMSG, uintptr(fd), uintptr(unsafe.Pointer(&s.msg)), flags)
		s.msg = unix.Msghdr{} // keep no pointer into the buffers
	}
	if errno != 0 {
		return 0, errno
	}
	return int(r), nil
}

// maxIovecs is the most buffers one sendmsg takes (IOV_MAX).
const maxIovecs = 1024
