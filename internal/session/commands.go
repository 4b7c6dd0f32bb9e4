package session

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/internal/filter"
	"github.com/heraldhq/herald/internal/hub"
	"github.com/heraldhq/herald/internal/protocol"
	"github.com/heraldhq/herald/internal/tracing"
)

// handleCommand decodes and runs one JSON command and queues its reply,
// then waits while the client has more than its queue bound unread
// (throttle).
func (s *Session) handleCommand(b []byte) {
	if s.isClosing() {
		return // what a closed connection still had in flight is dropped
	}
	defer s.throttle()
	cmd, perr := protocol.DecodeCommand(b)
	if (perr != nil || cmd.Op != protocol.OpPublish) && !s.allowCommand() {
		s.refused("rate_limited")
		s.reply(protocol.ErrorReply(cmd.ID, protocol.Errorf(protocol.CodeRateLimited,
			fmt.Sprintf("command rate limit: %g per second, bursts of %d", float64(s.cfg.Limits.CommandRate), max(s.cfg.Limits.CommandBurst, 1)))))
		return
	}
	if perr != nil {
		s.replyError(cmd.ID, perr)
		return
	}
	switch cmd.Op {
	case protocol.OpPing:
		s.reply(protocol.Reply(cmd.ID, nil))
	case protocol.OpSubscribe:
		s.cmdSubscribe(cmd)
	case protocol.OpUnsubscribe:
		s.cmdUnsubscribe(cmd)
	case protocol.OpPublish:
		s.cmdPublish(cmd)
	case protocol.OpHistory:
		s.cmdHistory(cmd)
	case protocol.OpPresence:
		s.cmdPresence(cmd)
	case protocol.OpRefresh:
		s.cmdRefresh(cmd)
	case protocol.OpRPC:
		s.cmdRPC(cmd)
	case protocol.OpAck:
		s.cmdAck(cmd)
	}
}

// replyError answers command id with perr, counting the refusals of a
// token, a namespace rule or a hook.
func (s *Session) replyError(id uint64, perr *protocol.Error) {
	if perr.Code == protocol.CodeForbidden || perr.Code == protocol.CodeUnauthorized {
		s.refused(string(perr.Code))
	}
	s.reply(protocol.ErrorReply(id, perr))
}

func (s *Session) cmdRefresh(cmd protocol.Command) {
	if s.cfg.Policy == nil {
		s.replyError(cmd.ID, protocol.Errorf(protocol.CodeBadRequest, "this server takes no tokens"))
		return
	}
	exp, err := s.cfg.Policy.Refresh(context.Background(), s.cfg.Client, cmd.Token)
	if err != nil {
		s.replyError(cmd.ID, s.asProtocolError(err))
		return
	}
	s.setExpiry(exp)
	s.reply(protocol.Reply(cmd.ID, nil))
}

// cmdRPC asks the Policy's RPCHandler and replies with its data.
func (s *Session) cmdRPC(cmd protocol.Command) {
	h, ok := s.cfg.Policy.(RPCHandler)
	if !ok {
		s.replyError(cmd.ID, protocol.Errorf(protocol.CodeBadRequest, "rpc is not enabled on this server"))
		return
	}
	data, err := h.RPC(context.Background(), s.cfg.Client, cmd.Method, cmd.Data)
	if err != nil {
		s.replyError(cmd.ID, s.asProtocolError(err))
		return
	}
	s.reply(protocol.Reply(cmd.ID, protocol.RPCReply{Data: data}))
}

func (s *Session) cmdSubscribe(cmd protocol.Command) {
	var since *string
	if cmd.HasSince {
		since = &cmd.Since
	}
	so, perr := subscribeOptions(cmd.Filter, cmd.Delta)
	if perr != nil {
		s.replyError(cmd.ID, perr)
		return
	}
	so.Acks = true // a JSON client, which is told receipts and acknowledges
	receipts := s.cfg.Hub.Rules(cmd.Channel).Receipts
	ok, perr := s.subscribe(cmd.Channel, since, false, so, func(r hub.SubscribeResult) {
		s.reply(protocol.Reply(cmd.ID, protocol.SubscribeReply{
			Offset:    r.Latest.String(),
			Recovered: r.Recovered,
			Receipts:  receipts,
		}))
	})
	if !ok {
		s.replyError(cmd.ID, perr)
	}
}

// subscribeOptions makes a subscription's delivery options from what the
// client sent: a filter (nil for none) and a delta encoding ("" for none).
func subscribeOptions(rawFilter json.RawMessage, delta string) (hub.SubscribeOptions, *protocol.Error) {
	so := hub.SubscribeOptions{Delta: delta == protocol.DeltaFossil}
	if rawFilter != nil {
		f, err := filter.Parse(rawFilter)
		if err != nil {
			return so, protocol.Public(err, nil)
		}
		so.Filter = f
	}
	return so, nil
}

// cmdAck records the client's acknowledgement of a channel's messages up
// to an offset, where the client is subscribed and the channel's
// namespace keeps receipts; elsewhere there is nothing to record (a
// client can only have been sent what it subscribed to) and the ack is
// answered all the same, so acks cannot grow the broker's state past the
// connection's subscriptions.
func (s *Session) cmdAck(cmd protocol.Command) {
	if !s.subscribed(cmd.Channel) {
		s.reply(protocol.Reply(cmd.ID, nil))
		return
	}
	if err := s.cfg.Hub.Ack(context.Background(), cmd.Channel, s.cfg.Client, cmd.Offset); err != nil {
		s.replyError(cmd.ID, s.asProtocolError(err))
		return
	}
	s.reply(protocol.Reply(cmd.ID, nil))
}

// subscribe checks and makes one subscription; ready runs once it is made,
// before any message of the channel is queued. A server-side subscription
// (server) is not checked by the Policy and not counted against the
// subscription limit. It reports whether the subscription was made, and
// why not.
func (s *Session) subscribe(channel string, since *string, server bool, so hub.SubscribeOptions, ready func(hub.SubscribeResult)) (bool, *protocol.Error) {
	var from *broker.Offset
	if since != nil {
		off, err := broker.ParseOffset(*since)
		if err != nil {
			return false, protocol.Errorf(protocol.CodeBadRequest, "bad since: "+err.Error())
		}
		from = &off
	}
	if s.cfg.Policy != nil && !server {
		if err := s.cfg.Policy.AuthorizeSubscribe(context.Background(), s.cfg.Client, channel); err != nil {
			return false, s.asProtocolError(err)
		}
	}
	s.mu.Lock()
	dup := slices.Contains(s.subs, channel)
	full := !server && s.cfg.Limits.MaxSubscriptions > 0 && len(s.subs)-int(s.serverSubs) >= s.cfg.Limits.MaxSubscriptions
	full = full || server && s.serverSubs == math.MaxUint16
	if s.closed || dup || full {
		s.mu.Unlock()
		switch {
		case dup:
			return false, protocol.Errorf(protocol.CodeBadRequest, "already subscribed")
		case full:
			s.refused("subscription_limit")
			return false, protocol.Errorf(protocol.CodeRateLimited, fmt.Sprintf("subscription limit reached: at most %d channels per connection", s.cfg.Limits.MaxSubscriptions))
		}
		return false, protocol.Errorf(protocol.CodeUnavailable, "connection closing")
	}
	if server {
		s.subs = slices.Insert(s.subs, int(s.serverSubs), channel)
		s.serverSubs++
	} else {
		s.subs = append(s.subs, channel)
	}
	// Until the hub has made it, only this call may undo the
	// subscription: an unsubscribe would find nothing in the hub yet,
	// which would then keep it for good.
	s.making = append(s.making, channel)
	s.mu.Unlock()

	// The Observer hears of the subscription before the client can: ready
	// queues what the client sees first (a reply, a push).
	started := func(r hub.SubscribeResult) {
		s.mu.Lock()
		if !s.closed && slices.Contains(s.subs, channel) {
			s.tellStartLocked(channel)
		}
		s.mu.Unlock()
		ready(r)
	}
	if s.cfg.Observer == nil {
		started = ready
	}
	err := s.cfg.Hub.SubscribeWith(context.Background(), s, &s.cfg.Client, channel, from, so, started)
	s.mu.Lock()
	if i := slices.Index(s.making, channel); i >= 0 {
		s.making = slices.Delete(s.making, i, i+1)
		if len(s.making) == 0 {
			s.making = nil // most sessions subscribe once: keep no array for the next
		}
	}
	if err != nil {
		s.removeSubLocked(channel)
		s.mu.Unlock()
		return false, s.asProtocolError(err)
	}
	// A Close that ran while the hub was subscribing left this
	// subscription to be undone here.
	closed := s.closed
	s.mu.Unlock()
	if closed {
		s.cfg.Hub.Unsubscribe(context.Background(), s, s.cfg.Client, channel)
		return true, nil
	}
	s.subscriptionsDelta(1)
	return true, nil
}

func (s *Session) cmdUnsubscribe(cmd protocol.Command) {
	s.mu.Lock()
	ok := s.removeSubLocked(cmd.Channel)
	s.mu.Unlock()
	if ok {
		s.cfg.Hub.Unsubscribe(context.Background(), s, s.cfg.Client, cmd.Channel)
		s.subscriptionsDelta(-1)
	}
	s.reply(protocol.Reply(cmd.ID, nil))
}

func (s *Session) cmdPublish(cmd protocol.Command) {
	off, err := s.publish(tracing.WithTraceparent(context.Background(), cmd.Traceparent), cmd.Channel, broker.Publication{
		Data:   cmd.Data,
		Event:  cmd.Event,
		User:   s.cfg.Client.User,
		Client: s.cfg.Client.Client,
		Tags:   cmd.Tags,
		Key:    cmd.Key,
	})
	if err != nil {
		s.replyError(cmd.ID, s.asProtocolError(err))
		return
	}
	s.reply(protocol.Reply(cmd.ID, protocol.PublishReply{Offset: off.String()}))
}

// publish authorizes and publishes p to channel; ctx carries the
// publisher's trace, if any.
func (s *Session) publish(ctx context.Context, channel string, p broker.Publication) (broker.Offset, error) {
	if s.mode != ModeRaw && !s.allowPublish() {
		s.refused("rate_limited")
		return broker.Offset{}, protocol.Errorf(protocol.CodeRateLimited,
			fmt.Sprintf("publish rate limit: %g per second, bursts of %d", float64(s.cfg.Limits.PublishRate), max(s.cfg.Limits.PublishBurst, 1)))
	}
	if s.cfg.Policy != nil {
		if err := s.cfg.Policy.AuthorizePublish(ctx, s.cfg.Client, channel, &p); err != nil {
			return broker.Offset{}, err
		}
	}
	off, err := s.cfg.Hub.Publish(ctx, channel, p)
	if err != nil {
		return off, err
	}
	if s.cfg.Metrics != nil {
		s.cfg.Metrics.MessagesIn.WithLabelValues("client").Inc()
	}
	return off, nil
}

func (s *Session) cmdHistory(cmd protocol.Command) {
	if s.cfg.Policy != nil {
		if err := s.cfg.Policy.AuthorizeSubscribe(context.Background(), s.cfg.Client, cmd.Channel); err != nil {
			s.replyError(cmd.ID, s.asProtocolError(err))
			return
		}
	}
	var since broker.Offset
	if cmd.HasSince {
		off, err := broker.ParseOffset(cmd.Since)
		if err != nil {
			s.replyError(cmd.ID, protocol.Errorf(protocol.CodeBadRequest, "bad since: "+err.Error()))
			return
		}
		since = off
	}
	so, perr := subscribeOptions(cmd.Filter, "")
	if perr != nil {
		s.replyError(cmd.ID, perr)
		return
	}
	res, err := s.cfg.Hub.FilteredHistory(context.Background(), cmd.Channel, broker.HistoryQuery{Since: since, Limit: cmd.Limit}, so.Filter)
	if err != nil {
		s.replyError(cmd.ID, s.asProtocolError(err))
		return
	}
	msgs := make([]protocol.WireMessage, len(res.Messages))
	for i, m := range res.Messages {
		msgs[i] = protocol.ToWire(m)
	}
	s.reply(protocol.Reply(cmd.ID, protocol.HistoryReply{Messages: msgs}))
}

func (s *Session) cmdPresence(cmd protocol.Command) {
	if s.cfg.Policy != nil {
		if err := s.cfg.Policy.AuthorizeSubscribe(context.Background(), s.cfg.Client, cmd.Channel); err != nil {
			s.replyError(cmd.ID, s.asProtocolError(err))
			return
		}
	}
	cs, err := s.cfg.Hub.Presence(context.Background(), cmd.Channel)
	if err != nil {
		s.replyError(cmd.ID, s.asProtocolError(err))
		return
	}
	s.reply(protocol.Reply(cmd.ID, protocol.PresenceReply{Clients: cs}))
}

// quoteJSON returns text as a JSON string.
func quoteJSON(text []byte) json.RawMessage {
	b, _ := json.Marshal(string(text)) // a string always encodes
	return b
}
