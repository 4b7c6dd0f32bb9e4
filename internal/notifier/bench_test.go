package notifier_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/internal/notifier"
	"github.com/heraldhq/herald/webhook"
)

// BenchmarkDelivery pushes b.N events of 100 clients and waits until an
// app that answers at once has acknowledged every one: events/s is the
// webhook throughput of one node, through the memory broker's queue and
// through Redis.
func BenchmarkDelivery(b *testing.B) {
	for _, name := range []string{"memory", "redis"} {
		b.Run("queue="+name, func(b *testing.B) {
			var q broker.Queue
			if name == "memory" {
				q = startedMemoryTB(b)
			} else {
				q = redisQueuesB(b)
			}
			var got atomic.Int64
			hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got.Add(1) }))
			b.Cleanup(hs.Close)
			n, err := notifier.New(notifier.Config{URL: hs.URL, Secret: secret, Queue: q, Node: "bench"})
			if err != nil {
				b.Fatal(err)
			}
			n.Start()
			b.Cleanup(func() { _ = n.Stop(context.Background()) })
			user := ""
			b.ResetTimer()
			for i := range b.N {
				n.Notify(webhook.Event{ID: fmt.Sprint(i), Type: webhook.Subscribe, Client: fmt.Sprintf("c%d", i%100), User: &user, Channel: "ch"})
			}
			deadline := time.Now().Add(time.Minute)
			for got.Load() < int64(b.N) && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond) // poll the app's count
			}
			if got.Load() < int64(b.N) {
				b.Fatalf("%d of %d events delivered within a minute", got.Load(), b.N)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}
