package metrics

import (
	"math/rand/v2"
	"slices"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Latency is a Prometheus histogram of durations observed at a high rate
// from many goroutines at once — one observation per delivery. Each
// observation goes to one of several shards, each on cache lines of its
// own, so that goroutines on different cores do not contend on one set of
// counters: client_golang's Histogram keeps one, and in a closed-loop
// fan-out it cost a tenth of herald's CPU, more than anything but the
// write itself. Scrapes add the shards up.
type Latency struct {
	desc   *prometheus.Desc
	bounds []time.Duration // upper bounds, ascending
	upper  []float64       // the same in seconds
	_      [64]byte        // the shards share no cache line with the fields above
	shards [latencyShards]latencyShard
}

const (
	latencyShards     = 16
	maxLatencyBuckets = 15
)

// latencyShard is one shard's counts: per bucket (not cumulative), the
// last for what is above every bound, and the sum in nanoseconds (it
// wraps after 584 years of latency in one shard; Collect adds the shards
// in floating point).
type latencyShard struct {
	counts [maxLatencyBuckets + 1]atomic.Uint64
	sum    atomic.Uint64
	_      [56]byte // to a multiple of 64 bytes: shards share no cache line
}

// NewLatency returns a histogram named name with the given upper bounds
// in seconds, ascending; at most 15.
func NewLatency(name, help string, buckets []float64) *Latency {
	if len(buckets) > maxLatencyBuckets || !slices.IsSorted(buckets) {
		panic("metrics: latency buckets must be ascending, at most 15")
	}
	l := &Latency{desc: prometheus.NewDesc(name, help, nil, nil), upper: slices.Clone(buckets)}
	for _, b := range buckets {
		l.bounds = append(l.bounds, time.Duration(b*float64(time.Second)))
	}
	return l
}

// Observe records d in a shard picked at random.
func (l *Latency) Observe(d time.Duration) {
	t := l.Tally()
	t.Observe(d)
	t.Add()
}

// Tally returns an empty tally of observations for l.
func (l *Latency) Tally() LatencyTally { return LatencyTally{l: l} }

// LatencyTally gathers observations for a Latency and adds them to it in
// one step: a write that carries many messages counts them with one
// atomic add per bucket it touched, not two per message. It is not safe
// for concurrent use.
type LatencyTally struct {
	l      *Latency
	counts [maxLatencyBuckets + 1]uint32
	sum    uint64
	n      int
}

// Observe gathers d.
func (t *LatencyTally) Observe(d time.Duration) {
	d = max(d, 0)
	i := 0
	for i < len(t.l.bounds) && d > t.l.bounds[i] {
		i++
	}
	t.counts[i]++
	t.sum += uint64(d)
	t.n++
}

// Add adds what t gathered to its Latency, in a shard picked at random,
// and empties t.
func (t *LatencyTally) Add() {
	if t.n == 0 {
		return
	}
	s := &t.l.shards[rand.Uint32()%latencyShards]
	for i, c := range t.counts {
		if c != 0 {
			s.counts[i].Add(uint64(c))
		}
	}
	s.sum.Add(t.sum)
	*t = LatencyTally{l: t.l}
}

// Describe implements prometheus.Collector.
func (l *Latency) Describe(ch chan<- *prometheus.Desc) { ch <- l.desc }

// Collect implements prometheus.Collector: the shards added up.
func (l *Latency) Collect(ch chan<- prometheus.Metric) {
	var counts [maxLatencyBuckets + 1]uint64
	var sum float64 // nanoseconds
	for i := range l.shards {
		s := &l.shards[i]
		for b := range counts {
			counts[b] += s.counts[b].Load()
		}
		sum += float64(s.sum.Load())
	}
	cumulative := make(map[float64]uint64, len(l.upper))
	var n uint64
	for b, upper := range l.upper {
		n += counts[b]
		cumulative[upper] = n
	}
	n += counts[len(l.upper)]
	ch <- prometheus.MustNewConstHistogram(l.desc, n, sum/float64(time.Second), cumulative)
}
