package ws

import (
	"net"
	"runtime"
	"sync"
)

// flusher writes the batches of many connections from a few goroutines
// (flusherCount), which take connections from one shared queue a few at
// a time: should the system stop one goroutine's thread for a while, the
// others (where there are others) go on with the rest of the queue. A
// connection whose socket takes its whole batch at once — nearly every
// connection that keeps up — costs one non-blocking write and no
// goroutine of its own; one whose socket is full is handed to a writer
// goroutine that waits for it.
// Connections are written in rounds: one that gets a new batch while its
// last is written goes to the back of the queue. A connection's payloads
// are taken from its session when its turn comes, not when it joins the
// queue, so that each write carries everything that arrived until then:
// under load, several messages; when idle, a message goes out as soon as
// a goroutine gets to it.
type flusher struct {
	mu      sync.Mutex
	work    sync.Cond // signalled when a connection is queued for an idle goroutine
	ready   []*Conn   // connections with a batch to write, from head on
	head    int
	idle    int // goroutines waiting for work and not yet signalled
	stopped bool
	running sync.WaitGroup
}

// flushWorker is one of a flusher's goroutines, with what it needs to
// write.
type flushWorker struct {
	f     *flusher
	chunk []*Conn // connections taken from the queue, being written
	sender
}

// flusherCount is how many flusher goroutines a process of procs
// processors (GOMAXPROCS) runs: one per processor but one, and at least
// one. The goroutines that read — publishes, the broker's messages — and
// fan them out to the sessions keep a processor of their own: a fan-out
// is queued whole while the flushers write, and each write carries what
// arrived meanwhile. With a flusher on every processor they took turns
// with the fan-out, and wrote more, smaller batches: on two processors,
// closed loop to 1,000 subscribers, one flusher delivered 10–15% more a
// second than two, on one node and across two (docs/benchmarks.md).
func flusherCount(procs int) int { return max(1, procs-1) }

// flushChunk is how many connections a goroutine takes from the queue at
// a time: enough to keep the lock quiet, few enough that a stalled thread
// holds up little.
const flushChunk = 16

// newFlusher starts workers goroutines; stop ends them.
func newFlusher(workers int) *flusher {
	f := &flusher{}
	f.work.L = &f.mu
	for range workers {
		w := &flushWorker{f: f, chunk: make([]*Conn, 0, flushChunk)}
		w.gather = true
		f.running.Go(w.run)
	}
	return f
}

// add queues c, whose batch is set. It reports false once the flusher has
// stopped: the caller writes the batch itself.
func (f *flusher) add(c *Conn) bool {
	f.mu.Lock()
	if f.stopped {
		f.mu.Unlock()
		return false
	}
	f.ready = append(f.ready, c)
	wake := f.idle > 0
	if wake {
		f.idle--
	}
	f.mu.Unlock()
	if wake {
		f.work.Signal()
	}
	return true
}

// stop lets the goroutines write what is queued, ends them and waits.
func (f *flusher) stop() {
	f.mu.Lock()
	f.stopped = true
	f.idle = 0
	f.mu.Unlock()
	f.work.Broadcast()
	f.running.Wait()
}

// run writes queued connections until the flusher stops.
func (w *flushWorker) run() {
	f := w.f
	f.mu.Lock()
	for {
		if f.head == len(f.ready) {
			if f.stopped {
				f.mu.Unlock()
				return
			}
			f.idle++
			f.work.Wait() // add or stop took this goroutine off idle
			continue
		}
		w.takeLocked()
		f.mu.Unlock()
		for i, c := range w.chunk {
			c.flush(w)
			w.chunk[i] = nil
		}
		// Let the goroutine that reads the next publish run, should it
		// wait for this processor.
		runtime.Gosched()
		f.mu.Lock()
	}
}

// takeLocked moves the next few queued connections into w.chunk.
func (w *flushWorker) takeLocked() {
	f := w.f
	n := min(flushChunk, len(f.ready)-f.head)
	w.chunk = append(w.chunk[:0], f.ready[f.head:f.head+n]...)
	clear(f.ready[f.head : f.head+n])
	f.head += n
	switch {
	case f.head == len(f.ready) && cap(f.ready) > maxKeptQueue:
		f.ready, f.head = nil, 0
	case f.head == len(f.ready):
		f.ready, f.head = f.ready[:0], 0
	case f.head > len(f.ready)/2: // a queue that never empties: reuse its front
		k := copy(f.ready, f.ready[f.head:])
		clear(f.ready[k:])
		f.ready, f.head = f.ready[:k], 0
	}
}

// maxKeptQueue is the largest queue array an idle flusher keeps.
const maxKeptQueue = 4096

// flush writes c's batch without waiting for the socket, then queues c
// for the next round if a new batch came meanwhile. What the socket does
// not take at once goes to a writer goroutine, with the rest of the batch
// and the write lock; a batch with much to compress (compressesMuch)
// goes to one whole.
func (c *Conn) flush(w *flushWorker) {
	b, ok := c.takeBatch()
	if !ok {
		return
	}
	if c.compressesMuch(b.ps) {
		go c.writer(b)
		return
	}
	c.prepare(&b)
	if !c.wmu.TryLock() { // a control frame is being written
		go c.writer(b)
		return
	}
	rest, n, err := w.writeNow(c, b.bufs)
	if n > 0 {
		c.t.traffic(0, n)
	}
	if err == nil && len(rest) > 0 {
		if hook := c.t.cfg.hooks.partialWrite; hook != nil {
			hook(c)
		}
		// The socket took part of a frame: nothing else may be written
		// before the rest, so wmu stays held and passes to the goroutine
		// that writes it.
		go c.writeRest(b, rest)
		return
	}
	c.wmu.Unlock()
	if err != nil {
		go c.gone()
	}
	c.finish(b, err)
	if c.hasBatch() && !w.f.add(c) {
		go c.writer(batch{})
	}
}

// advance returns bufs without its first n bytes. bufs itself is left as
// it is: it may be a frame's buffers shared by many connections.
func advance(bufs net.Buffers, n int) net.Buffers {
	for n > 0 && len(bufs) > 0 {
		if n < len(bufs[0]) {
			return append(net.Buffers{bufs[0][n:]}, bufs[1:]...)
		}
		n -= len(bufs[0])
		bufs = bufs[1:]
	}
	return bufs
}
