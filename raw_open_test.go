package herald_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/coder/websocket"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/heraldtest"
)

// A raw client is subscribed before it can see its connection open: a
// message published the moment the handshake completes reaches it, every
// time, on a fresh channel each time (the broker subscribes anew).
func TestRawSubscribedBeforeOpen(t *testing.T) {
	t.Parallel()
	brokers := map[string]func() broker.Broker{"memory": func() broker.Broker { return nil }, "redis": redisBrokers(t)}
	for name, newBroker := range brokers {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			srv, base := newServer(t, herald.Config{Broker: newBroker()})
			const tries = 300
			for i := range tries {
				ch := fmt.Sprintf("open-%d", i)
				ctx, cancel := context.WithTimeout(context.Background(), heraldtest.Timeout)
				conn, _, err := websocket.Dial(ctx, rawURL(base, ch), nil)
				if err != nil {
					cancel()
					t.Fatalf("try %d: dial: %v", i, err)
				}
				want := fmt.Sprintf("at once %d", i)
				if _, err := srv.Publish(ctx, ch, want); err != nil {
					cancel()
					t.Fatalf("try %d: publish: %v", i, err)
				}
				_, got, err := conn.Read(ctx)
				cancel()
				_ = conn.CloseNow()
				if err != nil || string(got) != want {
					t.Fatalf("try %d of %d: published %q as the connection opened, got %q, %v", i+1, tries, want, got, err)
				}
			}
		})
	}
}
