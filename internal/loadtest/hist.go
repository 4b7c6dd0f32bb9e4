package loadtest

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// subBits sets the histogram's precision: 2^subBits buckets per power of
// two, so a reported quantile is at most 1/128 (0.8%) above the true one.
const subBits = 7

// numBuckets covers every non-negative int64.
const numBuckets = (64 - subBits) << subBits

// histogram is a log-linear histogram of durations in nanoseconds that
// any number of goroutines may add to at once, in constant memory.
type histogram struct {
	counts [numBuckets]atomic.Uint64
	n      atomic.Uint64
	sum    atomic.Int64
	max    atomic.Int64
}

func bucketOf(v int64) int {
	if v < 0 {
		v = 0
	}
	u := uint64(v)
	if u < 1<<subBits {
		return int(u)
	}
	e := bits.Len64(u) - subBits - 1 // u>>e is in [2^subBits, 2^(subBits+1))
	return (e+1)<<subBits + int(u>>e) - 1<<subBits
}

// upperOf is the largest value that falls in bucket i.
func upperOf(i int) int64 {
	if i < 1<<subBits {
		return int64(i)
	}
	e := i>>subBits - 1
	m := uint64(i&(1<<subBits-1)) + 1<<subBits
	return int64((m+1)<<e - 1)
}

func (h *histogram) add(d time.Duration) {
	v := int64(d)
	h.counts[bucketOf(v)].Add(1)
	h.n.Add(1)
	h.sum.Add(v)
	for {
		m := h.max.Load()
		if v <= m || h.max.CompareAndSwap(m, v) {
			return
		}
	}
}

// latencyBatch gathers the latencies a reader finds in one frame for its
// histogram shard: each goes to its bucket at once, and the count, sum
// and maximum — counters every reader of the shard shares — go once per
// frame. Until then a reading of the shard (the progress line) may find
// a frame's buckets without its count and maximum; the run's result is
// read after every reader has ended.
type latencyBatch struct {
	n        uint64
	sum, max int64
}

// add counts d in h's bucket and gathers it for the rest.
func (b *latencyBatch) add(h *histogram, d time.Duration) {
	v := int64(d)
	h.counts[bucketOf(v)].Add(1)
	b.n++
	b.sum += v
	b.max = max(b.max, v)
}

// flush adds what b gathered to h and empties b.
func (b *latencyBatch) flush(h *histogram) {
	if b.n == 0 {
		return
	}
	h.n.Add(b.n)
	h.sum.Add(b.sum)
	for {
		m := h.max.Load()
		if b.max <= m || h.max.CompareAndSwap(m, b.max) {
			break
		}
	}
	*b = latencyBatch{}
}

// quantile returns the value at or below which a fraction q of the
// samples fall (rounded up to its bucket's upper bound), 0 when empty.
func (h *histogram) quantile(q float64) time.Duration {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	rank := uint64(q*float64(n) + 0.999999)
	rank = max(1, min(rank, n))
	var seen uint64
	for i := range h.counts {
		seen += h.counts[i].Load()
		if seen >= rank {
			return time.Duration(min(upperOf(i), h.max.Load()))
		}
	}
	return time.Duration(h.max.Load())
}

func (h *histogram) mean() time.Duration {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	return time.Duration(h.sum.Load() / int64(n))
}

// shardedHistogram is a histogram that many goroutines add to on
// different cores: each adds to a shard of its own, so that they do not
// contend on one set of counters, and readers merge the shards.
type shardedHistogram struct {
	shards [histShards]histogram
}

const histShards = 8

// shard returns the i-th shard (any i: it wraps around).
func (h *shardedHistogram) shard(i int) *histogram { return &h.shards[i%histShards] }

// merged returns the shards added up, as they are when it reads them.
func (h *shardedHistogram) merged() *histogram {
	m := new(histogram)
	for i := range h.shards {
		s := &h.shards[i]
		for b := range s.counts {
			if c := s.counts[b].Load(); c > 0 {
				m.counts[b].Add(c)
			}
		}
		m.n.Add(s.n.Load())
		m.sum.Add(s.sum.Load())
		m.max.Store(max(m.max.Load(), s.max.Load()))
	}
	return m
}
