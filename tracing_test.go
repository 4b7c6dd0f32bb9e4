package herald_test

import (
	"bytes"
	"fmt"
	"net/http"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/memory"
	"github.com/heraldhq/herald/heraldtest"
)

// The caller's trace, as a W3C traceparent: what an instrumented back end
// sends with its publish.
const (
	callerTrace       = "4bf92f3577b34da6a3ce929d0e0e4736"
	callerSpan        = "00f067aa0ba902b7"
	callerTraceparent = "00-" + callerTrace + "-" + callerSpan + "-01"
)

// tracedNode is a herald node that records its spans.
type tracedNode struct {
	srv   *herald.Server
	tp    *sdktrace.TracerProvider
	base  string
	spans *tracetest.SpanRecorder
}

func newTracedNode(t *testing.T, b broker.Broker) tracedNode {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(t.Context()) })
	srv, hs := heraldtest.NewServer(t, herald.Config{Broker: b, TracerProvider: tp})
	return tracedNode{srv: srv, tp: tp, base: hs.URL, spans: rec}
}

// ended returns the node's ended span named name, or an error.
func (n tracedNode) ended(name string) (sdktrace.ReadOnlySpan, error) {
	var names []string
	for _, s := range n.spans.Ended() {
		if s.Name() == name {
			return s, nil
		}
		names = append(names, s.Name())
	}
	return nil, fmt.Errorf("no ended span %q; ended: %v", name, names)
}

func intAttr(s sdktrace.ReadOnlySpan, key string) int64 {
	for _, kv := range s.Attributes() {
		if kv.Key == attribute.Key(key) {
			return kv.Value.AsInt64()
		}
	}
	return -1
}

// One trace shows a publish through the server API on one node and the
// fan-out on another, over Redis and over NATS: the publish span continues
// the caller's traceparent, the fan-out span is the publish span's child
// and ends at the subscriber's write, with the counts.
func TestTraceAcrossNodes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		brokers func(*testing.T) func() broker.Broker
	}{{"redis", redisBrokers}, {"nats", natsBrokers}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			newBroker := tc.brokers(t)
			pubNode, subNode := newTracedNode(t, newBroker()), newTracedNode(t, newBroker())
			sub := dial(t, subNode.base)
			sub.MustOK(map[string]any{"op": "subscribe", "channel": "traced"})

			req, _ := http.NewRequest(http.MethodPost, pubNode.base+"/api/publish", bytes.NewReader([]byte(`{"channel":"traced","data":"hi"}`)))
			req.Header.Set("Traceparent", callerTraceparent)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("publish: %s", resp.Status)
			}
			if m := nextMessage(t, sub); m["data"] != "hi" {
				t.Fatalf("subscriber got %v", m)
			}

			var publish, fanout sdktrace.ReadOnlySpan
			heraldtest.WaitFor(t, heraldtest.Timeout, func() (err error) {
				if publish, err = pubNode.ended("publish traced"); err != nil {
					return err
				}
				fanout, err = subNode.ended("fan-out traced")
				return err
			})
			if publish.SpanContext().TraceID().String() != callerTrace || publish.Parent().SpanID().String() != callerSpan {
				t.Errorf("publish span in trace %s under %s, want the caller's %s under %s",
					publish.SpanContext().TraceID(), publish.Parent().SpanID(), callerTrace, callerSpan)
			}
			if publish.SpanKind() != trace.SpanKindProducer {
				t.Errorf("publish span kind %v", publish.SpanKind())
			}
			if fanout.SpanContext().TraceID() != publish.SpanContext().TraceID() || fanout.Parent().SpanID() != publish.SpanContext().SpanID() {
				t.Errorf("fan-out span in trace %s under %s, want the publish span's child (%s, %s)",
					fanout.SpanContext().TraceID(), fanout.Parent().SpanID(), publish.SpanContext().TraceID(), publish.SpanContext().SpanID())
			}
			if d, w := intAttr(fanout, "herald.deliveries"), intAttr(fanout, "herald.written"); d != 1 || w != 1 {
				t.Errorf("fan-out span counts %d deliveries, %d written; want 1 and 1", d, w)
			}
			if !fanout.EndTime().After(fanout.StartTime()) {
				t.Errorf("fan-out span from %v to %v", fanout.StartTime(), fanout.EndTime())
			}
			if _, err := pubNode.ended("fan-out traced"); err == nil {
				t.Error("a fan-out span on the node with no subscriber")
			}
		})
	}
}

// A client's publish command continues the trace its traceparent field
// names; a node's fan-out to several subscribers is one span that counts
// them all; a publish without a trace starts one of its own.
func TestTraceFromPublishCommand(t *testing.T) {
	t.Parallel()
	node := newTracedNode(t, memory.New())
	subs := []*heraldtest.Client{dial(t, node.base), dial(t, node.base), dial(t, node.base)}
	for _, c := range subs {
		c.MustOK(map[string]any{"op": "subscribe", "channel": "cmd"})
	}
	pub := dial(t, node.base)
	pub.MustOK(map[string]any{"op": "publish", "channel": "cmd", "data": 1, "traceparent": callerTraceparent})
	for _, c := range subs {
		nextMessage(t, c)
	}
	heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
		_, err := node.ended("fan-out cmd")
		return err
	})
	publish, err := node.ended("publish cmd")
	if err != nil {
		t.Fatal(err)
	}
	fanout, _ := node.ended("fan-out cmd")
	if publish.Parent().SpanID().String() != callerSpan || fanout.Parent().SpanID() != publish.SpanContext().SpanID() {
		t.Fatalf("publish under %s, fan-out under %s; want the caller's %s and the publish span %s",
			publish.Parent().SpanID(), fanout.Parent().SpanID(), callerSpan, publish.SpanContext().SpanID())
	}
	if d, w := intAttr(fanout, "herald.deliveries"), intAttr(fanout, "herald.written"); d != 3 || w != 3 {
		t.Fatalf("one fan-out span counts %d deliveries, %d written; want 3 and 3", d, w)
	}

	pub.MustOK(map[string]any{"op": "publish", "channel": "cmd", "data": 2})
	heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
		n := 0
		for _, s := range node.spans.Ended() {
			if s.Name() == "publish cmd" {
				if n++; n == 2 && s.Parent().IsValid() {
					return fmt.Errorf("an untraced publish continued trace %s", s.Parent().TraceID())
				}
			}
		}
		if n < 2 {
			return fmt.Errorf("%d publish spans, want 2", n)
		}
		return nil
	})
}

// In library mode, Server.Publish continues the span in its context.
func TestTraceFromServerPublish(t *testing.T) {
	t.Parallel()
	node := newTracedNode(t, memory.New())
	ctx, app := node.tp.Tracer("app").Start(t.Context(), "app handler")
	if _, err := node.srv.Publish(ctx, "lib", "hi"); err != nil {
		t.Fatal(err)
	}
	app.End()
	publish, err := node.ended("publish lib")
	if err != nil {
		t.Fatal(err)
	}
	if publish.Parent().SpanID() != app.SpanContext().SpanID() {
		t.Fatalf("publish span under %s, want the app's span %s", publish.Parent().SpanID(), app.SpanContext().SpanID())
	}
}
