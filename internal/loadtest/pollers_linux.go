package loadtest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// pollers read WebSocket subscribers for -spin and -epoll: from epoll
// sets, one per processor the tool has, instead of a goroutine per
// subscriber that sleeps until its socket has something.
//
// With -epoll a set's goroutine sleeps in Go's poller (the set's own
// descriptor is in it) until some of its subscribers have something, then
// reads each of those once. A goroutine per subscriber costs, for every
// segment that reaches it, a wake-up, a park and a second read that
// finds nothing; a set wakes once for all that arrived meanwhile, and
// reads none twice. That is the tool's time per delivery, which on a
// machine it shares with the servers is time they do not get.
//
// With -spin a set's goroutine never sleeps (it yields to the tool's
// other goroutines between polls).
//
// On loopback the sending core runs the receiving side of every segment,
// and when the reader sleeps that includes waking it: on a virtual
// machine an inter-processor interrupt, some microseconds, charged to the
// server. And a sleeping reader's own time per delivery (two reads, the
// second finding nothing, a park and a wake-up: about 4 µs at 50
// publishes/s) bounds the latency it can see: a server that sends faster
// than that has its p99 set by the tool. A spinning reader is never woken
// (as no remote client costs its server) and reads as the data comes; the
// price is the tool's cores, whole, so it is for a tool with cores of its
// own (pinned).
//
// With kernel stamps (-kernel-stamps) a set asks the kernel for the time
// each segment arrived (SO_TIMESTAMPNS: on loopback, when the server's
// send reached the receiving side) and times the messages of a read by
// it, not by when the set got to the read: the latency then measures the
// server, not the tool's own queue of reads, which a server faster than
// the tool fills. A read that spans several segments has the time of the
// last: its earlier messages are timed late, never early.
//
// The sets spin on as many processors as the tool had, and the tool gets
// one processor more while they do: goroutines that wait on Go's net
// package (the publisher's replies) are woken by a processor that goes
// idle to wait for the network, and a spinning one never does.
type pollers struct {
	sets      []*pollSet
	spin      bool         // the sets poll without sleeping
	stamps    bool         // the sets time messages by the kernel's receive time
	unstamped atomic.Int64 // reads that came without it all the same
	started   bool
	procs     int // GOMAXPROCS before a spinning start raised it; 0 if it did not
	stopping  atomic.Bool
	next      atomic.Uint64
	taken     atomic.Int64 // subscribers watch took
	running   sync.WaitGroup
}

// pollSet is one epoll set and the subscribers in it, by the id the set
// gave them (descriptors are reused; ids are not).
type pollSet struct {
	p      *pollers
	epfd   int
	file   *os.File // epfd in Go's poller, where a set that sleeps waits; nil when spinning
	mu     sync.Mutex
	subs   map[uint64]*polled
	nextID uint64
	dead   bool // epoll_wait failed: the set takes no more subscribers
}

// polled is one subscriber read by a set.
type polled struct {
	s     *subscriber
	c     *wsConn
	jsonl bool
	p     *pollers // its sets: whether they take the kernel's times, and where reads without one count
}

// newPollers opens the sets, one per processor, which start reading at
// start, spinning or not, timing messages by the kernel's receive time
// (stamps) or by their read; nil when epoll cannot be had, and the
// subscribers then read on goroutines of their own.
func newPollers(spin, stamps bool) *pollers {
	p := &pollers{spin: spin, stamps: stamps}
	for range runtime.GOMAXPROCS(0) {
		fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
		if err != nil {
			p.stop()
			return nil
		}
		set := &pollSet{p: p, epfd: fd, subs: make(map[uint64]*polled)}
		p.sets = append(p.sets, set)
		if spin {
			continue
		}
		// Non-blocking, so that os.NewFile puts it in Go's poller.
		if err := unix.SetNonblock(fd, true); err != nil {
			p.stop()
			return nil
		}
		set.file = os.NewFile(uintptr(fd), "epoll set")
	}
	return p
}

// start sets the sets reading; stop ends them.
func (p *pollers) start() {
	if p == nil || p.started {
		return
	}
	p.started = true
	if p.spin {
		p.procs = runtime.GOMAXPROCS(0)
		runtime.GOMAXPROCS(p.procs + 1)
	}
	for _, set := range p.sets {
		p.running.Add(1)
		go set.run()
	}
}

// watched is how many subscribers the sets took.
func (p *pollers) watched() int {
	if p == nil {
		return 0
	}
	return int(p.taken.Load())
}

// watch takes c over from Go's poller and reads it for s from one of the
// sets. On an error c is as it was, and the caller reads it itself.
func (p *pollers) watch(s *subscriber, c *wsConn, jsonl bool) error {
	if p == nil {
		return errors.New("no epoll sets")
	}
	if err := c.takeSocket(p.stamps); err != nil {
		return err
	}
	pd := &polled{s: s, c: c, jsonl: jsonl, p: p}
	s.close = pd.close
	// What arrived with the subscribe reply is read here, before the set
	// can see the subscriber.
	if err := pd.consume(nil, time.Now().UnixNano()); err != nil {
		pd.end(err)
		return nil
	}
	set := p.sets[p.next.Add(1)%uint64(len(p.sets))]
	set.mu.Lock()
	if set.dead {
		set.mu.Unlock()
		pd.end(errors.New("its epoll set failed"))
		return nil
	}
	set.nextID++
	id := set.nextID
	set.subs[id] = pd
	set.mu.Unlock()
	// Level-triggered: a read that leaves something behind is told again.
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(id), Pad: int32(id >> 32)}
	var cerr error
	if err := c.control(func(fd int) { cerr = unix.EpollCtl(set.epfd, unix.EPOLL_CTL_ADD, fd, &ev) }); err != nil {
		cerr = err
	}
	if cerr != nil {
		set.forget(id)
		pd.end(fmt.Errorf("epoll_ctl: %w", cerr))
		return nil
	}
	p.taken.Add(1)
	return nil
}

// stop ends the sets' goroutines; the subscribers in them must have ended.
func (p *pollers) stop() {
	if p == nil || p.stopping.Swap(true) {
		return
	}
	for _, set := range p.sets {
		if set.file != nil {
			_ = set.file.Close() // wakes a sleeping set, and closes epfd once it is out
		}
	}
	p.running.Wait()
	for _, set := range p.sets {
		if set.file == nil {
			_ = unix.Close(set.epfd)
		}
	}
	if p.procs > 0 {
		runtime.GOMAXPROCS(p.procs)
	}
}

// run reads the set's subscribers until stop.
func (set *pollSet) run() {
	defer set.p.running.Done()
	events := make([]unix.EpollEvent, 256)
	buf := make([]byte, 64<<10)
	var oob []byte
	if set.p.stamps {
		oob = make([]byte, unix.CmsgSpace(stampSize))
	}
	wait := set.spin
	if set.file != nil {
		rc, err := set.file.SyscallConn()
		if err != nil {
			set.endAll(fmt.Errorf("epoll set: %w", err))
			return
		}
		wait = func(events []unix.EpollEvent) (int, error) { return set.sleep(rc, events) }
	}
	for {
		n, err := wait(events)
		switch {
		case errors.Is(err, errStopping):
			return
		case err != nil:
			set.endAll(err)
			return
		}
		set.read(events[:n], buf, oob)
	}
}

// errStopping is what a set's wait returns once stop has begun.
var errStopping = errors.New("stopping")

// spin polls the set without sleeping, yielding to the tool's other
// goroutines between polls, until some of its subscribers have something.
func (set *pollSet) spin(events []unix.EpollEvent) (int, error) {
	for !set.p.stopping.Load() {
		n, err := unix.EpollWait(set.epfd, events, 0)
		switch {
		case errors.Is(err, unix.EINTR), err == nil && n == 0:
			runtime.Gosched()
		case err != nil:
			return 0, fmt.Errorf("epoll_wait: %w", err)
		default:
			return n, nil
		}
	}
	return 0, errStopping
}

// sleep waits in Go's poller, where rc (the set's descriptor) is, until
// some of the set's subscribers have something.
func (set *pollSet) sleep(rc syscall.RawConn, events []unix.EpollEvent) (int, error) {
	for {
		var n int
		var werr error
		// Read calls the function again each time Go's poller says the
		// set is readable, until it reports done: here, once it has
		// events or an error.
		err := rc.Read(func(fd uintptr) bool {
			n, werr = unix.EpollWait(int(fd), events, 0)
			return n > 0 || werr != nil
		})
		switch {
		case err != nil && set.p.stopping.Load():
			return 0, errStopping // stop closed the set
		case err != nil:
			return 0, fmt.Errorf("epoll set: %w", err) // Go's poller failed it
		case errors.Is(werr, unix.EINTR):
		case werr != nil:
			return 0, fmt.Errorf("epoll_wait: %w", werr)
		default:
			return n, nil
		}
	}
}

// read reads each subscriber that events name, once, into buf (and oob,
// the room for a receive time).
func (set *pollSet) read(events []unix.EpollEvent, buf, oob []byte) {
	for i := range events {
		id := uint64(uint32(events[i].Fd)) | uint64(uint32(events[i].Pad))<<32
		set.mu.Lock()
		pd := set.subs[id]
		set.mu.Unlock()
		if pd == nil {
			continue
		}
		if err := pd.readOnce(buf, oob); err != nil {
			set.forget(id)
			pd.end(err)
		}
	}
}

// forget takes id out of the set.
func (set *pollSet) forget(id uint64) {
	set.mu.Lock()
	delete(set.subs, id)
	set.mu.Unlock()
}

// endAll ends every subscriber of a set that can no longer poll, and
// the set takes no more.
func (set *pollSet) endAll(err error) {
	set.mu.Lock()
	set.dead = true
	subs := set.subs
	set.subs = make(map[uint64]*polled)
	set.mu.Unlock()
	for _, pd := range subs {
		pd.end(err)
	}
}

// readOnce reads what the socket has (the set said it has something, so
// the read does not wait) and handles every whole frame in it, timed by
// the kernel's receive time when pd has stamps (oob holds its message).
func (pd *polled) readOnce(buf, oob []byte) error {
	if pd.p.stamps {
		return pd.readStamped(buf, oob)
	}
	n, err := pd.c.sock.Read(buf)
	if n > 0 {
		if cerr := pd.consume(buf[:n], time.Now().UnixNano()); cerr != nil {
			return cerr
		}
	}
	return err // io.EOF once the server has closed
}

// readStamped is readOnce with the time the kernel received the last
// segment read (SO_TIMESTAMPNS), or, should a read come without it (the
// kernel turns its stamps on a moment after the first socket asks), the
// time of the read, counted in unstamped.
func (pd *polled) readStamped(buf, oob []byte) error {
	var n, oobn int
	var rerr error
	if err := pd.c.control(func(fd int) { n, oobn, _, _, rerr = unix.Recvmsg(fd, buf, oob, 0) }); err != nil {
		return err
	}
	switch {
	case errors.Is(rerr, unix.EINTR) || errors.Is(rerr, unix.EAGAIN):
		return nil // level-triggered: the set reports it again
	case rerr != nil:
		return rerr
	case n == 0:
		return io.EOF
	}
	at := receivedAt(oob[:oobn])
	if at == 0 {
		at = time.Now().UnixNano()
		pd.p.unstamped.Add(1)
	}
	return pd.consume(buf[:n], at)
}

// receivedAt returns the receive time in oob, a control message of a
// socket with SO_TIMESTAMPNS_NEW (a 64-bit seconds and nanoseconds pair
// on every architecture), in Unix nanoseconds; 0 when it has none.
func receivedAt(oob []byte) int64 {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return 0
	}
	for _, m := range msgs {
		if m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SO_TIMESTAMPNS_NEW && len(m.Data) >= stampSize {
			sec, nsec := int64(binary.NativeEndian.Uint64(m.Data)), int64(binary.NativeEndian.Uint64(m.Data[8:]))
			return sec*1e9 + nsec
		}
	}
	return 0
}

// stampSize is the bytes of a receive time (struct __kernel_timespec).
const stampSize = 16

// unstampedReads counts the reads with stamps on that came without one.
func (p *pollers) unstampedReads() int64 {
	if p == nil {
		return 0
	}
	return p.unstamped.Load()
}

// consume handles the whole frames of the connection's unread bytes
// followed by b (wsConn.frames), each data message tallied as received
// at now.
func (pd *polled) consume(b []byte, now int64) error {
	return pd.c.frames(b, func(msg []byte) { pd.s.message(msg, now, pd.jsonl) })
}

// end closes the subscriber's socket and reports why it ended.
func (pd *polled) end(err error) {
	_ = pd.c.sock.Close()
	pd.s.ended(err)
	close(pd.s.done)
}

// close sends a close frame and shuts the socket down, which the set then
// reads as its end.
func (pd *polled) close() {
	_ = pd.c.writeFrame(opClose, []byte{0x03, 0xE8}) // 1000
	_ = pd.c.control(func(fd int) { _ = unix.Shutdown(fd, unix.SHUT_RDWR) })
}

// control runs f with the descriptor of the socket taken over, which stays
// open until f returns; an error once it is closed.
func (c *wsConn) control(f func(fd int)) error {
	rc, err := c.sock.SyscallConn()
	if err != nil {
		return err
	}
	return rc.Control(func(fd uintptr) { f(int(fd)) })
}

// takeSocket moves c from Go's net package (and its poller, which would
// wake for every message too) to a socket of its own in blocking mode:
// reads come only when an epoll set says there is something, and writes
// (pongs, the close frame) are a few bytes. With stamps the kernel tells
// each read when its data arrived.
func (c *wsConn) takeSocket(stamps bool) error {
	tc, ok := c.nc.(*net.TCPConn)
	if !ok {
		return errors.New("not a TCP connection")
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return fmt.Errorf("raw connection: %w", err)
	}
	fd, derr := -1, error(nil)
	if err := rc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return fmt.Errorf("raw connection: %w", err)
	}
	if derr != nil {
		return fmt.Errorf("dup socket: %w", derr)
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		_ = unix.Close(fd)
		return fmt.Errorf("socket blocking: %w", err)
	}
	// A write waits a second at most, as wsConn.close's does: a server
	// that reads nothing must not hold up the end of a run.
	tv := unix.NsecToTimeval(time.Second.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv); err != nil {
		_ = unix.Close(fd)
		return fmt.Errorf("socket send timeout: %w", err)
	}
	if stamps {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS_NEW, 1); err != nil {
			_ = unix.Close(fd)
			return fmt.Errorf("socket receive timestamps: %w", err)
		}
	}
	c.detach() // what the reader had buffered goes to pend
	_ = tc.Close()
	c.sock = os.NewFile(uintptr(fd), "subscriber")
	return nil
}
