package ws

import "testing"

// The flushers leave one processor to the goroutines that read and fan
// out, and there is always one.
func TestFlusherCount(t *testing.T) {
	for procs, want := range map[int]int{1: 1, 2: 1, 4: 3, 16: 15} {
		if got := flusherCount(procs); got != want {
			t.Errorf("flusherCount(%d) = %d, want %d", procs, got, want)
		}
	}
}
