package memory

import (
	"container/heap"
	"context"
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"sync"
	"time"

	"github.com/heraldhq/herald/broker"
)

var _ broker.Queue = (*Broker)(nil)

// queues are the broker's work queues, in the process: a node that exits
// loses what its queues hold.
type queues struct {
	mu sync.Mutex
	m  map[string]*queue
}

// queue is one work queue: its keys with items, ordered by when each key
// may next be taken.
type queue struct {
	keys  map[string]*queueKey
	ready keyHeap // every key with items
	seq   uint64  // of the last item pushed
	items int
}

// queueKey is one key's items, oldest first, and the lease on the oldest.
type queueKey struct {
	key      string
	items    []broker.QueueItem
	attempts int       // of items[0]
	lease    string    // of items[0]; "" when not leased
	next     time.Time // when the key may be taken: now, a lease's end, or a retry time
	index    int       // in queue.ready
}

func (qs *queues) get(name string) *queue {
	if qs.m == nil {
		qs.m = make(map[string]*queue)
	}
	q := qs.m[name]
	if q == nil {
		q = &queue{keys: make(map[string]*queueKey)}
		qs.m[name] = q
	}
	return q
}

// Push implements broker.Queue.
func (b *Broker) Push(_ context.Context, name, key string, data []byte) error {
	b.queues.mu.Lock()
	defer b.queues.mu.Unlock()
	q := b.queues.get(name)
	q.seq++
	q.items++
	it := broker.QueueItem{Key: key, ID: strconv.FormatUint(q.seq, 10), Data: append([]byte(nil), data...), Pushed: b.now()}
	k := q.keys[key]
	if k == nil {
		k = &queueKey{key: key, next: it.Pushed}
		q.keys[key] = k
		heap.Push(&q.ready, k)
	}
	k.items = append(k.items, it)
	return nil
}

// Take implements broker.Queue.
func (b *Broker) Take(_ context.Context, name string, max int, lease time.Duration) ([]broker.QueueItem, error) {
	b.queues.mu.Lock()
	defer b.queues.mu.Unlock()
	q := b.queues.get(name)
	now := b.now()
	var out []broker.QueueItem
	for len(out) < max && q.ready.Len() > 0 && !q.ready[0].next.After(now) {
		k := q.ready[0]
		if k.lease != "" {
			k.attempts++ // its lease ended unacknowledged
		}
		k.lease = newLease()
		k.next = now.Add(lease)
		heap.Fix(&q.ready, 0)
		it := k.items[0]
		it.Attempts, it.Lease = k.attempts, k.lease
		out = append(out, it)
	}
	return out, nil
}

// Ack implements broker.Queue.
func (b *Broker) Ack(_ context.Context, name string, it broker.QueueItem) error {
	b.queues.mu.Lock()
	defer b.queues.mu.Unlock()
	q := b.queues.get(name)
	k, err := q.leased(it)
	if err != nil {
		return err
	}
	clear(k.items[:1])
	k.items = k.items[1:]
	k.attempts, k.lease = 0, ""
	q.items--
	if len(k.items) == 0 {
		heap.Remove(&q.ready, k.index)
		delete(q.keys, k.key)
		return nil
	}
	k.next = b.now()
	heap.Fix(&q.ready, k.index)
	return nil
}

// Retry implements broker.Queue.
func (b *Broker) Retry(_ context.Context, name string, it broker.QueueItem, delay time.Duration) error {
	b.queues.mu.Lock()
	defer b.queues.mu.Unlock()
	q := b.queues.get(name)
	k, err := q.leased(it)
	if err != nil {
		return err
	}
	k.attempts++
	k.lease = ""
	k.next = b.now().Add(delay)
	heap.Fix(&q.ready, k.index)
	return nil
}

// Len implements broker.Queue.
func (b *Broker) Len(_ context.Context, name string) (int, error) {
	b.queues.mu.Lock()
	defer b.queues.mu.Unlock()
	return b.queues.get(name).items, nil
}

// leased returns it's key when it is still its key's leased item.
func (q *queue) leased(it broker.QueueItem) (*queueKey, error) {
	k := q.keys[it.Key]
	if k == nil || k.lease == "" || k.lease != it.Lease || k.items[0].ID != it.ID {
		return nil, broker.ErrLeaseLost
	}
	return k, nil
}

func newLease() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// keyHeap orders keys by when they may next be taken.
type keyHeap []*queueKey

func (h keyHeap) Len() int           { return len(h) }
func (h keyHeap) Less(i, j int) bool { return h[i].next.Before(h[j].next) }
func (h keyHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *keyHeap) Push(x any) {
	k := x.(*queueKey)
	k.index = len(*h)
	*h = append(*h, k)
}
func (h *keyHeap) Pop() any {
	old := *h
	k := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return k
}
