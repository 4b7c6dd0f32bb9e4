// Package watermark remembers, for the channels a node used recently, the
// newest offset the node has seen in each: what its broker acknowledged,
// delivered or reported as a channel's latest.
//
// A broker that finds its backing service behind a channel's watermark in
// the same epoch (a failover to a replica that lagged, a restored snapshot)
// knows the service lost messages it had acknowledged, and starts a new
// epoch instead of handing their offsets out again.
//
// The memory is bounded: it keeps the Size channels used most recently and
// forgets the others, whose regressions then go unnoticed by this node.
package watermark

import (
	"container/list"
	"sync"

	"github.com/heraldhq/herald/broker"
)

// DefaultSize is the number of channels a Table made with size 0 remembers.
const DefaultSize = 16384

// Table is a bounded map from channel to the newest offset seen in it. Its
// methods are safe for concurrent use.
type Table struct {
	size int

	mu    sync.Mutex
	byKey map[string]*list.Element // of *mark
	lru   list.List                // front: used most recently
}

type mark struct {
	channel string
	off     broker.Offset
}

// New returns a Table remembering at most size channels; 0 means
// DefaultSize.
func New(size int) *Table {
	if size <= 0 {
		size = DefaultSize
	}
	return &Table{size: size, byKey: make(map[string]*list.Element)}
}

// Observe records that the node saw off in channel. In the epoch already
// recorded the higher sequence wins; an offset of another epoch replaces
// the record, as the newest word on the channel. The zero offset is
// ignored.
func (t *Table) Observe(channel string, off broker.Offset) {
	if off.IsZero() {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if el, ok := t.byKey[channel]; ok {
		m := el.Value.(*mark)
		if m.off.Epoch != off.Epoch || off.Seq > m.off.Seq {
			m.off = off
		}
		t.lru.MoveToFront(el)
		return
	}
	if t.lru.Len() >= t.size {
		oldest := t.lru.Back()
		delete(t.byKey, oldest.Value.(*mark).channel)
		t.lru.Remove(oldest)
	}
	t.byKey[channel] = t.lru.PushFront(&mark{channel: channel, off: off})
}

// Get returns the newest offset seen in channel, or the zero offset when
// the table does not remember it.
func (t *Table) Get(channel string) broker.Offset {
	t.mu.Lock()
	defer t.mu.Unlock()
	if el, ok := t.byKey[channel]; ok {
		return el.Value.(*mark).off
	}
	return broker.Offset{}
}

// Len returns how many channels the table remembers.
func (t *Table) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.lru.Len()
}
