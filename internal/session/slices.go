package session

import (
	"math/bits"
	"sync"
	"unsafe"
)

// slicePool keeps the queue slices that sessions let go when they fall
// idle, for sessions whose queue grows again. Under load a session's
// queue grows past keptSlots and empties many times a second; allocating
// it afresh each time was most of what a closed-loop fan-out allocated,
// and the collector's work that came with it. An idle session still keeps
// the keptSlots it had before: the small slice it takes back comes from
// the pool too, so that a burst and the idle after it allocate nothing.
//
// Slices are kept by capacity class (minPooled << class); a class holds at
// most poolClassBytes of them, and slices larger than the largest class
// are left to the collector. The zero value is ready to use.
type slicePool[T any] struct {
	classes [poolClasses]sliceClass[T]
}

// sliceClass is one capacity class of a slicePool.
type sliceClass[T any] struct {
	mu   sync.Mutex
	free [][]T
}

const (
	minPooled      = keptSlots // the smallest capacity kept
	poolClasses    = 11        // minPooled … minPooled<<10 (4,096 entries)
	poolClassBytes = 1 << 20   // bound on the entries a class keeps, in bytes of T
)

// get returns an empty slice with room for at least n entries.
func (p *slicePool[T]) get(n int) []T {
	n = max(n, minPooled)
	class := bits.Len(uint((n - 1) / minPooled))
	if class >= poolClasses {
		return make([]T, 0, n)
	}
	c := &p.classes[class]
	c.mu.Lock()
	if k := len(c.free); k > 0 {
		s := c.free[k-1]
		c.free[k-1] = nil
		c.free = c.free[:k-1]
		c.mu.Unlock()
		return s
	}
	c.mu.Unlock()
	return make([]T, 0, minPooled<<class)
}

// put keeps s, whose entries the caller no longer uses, for a later get.
func (p *slicePool[T]) put(s []T) {
	if cap(s) < minPooled {
		return
	}
	class := bits.Len(uint(cap(s)/minPooled)) - 1 // the largest class s can serve
	if class >= poolClasses {
		return
	}
	s = s[:cap(s)]
	clear(s) // drop what the entries point to
	c := &p.classes[class]
	c.mu.Lock()
	var entry T
	if (len(c.free)+1)*(minPooled<<class)*int(unsafe.Sizeof(entry)) <= poolClassBytes {
		c.free = append(c.free, s[:0])
	}
	c.mu.Unlock()
}
