package hub_test

import (
	"context"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/memory"
	"github.com/heraldhq/herald/internal/hub"
)

type nopSubscriber struct{}

func (nopSubscriber) Deliver(*hub.Delivery) {}

// A presence entry that expired in the broker (as Redis presence does when
// a node stops refreshing it) is recorded again by the hub's refresh.
func TestPresenceIsRefreshed(t *testing.T) {
	b := memory.New()
	h := hub.New(hub.Config{
		Broker:          b,
		Options:         func(string) hub.ChannelOptions { return hub.ChannelOptions{Presence: true} },
		PresenceRefresh: 10 * time.Millisecond,
	})
	ctx := context.Background()
	if err := h.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	defer h.Stop()
	me := broker.ClientInfo{Client: "c1", User: "u1", Info: json.RawMessage(`{"plan":"pro"}`)}
	if err := h.Subscribe(ctx, nopSubscriber{}, &me, "room", nil, func(hub.SubscribeResult) {}); err != nil {
		t.Fatal(err)
	}
	if err := b.RemovePresence(ctx, "room", me); err != nil { // the entry expires
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		cs, err := h.Presence(ctx, "room")
		if err != nil {
			t.Fatal(err)
		}
		if len(cs) == 1 && reflect.DeepEqual(cs[0], me) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("presence %v was not refreshed", cs)
		}
		time.Sleep(5 * time.Millisecond) // poll
	}
}
