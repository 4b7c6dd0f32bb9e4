package herald

import (
	"context"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/internal/metrics"
	"github.com/heraldhq/herald/internal/protocol"
)

// measuredBroker counts and times the hub's calls into the broker for
// /metrics: herald_broker_operations_total, _errors_total and
// _operation_seconds, by operation.
type measuredBroker struct {
	broker.Broker // Start and Close pass through
	m             *metrics.Metrics
}

// measuredPresence is a measuredBroker over a broker that keeps presence.
type measuredPresence struct {
	*measuredBroker
	ps broker.PresenceStore
}

// measure wraps b, keeping its presence ability (the hub looks for it).
func measure(b broker.Broker, m *metrics.Metrics) broker.Broker {
	mb := &measuredBroker{Broker: b, m: m}
	if ps, ok := b.(broker.PresenceStore); ok {
		return &measuredPresence{measuredBroker: mb, ps: ps}
	}
	return mb
}

// timed runs one broker call as op: counted, timed, its error counted.
func (b *measuredBroker) timed(op string, call func() error) error {
	start := time.Now()
	err := call()
	b.m.BrokerOps.WithLabelValues(op).Inc()
	b.m.BrokerSeconds.WithLabelValues(op).Observe(time.Since(start).Seconds())
	if err != nil {
		b.m.BrokerErrors.WithLabelValues(op).Inc()
	}
	return err
}

func (b *measuredBroker) Subscribe(ctx context.Context, channel string) error {
	return b.timed("subscribe", func() error { return b.Broker.Subscribe(ctx, channel) })
}

func (b *measuredBroker) Unsubscribe(ctx context.Context, channel string) error {
	return b.timed("unsubscribe", func() error { return b.Broker.Unsubscribe(ctx, channel) })
}

func (b *measuredBroker) Publish(ctx context.Context, channel string, p broker.Publication, opts broker.HistoryOptions) (off broker.Offset, err error) {
	if protocol.Namespace(channel) == adminNamespace {
		// herald's own traffic (the nodes' beats, orders, admin
		// snapshots) is not the application's: the metrics leave it out.
		return b.Broker.Publish(ctx, channel, p, opts)
	}
	err = b.timed("publish", func() error { off, err = b.Broker.Publish(ctx, channel, p, opts); return err })
	return off, err
}

func (b *measuredBroker) History(ctx context.Context, channel string, q broker.HistoryQuery) (res broker.HistoryResult, err error) {
	err = b.timed("history", func() error { res, err = b.Broker.History(ctx, channel, q); return err })
	return res, err
}

func (b *measuredBroker) PublishJoin(ctx context.Context, channel string, c broker.ClientInfo) error {
	return b.timed("join", func() error { return b.Broker.PublishJoin(ctx, channel, c) })
}

func (b *measuredBroker) PublishLeave(ctx context.Context, channel string, c broker.ClientInfo) error {
	return b.timed("leave", func() error { return b.Broker.PublishLeave(ctx, channel, c) })
}

func (b *measuredPresence) AddPresence(ctx context.Context, channel string, c broker.ClientInfo) error {
	return b.timed("presence_add", func() error { return b.ps.AddPresence(ctx, channel, c) })
}

func (b *measuredPresence) RemovePresence(ctx context.Context, channel string, c broker.ClientInfo) error {
	return b.timed("presence_remove", func() error { return b.ps.RemovePresence(ctx, channel, c) })
}

func (b *measuredPresence) Presence(ctx context.Context, channel string) (cs []broker.ClientInfo, err error) {
	err = b.timed("presence", func() error { cs, err = b.ps.Presence(ctx, channel); return err })
	return cs, err
}
