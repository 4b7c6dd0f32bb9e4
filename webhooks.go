package herald

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/memory"
	"github.com/heraldhq/herald/internal/notifier"
	"github.com/heraldhq/herald/internal/protocol"
	"github.com/heraldhq/herald/internal/session"
	"github.com/heraldhq/herald/webhook"
)

// startWebhooks starts the notifier when Config.Webhook has a URL; nil
// otherwise, and then notify costs a nil check.
func (s *Server) startWebhooks(reg prometheus.Registerer) error {
	w := s.cfg.Webhook
	if w.URL == "" {
		return nil
	}
	_, local := s.broker.(*memory.Broker)
	var registry broker.Registry
	if r, ok := s.broker.(broker.Registry); ok && !local {
		registry = r // a survivor reports this node's clients, should it die
	}
	occupancy, _ := s.broker.(broker.Occupancy)
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
		Local:      local,
		Registry:   registry,
		Occupancy:  occupancy,
		NodeTTL:    w.NodeTTL,
		Lost:       s.clearPresence,
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

// clientEvents reports one client's connect, subscribes, unsubscribes and
// disconnect to the webhooks, in the order they happen (the notifier
// derives their ids, and keeps the client in the broker's registry for a
// survivor to report should this node die). It is the
// session's Observer. What happens before the connection is established
// (server-side subscriptions made while it opens) waits for the connect
// event; a connection that never opens reports nothing.
type clientEvents struct {
	s         *Server
	client    string
	user      string
	transport string

	mu     sync.Mutex
	opened bool
	ended  bool
	held   []webhook.Event // before opened
}

func (s *Server) newClientEvents(client, user, transport string) *clientEvents {
	if s.notifier == nil {
		return nil
	}
	return &clientEvents{s: s, client: client, user: user, transport: contractTransport(transport)}
}

// event makes one of the client's events; the notifier gives it its id.
func (e *clientEvents) event(typ, channel string) webhook.Event {
	user := e.user
	return webhook.Event{Type: typ, Client: e.client, User: &user, Channel: channel, Time: time.Now()}
}

func (e *clientEvents) emitLocked(ev webhook.Event) {
	switch {
	case e.ended:
	case e.opened:
		e.s.notify(ev)
	default:
		e.held = append(e.held, ev)
	}
}

// Subscribed implements session.Observer.
func (e *clientEvents) Subscribed(channel string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.emitLocked(e.event(webhook.Subscribe, channel))
}

// Unsubscribed implements session.Observer.
func (e *clientEvents) Unsubscribed(channel string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.emitLocked(e.event(webhook.Unsubscribe, channel))
}

// connected reports the connect, then what waited for it.
func (e *clientEvents) connected() {
	e.mu.Lock()
	defer e.mu.Unlock()
	ev := e.event(webhook.Connect, "")
	ev.Transport = e.transport
	e.s.notify(ev)
	e.opened = true
	for _, held := range e.held {
		e.s.notify(held)
	}
	e.held = nil
}

// disconnected reports the disconnect, after the unsubscribes the
// session's close reported; nothing for a connection never opened.
func (e *clientEvents) disconnected(reason string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.opened && !e.ended {
		ev := e.event(webhook.Disconnect, "")
		ev.Reason = reason
		e.s.notify(ev)
	}
	e.ended, e.held = true, nil
}

// disconnectReason names why a session's connection ended, for its
// disconnect event. A write that failed while the server was shutting
// down failed because the shutdown closed the connection under it (a
// presence push, say, on its way as the drain began): that is the
// shutdown's.
func (s *Server) disconnectReason(c session.Cause) string {
	switch {
	case c.Reason == "slow consumer":
		return webhook.ReasonSlow
	case c.Reason == "token expired":
		return webhook.ReasonExpired
	case c.Code == protocol.CloseKicked:
		return webhook.ReasonKicked
	case c.Reason == session.WriteFailed && s.draining.Load():
		return webhook.ReasonShutdown
	case c.Code != 0:
		return webhook.ReasonError
	case s.draining.Load():
		return webhook.ReasonShutdown
	}
	return webhook.ReasonClosed
}

// clearPresence removes a dead node's client from presence, for the
// survivor that reports it.
func (s *Server) clearPresence(client, user string, channels []string) {
	ps, ok := s.broker.(broker.PresenceStore)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), orderTimeout)
	defer cancel()
	for _, ch := range channels {
		if err := ps.RemovePresence(ctx, ch, broker.ClientInfo{Client: client, User: user}); err != nil {
			s.cfg.Logger.Warn("webhook: clear a dead node's presence", "channel", ch, "err", err)
		}
	}
}

// channelOccupied tells the webhooks of a channel's first and last
// subscriber on this node (the hub's Occupied); herald's own channels are
// not the application's.
func (s *Server) channelOccupied(channel string, occupied bool) {
	if s.notifier != nil && protocol.Namespace(channel) != adminNamespace {
		s.notifier.Occupied(channel, occupied)
	}
}
