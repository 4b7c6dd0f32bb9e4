package main

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/alecthomas/kong"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker/memory"
	"github.com/heraldhq/herald/internal/backend"
	"github.com/heraldhq/herald/internal/mask"
)

// Defaults of what only herald serve has (the http.Server around the
// herald.Server); herald.Config's own come from herald.DefaultConfig.
var defaultProxyHeaders = []string{"Cookie", "Authorization", "X-Request-Id"}

const (
	defaultAddr            = ":8080"
	defaultIdleTimeout     = 30 * time.Second
	defaultShutdownTimeout = 10 * time.Second
)

// serveFlags are herald serve's settings. Each is a flag, an environment
// variable (HERALD_ and the flag's name in upper case, '-' as '_') and a
// key of the --config file; the defaults shown in brackets come from
// defaultVars.
type serveFlags struct {
	Config string `help:"YAML file of settings: every other flag's name is a key, and namespaces holds per-namespace rules" placeholder:"FILE" group:"server"`

	Addr            string   `default:"${addr}" help:"listen address" group:"server"`
	Origins         []string `help:"origins (scheme://host[:port]) allowed for WebSocket, SSE and the server API's CORS; * for any; none: the request's own host" placeholder:"ORIGIN" group:"server"`
	APIKey          string   `name:"api-key" help:"key for the server API; without one it answers loopback callers only, and no web page" group:"server"`
	AdminToken      string   `help:"token for the admin page at /admin (live numbers, channels, publish); without one there is no admin page" group:"server"`
	ShutdownTimeout span     `default:"${shutdown_timeout}" help:"how long a graceful shutdown waits for connections to close" group:"server"`
	SSEHeartbeat    span     `name:"sse-heartbeat" default:"${sse_heartbeat}" help:"how often an idle SSE stream gets a comment line" group:"server"`
	SSERetry        span     `name:"sse-retry" default:"${sse_retry}" help:"the reconnect delay SSE streams tell EventSource" group:"server"`
	NoCompression   bool     `name:"disable-compression" help:"turn permessage-deflate off" group:"server"`

	MaxMessageSize      count     `default:"${max_message_size}" help:"bytes of one client frame and of one API publish body" group:"limits"`
	MaxSubscriptions    count     `default:"${max_subscriptions}" help:"channels per connection or SSE stream (0: no limit)" group:"limits"`
	PublishRate         perSecond `default:"${publish_rate}" help:"publishes per second per connection, on average (0: no limit)" group:"limits"`
	PublishBurst        count     `default:"${publish_burst}" help:"publishes per connection in a burst above the rate" group:"limits"`
	CommandRate         perSecond `default:"${command_rate}" help:"other commands (subscribe, unsubscribe, history, presence, ping, refresh) per second per connection, on average (0: no limit)" group:"limits"`
	CommandBurst        count     `default:"${command_burst}" help:"other commands per connection in a burst above the rate" group:"limits"`
	MaxConnections      count     `default:"${max_connections}" help:"open WebSocket and SSE connections in total; the default is this process's open-file limit less a reserve (0: no limit)" group:"limits"`
	MaxConnectionsPerIP count     `name:"max-connections-per-ip" default:"${max_connections_per_ip}" help:"connections from one client address (0: no limit; behind a proxy leave it 0)" group:"limits"`
	QueueMessages       count     `default:"${queue_messages}" help:"outgoing messages a connection may fall behind before it is closed as a slow consumer" group:"limits"`
	QueueBytes          count     `default:"${queue_bytes}" help:"outgoing bytes a connection may fall behind before it is closed as a slow consumer; what it asked for (replies, catch-up) is paced by the same bound" group:"limits"`
	HandshakeTimeout    span      `default:"${handshake_timeout}" help:"time a client has to send its request headers, and the server to write an upgrade" group:"limits"`
	WriteTimeout        span      `default:"${write_timeout}" help:"time one write to a connection may take before the connection is closed" group:"limits"`
	IdleTimeout         span      `default:"${idle_timeout}" help:"how long a keep-alive connection may stay idle between requests (idle ones count toward --max-connections)" group:"limits"`
	PingInterval        span      `default:"${ping_interval}" help:"quiet WebSocket connections are pinged after this long" group:"limits"`
	PongTimeout         span      `default:"${pong_timeout}" help:"and closed when still quiet this long after the ping" group:"limits"`

	TokenSecret    string `help:"HS256 secret for client tokens; once set, clients need a token unless --allow-anonymous" group:"tokens"`
	TokenPublicKey string `help:"PEM file of an RSA or ECDSA P-256 public key for RS256/ES256 client tokens" placeholder:"FILE" group:"tokens"`
	TokenJWKS      string `name:"token-jwks" help:"JSON Web Key Set file for RS256/ES256 client tokens, by kid" placeholder:"FILE" group:"tokens"`
	TokenAudience  string `help:"audience every client token must name in its aud (recommended with a JWKS shared by other services)" group:"tokens"`
	TokenIssuer    string `help:"issuer every client token must name in its iss (recommended with a JWKS)" group:"tokens"`
	AllowAnonymous bool   `help:"let clients in without a token although a token key is set (without a key everyone is anonymous; with --proxy-connect the application decides)" group:"tokens"`

	Broker       string `default:"${broker}" help:"memory, redis://host:port/db or nats://host:port (several nodes as one on Redis or NATS)" group:"brokers"`
	HistorySize  count  `default:"${history_size}" help:"messages kept per channel (0: none)" group:"brokers"`
	HistoryTTL   span   `name:"history-ttl" default:"${history_ttl}" help:"how long messages are kept" group:"brokers"`
	HistoryBytes count  `default:"${history_bytes}" help:"bytes of history kept in all (memory broker: in this process, least recently published channels dropped first; NATS: the stream's size; Redis: not applied, bound it with maxmemory; 0: no bound)" group:"brokers"`

	Webhook         string   `help:"URL of the application's webhook endpoint: herald POSTs it signed events (connect, disconnect, subscribe, unsubscribe, occupied, vacated, undelivered), at least once, in order per client, even when a node dies" placeholder:"URL" group:"backend"`
	WebhookSecret   string   `help:"secret that signs the webhook events (Herald-Signature); required with --webhook" group:"backend"`
	WebhookEvents   []string `help:"the webhook event types to send (default: all)" enum:"connect,disconnect,subscribe,unsubscribe,occupied,vacated,undelivered" placeholder:"TYPE" group:"backend"`
	WebhookRetryFor span     `default:"1h" help:"how long a webhook event the app does not acknowledge is retried, with backoff, before it is dropped" group:"backend"`
	NodeTTL         span     `name:"node-ttl" default:"30s" help:"how soon another node notices that a node died without shutting down and reports its clients to the webhook (unsubscribe, disconnect with reason node_lost)" group:"backend"`
	Outbox          string   `help:"PostgreSQL URL (postgres://user:password@host/db, ?search_path=schema for another than public) whose table herald_outbox herald publishes: the rows the app commits, in id order, at least once; one node of a cluster reads at a time" placeholder:"URL" group:"backend"`

	ProxyConnect   string   `name:"proxy-connect" help:"URL herald asks whether a client without a token may connect, and as whom (its user, expiry, server-side channels, presence info)" placeholder:"URL" group:"backend"`
	ProxySubscribe string   `name:"proxy-subscribe" help:"URL herald asks whether a client may subscribe (also history and presence)" placeholder:"URL" group:"backend"`
	ProxyPublish   string   `name:"proxy-publish" help:"URL herald asks whether a client may publish; its answer may replace the data" placeholder:"URL" group:"backend"`
	ProxyRPC       string   `name:"proxy-rpc" help:"URL that answers clients' rpc commands" placeholder:"URL" group:"backend"`
	ProxyRefresh   string   `name:"proxy-refresh" help:"URL herald asks, shortly before a proxied connection's expire_at, for a new one" placeholder:"URL" group:"backend"`
	ProxyHeaders   []string `name:"proxy-headers" default:"${proxy_headers}" help:"headers of the client's own request copied onto every proxy request of its connection" group:"backend"`
	ProxyTimeout   span     `name:"proxy-timeout" default:"${proxy_timeout}" help:"how long one proxy request may take; no answer in time refuses what it asked (unavailable)" group:"backend"`

	TLSCert   string `name:"tls-cert" help:"TLS certificate file (PEM, with its chain); with --tls-key, herald serves HTTPS and WSS (HTTP/2 for SSE)" placeholder:"FILE" group:"tls"`
	TLSKey    string `name:"tls-key" help:"TLS private key file (PEM)" placeholder:"FILE" group:"tls"`
	ACMEHost  string `name:"acme-host" help:"host name to get certificates for automatically (ACME, Let's Encrypt; the TLS-ALPN challenge on the listen address, which must be :443)" group:"tls"`
	ACMECache string `name:"acme-cache" help:"directory that keeps ACME certificates across restarts" placeholder:"DIR" group:"tls"`

	LogLevel     string `default:"info" enum:"debug,info,warn,error" help:"debug, info, warn or error" group:"observability"`
	LogFormat    string `default:"" enum:",text,json" help:"text or json (default: text on a terminal, JSON otherwise)" group:"observability"`
	OTelEndpoint string `name:"otel-endpoint" help:"OpenTelemetry collector (OTLP over HTTP, e.g. http://127.0.0.1:4318) to send a trace of every publish and fan-out to; the standard OTEL_EXPORTER_OTLP_ENDPOINT works too; neither: no tracing" placeholder:"URL" group:"observability"`
}

// flagGroups order serve's flags in its help.
var flagGroups = []kong.Group{
	{Key: "server", Title: "Server:"},
	{Key: "limits", Title: "Limits:"},
	{Key: "tokens", Title: "Tokens:"},
	{Key: "brokers", Title: "Brokers and history:"},
	{Key: "backend", Title: "The app's back end (proxies, webhooks, outbox):"},
	{Key: "tls", Title: "TLS:"},
	{Key: "observability", Title: "Observability:"},
}

// defaultVars are the defaults serve's flags show and start from:
// herald.DefaultConfig's, and the few of serve's own.
func defaultVars() kong.Vars {
	d := herald.DefaultConfig()
	return kong.Vars{
		"addr":                   defaultAddr,
		"broker":                 "memory",
		"history_size":           fmt.Sprint(d.HistorySize),
		"history_ttl":            span(d.HistoryTTL).String(),
		"history_bytes":          fmt.Sprint(memory.DefaultMaxHistoryBytes),
		"max_message_size":       fmt.Sprint(d.MaxMessageSize),
		"max_subscriptions":      fmt.Sprint(unlimited(d.MaxSubscriptions)),
		"publish_rate":           fmt.Sprint(max(d.PublishRate, 0)),
		"publish_burst":          fmt.Sprint(d.PublishBurst),
		"command_rate":           fmt.Sprint(max(d.CommandRate, 0)),
		"command_burst":          fmt.Sprint(d.CommandBurst),
		"max_connections":        fmt.Sprint(unlimited(d.MaxConnections)),
		"max_connections_per_ip": fmt.Sprint(d.MaxConnectionsPerIP),
		"queue_messages":         fmt.Sprint(d.QueueMessages),
		"queue_bytes":            fmt.Sprint(d.QueueBytes),
		"handshake_timeout":      span(d.HandshakeTimeout).String(),
		"write_timeout":          span(d.WriteTimeout).String(),
		"ping_interval":          span(d.PingInterval).String(),
		"pong_timeout":           span(d.PongTimeout).String(),
		"sse_heartbeat":          span(d.SSEHeartbeat).String(),
		"sse_retry":              span(d.SSERetry).String(),
		"idle_timeout":           span(defaultIdleTimeout).String(),
		"shutdown_timeout":       span(defaultShutdownTimeout).String(),
		"proxy_headers":          strings.Join(defaultProxyHeaders, ","),
		"proxy_timeout":          span(backend.DefaultTimeout).String(),
	}
}

// unlimited turns herald.Config's "negative: no limit" into the flags'
// 0.
func unlimited(n int) int { return max(n, 0) }

// limit turns a flag's "0: no limit" into herald.Config's negative.
func limit(n count) int {
	if n == 0 {
		return -1
	}
	return int(n)
}

// rate is limit for a rate per second.
func rate(r perSecond) float64 {
	if r == 0 {
		return -1
	}
	return float64(r)
}

// settings are serve's inputs once flags, environment, file and defaults
// are merged and checked.
type settings struct {
	addr            string
	broker          string
	logLevel        slog.Level
	logFormat       string // text, json, or "" for text on a terminal and JSON otherwise
	shutdownTimeout time.Duration
	idleTimeout     time.Duration
	tlsCert         string // PEM files; both or neither
	tlsKey          string
	acmeHost        string // automatic certificates for this host name
	acmeCache       string
	historyBytes    int    // -1: no bound
	otelEndpoint    string // "": the standard OTEL_* variables decide
	outbox          string // PostgreSQL URL of the outbox; "": none
	otelFrom        string // where otelEndpoint came from, for its errors
	proxy           backend.Config
	config          herald.Config
}

// settings checks the flags and turns them into serve's settings, with
// namespaces from the config file and the embedded defaults; origin names
// where a flag's value came from (layers.origin), for the errors.
func (f *serveFlags) settings(namespaces map[string]herald.Namespace, origin func(flag string) string) (*settings, error) {
	if b := f.Broker; b != "memory" && !strings.HasPrefix(b, "redis://") && !strings.HasPrefix(b, "rediss://") && !strings.HasPrefix(b, "nats://") {
		return nil, fmt.Errorf("%s: unsupported broker %q: want memory, redis://host:port/db or nats://host:port", origin("broker"), mask.URL(b))
	}
	if o := f.Outbox; o != "" && !strings.HasPrefix(o, "postgres://") && !strings.HasPrefix(o, "postgresql://") {
		// Not echoed: key=value settings are no URL that mask can read.
		return nil, fmt.Errorf("%s: not a PostgreSQL URL: want postgres://user:password@host:port/db", origin("outbox"))
	}
	s := &settings{
		addr:            f.Addr,
		broker:          f.Broker,
		logFormat:       f.LogFormat,
		shutdownTimeout: time.Duration(f.ShutdownTimeout),
		idleTimeout:     time.Duration(f.IdleTimeout),
		tlsCert:         f.TLSCert,
		tlsKey:          f.TLSKey,
		acmeHost:        f.ACMEHost,
		acmeCache:       f.ACMECache,
		historyBytes:    limit(f.HistoryBytes),
		otelEndpoint:    f.OTelEndpoint,
		outbox:          f.Outbox,
		otelFrom:        origin("otel-endpoint"),
		config: herald.Config{
			HistorySize:         limit(f.HistorySize), // 0 keeps none, as herald.Config's negative
			HistoryTTL:          time.Duration(f.HistoryTTL),
			Namespaces:          namespaces,
			MaxMessageSize:      int(f.MaxMessageSize),
			QueueMessages:       int(f.QueueMessages),
			QueueBytes:          int(f.QueueBytes),
			PingInterval:        time.Duration(f.PingInterval),
			PongTimeout:         time.Duration(f.PongTimeout),
			WriteTimeout:        time.Duration(f.WriteTimeout),
			DisableCompression:  f.NoCompression,
			SSEHeartbeat:        time.Duration(f.SSEHeartbeat),
			SSERetry:            time.Duration(f.SSERetry),
			APIKey:              f.APIKey,
			TokenSecret:         f.TokenSecret,
			TokenAudience:       f.TokenAudience,
			TokenIssuer:         f.TokenIssuer,
			AllowAnonymous:      f.AllowAnonymous,
			MaxSubscriptions:    limit(f.MaxSubscriptions),
			PublishRate:         rate(f.PublishRate),
			PublishBurst:        int(f.PublishBurst),
			CommandRate:         rate(f.CommandRate),
			CommandBurst:        int(f.CommandBurst),
			MaxConnections:      limit(f.MaxConnections),
			MaxConnectionsPerIP: int(f.MaxConnectionsPerIP),
			HandshakeTimeout:    time.Duration(f.HandshakeTimeout),
			AdminToken:          f.AdminToken,
			Webhook: herald.Webhook{
				URL:      f.Webhook,
				Secret:   f.WebhookSecret,
				Events:   f.WebhookEvents,
				RetryFor: time.Duration(f.WebhookRetryFor),
				NodeTTL:  time.Duration(f.NodeTTL),
				Timeout:  time.Duration(f.ProxyTimeout), // the contract bounds webhook calls by --proxy-timeout too
			},
		},
	}
	if err := s.logLevel.UnmarshalText([]byte(f.LogLevel)); err != nil {
		return nil, fmt.Errorf("%s: %w", origin("log-level"), err)
	}
	for _, o := range f.Origins {
		if o = strings.TrimSpace(o); o != "" {
			s.config.Origins = append(s.config.Origins, o)
		}
	}
	var err error
	if s.config.TokenPublicKey, err = readSettingFile(origin("token-public-key"), f.TokenPublicKey); err != nil {
		return nil, err
	}
	if s.config.TokenJWKS, err = readSettingFile(origin("token-jwks"), f.TokenJWKS); err != nil {
		return nil, err
	}
	if s.proxy, err = f.proxySettings(origin); err != nil {
		return nil, err
	}
	return s, nil
}

// proxySettings checks the proxy flags and turns them into the backend's
// Config; origin names where a flag's value came from, for the errors.
func (f *serveFlags) proxySettings(origin func(flag string) string) (backend.Config, error) {
	p := backend.Config{
		Connect:   f.ProxyConnect,
		Subscribe: f.ProxySubscribe,
		Publish:   f.ProxyPublish,
		RPC:       f.ProxyRPC,
		Refresh:   f.ProxyRefresh,
		Timeout:   time.Duration(f.ProxyTimeout),
	}
	for _, u := range []struct{ flag, url string }{
		{"proxy-connect", p.Connect}, {"proxy-subscribe", p.Subscribe}, {"proxy-publish", p.Publish},
		{"proxy-rpc", p.RPC}, {"proxy-refresh", p.Refresh},
	} {
		if u.url == "" {
			continue
		}
		if err := backend.CheckURL(u.url); err != nil {
			return p, fmt.Errorf("%s: %w", origin(u.flag), err)
		}
	}
	for _, h := range f.ProxyHeaders {
		if h = strings.TrimSpace(h); h != "" {
			p.Headers = append(p.Headers, h)
		}
	}
	return p, nil
}

// proxied reports whether any proxy is on.
func (s *settings) proxied() bool {
	p := s.proxy
	return p.Connect != "" || p.Subscribe != "" || p.Publish != "" || p.RPC != "" || p.Refresh != ""
}

// readSettingFile reads the file a setting names; "" reads nothing. from
// says where the setting came from, for the error.
func readSettingFile(from, path string) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", from, err)
	}
	return b, nil
}
