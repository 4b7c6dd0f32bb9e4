package brokertest

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald/broker"
)

// BenchPublish measures the path between two nodes: Publish on one,
// HandleMessage on the other, which is subscribed to the channel. Each
// iteration is one 128-byte message kept in history (the size and TTL a
// server keeps by default); the timer stops once the second node received
// them all. It runs once with one Publish at a time and once with eight
// goroutines publishing to the channel at once.
//
// newNodes returns two new, unstarted brokers of one cluster (sharing
// their backing service and prefix); BenchPublish starts and closes them.
func BenchPublish(b *testing.B, newNodes func(b *testing.B) (pub, sub broker.Broker)) {
	for _, inflight := range []int{1, 8} {
		b.Run(fmt.Sprintf("inflight=%d", inflight), func(b *testing.B) {
			benchPublish(b, inflight, newNodes)
		})
	}
}

func benchPublish(b *testing.B, inflight int, newNodes func(b *testing.B) (pub, sub broker.Broker)) {
	ctx := context.Background()
	pub, sub := newNodes(b)
	recv := &counter{}
	if err := pub.Start(ctx, &counter{}); err != nil {
		b.Fatal(err)
	}
	defer pub.Close()
	if err := sub.Start(ctx, recv); err != nil {
		b.Fatal(err)
	}
	defer sub.Close()
	const channel = "bench"
	if err := sub.Subscribe(ctx, channel); err != nil {
		b.Fatal(err)
	}
	p := broker.Publication{Data: make([]byte, 128), Client: "client-1", User: "user-1"}
	opts := broker.HistoryOptions{Size: 100, TTL: 10 * time.Minute}
	b.ReportAllocs()
	b.ResetTimer()
	callConcurrently(b, inflight, func() error {
		_, err := pub.Publish(ctx, channel, p, opts)
		return err
	})
	recv.await(b, int64(b.N))
}

// callConcurrently calls fn b.N times in all from inflight goroutines,
// failing b on the first error.
func callConcurrently(b *testing.B, inflight int, fn func() error) {
	b.Helper()
	var left atomic.Int64
	left.Store(int64(b.N))
	var wg sync.WaitGroup
	errs := make(chan error, inflight)
	for range inflight {
		wg.Go(func() {
			for left.Add(-1) >= 0 {
				if err := fn(); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
}

// counter is a Handler that counts messages and lets a benchmark wait for
// a number of them.
type counter struct {
	n    atomic.Int64
	mu   sync.Mutex // guards want and done
	want int64
	done chan struct{}
}

func (c *counter) HandleMessage(broker.Message) {
	n := c.n.Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done != nil && n >= c.want {
		close(c.done)
		c.done = nil
	}
}

func (*counter) HandleJoin(string, broker.ClientInfo)  {}
func (*counter) HandleLeave(string, broker.ClientInfo) {}
func (*counter) HandleReconnect()                      {}

// await returns once n messages arrived in all, failing b after Timeout.
func (c *counter) await(b *testing.B, n int64) {
	b.Helper()
	done := make(chan struct{})
	c.mu.Lock()
	if c.n.Load() >= n {
		c.mu.Unlock()
		return
	}
	c.want, c.done = n, done
	c.mu.Unlock()
	select {
	case <-done:
	case <-time.After(Timeout):
		b.Fatalf("the subscribed node received %d of %d messages", c.n.Load(), n)
	}
}
