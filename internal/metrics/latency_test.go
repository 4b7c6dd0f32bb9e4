package metrics

import (
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

var testBuckets = []float64{.001, .01, .1}

// What many goroutines observe at once adds up, over the shards, to one
// histogram: every count in its bucket (bounds inclusive), the sum exact.
func TestLatencyAddsUpShards(t *testing.T) {
	l := NewLatency("test_latency_seconds", "test", testBuckets)
	durations := []time.Duration{0, time.Millisecond, 2 * time.Millisecond, 10 * time.Millisecond, 50 * time.Millisecond, time.Second, -time.Second}
	const goroutines, rounds = 8, 1000
	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() {
			for range rounds {
				for _, d := range durations {
					l.Observe(d)
				}
			}
		})
	}
	wg.Wait()
	h := gather(t, l)
	const per = goroutines * rounds
	if got, want := h.GetSampleCount(), uint64(per*len(durations)); got != want {
		t.Fatalf("count %d, want %d", got, want)
	}
	wantSum := per * (time.Millisecond + 2*time.Millisecond + 10*time.Millisecond + 50*time.Millisecond + time.Second).Seconds()
	if got := h.GetSampleSum(); got < wantSum*0.999999 || got > wantSum*1.000001 {
		t.Fatalf("sum %v, want %v (a negative duration counts as 0)", got, wantSum)
	}
	// ≤ 1ms: 0, 1ms and the negative one; ≤ 10ms: and 2ms, 10ms; ≤ 100ms: and 50ms.
	for i, want := range []uint64{3 * per, 5 * per, 6 * per} {
		b := h.GetBucket()[i]
		if b.GetUpperBound() != testBuckets[i] || b.GetCumulativeCount() != want {
			t.Fatalf("bucket %d: ≤ %v holds %d, want ≤ %v holding %d", i, b.GetUpperBound(), b.GetCumulativeCount(), testBuckets[i], want)
		}
	}
}

// A tally adds to the histogram what as many Observe calls would, and
// nothing until it is added; it is empty after.
func TestLatencyTallyAddsWhatObserveWould(t *testing.T) {
	observed := NewLatency("test_latency_seconds", "test", testBuckets)
	tallied := NewLatency("test_latency_seconds", "test", testBuckets)
	durations := []time.Duration{0, time.Millisecond, 2 * time.Millisecond, 10 * time.Millisecond, 50 * time.Millisecond, time.Second, -time.Second}
	tally := tallied.Tally()
	for range 3 {
		for _, d := range durations {
			observed.Observe(d)
			tally.Observe(d)
		}
	}
	if got := gather(t, tallied).GetSampleCount(); got != 0 {
		t.Fatalf("the histogram holds %d before the tally is added", got)
	}
	tally.Add()
	want, got := gather(t, observed), gather(t, tallied)
	if got.GetSampleCount() != want.GetSampleCount() || got.GetSampleSum() != want.GetSampleSum() {
		t.Fatalf("tallied count %d sum %v, observed %d %v", got.GetSampleCount(), got.GetSampleSum(), want.GetSampleCount(), want.GetSampleSum())
	}
	for i, b := range want.GetBucket() {
		if got.GetBucket()[i].GetCumulativeCount() != b.GetCumulativeCount() {
			t.Fatalf("bucket ≤ %v: tallied %d, observed %d", b.GetUpperBound(), got.GetBucket()[i].GetCumulativeCount(), b.GetCumulativeCount())
		}
	}
	tally.Add() // empty now: adds nothing
	if again := gather(t, tallied); again.GetSampleCount() != want.GetSampleCount() {
		t.Fatalf("adding the tally twice counts %d, want %d", again.GetSampleCount(), want.GetSampleCount())
	}
}

// gather returns l's histogram as a scrape reads it.
func gather(t *testing.T, l *Latency) *dto.Histogram {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(l)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	return mfs[0].GetMetric()[0].GetHistogram()
}

// BenchmarkLatencyObserve is one observation per delivery from every
// core at once, against client_golang's Histogram with the same buckets.
func BenchmarkLatencyObserve(b *testing.B) {
	buckets := []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}
	b.Run("sharded", func(b *testing.B) {
		l := NewLatency("b", "b", buckets)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				l.Observe(3 * time.Millisecond)
			}
		})
	})
	b.Run("tally-of-16", func(b *testing.B) { // a write of 16 messages
		l := NewLatency("b", "b", buckets)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			t := l.Tally()
			for i := 0; pb.Next(); i++ {
				t.Observe(3 * time.Millisecond)
				if i%16 == 15 {
					t.Add()
				}
			}
			t.Add()
		})
	})
	b.Run("client_golang", func(b *testing.B) {
		h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "b", Buckets: buckets})
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				h.Observe((3 * time.Millisecond).Seconds())
			}
		})
	})
}

// Shards whose sums add up past what an int64 of nanoseconds holds still
// give a positive sum: a negative one would read as a counter reset.
func TestLatencySumDoesNotWrap(t *testing.T) {
	l := NewLatency("test_latency_seconds", "test", testBuckets)
	for i := range l.shards {
		l.shards[i].counts[0].Store(1)
		l.shards[i].sum.Store(1 << 62)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(l)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	want := float64(latencyShards) * (1 << 62) / 1e9
	if got := mfs[0].GetMetric()[0].GetHistogram().GetSampleSum(); got < want*0.999999 || got > want*1.000001 {
		t.Fatalf("sum %v s, want %v s", got, want)
	}
}
