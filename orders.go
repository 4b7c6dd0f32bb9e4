package herald

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/internal/api"
	"github.com/heraldhq/herald/internal/hub"
	"github.com/heraldhq/herald/internal/protocol"
	"github.com/heraldhq/herald/internal/session"
)

// Orders the application gives (disconnect, subscribe, unsubscribe,
// connections) act on every node of the cluster: the node that takes one
// publishes it on ordersChannel, through the broker, to every node — each
// subscribes to it when it starts — and each carries it out on its own
// connections. The nodes also beat there, so that a node listing
// connections knows whose answers to wait for.
const (
	ordersChannel = adminNamespace + ":orders"
	replyPrefix   = adminNamespace + ":reply."
	beatInterval  = 2 * time.Second
	nodeTimeout   = 3 * beatInterval // a node not heard from for this long is gone
	listTimeout   = 2 * time.Second  // the longest a listing waits for the nodes
	orderTimeout  = 5 * time.Second  // publishing one order
)

// Selector picks the connections an order acts on: a user's or a
// client's (ByUser, ByClient), or all (AllClients, for Connections).
type Selector struct {
	user   *string
	client string
}

// ByUser selects the connections of user ("" for anonymous clients).
func ByUser(user string) Selector { return Selector{user: &user} }

// ByClient selects the connection of a client id.
func ByClient(client string) Selector { return Selector{client: client} }

// AllClients selects every connection.
func AllClients() Selector { return Selector{} }

// oneTarget refuses AllClients for an order that acts on connections.
func (sel Selector) oneTarget(op string) error {
	if sel.user == nil && sel.client == "" {
		return Errorf(CodeBadRequest, "herald: "+op+": select a user or a client (ByUser, ByClient)")
	}
	return nil
}

func (sel Selector) matches(info broker.ClientInfo) bool {
	switch {
	case sel.client != "":
		return info.Client == sel.client
	case sel.user != nil:
		return info.User == *sel.user
	}
	return true
}

// Connection is a client's connection, as Connections lists it.
type Connection = api.Connection

// order is what travels on ordersChannel.
type order struct {
	Op      string  `json:"op"` // disconnect, subscribe, unsubscribe, connections or beat
	Node    string  `json:"node,omitempty"`
	User    *string `json:"user,omitempty"`
	Client  string  `json:"client,omitempty"`
	Reason  string  `json:"reason,omitempty"`
	Channel string  `json:"channel,omitempty"`
	Since   *string `json:"since,omitempty"`
	Reply   string  `json:"reply,omitempty"` // connections: the channel to answer on
}

func (o order) selector() Selector { return Selector{user: o.User, client: o.Client} }

// Disconnect closes the selected connections on every node: WebSocket
// close 4000 with reason (herald.js and the Go client do not reconnect
// after it), SSE streams end; webhooks report them as kicked. It returns
// once the order is on its way to every node.
func (s *Server) Disconnect(ctx context.Context, sel Selector, reason string) error {
	if err := sel.oneTarget("disconnect"); err != nil {
		return err
	}
	return s.sendOrder(ctx, order{Op: "disconnect", User: sel.user, Client: sel.client, Reason: reason})
}

// Subscribe subscribes the selected connections, on every node, to
// channel, resuming after since when it is set: no token, namespace rule,
// hook or subscription limit applies. JSON clients get a "subscribed"
// push, SSE streams add the channel; raw connections, and those already
// subscribed, are left alone. It returns once the order is on its way.
func (s *Server) Subscribe(ctx context.Context, sel Selector, channel string, since *string) error {
	if err := sel.oneTarget("subscribe"); err != nil {
		return err
	}
	if err := orderChannel(channel); err != nil {
		return err
	}
	return s.sendOrder(ctx, order{Op: "subscribe", User: sel.user, Client: sel.client, Channel: channel, Since: since})
}

// Unsubscribe ends the selected connections' subscriptions to channel on
// every node; JSON clients get an "unsubscribed" push.
func (s *Server) Unsubscribe(ctx context.Context, sel Selector, channel string) error {
	if err := sel.oneTarget("unsubscribe"); err != nil {
		return err
	}
	if err := orderChannel(channel); err != nil {
		return err
	}
	return s.sendOrder(ctx, order{Op: "unsubscribe", User: sel.user, Client: sel.client, Channel: channel})
}

func orderChannel(channel string) error {
	if !protocol.ValidChannel(channel) {
		return protocol.BadChannel()
	}
	if e := protocol.Reserved(channel); e != nil {
		return e
	}
	return nil
}

// Connections lists the selected connections of every node (at most
// 1,000), sorted by client id. It waits for the nodes heard from in the
// last few seconds, at most two seconds; a node that does not answer in
// time is left out.
func (s *Server) Connections(ctx context.Context, sel Selector) ([]Connection, error) {
	var id [8]byte
	_, _ = rand.Read(id[:])
	reply := replyPrefix + hex.EncodeToString(id[:])
	col := &answers{got: map[string][]Connection{}, arrived: make(chan struct{}, 1)}
	if err := s.hub.Subscribe(ctx, col, &broker.ClientInfo{Client: "node:" + s.nodeID}, reply, nil, func(hub.SubscribeResult) {}); err != nil {
		return nil, fmt.Errorf("herald: connections: %w", err)
	}
	defer s.hub.Unsubscribe(context.Background(), col, broker.ClientInfo{Client: "node:" + s.nodeID}, reply)
	if err := s.sendOrder(ctx, order{Op: "connections", User: sel.user, Client: sel.client, Reply: reply}); err != nil {
		return nil, err
	}
	nodes := s.desk.liveNodes()
	wait := time.NewTimer(listTimeout)
	defer wait.Stop()
	for !col.from(nodes) {
		select {
		case <-col.arrived:
		case <-wait.C:
			s.cfg.Logger.Warn("connections: nodes did not answer in time", "waited_for", len(nodes), "answered", col.count())
			return col.all(), nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return col.all(), nil
}

// answers collects the nodes' answers to one listing.
type answers struct {
	mu      sync.Mutex
	got     map[string][]Connection // by node
	arrived chan struct{}
}

// Deliver implements hub.Subscriber: one node's answer.
func (a *answers) Deliver(d *hub.Delivery) {
	var ans struct {
		Node        string       `json:"node"`
		Connections []Connection `json:"connections"`
	}
	if json.Unmarshal(d.Message.Data, &ans) != nil {
		return
	}
	a.mu.Lock()
	a.got[ans.Node] = ans.Connections
	a.mu.Unlock()
	select {
	case a.arrived <- struct{}{}:
	default:
	}
}

func (a *answers) from(nodes []string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, n := range nodes {
		if _, ok := a.got[n]; !ok {
			return false
		}
	}
	return true
}

func (a *answers) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.got)
}

func (a *answers) all() []Connection {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []Connection
	for _, cs := range a.got {
		out = append(out, cs...)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Client < out[j].Client })
	if len(out) > api.MaxListed {
		out = out[:api.MaxListed]
	}
	return out
}

// sendOrder publishes o to every node.
func (s *Server) sendOrder(ctx context.Context, o order) error {
	o.Node = s.nodeID
	b, err := json.Marshal(o)
	if err != nil {
		return fmt.Errorf("herald: encode order: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, orderTimeout)
	defer cancel()
	if _, err := s.hub.Publish(ctx, ordersChannel, broker.Publication{Data: b}); err != nil {
		return fmt.Errorf("herald: %s: %w", o.Op, err)
	}
	return nil
}

// orderDesk takes this node's orders from ordersChannel and carries them
// out on a goroutine of its own (Deliver must not block), keeps the local
// connections they act on, and the nodes heard from.
type orderDesk struct {
	s *Server

	mu      sync.Mutex
	queue   []order
	nodes   map[string]time.Time // node → last heard
	clients map[string]*clientConn
	wake    chan struct{}
	stop    chan struct{}
	done    sync.WaitGroup
}

func newOrderDesk(s *Server) *orderDesk {
	return &orderDesk{
		s: s, nodes: map[string]time.Time{}, clients: map[string]*clientConn{},
		wake: make(chan struct{}, 1), stop: make(chan struct{}),
	}
}

// start subscribes to the orders and starts beating.
func (d *orderDesk) start(ctx context.Context) error {
	if err := d.s.hub.Subscribe(ctx, d, &broker.ClientInfo{Client: "node:" + d.s.nodeID}, ordersChannel, nil, func(hub.SubscribeResult) {}); err != nil {
		return fmt.Errorf("herald: subscribe to orders: %w", err)
	}
	d.done.Add(2)
	go d.run()
	go d.beat()
	return nil
}

// close stops the desk.
func (d *orderDesk) close() {
	close(d.stop)
	d.done.Wait()
	d.s.hub.Unsubscribe(context.Background(), d, broker.ClientInfo{Client: "node:" + d.s.nodeID}, ordersChannel)
}

// add and remove keep the local connections orders act on.
func (d *orderDesk) add(c *clientConn) {
	d.mu.Lock()
	d.clients[c.sess.Client().Client] = c
	d.mu.Unlock()
}

func (d *orderDesk) remove(c *clientConn) {
	d.mu.Lock()
	if d.clients[c.sess.Client().Client] == c {
		delete(d.clients, c.sess.Client().Client)
	}
	d.mu.Unlock()
}

// Deliver implements hub.Subscriber: an order for this node.
func (d *orderDesk) Deliver(del *hub.Delivery) {
	var o order
	if err := json.Unmarshal(del.Message.Data, &o); err != nil {
		d.s.cfg.Logger.Warn("orders: unreadable order", "err", err)
		return
	}
	d.mu.Lock()
	if o.Node != "" {
		d.nodes[o.Node] = time.Now()
	}
	if o.Op != "beat" {
		d.queue = append(d.queue, o)
	}
	d.mu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// liveNodes are the nodes heard from within nodeTimeout, this one
// included.
func (d *orderDesk) liveNodes() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	live := []string{d.s.nodeID}
	for n, at := range d.nodes {
		switch {
		case time.Since(at) >= nodeTimeout:
			delete(d.nodes, n) // gone (a restart comes back as a new node)
		case n != d.s.nodeID:
			live = append(live, n)
		}
	}
	return live
}

func (d *orderDesk) beat() {
	defer d.done.Done()
	t := time.NewTicker(beatInterval)
	defer t.Stop()
	for {
		if err := d.s.sendOrder(context.Background(), order{Op: "beat"}); err != nil {
			d.s.cfg.Logger.Debug("orders: beat", "err", err)
		}
		select {
		case <-d.stop:
			return
		case <-t.C:
		}
	}
}

func (d *orderDesk) run() {
	defer d.done.Done()
	for {
		select {
		case <-d.stop:
			return
		case <-d.wake:
		}
		d.mu.Lock()
		queue := d.queue
		d.queue = nil
		d.mu.Unlock()
		for _, o := range queue {
			d.carryOut(o)
		}
	}
}

// matching returns the local connections an order selects.
func (d *orderDesk) matching(sel Selector) []*clientConn {
	d.mu.Lock()
	defer d.mu.Unlock()
	if sel.client != "" {
		if c := d.clients[sel.client]; c != nil {
			return []*clientConn{c}
		}
		return nil
	}
	var out []*clientConn
	for _, c := range d.clients {
		if sel.matches(c.sess.Client()) {
			out = append(out, c)
		}
	}
	return out
}

// carryOut carries out one order on this node's connections.
func (d *orderDesk) carryOut(o order) {
	conns := d.matching(o.selector())
	switch o.Op {
	case "disconnect":
		for _, c := range conns {
			c.sess.Disconnect(protocol.CloseKicked, o.Reason)
		}
	case "subscribe":
		for _, c := range conns {
			if c.sess.Mode() == session.ModeRaw {
				continue
			}
			if err := c.sess.SubscribeServer(o.Channel, o.Since); err != nil {
				d.s.cfg.Logger.Warn("orders: subscribe", "client", c.sess.Client().Client, "channel", o.Channel, "err", err)
			}
		}
	case "unsubscribe":
		for _, c := range conns {
			c.sess.UnsubscribeServer(o.Channel)
		}
	case "connections":
		list := make([]Connection, 0, len(conns))
		for _, c := range conns {
			info := c.sess.Client()
			list = append(list, Connection{
				Client: info.Client, User: info.User, Node: d.s.nodeID,
				Transport: contractTransport(c.label()), Channels: c.sess.Channels(),
			})
		}
		if len(list) > api.MaxListed {
			list = list[:api.MaxListed]
		}
		b, err := json.Marshal(struct {
			Node        string       `json:"node"`
			Connections []Connection `json:"connections"`
		}{d.s.nodeID, list})
		if err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), orderTimeout)
		defer cancel()
		if _, err := d.s.hub.Publish(ctx, o.Reply, broker.Publication{Data: b}); err != nil {
			d.s.cfg.Logger.Warn("orders: answer a listing", "err", err)
		}
	}
}

// contractTransport names a transport as the contract does.
func contractTransport(t string) string {
	if t == "ws" {
		return "websocket"
	}
	return t
}

// apiOrders gives the server API the Server's orders.
type apiOrders struct{ s *Server }

func (a apiOrders) sel(t api.Target) Selector { return Selector{user: t.User, client: t.Client} }

func (a apiOrders) Disconnect(ctx context.Context, t api.Target, reason string) error {
	return a.s.Disconnect(ctx, a.sel(t), reason)
}

func (a apiOrders) Subscribe(ctx context.Context, t api.Target, channel string, since *string) error {
	return a.s.Subscribe(ctx, a.sel(t), channel, since)
}

func (a apiOrders) Unsubscribe(ctx context.Context, t api.Target, channel string) error {
	return a.s.Unsubscribe(ctx, a.sel(t), channel)
}

func (a apiOrders) Connections(ctx context.Context, t api.Target) ([]Connection, error) {
	return a.s.Connections(ctx, a.sel(t))
}

// Broadcast publishes data once to each of channels, as Publish does, and
// returns each channel's offset. Every channel is checked before the
// first publish; a failure part way returns the offsets so far with the
// error.
func (s *Server) Broadcast(ctx context.Context, channels []string, data any, opts ...PublishOption) (map[string]string, error) {
	for _, ch := range channels {
		if err := orderChannel(ch); err != nil {
			return nil, err
		}
	}
	offsets := make(map[string]string, len(channels))
	for _, ch := range channels {
		off, err := s.Publish(ctx, ch, data, opts...)
		if err != nil {
			return offsets, err
		}
		offsets[ch] = off
	}
	return offsets, nil
}
