package wire_test

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/wire"
)

// A tracker finishes once, after the fan-out and every payload are done,
// even when writes finish while the fan-out still hands payloads out.
func TestTrackerFinishesOnceAfterEveryPayload(t *testing.T) {
	t.Parallel()
	const n = 200
	var (
		calls            atomic.Int32
		gotDel, gotWrote int
		gotLast          time.Time
	)
	tr := wire.NewTracker(func(delivered, written int, last time.Time) {
		calls.Add(1)
		gotDel, gotWrote, gotLast = delivered, written, last
	})
	base := time.Unix(1000, 0)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			tr.Done(i%4 != 0, base.Add(time.Duration(i)*time.Millisecond)) // every fourth dropped
		})
		if i == n/2 && calls.Load() != 0 {
			t.Fatal("finished while the fan-out was still handing payloads out")
		}
	}
	wg.Wait()
	if calls.Load() != 0 {
		t.Fatal("finished before Dispatched")
	}
	tr.Dispatched(n)
	tr.Finish() // a late safety call changes nothing
	if calls.Load() != 1 || gotDel != n || gotWrote != n*3/4 {
		t.Fatalf("finish ran %d times with %d delivered, %d written; want once with %d, %d", calls.Load(), gotDel, gotWrote, n, n*3/4)
	}
	if want := base.Add((n - 1) * time.Millisecond); !gotLast.Equal(want) {
		t.Fatalf("last write %v, want %v", gotLast, want)
	}
}

// A fan-out to nobody finishes at once; one whose payloads are never
// reported finishes when Finish is called, with what was written so far.
func TestTrackerEmptyAndAbandoned(t *testing.T) {
	t.Parallel()
	done := 0
	wire.NewTracker(func(d, w int, last time.Time) {
		done++
		if d != 0 || w != 0 || !last.IsZero() {
			t.Errorf("empty fan-out finished with %d, %d, %v", d, w, last)
		}
	}).Dispatched(0)
	if done != 1 {
		t.Fatalf("empty fan-out finished %d times, want 1", done)
	}
	var wrote int
	tr := wire.NewTracker(func(_, w int, _ time.Time) { wrote = w })
	tr.Done(true, time.Now())
	tr.Dispatched(3)
	tr.Finish()
	if wrote != 1 {
		t.Fatalf("abandoned fan-out finished with %d written, want 1", wrote)
	}
}
