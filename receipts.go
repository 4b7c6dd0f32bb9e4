package herald

import (
	"context"
	"fmt"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/internal/hub"
	"github.com/heraldhq/herald/internal/notifier"
	"github.com/heraldhq/herald/internal/receipts"
	"github.com/heraldhq/herald/webhook"
)

// newReceipts makes the keeper of delivery receipts when a namespace
// keeps them; nil otherwise, and the hub reports no deliveries. Its due
// checks report undelivered through the webhooks (startReceipts).
func (s *Server) newReceipts() (*receipts.Keeper, error) {
	on := false
	for _, ns := range s.cfg.Namespaces {
		on = on || ns.Receipts
	}
	if !on {
		return nil, nil
	}
	r, ok := s.broker.(broker.Receipts)
	if !ok {
		return nil, fmt.Errorf("herald: receipts need a broker that keeps them (broker.Receipts); %T does not", s.broker)
	}
	return receipts.New(receipts.Config{
		Receipts: r,
		Rules: func(channel string) (time.Duration, time.Duration) {
			rules := s.cfg.rules(channel)
			return rules.receiptTimeout, hub.ReceiptKeep(rules.history)
		},
		Undelivered: s.reportUndelivered,
		Logger:      s.cfg.Logger,
		Dropped:     func() { s.metrics.ReceiptsDropped.Inc() },
	}), nil
}

// reportUndelivered sends an undelivered webhook event for each client
// of d still pending, once it survives this node; without webhooks there
// is no one to tell.
func (s *Server) reportUndelivered(ctx context.Context, d broker.DueCheck) error {
	if s.notifier == nil {
		return nil
	}
	for _, c := range d.Pending {
		user := c.User
		e := webhook.Event{
			ID:      notifier.UndeliveredID(d.Channel, d.Offset, c.Client),
			Type:    webhook.Undelivered,
			Client:  c.Client,
			User:    &user,
			Channel: d.Channel,
			Offset:  d.Offset.String(),
		}
		if err := s.notifier.Send(ctx, e); err != nil {
			return fmt.Errorf("herald: report undelivered: %w", err)
		}
	}
	return nil
}
