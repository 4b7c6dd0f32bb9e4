package session

import (
	"testing"

	"github.com/heraldhq/herald/internal/wire"
)

// A slice given back is handed out again to a request it has room for,
// emptied and with its old entries cleared; one too small for the request
// is not.
func TestSlicePoolReuses(t *testing.T) {
	var p slicePool[*wire.Payload]
	s := p.get(20)
	if cap(s) != 32 || len(s) != 0 {
		t.Fatalf("get(20): len %d cap %d, want 0 and 32", len(s), cap(s))
	}
	if got := p.get(3); cap(got) != minPooled {
		t.Fatalf("get(3): cap %d, want %d", cap(got), minPooled)
	}
	s = append(s, &wire.Payload{}, &wire.Payload{})
	p.put(s)
	if got := p.get(40); cap(got) != 64 {
		t.Fatalf("get(40) after putting a slice of 32: cap %d, want a new one of 64", cap(got))
	}
	got := p.get(17)
	if &got[:1][0] != &s[:1][0] {
		t.Fatal("get(17) did not reuse the slice of 32 given back")
	}
	for i, e := range got[:cap(got)] {
		if e != nil {
			t.Fatalf("entry %d of the reused slice still points to a payload", i)
		}
	}
}

// A class keeps at most poolClassBytes of slices, and slices beyond the
// largest class or smaller than the smallest are not kept at all.
func TestSlicePoolBounded(t *testing.T) {
	var p slicePool[queued]
	const entryBytes = 16 // a queued is a pointer and a bool
	limit := poolClassBytes / (minPooled * entryBytes)
	for range limit + 100 {
		p.put(make([]queued, 0, minPooled))
	}
	if n := len(p.classes[0].free); n != limit {
		t.Fatalf("class 0 keeps %d slices, want %d", n, limit)
	}
	p.put(make([]queued, 0, minPooled<<poolClasses))
	p.put(make([]queued, 0, minPooled-1))
	for c := 1; c < poolClasses; c++ {
		if n := len(p.classes[c].free); n != 0 {
			t.Fatalf("class %d keeps %d slices, want none", c, n)
		}
	}
}
