package loadtest

import (
	"sync"
	"testing"
	"time"
)

// What goroutines add to their shards at once merges into one histogram:
// every count, the sum and the largest value.
func TestShardedHistogramMerges(t *testing.T) {
	var h shardedHistogram
	var wg sync.WaitGroup
	for g := range 20 {
		wg.Go(func() {
			s := h.shard(g)
			for i := range 1000 {
				s.add(time.Duration(i) * time.Microsecond)
			}
		})
	}
	wg.Wait()
	m := h.merged()
	if n := m.n.Load(); n != 20*1000 {
		t.Fatalf("merged count %d, want 20000", n)
	}
	if got, want := m.sum.Load(), int64(20*999*1000/2)*int64(time.Microsecond); got != want {
		t.Fatalf("merged sum %d, want %d", got, want)
	}
	if got := time.Duration(m.max.Load()); got != 999*time.Microsecond {
		t.Fatalf("merged max %v, want 999µs", got)
	}
	if q := m.quantile(0.5); q < 495*time.Microsecond || q > 505*time.Microsecond {
		t.Fatalf("merged median %v, want about 500µs", q)
	}
}
