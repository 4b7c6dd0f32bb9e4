package outbox_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/heraldtest"
	"github.com/heraldhq/herald/outbox"
	"github.com/heraldhq/herald/outbox/outboxtest"
)

// benchServer starts a herald node on broker ("memory" or "redis") with
// a subscriber to channel c.
func benchServer(b *testing.B, broker string) (*herald.Server, *heraldtest.Client) {
	b.Helper()
	if broker == "memory" {
		return newServer(b, herald.Config{}, "c")
	}
	srv, hs := redisServer(b, redisPrefix(b))
	return srv, subscriber(b, hs.URL, "c")
}

// BenchmarkThroughput commits rows rows in one transaction and times
// until a subscriber has them all: rows/s is what the outbox publishes
// when it has a backlog, by broker and batch size.
func BenchmarkThroughput(b *testing.B) {
	const rows = 10000
	for _, broker := range []string{"memory", "redis"} {
		for _, batch := range []int{100, 1000} {
			b.Run(fmt.Sprintf("broker=%s/batch=%d/rows=%d", broker, batch, rows), func(b *testing.B) {
				d := outboxtest.New(b)
				srv, sub := benchServer(b, broker)
				startReader(b, outbox.Config{URL: d.URL, Publisher: srv, BatchSize: batch})
				d.WaitHolder(0)
				b.ReportAllocs()
				b.ResetTimer()
				var took time.Duration
				for i := range b.N {
					start := time.Now()
					d.Insert("c", i*rows+1, rows)
					receive(b, sub, func(m []message) bool { return len(m) == rows })
					took += time.Since(start)
				}
				b.ReportMetric(float64(b.N*rows)/took.Seconds(), "rows/s")
				b.ReportMetric(0, "ns/op")
			})
		}
	}
}

// BenchmarkLatency commits one row a transaction and times until a
// subscriber has it: from sending the INSERT (its own transaction) to
// delivery. wake=notify is the reader as it runs; wake=poll has the
// trigger disabled, so that only the one-second poll finds rows.
func BenchmarkLatency(b *testing.B) {
	for _, tc := range []struct{ broker, wake string }{{"memory", "notify"}, {"redis", "notify"}, {"memory", "poll"}} {
		b.Run("broker="+tc.broker+"/wake="+tc.wake, func(b *testing.B) {
			d := outboxtest.New(b)
			srv, sub := benchServer(b, tc.broker)
			startReader(b, outbox.Config{URL: d.URL, Publisher: srv})
			d.WaitHolder(0)
			if tc.wake == "poll" {
				d.Exec(`ALTER TABLE herald_outbox DISABLE TRIGGER herald_outbox_notify`)
			}
			lat := make([]time.Duration, 0, b.N)
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				start := time.Now()
				d.Insert("c", i+1, 1)
				got := receive(b, sub, func(m []message) bool { return len(m) == 1 })
				lat = append(lat, got[0].At.Sub(start))
			}
			b.StopTimer()
			slices.Sort(lat)
			ms := func(q float64) float64 {
				return float64(lat[int(q*float64(len(lat)-1))]) / float64(time.Millisecond)
			}
			b.ReportMetric(ms(0.5), "p50-ms")
			b.ReportMetric(ms(0.99), "p99-ms")
		})
	}
}
