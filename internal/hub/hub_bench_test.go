package hub_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/memory"
	"github.com/heraldhq/herald/internal/hub"
	"github.com/heraldhq/herald/internal/tracing"
)

// countingSubscriber takes every delivery's JSON push, as a session does,
// and counts it.
type countingSubscriber struct{ n atomic.Int64 }

func (s *countingSubscriber) Deliver(d *hub.Delivery) {
	if p := d.JSON(); p.Trace != nil {
		p.Trace.Done(true, time.Time{}) // as the session does once written
	}
	s.n.Add(1)
}

// BenchmarkFanOut publishes through the memory broker to a channel with
// subs subscribers: one encoding per message, one Deliver per subscriber.
// ns/delivery is the cost of reaching one subscriber.
func BenchmarkFanOut(b *testing.B) {
	for _, size := range []int{128, 1024} {
		for _, subs := range []int{1, 100, 1000, 10000} {
			b.Run(fmt.Sprintf("size=%s/subs=%d", sizeName(size), subs), func(b *testing.B) {
				benchFanOut(b, size, subs)
			})
		}
	}
}

// BenchmarkFanOutTracing is BenchmarkFanOut with tracing off (nil
// TracerProvider: what it costs to have tracing in the code at all) and
// on (every message sampled, spans dropped by the processor): a publish
// span and one fan-out span per message, nothing per subscriber.
func BenchmarkFanOutTracing(b *testing.B) {
	for _, subs := range []int{1, 1000} {
		for _, on := range []bool{false, true} {
			b.Run(fmt.Sprintf("tracing=%v/size=128B/subs=%d", map[bool]string{false: "off", true: "on"}[on], subs), func(b *testing.B) {
				var tr *tracing.Tracer
				if on {
					tp := sdktrace.NewTracerProvider() // samples all; no exporter
					b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
					tr = tracing.New(tp, "bench")
				}
				benchFanOutWith(b, 128, subs, tr)
			})
		}
	}
}

func benchFanOut(b *testing.B, size, subs int) { benchFanOutWith(b, size, subs, nil) }

func benchFanOutWith(b *testing.B, size, subs int, tr *tracing.Tracer) {
	ctx := context.Background()
	br := memory.New()
	h := hub.New(hub.Config{Broker: br, Tracer: tr})
	if err := h.Start(ctx); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = br.Close() })
	ss := make([]*countingSubscriber, subs)
	for i := range ss {
		ss[i] = &countingSubscriber{}
		info := broker.ClientInfo{Client: fmt.Sprintf("c%d", i)}
		if err := h.Subscribe(ctx, ss[i], &info, "bench", nil, func(hub.SubscribeResult) {}); err != nil {
			b.Fatal(err)
		}
	}
	p := broker.Publication{Data: []byte(`"` + strings.Repeat("x", size-2) + `"`)}
	b.SetBytes(int64(size))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := h.Publish(ctx, "bench", p); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(subs), "ns/delivery")
	if got := ss[subs-1].n.Load(); got != int64(b.N) {
		b.Fatalf("last subscriber got %d deliveries, want %d", got, b.N)
	}
}

func sizeName(n int) string {
	if n >= 1024 && n%1024 == 0 {
		return fmt.Sprintf("%dKiB", n/1024)
	}
	return fmt.Sprintf("%dB", n)
}
