package herald

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/internal/protocol"
)

// Config configures a Server. It is a plain struct: New checks it once and
// fills the defaults named on each field; the zero Config is a working
// single-node server.
type Config struct {
	// Broker moves messages between nodes and keeps history. nil: the
	// in-memory broker (one node, history lost on exit). The Server starts
	// it and closes it on Shutdown.
	Broker broker.Broker

	// HistorySize is how many messages a channel keeps [100]; negative
	// keeps none. HistoryTTL is how long it keeps them [10m].
	HistorySize int
	HistoryTTL  time.Duration

	// Namespaces are per-namespace rules, keyed by the part of a channel
	// name before its first ':'. Channels outside them keep history and
	// presence, without join/leave pushes.
	Namespaces map[string]Namespace

	// MaxMessageSize bounds one client frame and one API publish body, in
	// bytes [65536]. Raise it for large payloads; it also bounds memory a
	// single client can make the server hold.
	MaxMessageSize int

	// QueueMessages and QueueBytes bound each connection's outgoing queue
	// [256 messages, 1 MiB]; a client that falls further behind is closed
	// with 1008 so that it cannot slow down anyone else.
	QueueMessages int
	QueueBytes    int

	// PingInterval: quiet connections are pinged after it [25s] and closed
	// when still quiet PongTimeout later [10s]. WriteTimeout bounds each
	// write to a connection [10s].
	PingInterval time.Duration
	PongTimeout  time.Duration
	WriteTimeout time.Duration

	// DisableCompression turns permessage-deflate off.
	DisableCompression bool

	// Origins lists the origins (scheme://host[:port]) allowed for CORS on
	// SSE and the server API; "*" allows any. Empty: only the request's own
	// host, which needs no CORS.
	Origins []string

	// SSEHeartbeat is how often an idle SSE stream gets a comment line
	// [15s]; proxies close streams that stay silent. SSERetry is the
	// reconnect delay the stream tells EventSource [2s].
	SSEHeartbeat time.Duration
	SSERetry     time.Duration

	// APIKey guards the server API (/api/…), compared in constant time.
	// Empty: the API answers loopback callers only, and no web page: only
	// requests to a loopback Host (localhost, 127.0.0.0/8, [::1]) with no
	// Origin or a loopback one, whatever Origins says.
	APIKey string

	// TokenSecret verifies HS256 client tokens, TokenPublicKey (PEM: an
	// RSA or ECDSA P-256 public key) RS256 or ES256 ones, and TokenJWKS (a
	// JSON Web Key Set) RS256 and ES256 ones by their kid. Any combination
	// may be set. With none, clients are anonymous unless the Connect hook
	// names them. Tokens come in `?token=` or `Authorization: Bearer`.
	TokenSecret    string
	TokenPublicKey []byte
	TokenJWKS      []byte
	// TokenAudience and TokenIssuer, when set, are required of every
	// token: its aud must name TokenAudience (aud may be a list) and its
	// iss must be TokenIssuer. Set both with a JWKS shared by several
	// services, or a token issued for one of them opens herald too. Empty:
	// aud and iss are not checked. They need a token key.
	TokenAudience string
	TokenIssuer   string
	// AllowAnonymous lets clients without a token connect although a token
	// key is set. Without a key it is moot: every client is anonymous.
	// With a Connect hook it is moot too: the hook decides about every
	// client without a token.
	AllowAnonymous bool

	// MaxSubscriptions caps one connection's channels [128]; negative: no
	// limit.
	MaxSubscriptions int
	// PublishRate is how many publishes per second one connection may make
	// on average [100], in bursts of up to PublishBurst [100]; a negative
	// PublishRate: no limit.
	PublishRate  float64
	PublishBurst int
	// CommandRate is how many other commands per second (subscribe,
	// unsubscribe, history, presence, ping, refresh, and malformed ones)
	// one connection may send on average [50], in bursts of up to
	// CommandBurst [200] — room for a client that resubscribes every
	// channel it may hold at once after a reconnect; past it a command
	// gets a rate_limited reply. A negative CommandRate: no limit.
	CommandRate  float64
	CommandBurst int
	// MaxConnections caps open WebSocket and SSE connections together,
	// and idle keep-alive connections where the http.Server's ConnState
	// is Server.ConnState; more are refused with 503 before the upgrade,
	// and an idle connection over it is closed. Default: the process's
	// open-file limit less a reserve for listeners, brokers and files (a
	// tenth of it, at most 256); negative: no limit.
	MaxConnections int
	// MaxConnectionsPerIP caps the connections of one client address,
	// refused with 429 [0: no limit]. Behind a proxy every client has the
	// proxy's address: set it only where herald faces clients directly.
	MaxConnectionsPerIP int
	// HandshakeTimeout bounds writing a WebSocket upgrade's response
	// [10s]. Reading the request is the http.Server's ReadHeaderTimeout:
	// set it to the same value (herald serve does), and Server.ConnState
	// as the http.Server's ConnState to count the connections it cuts off.
	HandshakeTimeout time.Duration

	// AdminToken turns the admin page (/admin) on and guards its data,
	// compared in constant time. Empty: no admin page.
	AdminToken string

	// Hooks let an application authorize and observe clients.
	Hooks Hooks

	// Registerer receives herald's Prometheus collectors. nil: a registry
	// of the Server's own, with the Go runtime collectors, served on
	// /metrics. With a Registerer of yours, serve your Gatherer yourself.
	Registerer prometheus.Registerer

	// Webhook, once its URL is set, tells the application what happens to
	// its clients (BACKEND.md, "Webhooks"): signed events, at least once,
	// in order per client, queued in the broker so that no node's restart
	// or death loses them. Every broker of herald's has the queue it needs
	// (broker.Queue).
	Webhook Webhook

	// TracerProvider, when set, records an OpenTelemetry span for every
	// publish and, on every node, one for each traced message's fan-out,
	// which ends at the message's last socket write on that node; the
	// trace context travels with the message through the broker. A publish
	// continues the caller's trace: a W3C traceparent header on the server
	// API, a traceparent field of the publish command, or a span in
	// Server.Publish's context. nil: no tracing, at no cost.
	TracerProvider trace.TracerProvider

	// Logger receives herald's logs; nil discards them.
	Logger *slog.Logger
}

// Webhook configures the webhooks; the zero Webhook sends none.
type Webhook struct {
	// URL receives every event, POSTed one a request; Secret signs them
	// (webhook.Verify checks them), and is required with a URL.
	URL    string
	Secret string
	// Events are the types sent (webhook.Types); nil: all of them.
	Events []string
	// Timeout bounds one POST [2s]: no 2xx within it is a failure.
	Timeout time.Duration
	// RetryFor is how long a failing event is retried, with backoff from
	// 1s to 1m between tries, before it is dropped and counted [1h].
	RetryFor time.Duration
	// NodeTTL is how soon another node notices that a node died without
	// shutting down, and reports its clients' unsubscribes and disconnects
	// (reason node_lost) [30s]. A node beats every third of it.
	NodeTTL time.Duration
}

// Namespace holds the rules of channels "NAME:…".
type Namespace struct {
	// HistorySize and HistoryTTL override the Config's for the namespace;
	// 0 inherits, a negative HistorySize keeps no history.
	HistorySize int
	HistoryTTL  time.Duration
	// NoPresence stops keeping who is subscribed.
	NoPresence bool
	// JoinLeave sends join and leave pushes to the channel's subscribers.
	JoinLeave bool
	// NoClientPublish refuses publishes from clients: only the server API
	// and Server.Publish publish here.
	NoClientPublish bool
	// NoAnonymousSubscribe and NoAnonymousPublish refuse anonymous clients
	// (no token, no user from the Connect hook) what they name; reading
	// history and presence counts as subscribing.
	NoAnonymousSubscribe bool
	NoAnonymousPublish   bool
	// Overflow is what a subscriber's full queue does (v1.1):
	// OverflowDisconnect ("" too) closes it as a slow consumer;
	// OverflowConflate drops its queued messages that a newer one of the
	// same key follows, and closes it only when that is not enough.
	Overflow string
	// Receipts keeps delivery receipts: clients acknowledge what they
	// handled, GET /api/channels/{channel}/receipts answers who did, and
	// the undelivered webhook reports who had not after ReceiptTimeout
	// [30s].
	Receipts       bool
	ReceiptTimeout time.Duration
}

// The overflow policies of a Namespace.
const (
	OverflowDisconnect = "disconnect"
	OverflowConflate   = "conflate"
)

// DefaultConfig returns the Config that New runs with when given the zero
// Config: every default of the fields above filled in, MaxConnections
// from this process's open-file limit, and a Logger that discards. herald
// serve shows these as its flags' defaults.
func DefaultConfig() Config {
	c, _ := Config{}.withDefaults() // the zero Config is valid
	return c
}

// withDefaults checks c and returns it with defaults filled in: the one
// place herald's defaults live.
func (c Config) withDefaults() (Config, error) {
	var errs []error
	if c.HistorySize == 0 {
		c.HistorySize = 100
	}
	if c.HistoryTTL < 0 {
		errs = append(errs, errors.New("HistoryTTL must not be negative"))
	} else if c.HistoryTTL == 0 {
		c.HistoryTTL = 10 * time.Minute
	}
	if c.MaxMessageSize < 0 {
		errs = append(errs, errors.New("MaxMessageSize must not be negative"))
	} else if c.MaxMessageSize == 0 {
		c.MaxMessageSize = 65536
	}
	if c.QueueMessages <= 0 {
		c.QueueMessages = 256
	}
	if c.PingInterval < 0 || c.PongTimeout < 0 || c.WriteTimeout < 0 {
		errs = append(errs, errors.New("PingInterval, PongTimeout and WriteTimeout must not be negative"))
	}
	if c.PingInterval == 0 {
		c.PingInterval = 25 * time.Second
	}
	if c.PongTimeout == 0 {
		c.PongTimeout = 10 * time.Second
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.QueueBytes <= 0 {
		c.QueueBytes = 1 << 20
	}
	for name, ns := range c.Namespaces {
		if name == "" || !protocol.ValidChannel(name) {
			errs = append(errs, fmt.Errorf("namespace %q: not a valid channel name prefix", name))
		}
		if ns.HistoryTTL < 0 {
			errs = append(errs, fmt.Errorf("namespace %q: HistoryTTL must not be negative", name))
		}
		if ns.Overflow != "" && ns.Overflow != OverflowDisconnect && ns.Overflow != OverflowConflate {
			errs = append(errs, fmt.Errorf("namespace %q: Overflow is %q, want %q or %q", name, ns.Overflow, OverflowDisconnect, OverflowConflate))
		}
		if ns.ReceiptTimeout < 0 {
			errs = append(errs, fmt.Errorf("namespace %q: ReceiptTimeout must not be negative", name))
		}
	}
	if c.MaxSubscriptions == 0 {
		c.MaxSubscriptions = 128
	}
	if c.PublishRate == 0 {
		c.PublishRate = 100
	}
	if c.PublishBurst <= 0 {
		c.PublishBurst = 100
	}
	if c.CommandRate == 0 {
		c.CommandRate = 50
	}
	if c.CommandBurst <= 0 {
		c.CommandBurst = 200
	}
	if c.MaxConnections == 0 {
		c.MaxConnections = defaultMaxConnections()
	}
	if c.HandshakeTimeout < 0 {
		errs = append(errs, errors.New("HandshakeTimeout must not be negative"))
	} else if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = 10 * time.Second
	}
	if c.SSEHeartbeat < 0 || c.SSERetry < 0 {
		errs = append(errs, errors.New("SSEHeartbeat and SSERetry must not be negative"))
	}
	if c.SSEHeartbeat == 0 {
		c.SSEHeartbeat = 15 * time.Second
	}
	if c.SSERetry == 0 {
		c.SSERetry = 2 * time.Second
	}
	if c.Webhook.URL != "" && c.Webhook.Secret == "" {
		errs = append(errs, errors.New("Webhook.Secret is required with a Webhook.URL"))
	}
	if c.Webhook.Timeout < 0 || c.Webhook.RetryFor < 0 {
		errs = append(errs, errors.New("Webhook.Timeout and Webhook.RetryFor must not be negative"))
	}
	if c.Webhook.Timeout == 0 {
		c.Webhook.Timeout = 2 * time.Second
	}
	if c.Webhook.RetryFor == 0 {
		c.Webhook.RetryFor = time.Hour
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if err := errors.Join(errs...); err != nil {
		return c, fmt.Errorf("herald: config: %w", err)
	}
	return c, nil
}

// defaultReceiptTimeout is how long a receipt may stay pending before the
// undelivered webhook reports it, where the namespace does not say.
const defaultReceiptTimeout = 30 * time.Second

// rules are what a channel's namespace decides.
type rules struct {
	history              broker.HistoryOptions
	presence, joinLeave  bool
	noClientPublish      bool
	noAnonymousSubscribe bool
	noAnonymousPublish   bool
	conflate, receipts   bool
	receiptTimeout       time.Duration
}

// rules resolves a channel's namespace rules.
func (c *Config) rules(channel string) rules {
	size, ttl := c.HistorySize, c.HistoryTTL
	r := rules{presence: true}
	if ns, ok := c.Namespaces[protocol.Namespace(channel)]; ok {
		if ns.HistorySize != 0 {
			size = ns.HistorySize
		}
		if ns.HistoryTTL != 0 {
			ttl = ns.HistoryTTL
		}
		r.presence = !ns.NoPresence
		r.joinLeave = ns.JoinLeave
		r.noClientPublish = ns.NoClientPublish
		r.noAnonymousSubscribe = ns.NoAnonymousSubscribe
		r.noAnonymousPublish = ns.NoAnonymousPublish
		r.conflate = ns.Overflow == OverflowConflate
		r.receipts = ns.Receipts
		r.receiptTimeout = ns.ReceiptTimeout
	}
	if r.receiptTimeout == 0 {
		r.receiptTimeout = defaultReceiptTimeout
	}
	r.history = broker.HistoryOptions{Size: max(size, 0), TTL: ttl}
	if protocol.Namespace(channel) == adminNamespace {
		// herald's own: the nodes' snapshots are live only, and clients
		// are kept out by protocol.Reserved.
		r = rules{}
	}
	return r
}
