// Package tracing follows a message through herald with OpenTelemetry.
//
// A publish — through the server API, a client's publish command, raw
// mode or Server.Publish — records a publish span: a child of the
// caller's trace when there is one (a W3C traceparent header on the API
// request, a traceparent field of the publish command, or a span in the
// library caller's context), else the root of a new trace. The span's
// context travels with the message through the broker as its traceparent
// (broker.Message.Trace) to every node. There the hub records a fan-out
// span, a child of the publish span, that starts when the broker hands the
// message over and ends at the last socket write of it on that node, with
// how many subscribers it was handed to and how many writes succeeded. One
// trace shows publish → broker → every node's delivery.
//
// A nil *Tracer is tracing off: its methods return at once without
// allocating, and a message carries no traceparent. Nothing is recorded
// per subscriber: the fan-out span is one per node and message, and the
// sessions count its writes on a wire.Tracker.
package tracing

import (
	"context"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/internal/wire"
)

// abandonAfter ends a fan-out span whose writes were not all reported (a
// connection that went away in the middle of one) this long after the
// fan-out, with the writes counted so far.
const abandonAfter = 30 * time.Second

// Tracer records herald's spans with an OpenTelemetry tracer provider.
type Tracer struct {
	tracer trace.Tracer
	node   attribute.KeyValue
}

// New returns a Tracer for node over tp, or nil (tracing off) when tp is
// nil.
func New(tp trace.TracerProvider, node string) *Tracer {
	if tp == nil {
		return nil
	}
	return &Tracer{
		tracer: tp.Tracer("github.com/heraldhq/herald"),
		node:   attribute.String("herald.node", node),
	}
}

// propagator reads and writes W3C trace context.
var propagator = propagation.TraceContext{}

// WithTraceparent returns ctx carrying the remote span a W3C traceparent
// names, or ctx itself when traceparent is empty or malformed (a
// malformed one starts a new trace rather than failing the publish).
func WithTraceparent(ctx context.Context, traceparent string) context.Context {
	if traceparent == "" {
		return ctx
	}
	return propagator.Extract(ctx, propagation.MapCarrier{"traceparent": traceparent})
}

// Publish is a publish span in progress.
type Publish struct {
	span trace.Span
}

// StartPublish starts the span of a publish to channel as a child of ctx's
// span, and returns it with the traceparent the message is to carry ("" when
// the span is not sampled: an unsampled trace is not carried further).
func (t *Tracer) StartPublish(ctx context.Context, channel string, p broker.Publication) (Publish, string) {
	if t == nil {
		return Publish{}, ""
	}
	attrs := []attribute.KeyValue{
		attribute.String("messaging.system", "herald"),
		attribute.String("messaging.operation.type", "send"),
		attribute.String("messaging.destination.name", channel),
		t.node,
	}
	if p.Client != "" {
		attrs = append(attrs, attribute.String("herald.client", p.Client))
	}
	if p.User != "" {
		attrs = append(attrs, attribute.String("enduser.id", p.User))
	}
	ctx, span := t.tracer.Start(ctx, "publish "+channel, trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(attrs...))
	if !span.IsRecording() {
		return Publish{span: span}, ""
	}
	carrier := propagation.MapCarrier{}
	propagator.Inject(ctx, carrier)
	return Publish{span: span}, carrier["traceparent"]
}

// End ends the span with the offset the broker gave, or the error.
func (p Publish) End(off broker.Offset, err error) {
	if p.span == nil {
		return
	}
	if err != nil {
		p.span.RecordError(err)
		p.span.SetStatus(codes.Error, err.Error())
	} else {
		p.span.SetAttributes(attribute.String("messaging.message.id", off.String()))
	}
	p.span.End()
}

// StartFanOut starts the fan-out span of a message this node received from
// the broker, a child of the publish span its traceparent names, and
// returns the Tracker that ends it at the last write. It returns nil, and
// records nothing, for an untraced or unsampled message, or when tracing
// is off.
func (t *Tracer) StartFanOut(m broker.Message) *wire.Tracker {
	if t == nil || m.Trace == "" {
		return nil
	}
	ctx := WithTraceparent(context.Background(), m.Trace)
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return nil
	}
	_, span := t.tracer.Start(ctx, "fan-out "+m.Channel,
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(
			attribute.String("messaging.system", "herald"),
			attribute.String("messaging.operation.type", "process"),
			attribute.String("messaging.destination.name", m.Channel),
			attribute.String("messaging.message.id", m.Offset.String()),
			t.node,
		))
	if !span.IsRecording() {
		span.End()
		return nil
	}
	var timer atomic.Pointer[time.Timer]
	tr := wire.NewTracker(func(delivered, written int, last time.Time) {
		if t := timer.Load(); t != nil {
			t.Stop()
		}
		span.SetAttributes(
			attribute.Int("herald.deliveries", delivered),
			attribute.Int("herald.written", written),
		)
		if written < delivered {
			span.SetAttributes(attribute.Int("herald.not_written", delivered-written))
		}
		if last.IsZero() {
			last = time.Now()
		}
		span.End(trace.WithTimestamp(last))
	})
	timer.Store(time.AfterFunc(abandonAfter, tr.Finish))
	return tr
}
