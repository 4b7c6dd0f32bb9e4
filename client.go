package herald

import (
	"context"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/internal/session"
)

// clientConn is one admitted client's session with the server's
// bookkeeping around it — the connection count, the Connected and
// Disconnected hooks, the connection-limit slot — so that every transport
// (WebSocket, raw WebSocket, SSE) opens and closes a client the same way:
// newClientConn, then opened once it is served and closed when it ends,
// or abandon if it never was.
type clientConn struct {
	s         *Server
	sess      *session.Session
	transport string // the metrics label: ws, raw or sse
	ip        string // the limits slot to release; "" when none was taken
}

// clientSpec is what newClientConn needs to know of a client.
type clientSpec struct {
	who        caller
	ip         string // the slot admit took; "" when none
	transport  string // ws, raw or sse: the metrics label, and presence's
	conn       session.Conn
	mode       session.Mode
	rawChannel string
	policy     session.Policy
}

// newClientConn makes an admitted client's session; the caller opens it.
func (s *Server) newClientConn(c clientSpec) *clientConn {
	sess := session.New(context.Background(), session.Config{
		Hub:           s.hub,
		Conn:          c.conn,
		Client:        broker.ClientInfo{Client: s.newClientID(), User: c.who.user, Transport: c.transport},
		Mode:          c.mode,
		RawChannel:    c.rawChannel,
		Policy:        c.policy,
		Expires:       c.who.expires(),
		Limits:        s.sessionLimits(),
		QueueMessages: s.cfg.QueueMessages,
		QueueBytes:    s.cfg.QueueBytes,
		Metrics:       s.metrics,
		Logger:        s.cfg.Logger,
	})
	return &clientConn{s: s, sess: sess, transport: c.transport, ip: c.ip}
}

// opened counts the connection and runs the Connected hook, once the
// client is served.
func (c *clientConn) opened() {
	c.s.metrics.Connections.WithLabelValues(c.transport).Inc()
	info := c.sess.Client()
	c.s.cfg.Logger.Debug("client connected", "client", info.Client, "user", info.User, "transport", c.transport)
	if c.s.cfg.Hooks.Connected != nil {
		c.s.cfg.Hooks.Connected(Client{ID: info.Client, User: info.User})
	}
}

// closed ends an opened client: its session closes (it leaves its
// channels), its slot is released, it is no longer counted, and the
// Disconnected hook runs.
func (c *clientConn) closed() {
	c.abandon()
	c.s.metrics.Connections.WithLabelValues(c.transport).Dec()
	info := c.sess.Client()
	c.s.cfg.Logger.Debug("client disconnected", "client", info.Client, "transport", c.transport)
	if c.s.cfg.Hooks.Disconnected != nil {
		c.s.cfg.Hooks.Disconnected(Client{ID: info.Client, User: info.User})
	}
}

// abandon ends a client that was never opened (refused while it was set
// up): its session closes and its slot is released.
func (c *clientConn) abandon() {
	c.sess.Close()
	if c.ip != "" {
		c.s.limits.release(c.ip)
	}
}

// wsClient is a WebSocket connection's Handler: frames go to the session,
// the connection's life to the clientConn.
type wsClient struct{ *clientConn }

func (h wsClient) Opened()               { h.opened() }
func (h wsClient) HandleText(b []byte)   { h.sess.HandleText(b) }
func (h wsClient) HandleBinary(b []byte) { h.sess.HandleBinary(b) }
func (h wsClient) Close()                { h.closed() }
