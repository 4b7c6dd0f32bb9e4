package watermark

import (
	"fmt"
	"testing"

	"github.com/heraldhq/herald/broker"
)

func TestObserveKeepsNewest(t *testing.T) {
	t.Parallel()
	w := New(4)
	w.Observe("c", broker.Offset{Epoch: "a", Seq: 5})
	w.Observe("c", broker.Offset{Epoch: "a", Seq: 3}) // a late delivery
	if got := w.Get("c"); got != (broker.Offset{Epoch: "a", Seq: 5}) {
		t.Fatalf("after 5 then 3 in one epoch: %v, want 5-a", got)
	}
	w.Observe("c", broker.Offset{Epoch: "b", Seq: 1})
	if got := w.Get("c"); got != (broker.Offset{Epoch: "b", Seq: 1}) {
		t.Fatalf("after a new epoch: %v, want 1-b", got)
	}
	w.Observe("c", broker.Offset{})
	if got := w.Get("c"); got != (broker.Offset{Epoch: "b", Seq: 1}) {
		t.Fatalf("the zero offset changed the record to %v", got)
	}
	if got := w.Get("never"); !got.IsZero() {
		t.Fatalf("a channel never seen: %v, want the zero offset", got)
	}
}

func TestBoundedByRecentUse(t *testing.T) {
	t.Parallel()
	w := New(3)
	for i := range 10 {
		w.Observe(fmt.Sprint(i), broker.Offset{Epoch: "e", Seq: uint64(i + 1)})
		w.Observe("hot", broker.Offset{Epoch: "e", Seq: uint64(i + 1)})
	}
	if w.Len() != 3 {
		t.Fatalf("Len = %d, want the bound 3", w.Len())
	}
	if got := w.Get("hot"); got.Seq != 10 {
		t.Fatalf("the channel used all along was forgotten: %v", got)
	}
	if got := w.Get("9"); got.Seq != 10 {
		t.Fatalf("the newest channel: %v, want 10-e", got)
	}
	if got := w.Get("0"); !got.IsZero() {
		t.Fatalf("the oldest channel is still remembered: %v", got)
	}
}
