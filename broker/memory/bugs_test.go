package memory_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/memory"
)

// nopHandler drops everything the broker delivers.
type nopHandler struct{}

func (nopHandler) HandleMessage(broker.Message)          {}
func (nopHandler) HandleJoin(string, broker.ClientInfo)  {}
func (nopHandler) HandleLeave(string, broker.ClientInfo) {}

// broker.HistoryResult.Complete: "It is also true for a zero Since on a
// channel with nothing trimmed before the first message returned." — so it
// is false for a zero Since once messages were trimmed. The memory broker
// answers true for every zero Since, and a client subscribing with
// "since": "" (from the start of history) is told recovered:true although
// it missed the trimmed messages. Once fixed, this check belongs in
// brokertest.Run.
func TestZeroSinceAfterTrimIsIncomplete(t *testing.T) {
	b := memory.New()
	ctx := context.Background()
	if err := b.Start(ctx, nopHandler{}); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for range 5 {
		if _, err := b.Publish(ctx, "trimmed", broker.Publication{Data: json.RawMessage(`1`)}, broker.HistoryOptions{Size: 3}); err != nil {
			t.Fatal(err)
		}
	}
	res, err := b.History(ctx, "trimmed", broker.HistoryQuery{Limit: -1})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Messages) != 3 || res.Messages[0].Offset.Seq != 3 {
		t.Fatalf("history = %+v, want the 3rd to 5th messages", res.Messages)
	}
	if res.Complete {
		t.Errorf("zero Since after the 1st and 2nd of 5 messages were trimmed: Complete = true, want false")
	}
}
