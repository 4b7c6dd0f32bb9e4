package herald

import (
	"context"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/internal/metrics"
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

func (b *measuredBroker) observe(op string, start time.Time, err error) {
	b.m.BrokerOps.WithLabelValues(op).Inc()
	b.m.BrokerSeconds.WithLabelValues(op).Observe(time.Since(start).Seconds())
	if err != nil {
		b.m.BrokerErrors.WithLabelValues(op).Inc()
	}
}

func (b *measuredBroker) Subscribe(ctx context.Context, channel string) error {
	t := time.Now()
	err := b.Broker.Subscribe(ctx, channel)
	b.observe("subscribe", t, err)
	return err
}

func (b *measuredBroker) Unsubscribe(ctx context.Context, channel string) error {
	t := time.Now()
	err := b.Broker.Unsubscribe(ctx, channel)
	b.observe("unsubscribe", t, err)
	return err
}

func (b *measuredBroker) Publish(ctx context.Context, channel string, p broker.Publication, opts broker.HistoryOptions) (broker.Offset, error) {
	t := time.Now()
	off, err := b.Broker.Publish(ctx, channel, p, opts)
	b.observe("publish", t, err)
	return off, err
}

func (b *measuredBroker) History(ctx context.Context, channel string, q broker.HistoryQuery) (broker.HistoryResult, error) {
	t := time.Now()
	res, err := b.Broker.History(ctx, channel, q)
	b.observe("history", t, err)
	return res, err
}

func (b *measuredBroker) PublishJoin(ctx context.Context, channel string, c broker.ClientInfo) error {
	t := time.Now()
	err := b.Broker.PublishJoin(ctx, channel, c)
	b.observe("join", t, err)
	return err
}

func (b *measuredBroker) PublishLeave(ctx context.Context, channel string, c broker.ClientInfo) error {
	t := time.Now()
	err := b.Broker.PublishLeave(ctx, channel, c)
	b.observe("leave", t, err)
	return err
}

func (b *measuredPresence) AddPresence(ctx context.Context, channel string, c broker.ClientInfo) error {
	t := time.Now()
	err := b.ps.AddPresence(ctx, channel, c)
	b.observe("presence_add", t, err)
	return err
}

func (b *measuredPresence) RemovePresence(ctx context.Context, channel string, c broker.ClientInfo) error {
	t := time.Now()
	err := b.ps.RemovePresence(ctx, channel, c)
	b.observe("presence_remove", t, err)
	return err
}

func (b *measuredPresence) Presence(ctx context.Context, channel string) ([]broker.ClientInfo, error) {
	t := time.Now()
	cs, err := b.ps.Presence(ctx, channel)
	b.observe("presence", t, err)
	return cs, err
}
