package herald

import (
	"context"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/internal/notifier"
	"github.com/heraldhq/herald/webhook"
)

// startWebhooks starts the notifier when Config.Webhook has a URL; nil
// otherwise, and then notify costs a nil check.
func (s *Server) startWebhooks(reg prometheus.Registerer) error {
	w := s.cfg.Webhook
	if w.URL == "" {
		return nil
	}
	q, ok := s.broker.(broker.Queue)
	if !ok {
		return fmt.Errorf("herald: webhooks need a broker with queues (broker.Queue); %T has none", s.broker)
	}
	n, err := notifier.New(notifier.Config{
		URL:        w.URL,
		Secret:     []byte(w.Secret),
		Events:     w.Events,
		Timeout:    w.Timeout,
		RetryFor:   w.RetryFor,
		Queue:      q,
		Node:       s.nodeID,
		Registerer: reg,
		Logger:     s.cfg.Logger,
	})
	if err != nil {
		return fmt.Errorf("herald: %w", err)
	}
	n.Start()
	s.notifier = n
	return nil
}

// stopWebhooks stops the notifier once no client is left to report on:
// what it still holds goes to the broker's queue, for any node.
func (s *Server) stopWebhooks(ctx context.Context) error {
	if s.notifier == nil {
		return nil
	}
	if err := s.notifier.Stop(ctx); err != nil {
		return fmt.Errorf("herald: webhooks: %w", err)
	}
	return nil
}

// notify hands e to the webhooks, when they are on.
func (s *Server) notify(e webhook.Event) {
	if s.notifier != nil {
		s.notifier.Notify(e)
	}
}
