package herald

import (
	"net/http"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/internal/hub"
	"github.com/heraldhq/herald/internal/session"
	"github.com/heraldhq/herald/internal/transport/ws"
)

// clientConn is one admitted client's session with the server's
// bookkeeping around it — the connection count, the Connected and
// Disconnected hooks, the connection-limit slot — so that every transport
// (WebSocket, raw WebSocket, SSE) opens and closes a client the same way:
// newClientConn, then opened once it is served and closed when it ends,
// or abandon if it never was.
type clientConn struct {
	s      *Server
	sess   *session.Session
	ip     string        // the limits slot to release; "" when none was taken
	header http.Header   // completes the Client the hooks see
	events *clientEvents // its webhook events; nil without webhooks
}

// label is the client's transport as the metrics name it: ws, raw or sse.
func (c *clientConn) label() string {
	switch c.sess.Mode() {
	case session.ModeRaw:
		return "raw"
	case session.ModeSSE:
		return "sse"
	}
	return "ws"
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
	// filter is an SSE stream's tag filter for the channels it asked for
	// (nil: none).
	filter hub.Filter
}

// newClientConn makes an admitted client's session; the caller opens it.
func (s *Server) newClientConn(c clientSpec) *clientConn {
	if c.who.client == "" {
		c.who.client = s.newClientID()
	}
	events := s.newClientEvents(c.who.client, c.who.user, c.transport)
	var observer session.Observer
	if events != nil {
		observer = events
	}
	sess := session.New(session.Config{
		Shared:     s.sessions,
		Conn:       c.conn,
		Client:     broker.ClientInfo{Client: c.who.client, User: c.who.user, Transport: contractTransport(c.transport), Info: c.who.info},
		Mode:       c.mode,
		RawChannel: c.rawChannel,
		Policy:     c.policy,
		Observer:   observer,
	})
	return &clientConn{s: s, sess: sess, ip: c.ip, header: c.who.header, events: events}
}

// client is the connection as the Connected and Disconnected hooks see it.
func (c *clientConn) client() Client {
	return hookClient(c.sess.Client(), c.header)
}

// opened counts the connection and runs the Connected hook, once the
// client is served.
func (c *clientConn) opened() {
	c.s.metrics.Connections.WithLabelValues(c.label()).Inc()
	info := c.sess.Client()
	c.s.cfg.Logger.Debug("client connected", "client", info.Client, "user", info.User, "transport", c.label())
	c.s.desk.add(c)
	if c.events != nil {
		c.events.connected()
	}
	if c.s.cfg.Hooks.Connected != nil {
		c.s.cfg.Hooks.Connected(c.client())
	}
}

// closed ends an opened client: its session closes (it leaves its
// channels), its slot is released, it is no longer counted, and the
// Disconnected hook runs.
func (c *clientConn) closed() {
	c.s.desk.remove(c)
	c.end()
	if c.events != nil {
		c.events.disconnected(c.s.disconnectReason(c.sess.Cause()))
	}
	c.s.metrics.Connections.WithLabelValues(c.label()).Dec()
	info := c.sess.Client()
	c.s.cfg.Logger.Debug("client disconnected", "client", info.Client, "transport", c.label())
	if c.s.cfg.Hooks.Disconnected != nil {
		c.s.cfg.Hooks.Disconnected(c.client())
	}
}

// abandon ends a client that was never opened (refused while it was set
// up): its session closes and its slot is released; no webhook tells of
// it.
func (c *clientConn) abandon() {
	c.end()
	if c.events != nil {
		c.events.disconnected("") // never opened: nothing is reported
	}
}

// end closes the session (it leaves its channels) and releases the slot.
func (c *clientConn) end() {
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

// refusedClient is the Handler of a raw connection whose subscription was
// refused: raw mode has no error replies, so the connection opens and is
// closed at once with the refusal's close code and message.
type refusedClient struct {
	conn *ws.Conn
	err  *Error
}

func (h refusedClient) Opened()           { h.conn.Close(h.err.Code.CloseCode(), h.err.Message) }
func (refusedClient) HandleText([]byte)   {}
func (refusedClient) HandleBinary([]byte) {}
func (refusedClient) Close()              {}
