// Package notifier tells the application what happens, with webhooks
// (BACKEND.md, "Webhooks"): producers hand it events (Notify), which it
// pushes, in the order given, to a durable queue in the broker
// (broker.Queue, keyed by client, so one client's events keep their
// order); its sender takes events from that queue — whichever node pushed
// them — and POSTs each, signed, to the app, acknowledging it on a 2xx
// and retrying it with backoff otherwise, for RetryFor. A node that dies
// holding events gives them back when their lease ends: another node's
// sender delivers them. Delivery is at least once.
package notifier

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/webhook"
)

// QueueName is the broker queue webhook events wait in.
const QueueName = "webhooks"

// Config configures a Notifier. Zero fields take the defaults in brackets.
type Config struct {
	// URL receives the events; Secret signs them. Both are required.
	URL    string
	Secret []byte
	// Events are the event types sent; nil: all (webhook.Types).
	Events []string
	// Timeout bounds one POST [2s].
	Timeout time.Duration
	// RetryFor is how long an event is retried before it is dropped [1h].
	RetryFor time.Duration
	// RetryMin and RetryMax bound the backoff between tries of one event
	// [1s, 1m]; each wait doubles, with jitter.
	RetryMin, RetryMax time.Duration
	// Queue holds the events between the nodes; required.
	Queue broker.Queue
	// Local says the queue lives in this process (the memory broker): no
	// other node will deliver what it holds, so Stop delivers it first,
	// while its context lasts, and counts what is left as dropped.
	Local bool
	// Node names this node in the events it makes.
	Node string
	// Registry, when set, keeps this node's clients in the broker, so that
	// when a node dies without shutting down a survivor reports its
	// clients' unsubscribes and disconnects (node_lost) within NodeTTL
	// [30s]; Lost is then told of each such client, to clear its presence.
	Registry broker.Registry
	NodeTTL  time.Duration
	Lost     func(client, user string, channels []string)
	// Occupancy, when set, decides the occupied and vacated events across
	// the cluster; without it (or with neither type chosen) none is sent.
	Occupancy broker.Occupancy
	// MaxPending bounds the events waiting in this process to be pushed to
	// the queue (while the broker does not answer) [100000]; beyond it an
	// event is dropped and counted.
	MaxPending int
	// Registerer receives the metrics; nil: none.
	Registerer prometheus.Registerer
	// Client sends the requests; nil: a client of its own.
	Client *http.Client
	// Logger receives what goes wrong; nil discards.
	Logger *slog.Logger
}

// Notifier sends webhook events. Notify may be called from any goroutine.
type Notifier struct {
	cfg     Config
	events  map[string]bool
	metrics metrics

	mu      sync.Mutex
	pending []step                 // to do, oldest first
	stopped bool                   // Stop took pending: later events are dropped
	graces  map[string]*time.Timer // channels vacated here, waiting for vacatedGrace
	clients map[string]*clientState
	toPush  chan struct{} // an event to push: wakes the pusher
	toSend  chan struct{} // an event pushed: wakes the sender
	ctx     context.Context
	cancel  context.CancelFunc
	done    sync.WaitGroup
}

// step is one thing the pusher does, in order: push an event, or write
// a client's entry in the registry (nil state: remove it).
type step struct {
	event   *webhook.Event
	client  string
	state   *clientState // a copy, for a registry write
	entry   bool         // this step writes the registry
	channel string       // this step occupies (or, with vacate, vacates) a channel
	vacate  bool
}

// clientState is what the registry keeps of a client: enough for a
// survivor to report its end as this node would have.
type clientState struct {
	User      string         `json:"user"`
	Transport string         `json:"transport,omitempty"`
	Subs      map[string]int `json:"subs,omitempty"` // channel → which subscription to it this is
	seen      map[string]int // channel → subscriptions so far
}

type metrics struct {
	queued, delivered, retried prometheus.Counter
	dropped                    *prometheus.CounterVec
	latency                    prometheus.Histogram
}

// New checks cfg and returns a Notifier; Start starts it.
func New(cfg Config) (*Notifier, error) {
	if cfg.URL == "" || len(cfg.Secret) == 0 || cfg.Queue == nil {
		return nil, errors.New("notifier: a URL, a secret and a queue are required")
	}
	for _, t := range cfg.Events {
		if !slices.Contains(webhook.Types, t) {
			return nil, fmt.Errorf("notifier: unknown event type %q (want one of %v)", t, webhook.Types)
		}
	}
	if cfg.Events == nil {
		cfg.Events = webhook.Types
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Second
	}
	if cfg.RetryFor <= 0 {
		cfg.RetryFor = time.Hour
	}
	if cfg.RetryMin <= 0 {
		cfg.RetryMin = time.Second
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = time.Minute
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = 100_000
	}
	if cfg.NodeTTL <= 0 {
		cfg.NodeTTL = 30 * time.Second
	}
	if cfg.Client == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = workersTotal // one kept connection per POST in flight
		cfg.Client = &http.Client{Transport: t}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	n := &Notifier{cfg: cfg, events: map[string]bool{}, clients: map[string]*clientState{}, toPush: make(chan struct{}, 1), toSend: make(chan struct{}, 1)}
	for _, t := range cfg.Events {
		n.events[t] = true
	}
	n.metrics = metrics{
		queued: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_webhook_events_queued_total", Help: "Webhook events pushed to the broker's queue by this node.",
		}),
		delivered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_webhook_events_delivered_total", Help: "Webhook events the application acknowledged with a 2xx, sent by this node.",
		}),
		retried: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_webhook_events_retried_total", Help: "Webhook deliveries that failed and will be tried again.",
		}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_webhook_events_dropped_total", Help: "Webhook events given up: retried for --webhook-retry-for (expired), or never queued (overflow, shutdown).",
		}, []string{"reason"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "herald_webhook_delivery_seconds", Help: "Time from a webhook event to its acknowledgement by the application.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		}),
	}
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{n.metrics.queued, n.metrics.delivered, n.metrics.retried, n.metrics.dropped, n.metrics.latency} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("notifier: metrics: %w", err)
			}
		}
	}
	return n, nil
}

// Notify queues e to be sent, stamped with this node and, when e has
// none, the time now. It never blocks: the event waits in the process
// until it is pushed to the broker's queue. A client event without an ID
// gets one derived from what happened (EventID), and, with a Registry,
// the client's entry follows it.
func (n *Notifier) Notify(e webhook.Event) {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	e.Time = e.Time.UTC()
	e.Node = n.cfg.Node
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.stopped {
		// Stop has taken what waited: this one comes too late.
		n.metrics.dropped.WithLabelValues("shutdown").Inc()
		n.cfg.Logger.Error("webhook: event after shutdown; dropped", "type", e.Type, "client", e.Client)
		return
	}
	steps := n.trackLocked(&e)
	if n.events[e.Type] {
		ev := e
		steps = n.orderLocked(e.Type, steps, step{event: &ev})
	}
	if len(n.pending)+len(steps) > n.cfg.MaxPending {
		n.metrics.dropped.WithLabelValues("overflow").Inc()
		n.cfg.Logger.Error("webhook: too many events waiting for the broker; dropped", "type", e.Type, "client", e.Client, "id", e.ID)
		return
	}
	n.pending = append(n.pending, steps...)
	if len(steps) > 0 {
		wake(n.toPush)
	}
}

// trackLocked keeps the client's state as e changes it, numbers e's id,
// and returns the registry write that follows, if any.
func (n *Notifier) trackLocked(e *webhook.Event) []step {
	if e.Client == "" {
		return nil
	}
	st := n.clients[e.Client]
	switch e.Type {
	case webhook.Connect:
		st = &clientState{Transport: e.Transport, Subs: map[string]int{}, seen: map[string]int{}}
		if e.User != nil {
			st.User = *e.User
		}
		n.clients[e.Client] = st
	case webhook.Subscribe:
		if st != nil {
			st.seen[e.Channel]++
			st.Subs[e.Channel] = st.seen[e.Channel]
		}
	case webhook.Unsubscribe:
		if st != nil && e.ID == "" {
			e.ID = EventID(e.Client, e.Type, e.Channel, st.Subs[e.Channel])
		}
		if st != nil {
			delete(st.Subs, e.Channel)
		}
	case webhook.Disconnect:
		delete(n.clients, e.Client)
		st = nil
	}
	if e.ID == "" {
		num := 0
		if st != nil && e.Type == webhook.Subscribe {
			num = st.Subs[e.Channel]
		}
		e.ID = EventID(e.Client, e.Type, e.Channel, num)
	}
	if n.cfg.Registry == nil {
		return nil
	}
	w := step{client: e.Client, entry: true}
	if st != nil {
		w.state = &clientState{User: st.User, Transport: st.Transport, Subs: maps.Clone(st.Subs)}
	}
	return []step{w}
}

// orderLocked puts the event and the registry write in the order that
// loses nothing if the node dies between them: what a client gains is
// written to the registry first (a survivor may report the end of a
// subscription the app never heard of, which the app ignores); what it
// loses is told first (a survivor may tell it again, with the same id).
func (n *Notifier) orderLocked(typ string, registry []step, event step) []step {
	if typ == webhook.Connect || typ == webhook.Subscribe {
		return append(registry, event)
	}
	return append([]step{event}, registry...)
}

// Send pushes e to the broker's queue now, when its type is chosen,
// stamped with this node: it returns once e survives this node. It is
// for events whose producer clears its own record of them only then
// (undelivered); e carries its ID.
func (n *Notifier) Send(ctx context.Context, e webhook.Event) error {
	if !n.events[e.Type] {
		return nil
	}
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	e.Time, e.Node = e.Time.UTC(), n.cfg.Node
	if err := n.push(ctx, e); err != nil {
		return err
	}
	wake(n.toSend)
	return nil
}

// UndeliveredID derives an undelivered event's id from the message and
// the client, so that a check taken again reports it under the same id.
func UndeliveredID(channel string, offset broker.Offset, client string) string {
	return EventID(client, webhook.Undelivered, channel+"\x00"+offset.String(), 0)
}

// EventID derives a client event's id from what happened: the client, the
// type, the channel and which of the client's subscriptions to it (0 for
// connect and disconnect). A survivor reporting a dead node's clients
// derives the same ids.
func EventID(client, typ, channel string, n int) string {
	h := sha256.Sum256([]byte(client + "\x00" + typ + "\x00" + channel + "\x00" + strconv.Itoa(n)))
	return hex.EncodeToString(h[:16])
}

// wake signals a loop waiting on ch, or one that will look at it next.
func wake(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// Start starts pushing and sending; Stop stops both.
func (n *Notifier) Start() {
	n.ctx, n.cancel = context.WithCancel(context.Background())
	n.done.Add(2)
	go n.pushLoop()
	go n.sendLoop()
	if n.cfg.Registry != nil {
		n.done.Add(2)
		go n.beatLoop()
		go n.watchLoop()
	}
}

// Stop stops the sender — events it holds go back to the queue when their
// lease ends, for another node — and pushes what waits in the process
// until ctx ends; what is left then is dropped and counted.
func (n *Notifier) Stop(ctx context.Context) error {
	if n.cancel == nil {
		return nil
	}
	n.cancel()
	n.done.Wait()
	n.mu.Lock()
	left := n.pending
	n.pending, n.stopped = nil, true
	n.mu.Unlock()
	if _, ok := ctx.Deadline(); !ok && n.cfg.Local {
		// Delivering what the process holds waits on the app: bound it
		// when the caller did not.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, maxDrain)
		defer cancel()
	}
	for i, st := range left {
		if err := n.do(ctx, st); err != nil {
			n.metrics.dropped.WithLabelValues("shutdown").Add(float64(len(left) - i))
			n.cfg.Logger.Error("webhook: events not queued before shutdown; dropped", "events", len(left)-i, "err", err)
			return err
		}
	}
	if n.cfg.Occupancy != nil {
		n.flushGraces()
	}
	if n.cfg.Registry != nil {
		// Shut down, not dead: nobody is to report this node's clients.
		if err := n.cfg.Registry.Forget(ctx, n.cfg.Node); err != nil {
			n.cfg.Logger.Warn("webhook: leave the registry", "err", err)
		}
	}
	if n.cfg.Local {
		return n.drain(ctx)
	}
	return nil
}

// drain delivers what a queue in this process holds, until it is empty or
// ctx ends; what is left then is dropped and counted.
func (n *Notifier) drain(ctx context.Context) error {
	lease := n.cfg.Timeout + leaseSlack
	for {
		items, err := n.cfg.Queue.Take(ctx, QueueName, takeMax, lease)
		if err == nil && len(items) == 0 {
			left, lerr := n.cfg.Queue.Len(ctx, QueueName)
			if lerr == nil && left == 0 {
				return nil
			}
		}
		var wg sync.WaitGroup
		for _, it := range items {
			wg.Go(func() { n.deliver(it) })
		}
		wg.Wait()
		select {
		case <-ctx.Done():
			left, _ := n.cfg.Queue.Len(context.Background(), QueueName)
			if left > 0 {
				n.metrics.dropped.WithLabelValues("shutdown").Add(float64(left))
				n.cfg.Logger.Error("webhook: events not delivered before shutdown; dropped", "events", left)
			}
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// pushLoop pushes waiting events to the queue in order, retrying while
// the broker does not answer.
func (n *Notifier) pushLoop() {
	defer n.done.Done()
	wait := 50 * time.Millisecond
	for {
		n.mu.Lock()
		var st step
		have := len(n.pending) > 0
		if have {
			st = n.pending[0]
		}
		n.mu.Unlock()
		if !have {
			select {
			case <-n.ctx.Done():
				return
			case <-n.toPush:
				continue
			}
		}
		if err := n.do(n.ctx, st); err != nil {
			if n.ctx.Err() != nil {
				return
			}
			n.cfg.Logger.Warn("webhook: queue an event", "err", err)
			select {
			case <-n.ctx.Done():
				return
			case <-time.After(wait):
			}
			wait = min(2*wait, 2*time.Second)
			continue
		}
		wait = 50 * time.Millisecond
		n.mu.Lock()
		n.pending[0] = step{}
		n.pending = n.pending[1:]
		n.mu.Unlock()
		wake(n.toSend) // the sender may take it at once
	}
}

// do does one step: pushes its event, writes its registry entry, or
// occupies or vacates its channel.
func (n *Notifier) do(ctx context.Context, st step) error {
	if st.channel != "" {
		return n.occupancy(ctx, st.channel, st.vacate)
	}
	if !st.entry {
		return n.push(ctx, *st.event)
	}
	if st.state == nil {
		return n.cfg.Registry.Delete(ctx, n.cfg.Node, st.client)
	}
	b, err := json.Marshal(st.state)
	if err != nil {
		return err
	}
	return n.cfg.Registry.Put(ctx, n.cfg.Node, st.client, b)
}

// key groups a client's events (in order); channel events by channel.
func key(e webhook.Event) string {
	if e.Client != "" {
		return "c:" + e.Client
	}
	return "ch:" + e.Channel
}

func (n *Notifier) push(ctx context.Context, e webhook.Event) error {
	b, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("webhook: encode event: %w", err)
	}
	if err := n.cfg.Queue.Push(ctx, QueueName, key(e), b); err != nil {
		return err
	}
	n.metrics.queued.Inc()
	return nil
}

// Batch and pace of the sender.
const (
	maxDrain     = 30 * time.Second       // Stop's delivery of a local queue, without a deadline of the caller's
	takeMax      = 64                     // events taken at once, at most
	idlePoll     = 250 * time.Millisecond // how often an idle sender looks for events other nodes pushed
	leaseSlack   = 2 * time.Second        // a lease outlasts one POST by this
	workersTotal = 16                     // POSTs in flight at once
)

// sendLoop takes events from the queue and delivers them, several keys
// at once.
func (n *Notifier) sendLoop() {
	defer n.done.Done()
	lease := n.cfg.Timeout + leaseSlack
	sem := make(chan struct{}, workersTotal)
	var wg sync.WaitGroup
	defer wg.Wait()
	wait := idlePoll
	for n.ctx.Err() == nil {
		// Take no more than the free workers post at once: an event
		// waiting for a worker could see its lease end and be taken, and
		// posted, again.
		select {
		case sem <- struct{}{}: // a worker is free
		case <-n.ctx.Done():
			continue
		}
		want := min(takeMax, cap(sem)-len(sem)+1) // only this loop fills sem
		<-sem
		items, err := n.cfg.Queue.Take(n.ctx, QueueName, want, lease)
		if err != nil && n.ctx.Err() == nil {
			n.cfg.Logger.Warn("webhook: take events from the queue", "err", err)
		}
		for _, it := range items {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				n.deliver(it)
			})
		}
		if len(items) == want {
			continue
		}
		if err != nil {
			wait = min(2*wait, 5*time.Second)
		} else {
			wait = idlePoll
		}
		select {
		case <-n.ctx.Done():
		case <-n.toSend:
		case <-time.After(wait):
		}
	}
}

// deliver POSTs one event and acknowledges, retries or drops it.
func (n *Notifier) deliver(it broker.QueueItem) {
	// Acknowledging must not fail because the node is stopping: use a
	// context of its own.
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.Timeout+leaseSlack)
	defer cancel()
	var e webhook.Event
	if err := json.Unmarshal(it.Data, &e); err != nil {
		n.cfg.Logger.Error("webhook: an unreadable event in the queue; dropped", "id", it.ID, "err", err)
		n.metrics.dropped.WithLabelValues("unreadable").Inc()
		n.settle(it, n.cfg.Queue.Ack(ctx, QueueName, it))
		return
	}
	err := n.post(it.Data)
	switch {
	case err == nil:
		n.metrics.delivered.Inc()
		n.metrics.latency.Observe(time.Since(e.Time).Seconds())
		n.settle(it, n.cfg.Queue.Ack(ctx, QueueName, it))
		wake(n.toSend) // the key's next event is ready
	case time.Since(it.Pushed) >= n.cfg.RetryFor:
		n.metrics.dropped.WithLabelValues("expired").Inc()
		n.cfg.Logger.Error("webhook: event not delivered within the retry period; dropped",
			"id", e.ID, "type", e.Type, "client", e.Client, "attempts", it.Attempts+1, "err", err)
		n.settle(it, n.cfg.Queue.Ack(ctx, QueueName, it))
	default:
		n.metrics.retried.Inc()
		delay := n.backoff(it.Attempts)
		n.cfg.Logger.Debug("webhook: delivery failed; will retry", "id", e.ID, "in", delay, "err", err)
		n.settle(it, n.cfg.Queue.Retry(ctx, QueueName, it, delay))
	}
}

// settle logs an Ack or Retry that failed: the event comes back when its
// lease ends, so it is delivered again, not lost.
func (n *Notifier) settle(it broker.QueueItem, err error) {
	if err != nil && !errors.Is(err, broker.ErrLeaseLost) {
		n.cfg.Logger.Warn("webhook: settle an event in the queue", "id", it.ID, "err", err)
	}
}

// backoff is the wait before the next try after attempts failed ones:
// RetryMin doubled each time, up to RetryMax, with ±20% jitter.
func (n *Notifier) backoff(attempts int) time.Duration {
	d := n.cfg.RetryMin
	for range min(attempts, 30) {
		d *= 2
		if d >= n.cfg.RetryMax {
			d = n.cfg.RetryMax
			break
		}
	}
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

// post sends one event; nil means the app answered 2xx.
func (n *Notifier) post(body []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(webhook.SignatureHeader, webhook.Sign(n.cfg.Secret, time.Now(), body))
	resp, err := n.cfg.Client.Do(req)
	if err != nil {
		return err
	}
	// Read a little of the answer, so that its connection is kept for
	// the next event.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("the app answered %s", resp.Status)
	}
	return nil
}

// beatLoop beats for this node in the registry every third of NodeTTL.
// It has a goroutine of its own: reporting a large dead node takes a
// while, and a node that stopped beating meanwhile would be taken for
// dead in turn.
func (n *Notifier) beatLoop() {
	n.every(func() {
		if err := n.cfg.Registry.Beat(n.ctx, n.cfg.Node, n.cfg.NodeTTL); err != nil && n.ctx.Err() == nil {
			n.cfg.Logger.Warn("webhook: beat in the registry", "err", err)
		}
	})
}

// watchLoop looks for dead nodes to report every third of NodeTTL.
func (n *Notifier) watchLoop() {
	n.every(func() {
		for n.ctx.Err() == nil && n.reportDead() {
		}
	})
}

// every runs fn now and then every third of NodeTTL until Stop, and
// counts its goroutine done then.
func (n *Notifier) every(fn func()) {
	defer n.done.Done()
	t := time.NewTicker(n.cfg.NodeTTL / 3)
	defer t.Stop()
	for {
		fn()
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
	}
}

// reportDead claims a dead node and reports, for each of its clients, an
// unsubscribe per channel and a disconnect (node_lost), with the ids the
// dead node would have given them; then forgets the node. It reports
// whether it found one.
func (n *Notifier) reportDead() bool {
	node, entries, err := n.cfg.Registry.ClaimDead(n.ctx, 2*n.cfg.NodeTTL)
	if err != nil || node == "" {
		if err != nil && n.ctx.Err() == nil {
			n.cfg.Logger.Warn("webhook: look for dead nodes", "err", err)
		}
		return false
	}
	n.cfg.Logger.Warn("webhook: a node died without shutting down; reporting its clients", "node", node, "clients", len(entries))
	now := time.Now().UTC()
	for client, b := range entries {
		var st clientState
		if err := json.Unmarshal(b, &st); err != nil {
			continue
		}
		user := st.User
		channels := sortedKeys(st.Subs)
		for _, ch := range channels {
			if err := n.pushIfWanted(webhook.Event{ID: EventID(client, webhook.Unsubscribe, ch, st.Subs[ch]), Type: webhook.Unsubscribe,
				Time: now, Node: node, Client: client, User: &user, Channel: ch}); err != nil {
				return true // claimed: tried again once the claim ends
			}
		}
		if err := n.pushIfWanted(webhook.Event{ID: EventID(client, webhook.Disconnect, "", 0), Type: webhook.Disconnect,
			Time: now, Node: node, Client: client, User: &user, Reason: webhook.ReasonNodeLost}); err != nil {
			return true
		}
		if n.cfg.Lost != nil {
			n.cfg.Lost(client, user, channels)
		}
	}
	n.vacateDead(node, entries)
	if err := n.cfg.Registry.Forget(n.ctx, node); err != nil {
		n.cfg.Logger.Warn("webhook: forget a dead node", "node", node, "err", err)
	}
	return true
}

// vacateDead takes a dead node out of the occupancy of its clients'
// channels, and sends vacated for those it left vacant (at once: its
// subscribers are long gone).
func (n *Notifier) vacateDead(node string, entries map[string][]byte) {
	if n.cfg.Occupancy == nil || !n.events[webhook.Vacated] && !n.events[webhook.Occupied] {
		return
	}
	channels := map[string]int{}
	for _, b := range entries {
		var st clientState
		if json.Unmarshal(b, &st) == nil {
			maps.Copy(channels, st.Subs)
		}
	}
	for _, ch := range sortedKeys(channels) {
		empty, err := n.cfg.Occupancy.Vacate(n.ctx, ch, node)
		if err != nil {
			n.cfg.Logger.Warn("webhook: vacate a dead node's channel", "channel", ch, "err", err)
			continue
		}
		if empty {
			n.announceVacant(ch, false)
		}
	}
}

func (n *Notifier) pushIfWanted(e webhook.Event) error {
	if !n.events[e.Type] {
		return nil
	}
	if err := n.push(n.ctx, e); err != nil {
		n.cfg.Logger.Warn("webhook: report a dead node's client", "client", e.Client, "err", err)
		return err
	}
	wake(n.toSend)
	return nil
}

func sortedKeys(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// vacatedGrace is how long a channel stays vacant before vacated is sent:
// a channel occupied again meanwhile (a client reconnecting) sends
// neither.
const vacatedGrace = 5 * time.Second

// Occupied tells the webhooks that channel got its first subscriber on
// this node (true), or lost its last (false). It never blocks.
func (n *Notifier) Occupied(channel string, occupied bool) {
	if n.cfg.Occupancy == nil || !n.events[webhook.Occupied] && !n.events[webhook.Vacated] {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.stopped {
		return
	}
	if len(n.pending) >= n.cfg.MaxPending {
		n.metrics.dropped.WithLabelValues("overflow").Inc()
		n.cfg.Logger.Error("webhook: too many events waiting for the broker; a channel's occupancy dropped", "channel", channel)
		return
	}
	n.pending = append(n.pending, step{channel: channel, vacate: !occupied})
	wake(n.toPush)
}

// occupancy records this node's occupying or vacating channel in the
// cluster's occupancy, sends occupied when it is the channel's first, and
// starts the grace before vacated when it leaves the channel vacant.
func (n *Notifier) occupancy(ctx context.Context, channel string, vacate bool) error {
	if !vacate {
		occ, announce, err := n.cfg.Occupancy.Occupy(ctx, channel, n.cfg.Node)
		if err != nil || !announce {
			return err
		}
		return n.pushChannelEvent(ctx, webhook.Occupied, channel, occ)
	}
	empty, err := n.cfg.Occupancy.Vacate(ctx, channel, n.cfg.Node)
	if err != nil || !empty {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.graces == nil {
		n.graces = map[string]*time.Timer{}
	}
	if t := n.graces[channel]; t != nil {
		t.Stop()
	}
	n.graces[channel] = time.AfterFunc(vacatedGrace, func() { n.announceVacant(channel, true) })
	return nil
}

// announceVacant sends vacated for channel if it is still vacant and was
// announced occupied; from a grace timer (timer), or from Stop.
func (n *Notifier) announceVacant(channel string, timer bool) {
	n.mu.Lock()
	if timer && n.stopped {
		n.mu.Unlock()
		return // Stop announces what waits
	}
	delete(n.graces, channel)
	n.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.Timeout+leaseSlack)
	defer cancel()
	occ, announce, err := n.cfg.Occupancy.AnnounceVacant(ctx, channel)
	if err != nil {
		n.cfg.Logger.Warn("webhook: announce a vacant channel", "channel", channel, "err", err)
		return
	}
	if announce {
		if err := n.pushChannelEvent(ctx, webhook.Vacated, channel, occ); err != nil {
			n.cfg.Logger.Warn("webhook: queue vacated", "channel", channel, "err", err)
		}
	}
}

// pushChannelEvent pushes occupied or vacated for one occupation of
// channel, when that type is chosen; its id names the occupation.
func (n *Notifier) pushChannelEvent(ctx context.Context, typ, channel, occupation string) error {
	if !n.events[typ] {
		return nil
	}
	e := webhook.Event{ID: EventID(occupation, typ, channel, 0), Type: typ, Time: time.Now().UTC(), Node: n.cfg.Node, Channel: channel}
	if err := n.push(ctx, e); err != nil {
		return err
	}
	wake(n.toSend)
	return nil
}

// flushGraces announces now what waits for its grace: the node stops.
func (n *Notifier) flushGraces() {
	n.mu.Lock()
	var channels []string
	for ch, t := range n.graces {
		t.Stop()
		channels = append(channels, ch)
	}
	n.mu.Unlock()
	for _, ch := range channels {
		n.announceVacant(ch, false)
	}
}
