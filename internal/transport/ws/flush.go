package ws

import (
	"net"
	"runtime"
	"sync"
)

// flusher writes the batches of many connections from one goroutine.
// A connection whose socket takes its whole batch at once — nearly every
// connection that keeps up — costs one non-blocking write and no
// goroutine of its own; one whose socket is full is handed to a writer
// goroutine that waits for it. Connections are written in rounds: one that
// gets a new batch while its last is written joins the next round, by which
// time its session has queued everything that arrived meanwhile, so that
// under load each write carries several messages and when idle a message
// goes out as soon as a flusher gets to it.
type flusher struct {
	wake chan struct{} // wakes the goroutine when it sleeps

	mu       sync.Mutex
	ready    []*Conn // connections with a batch to write, in arrival order
	sleeping bool    // the goroutine waits on wake
	stopped  bool

	// The goroutine's own: the previous round's slice, reused, and the
	// state of the write in progress.
	spare []*Conn
	flusherIO
}

func newFlusher() *flusher {
	f := &flusher{wake: make(chan struct{}, 1)}
	f.initIO()
	return f
}

// add queues c, whose batch is set, for the next round. It reports false
// once the flusher has stopped: the caller writes the batch itself.
func (f *flusher) add(c *Conn) bool {
	f.mu.Lock()
	if f.stopped {
		f.mu.Unlock()
		return false
	}
	f.ready = append(f.ready, c)
	wake := f.sleeping
	f.sleeping = false
	f.mu.Unlock()
	if wake {
		f.wake <- struct{}{}
	}
	return true
}

// run writes rounds until stop is closed; connections still queued then
// get writer goroutines.
func (f *flusher) run(stop <-chan struct{}) {
	for {
		f.mu.Lock()
		if len(f.ready) == 0 {
			f.sleeping = true
			f.mu.Unlock()
			select {
			case <-f.wake:
				continue
			case <-stop:
			}
			f.mu.Lock()
			f.stopped = true
			left := f.ready
			f.ready = nil
			f.mu.Unlock()
			for _, c := range left {
				go c.writer(batch{})
			}
			return
		}
		round := f.ready
		f.ready = f.spare[:0]
		f.mu.Unlock()
		for i, c := range round {
			c.flush(f)
			round[i] = nil
			if i%yieldEvery == yieldEvery-1 {
				runtime.Gosched()
			}
		}
		f.spare = round[:0]
	}
}

// flush writes c's batch without waiting for the socket, then queues c
// for the next round if a new batch came meanwhile. What the socket does
// not take at once goes to a writer goroutine, with the rest of the batch.
func (c *Conn) flush(f *flusher) {
	b, ok := c.takeBatch()
	if !ok {
		return
	}
	if !c.wmu.TryLock() { // a control frame is being written
		go c.writer(b)
		return
	}
	rest, err := f.writeNow(c, b.bufs)
	c.wmu.Unlock()
	if err == nil && len(rest) > 0 {
		b.bufs = rest
		go c.writer(b)
		return
	}
	if err != nil {
		go c.gone()
	}
	c.finish(b, err)
	if c.hasBatch() && !f.add(c) {
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

// yieldEvery is how many connections a flusher writes before it lets
// other goroutines run: a long round must not keep the goroutine that
// reads the next publish waiting.
const yieldEvery = 32
