// Package herald is a real-time messaging server: pub/sub over WebSocket
// (a JSON protocol, and a raw mode for a bare `new WebSocket(url)`) and
// Server-Sent Events, with a server API for back ends, offsets, history,
// presence and resume, on an in-memory or shared broker.
//
// Use it as a binary (cmd/herald) or mount it in your own net/http server:
//
//	srv, err := herald.New(herald.Config{})
//	if err != nil { … }
//	defer srv.Shutdown(context.Background())
//	mux.Handle("/", srv) // or mount single endpoints: srv.WebSocketHandler(), …
//	off, err := srv.Publish(ctx, "news", map[string]any{"title": "hi"})
//
// The wire contract is docs/protocol.md.
package herald

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/memory"
	jsclient "github.com/heraldhq/herald/clients/js"
	"github.com/heraldhq/herald/internal/auth"
	"github.com/heraldhq/herald/internal/hub"
	"github.com/heraldhq/herald/internal/metrics"
	"github.com/heraldhq/herald/internal/notifier"
	"github.com/heraldhq/herald/internal/origin"
	"github.com/heraldhq/herald/internal/protocol"
	"github.com/heraldhq/herald/internal/receipts"
	"github.com/heraldhq/herald/internal/session"
	"github.com/heraldhq/herald/internal/tracing"
	"github.com/heraldhq/herald/internal/transport/sse"
	"github.com/heraldhq/herald/internal/transport/ws"
	"github.com/heraldhq/herald/web"
)

// presenceRefresh is how often a node records its subscribers in presence
// again: a third of the Redis broker's 60 s presence expiry.
const presenceRefresh = 20 * time.Second

// Server is a herald node. Its methods are safe for concurrent use.
type Server struct {
	cfg        Config
	broker     broker.Broker
	hub        *hub.Hub
	ws         *ws.Transport
	sse        *sse.Transport
	origins    origin.Policy
	verifier   *auth.Verifier // nil without a token key
	adminToken auth.Secret
	limits     connLimits
	metrics    *metrics.Metrics
	gather     prometheus.Gatherer // nil when the Registerer is the caller's
	mux        *http.ServeMux
	notifier   *notifier.Notifier // nil without webhooks
	receipts   *receipts.Keeper   // nil where no namespace keeps receipts
	desk       *orderDesk         // takes this node's orders and keeps its connections
	sessions   *session.Shared    // what every session of this server shares

	nodeID   string
	clientN  atomic.Uint64
	draining atomic.Bool
	shutdown sync.Once

	sseServers  sync.Map      // *http.Server → struct{}: those that end SSE streams on shutdown
	statsStop   chan struct{} // nil without the admin page
	statsDone   chan struct{}
	handshaking sync.Map // net.Conn → time.Time accepted: connections yet to send a request (ConnState)
	idle        sync.Map // net.Conn → client address: idle keep-alive connections counted in limits (ConnState)
}

// New checks cfg, starts its broker and returns a ready Server.
func New(cfg Config) (*Server, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, broker: cfg.Broker, nodeID: newNodeID(), origins: origin.New(cfg.Origins)}
	s.limits.max, s.limits.perIP = cfg.MaxConnections, cfg.MaxConnectionsPerIP
	s.adminToken = auth.NewSecret(cfg.AdminToken)
	s.verifier, err = auth.New(auth.Keys{
		Secret:       []byte(cfg.TokenSecret),
		PublicKeyPEM: cfg.TokenPublicKey,
		JWKS:         cfg.TokenJWKS,
		Audience:     cfg.TokenAudience,
		Issuer:       cfg.TokenIssuer,
	})
	if err != nil {
		return nil, fmt.Errorf("herald: config: %w", err)
	}
	if s.broker == nil {
		s.broker = memory.New()
	}
	reg := cfg.Registerer
	if reg == nil {
		r := prometheus.NewRegistry()
		r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		reg, s.gather = r, r
	}
	s.metrics = metrics.New(reg)
	if s.sse, err = sse.New(sse.Config{
		Heartbeat:    cfg.SSEHeartbeat,
		Retry:        cfg.SSERetry,
		WriteTimeout: cfg.WriteTimeout,
		Wrote:        func(n int) { s.metrics.BytesOut.WithLabelValues("sse").Add(float64(n)) },
	}); err != nil {
		return nil, fmt.Errorf("herald: %w", err)
	}
	if s.receipts, err = s.newReceipts(); err != nil {
		_ = s.broker.Close()
		return nil, err
	}
	var delivered func(broker.Message, []broker.ClientInfo)
	var kept broker.Receipts
	if s.receipts != nil {
		delivered, kept = s.receipts.Delivered, s.receipts.Store()
	}
	s.hub = hub.New(hub.Config{
		Delivered:       delivered,
		Receipts:        kept,
		Broker:          measure(s.broker, s.metrics),
		Logger:          cfg.Logger,
		PresenceRefresh: presenceRefresh,
		MaxMessageSize:  cfg.MaxMessageSize,
		Tracer:          tracing.New(cfg.TracerProvider, s.nodeID),
		Occupied:        s.channelOccupied,
		Options: func(channel string) hub.ChannelOptions {
			r := s.cfg.rules(channel)
			return hub.ChannelOptions{History: r.history, Presence: r.presence, JoinLeave: r.joinLeave, Conflate: r.conflate, Receipts: r.receipts}
		},
	})
	s.sessions = &session.Shared{
		Hub:           s.hub,
		Limits:        s.sessionLimits(),
		QueueMessages: cfg.QueueMessages,
		QueueBytes:    cfg.QueueBytes,
		Metrics:       s.metrics,
		Logger:        cfg.Logger,
	}
	if s.ws, err = ws.New(ws.Config{
		MaxMessageSize:     cfg.MaxMessageSize,
		PingInterval:       cfg.PingInterval,
		PongTimeout:        cfg.PongTimeout,
		WriteTimeout:       cfg.WriteTimeout,
		HandshakeTimeout:   cfg.HandshakeTimeout,
		DisableCompression: cfg.DisableCompression,
		Logger:             cfg.Logger,
		Refused:            func(reason string) { s.metrics.Refusals.WithLabelValues(reason).Inc() },
		Traffic:            s.countTraffic("ws"),
	}, protocol.SubprotocolJSONL, protocol.SubprotocolJSON); err != nil {
		return nil, fmt.Errorf("herald: %w", err)
	}
	if err := s.hub.Start(context.Background()); err != nil {
		s.ws.Close()
		return nil, fmt.Errorf("herald: %w", err)
	}
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "herald_channels",
		Help: "Channels with subscribers on this node.",
	}, func() float64 { return float64(len(s.appChannels())) }))
	s.mux = s.routes()
	s.desk = newOrderDesk(s)
	if err := s.desk.start(context.Background()); err != nil {
		s.ws.Close()
		s.hub.Stop()
		_ = s.broker.Close()
		return nil, err
	}
	if err := s.startWebhooks(reg); err != nil {
		s.desk.close()
		s.ws.Close()
		s.hub.Stop()
		_ = s.broker.Close()
		return nil, err
	}
	if s.receipts != nil {
		s.receipts.Start()
	}
	if s.adminEnabled() {
		s.statsStop, s.statsDone = make(chan struct{}), make(chan struct{})
		go s.reportStats(s.statsStop, s.statsDone)
	}
	return s, nil
}

func (s *Server) routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /ws", s.WebSocketHandler())
	mux.Handle("GET /ws/{channel}", s.RawHandler())
	sse := s.SSEHandler()
	mux.Handle("GET /sse", sse)
	mux.Handle("OPTIONS /sse", sse) // CORS preflight
	api := s.APIHandler()
	// Every method, so that the API answers a wrong one in its own error
	// shape; a bare "/api/" pattern would conflict with "GET /".
	for _, method := range []string{"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"} {
		mux.Handle(method+" /api/", api)
	}
	mux.Handle("GET /healthz", s.HealthHandler())
	mux.Handle("GET /readyz", s.HealthHandler()) // ready means the same: not draining, broker reachable
	if s.gather != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(s.gather, promhttp.HandlerOpts{}))
	}
	mux.Handle("GET /herald.js", s.SDKHandler())
	admin := s.AdminHandler()
	mux.Handle("GET /admin", admin) // method patterns: a bare "/admin/" would conflict with "GET /"
	mux.Handle("GET /admin/", admin)
	mux.Handle("POST /admin/", admin)
	// The admin page's files are served under /admin only, and only
	// while it is on.
	mux.Handle("GET /admin.html", http.NotFoundHandler())
	mux.Handle("GET /admin.js", http.NotFoundHandler())
	mux.Handle("GET /", http.FileServerFS(web.FS()))
	return mux
}

// countTraffic returns a counter of one transport's bytes in and out.
func (s *Server) countTraffic(transport string) func(in, out int) {
	in, out := s.metrics.BytesIn.WithLabelValues(transport), s.metrics.BytesOut.WithLabelValues(transport)
	return func(i, o int) {
		if i > 0 {
			in.Add(float64(i))
		}
		if o > 0 {
			out.Add(float64(o))
		}
	}
}

// ServeHTTP serves every endpoint of the contract: /, /herald.js, /ws,
// /ws/{channel}, /sse, /api/…, /healthz and /metrics; and /readyz and
// /admin. /metrics is served only when Config.Registerer is nil (herald's
// own registry); /admin answers 404 without Config.AdminToken.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.requestArrived(r)
	s.mux.ServeHTTP(w, r)
}

// Registerer returns where the Server registered its Prometheus
// collectors: Config.Registerer, or else the registry of its own that it
// serves on /metrics. Code that runs beside the Server, such as an outbox
// reader, registers its collectors there to be served with herald's.
func (s *Server) Registerer() prometheus.Registerer {
	if r, ok := s.gather.(prometheus.Registerer); ok {
		return r
	}
	return s.cfg.Registerer
}

// WebSocketHandler serves the JSON protocol (the contract's /ws).
func (s *Server) WebSocketHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.serveWS(w, r, "")
	})
}

// RawHandler serves raw mode (the contract's /ws/{channel}). Mount it on a
// pattern with a {channel} wildcard, such as "GET /ws/{channel}".
func (s *Server) RawHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		channel := r.PathValue("channel")
		if !protocol.ValidChannel(channel) {
			writeHTTPError(w, protocol.BadChannel())
			return
		}
		s.serveWS(w, r, channel)
	})
}

// healthTimeout bounds the broker check of HealthHandler.
const healthTimeout = time.Second

// HealthHandler answers 200 "ok"; 503 "draining" while the server shuts
// down; and 503 "unavailable" when the broker is a broker.HealthChecker
// whose backing service does not answer within a second. herald serves it
// as /healthz (the contract's) and as /readyz, for orchestrators that
// probe readiness there: a node that cannot reach its broker should get no
// traffic.
func (s *Server) HealthHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if s.draining.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("draining\n"))
			return
		}
		if hc, ok := s.broker.(broker.HealthChecker); ok {
			ctx, cancel := context.WithTimeout(r.Context(), healthTimeout)
			err := hc.Healthy(ctx)
			cancel()
			if err != nil {
				w.WriteHeader(http.StatusServiceUnavailable)
				_, _ = w.Write([]byte("unavailable: the broker is unreachable\n"))
				return
			}
		}
		_, _ = w.Write([]byte("ok\n"))
	})
}

// SDKHandler serves herald.js, the browser SDK.
func (s *Server) SDKHandler() http.Handler {
	src := jsclient.Source()
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
		w.Header().Set("Content-Length", strconv.Itoa(len(src)))
		_, _ = w.Write(src)
	})
}

// serveWS upgrades a request to a session; rawChannel is "" for the JSON
// protocol.
func (s *Server) serveWS(w http.ResponseWriter, r *http.Request, rawChannel string) {
	var since *string
	var resume map[string]string
	var perr *Error
	transport := TransportWebSocket
	if rawChannel != "" {
		transport = TransportRaw
		since, perr = rawSince(r)
	} else {
		resume, perr = resumeOffsets(r)
	}
	if perr != nil {
		writeHTTPError(w, perr)
		return
	}
	who, ip, ok := s.admit(w, r, transport)
	if !ok {
		return
	}
	label := "ws"
	if rawChannel != "" {
		label = "raw"
	}
	taken := false // accept took over the slot: the client releases it
	err := s.ws.Upgrade(w, r, func(c *ws.Conn) (ws.Handler, error) {
		taken = true
		mode := session.ModeJSON
		switch {
		case rawChannel != "":
			mode = session.ModeRaw
		case c.Subprotocol() == protocol.SubprotocolJSONL:
			mode = session.ModeJSONL
		}
		cc := s.newClientConn(clientSpec{
			who: who, ip: ip, transport: label, conn: c, mode: mode,
			rawChannel: rawChannel, policy: s.newAccess(who),
		})
		// Open before the handshake response is written, and so before
		// the first frame is read: the welcome and the server-side
		// subscriptions go first, and a raw client is subscribed before it
		// can see the connection open or publish. A raw client whose
		// subscription is refused sees its connection open and close with
		// the refusal (it has no other way to read why); a JSON client
		// whose server-side subscriptions fail gets an HTTP error.
		err := cc.sess.Open(since, who.expires)
		if err == nil && mode != session.ModeRaw {
			err = s.subscribeServer(cc.sess, who.channels, resume)
		}
		if err != nil {
			cc.abandon()
			pe := s.publicError(err)
			s.countRefusal(pe)
			if mode == session.ModeRaw {
				return refusedClient{conn: c, err: pe}, nil
			}
			return nil, ws.Refuse(pe)
		}
		return wsClient{cc}, nil
	})
	if !taken {
		s.limits.release(ip)
	}
	if err != nil {
		s.cfg.Logger.Debug("websocket upgrade failed", "err", err)
	}
}

// subscribeServer makes a JSON session's server-side subscriptions,
// resuming each after its offset in resume, when it has one.
func (s *Server) subscribeServer(sess *session.Session, channels []string, resume map[string]string) error {
	for _, ch := range channels {
		var since *string
		if off, ok := resume[ch]; ok {
			since = &off
		}
		if err := sess.SubscribeServer(ch, since); err != nil {
			return err
		}
	}
	return nil
}

// rawSince is a raw request's ?since= offset; nil without one.
func rawSince(r *http.Request) (*string, *Error) {
	if !r.URL.Query().Has("since") {
		return nil, nil
	}
	v := r.URL.Query().Get("since")
	if _, err := broker.ParseOffset(v); err != nil {
		return nil, Errorf(CodeBadRequest, "bad since: "+err.Error())
	}
	return &v, nil
}

// resumeOffsets is a JSON request's ?since=: a JSON object of channel →
// the last offset the client saw of that server-side subscription; nil
// without one.
func resumeOffsets(r *http.Request) (map[string]string, *Error) {
	v := r.URL.Query().Get("since")
	if v == "" {
		return nil, nil
	}
	var offs map[string]string
	if err := json.Unmarshal([]byte(v), &offs); err != nil {
		return nil, Errorf(CodeBadRequest, `bad since: want a JSON object {"<channel>":"<offset>",…}`)
	}
	for ch, off := range offs {
		if _, err := broker.ParseOffset(off); err != nil {
			return nil, Errorf(CodeBadRequest, "bad since of "+strconv.Quote(ch)+": "+err.Error())
		}
	}
	return offs, nil
}

// Publish publishes data (any value that encodes to JSON, or a
// json.RawMessage) to channel from the application and returns its offset.
// The herald-admin namespace is herald's own: publishing there is a
// forbidden *Error.
func (s *Server) Publish(ctx context.Context, channel string, data any, opts ...PublishOption) (string, error) {
	if !protocol.ValidChannel(channel) {
		return "", protocol.BadChannel()
	}
	if e := protocol.Reserved(channel); e != nil {
		return "", e
	}
	raw, ok := data.(json.RawMessage)
	if !ok {
		b, err := json.Marshal(data)
		if err != nil {
			return "", fmt.Errorf("herald: encode data: %w", err)
		}
		raw = b
	}
	if !json.Valid(raw) {
		return "", Errorf(CodeBadRequest, "data is not valid JSON")
	}
	p := broker.Publication{Data: raw}
	for _, o := range opts {
		o(&p)
	}
	off, err := s.hub.Publish(ctx, channel, p)
	if err != nil {
		return "", fmt.Errorf("herald: %w", err)
	}
	s.metrics.MessagesIn.WithLabelValues("server").Inc()
	return off.String(), nil
}

// PublishOption changes a Publish.
type PublishOption func(*broker.Publication)

// WithEvent names the message's event.
func WithEvent(event string) PublishOption {
	return func(p *broker.Publication) { p.Event = event }
}

// WithTags gives a Publish tags, which subscribers' filters match (at
// most 16, each key and value at most 128 bytes).
func WithTags(tags map[string]string) PublishOption {
	return func(p *broker.Publication) { p.Tags = tags }
}

// WithKey gives a Publish a conflation key: in a namespace whose overflow
// is conflate, a slow subscriber keeps only the newest queued message of
// each key.
func WithKey(key string) PublishOption {
	return func(p *broker.Publication) { p.Key = key }
}

// Shutdown stops taking connections, sends 1001 to every WebSocket client,
// ends every SSE stream and closes the broker. The caller shuts its
// http.Server down first (which leaves upgraded connections alone, and
// ends the SSE streams it serves); ctx bounds the wait for connections to
// close.
func (s *Server) Shutdown(ctx context.Context) error {
	var err error
	s.shutdown.Do(func() {
		s.draining.Store(true)
		if s.statsStop != nil {
			close(s.statsStop)
			<-s.statsDone
		}
		s.ws.CloseAll(protocol.CloseGoingAway, "server shutting down")
		s.ws.Close()
		s.sse.Shutdown()
		if werr := s.ws.WaitEmpty(ctx); werr != nil {
			err = fmt.Errorf("herald: shutdown: %w", werr)
		}
		if serr := s.sse.Wait(ctx); serr != nil && err == nil {
			err = fmt.Errorf("herald: shutdown: %w", serr)
		}
		if s.receipts != nil {
			s.receipts.Stop(ctx) // before the webhooks: its checks report through them
		}
		if nerr := s.stopWebhooks(ctx); nerr != nil && err == nil {
			err = nerr
		}
		s.desk.close()
		s.hub.Stop()
		if cerr := s.broker.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("herald: close broker: %w", cerr)
		}
	})
	return err
}

// publicError turns an error into what a client may see, logging what
// it hides (protocol.Public).
func (s *Server) publicError(err error) *Error {
	return protocol.Public(err, func(err error) { s.cfg.Logger.Error("request failed", "err", err) })
}

// writeHTTPError answers with the contract's error shape and status.
func writeHTTPError(w http.ResponseWriter, e *Error) { protocol.WriteHTTP(w, e) }

func (s *Server) newClientID() string {
	return s.nodeID + "-" + strconv.FormatUint(s.clientN.Add(1), 36)
}

func newNodeID() string {
	var b [5]byte
	_, _ = rand.Read(b[:])
	return base32.HexEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:])
}
