package receipts_test

import (
	"context"
	"testing"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/memory"
	"github.com/heraldhq/herald/internal/receipts"
)

// Stop returns once what waits is recorded, without waiting for its
// context to end, and the recorded delivery is there.
func TestStopRecordsWhatWaitsAndReturns(t *testing.T) {
	b := memory.New()
	defer b.Close()
	k := receipts.New(receipts.Config{
		Receipts: b,
		Rules:    func(string) (time.Duration, time.Duration) { return time.Minute, time.Hour },
	})
	k.Start()
	off := broker.Offset{Epoch: "e", Seq: 1}
	k.Delivered(broker.Message{Channel: "orders:1", Offset: off, Time: time.Now()}, []broker.ClientInfo{{Client: "c1"}})
	start := time.Now()
	k.Stop(context.Background()) // a context that never ends
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Stop took %v", d)
	}
	st, found, err := b.Receipts(context.Background(), "orders:1", off)
	if err != nil || !found || len(st.Pending) != 1 || st.Pending[0].Client != "c1" {
		t.Fatalf("after Stop, receipts %+v found %v err %v; want c1 pending", st, found, err)
	}
}
