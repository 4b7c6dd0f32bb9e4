package main

import (
	_ "embed"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/internal/mask"
)

//go:embed defaults.yaml
var defaultsYAML []byte

// settings are serve's inputs once flags, environment, file and defaults
// are merged.
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
	historyBytes    int // -1: no bound
	config          herald.Config
	namespaces      map[string]herald.Namespace
	// values are every setting's merged text, and sources where each came
	// from (herald config prints them).
	values  map[string]string
	sources map[string]string
}

// option is one serve setting: a flag, an env variable and a file key.
type option struct {
	name  string
	usage string
	set   func(s *settings, v string) error
}

func options() []option {
	return []option{
		{"addr", "listen address", func(s *settings, v string) error { s.addr = v; return nil }},
		{"broker", "memory, redis://host:port/db or nats://host:port (several nodes on one Redis or NATS)", func(s *settings, v string) error {
			if v != "memory" && !strings.HasPrefix(v, "redis://") && !strings.HasPrefix(v, "rediss://") && !strings.HasPrefix(v, "nats://") {
				return fmt.Errorf("unsupported broker %q: want memory, redis://host:port/db or nats://host:port", mask.URL(v))
			}
			s.broker = v
			return nil
		}},
		{"history-size", "messages kept per channel", intSetting(func(s *settings, n int) { s.config.HistorySize = n })},
		{"history-ttl", "how long messages are kept", durationSetting(func(s *settings, d time.Duration) { s.config.HistoryTTL = d })},
		{"history-bytes", "bytes of history kept in all (memory broker: in this process, least recently published channels dropped first; NATS: the stream's size; Redis: not applied, bound it with maxmemory; 0: no bound)", limitSetting(func(s *settings, n int) { s.historyBytes = n })},
		{"max-message-size", "bytes of one client frame and one API publish body", intSetting(func(s *settings, n int) { s.config.MaxMessageSize = n })},
		{"origins", "comma-separated origins allowed for CORS on SSE and the API (* for any; empty: same host)", func(s *settings, v string) error {
			s.config.Origins = nil
			for _, o := range strings.Split(v, ",") {
				if o = strings.TrimSpace(o); o != "" {
					s.config.Origins = append(s.config.Origins, o)
				}
			}
			return nil
		}},
		{"api-key", "key for the server API; without one it answers loopback callers only, and no web page", func(s *settings, v string) error { s.config.APIKey = v; return nil }},
		{"admin-token", "token for the admin page at /admin (live numbers, channels, publish); without one there is no admin page", func(s *settings, v string) error { s.config.AdminToken = v; return nil }},
		{"token-secret", "HS256 secret for client tokens; once set, clients need a token unless --allow-anonymous", func(s *settings, v string) error { s.config.TokenSecret = v; return nil }},
		{"token-public-key", "PEM file of an RSA or ECDSA P-256 public key for RS256/ES256 client tokens", fileSetting(func(s *settings, b []byte) { s.config.TokenPublicKey = b })},
		{"token-jwks", "JSON Web Key Set file for RS256/ES256 client tokens, by kid", fileSetting(func(s *settings, b []byte) { s.config.TokenJWKS = b })},
		{"token-audience", "audience every client token must name in its aud (recommended with a JWKS shared by other services)", func(s *settings, v string) error { s.config.TokenAudience = v; return nil }},
		{"token-issuer", "issuer every client token must name in its iss (recommended with a JWKS)", func(s *settings, v string) error { s.config.TokenIssuer = v; return nil }},
		{"allow-anonymous", "let clients in without a token although a token key is set (without a key everyone is anonymous)", boolSetting(func(s *settings, on bool) { s.config.AllowAnonymous = on })},
		{"max-subscriptions", "channels per connection (0: no limit)", limitSetting(func(s *settings, n int) { s.config.MaxSubscriptions = n })},
		{"publish-rate", "publishes per second per connection, on average (0: no limit)", rateSetting(func(s *settings, f float64) { s.config.PublishRate = f })},
		{"publish-burst", "publishes per connection in a burst above the rate", intSetting(func(s *settings, n int) { s.config.PublishBurst = n })},
		{"command-rate", "other commands (subscribe, unsubscribe, history, presence, ping, refresh) per second per connection, on average (0: no limit)", rateSetting(func(s *settings, f float64) { s.config.CommandRate = f })},
		{"command-burst", "other commands per connection in a burst above the rate", intSetting(func(s *settings, n int) { s.config.CommandBurst = n })},
		{"max-connections", "open WebSocket and SSE connections, in total (0: no limit; default: the open-file limit less a reserve)", limitSetting(func(s *settings, n int) { s.config.MaxConnections = n })},
		{"max-connections-per-ip", "connections from one client address (0: no limit; behind a proxy leave it 0)", intSetting(func(s *settings, n int) { s.config.MaxConnectionsPerIP = n })},
		{"queue-messages", "outgoing messages a connection may fall behind before it is closed as a slow consumer", intSetting(func(s *settings, n int) { s.config.QueueMessages = n })},
		{"queue-bytes", "outgoing bytes a connection may fall behind before it is closed as a slow consumer", intSetting(func(s *settings, n int) { s.config.QueueBytes = n })},
		{"handshake-timeout", "time a client has to send its request headers, and the server to write an upgrade", durationSetting(func(s *settings, d time.Duration) { s.config.HandshakeTimeout = d })},
		{"write-timeout", "time one write to a connection may take before the connection is closed", durationSetting(func(s *settings, d time.Duration) { s.config.WriteTimeout = d })},
		{"idle-timeout", "how long a keep-alive connection may stay idle between requests before it is closed (idle ones count toward --max-connections)", durationSetting(func(s *settings, d time.Duration) { s.idleTimeout = d })},
		{"shutdown-timeout", "how long a graceful shutdown waits for connections to close", durationSetting(func(s *settings, d time.Duration) { s.shutdownTimeout = d })},
		{"tls-cert", "TLS certificate file (PEM, with its chain); with --tls-key, herald serves HTTPS and WSS (HTTP/2 for SSE)", func(s *settings, v string) error { s.tlsCert = v; return nil }},
		{"tls-key", "TLS private key file (PEM)", func(s *settings, v string) error { s.tlsKey = v; return nil }},
		{"acme-host", "host name to get certificates for automatically (ACME, Let's Encrypt; the TLS-ALPN challenge on the listen address, which must be :443)", func(s *settings, v string) error { s.acmeHost = v; return nil }},
		{"acme-cache", "directory that keeps ACME certificates across restarts", func(s *settings, v string) error { s.acmeCache = v; return nil }},
		{"sse-heartbeat", "how often an idle SSE stream gets a comment line", durationSetting(func(s *settings, d time.Duration) { s.config.SSEHeartbeat = d })},
		{"sse-retry", "the reconnect delay SSE streams tell EventSource", durationSetting(func(s *settings, d time.Duration) { s.config.SSERetry = d })},
		{"log-level", "debug, info, warn or error", func(s *settings, v string) error { return s.logLevel.UnmarshalText([]byte(v)) }},
		{"log-format", "text or json (default: text on a terminal, JSON otherwise)", func(s *settings, v string) error {
			if v != "" && v != "text" && v != "json" {
				return fmt.Errorf("want text or json, got %q", v)
			}
			s.logFormat = v
			return nil
		}},
	}
}

// rateSetting parses a rate per second; 0 (no limit) becomes the
// Config's negative "no limit".
func rateSetting(set func(*settings, float64)) func(*settings, string) error {
	return func(s *settings, v string) error {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f < 0 {
			return fmt.Errorf("want a number per second, got %q", v)
		}
		if f == 0 {
			f = -1
		}
		set(s, f)
		return nil
	}
}

func intSetting(apply func(*settings, int)) func(*settings, string) error {
	return func(s *settings, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return fmt.Errorf("want a whole number, got %q", v)
		}
		apply(s, n)
		return nil
	}
}

// limitSetting reads a limit where 0 means none (herald.Config's -1).
func limitSetting(apply func(*settings, int)) func(*settings, string) error {
	return intSetting(func(s *settings, n int) {
		if n == 0 {
			n = -1
		}
		apply(s, n)
	})
}

func boolSetting(apply func(*settings, bool)) func(*settings, string) error {
	return func(s *settings, v string) error {
		on, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("want true or false, got %q", v)
		}
		apply(s, on)
		return nil
	}
}

// fileSetting reads the file a setting names; "" reads nothing.
func fileSetting(apply func(*settings, []byte)) func(*settings, string) error {
	return func(s *settings, v string) error {
		if v == "" {
			apply(s, nil)
			return nil
		}
		b, err := os.ReadFile(v)
		if err != nil {
			return err
		}
		apply(s, b)
		return nil
	}
}

func durationSetting(apply func(*settings, time.Duration)) func(*settings, string) error {
	return func(s *settings, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return fmt.Errorf("want a duration such as 10m, got %q", v)
		}
		apply(s, d)
		return nil
	}
}

// loadSettings merges defaults < config file < environment < flags.
func loadSettings(args, env []string, stderr io.Writer) (*settings, error) {
	opts := options()
	fs := flag.NewFlagSet("herald serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "YAML config file")
	flagVals := make(map[string]*string, len(opts))
	for _, o := range opts {
		flagVals[o.name] = fs.String(o.name, "", o.usage)
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	envMap := envToMap(env)
	if *configPath == "" {
		*configPath = envMap["HERALD_CONFIG"]
	}

	values := map[string]string{}
	namespaces := map[string]herald.Namespace{}
	if err := readYAML(defaultsYAML, values, namespaces); err != nil {
		return nil, fmt.Errorf("embedded defaults: %w", err)
	}
	source := map[string]string{}
	for k := range values {
		source[k] = "default"
	}
	if *configPath != "" {
		b, err := os.ReadFile(*configPath)
		if err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		fromFile := map[string]string{}
		if err := readYAML(b, fromFile, namespaces); err != nil {
			return nil, fmt.Errorf("config %s: %w", *configPath, err)
		}
		for k, v := range fromFile {
			values[k], source[k] = v, *configPath
		}
	}
	for _, o := range opts {
		if v, ok := envMap[envName(o.name)]; ok {
			values[o.name], source[o.name] = v, envName(o.name)
		}
	}
	fs.Visit(func(f *flag.Flag) {
		if p, ok := flagVals[f.Name]; ok {
			values[f.Name], source[f.Name] = *p, "--"+f.Name
		}
	})

	s := &settings{logLevel: slog.LevelInfo, namespaces: namespaces, values: values, sources: source}
	for _, o := range opts {
		v, ok := values[o.name]
		if !ok {
			continue
		}
		if err := o.set(s, v); err != nil {
			where := source[o.name]
			if where == "" || where == "default" || strings.HasSuffix(where, ".yaml") || strings.HasSuffix(where, ".yml") {
				where = o.name
			}
			return nil, fmt.Errorf("%s: %w", where, err)
		}
	}
	s.config.Namespaces = namespaces
	return s, nil
}

// readYAML reads a config file's keys into values (scalars as text) and
// namespaces. Unknown keys are errors that name the key.
func readYAML(b []byte, values map[string]string, namespaces map[string]herald.Namespace) error {
	var doc map[string]yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return err
	}
	known := map[string]bool{}
	for _, o := range options() {
		known[o.name] = true
	}
	keys := make([]string, 0, len(doc))
	for k := range doc {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		node := doc[k]
		switch {
		case k == "namespaces":
			if err := readNamespaces(&node, namespaces); err != nil {
				return err
			}
		case known[k]:
			if node.Kind != yaml.ScalarNode {
				return fmt.Errorf("key %q: want a single value", k)
			}
			values[k] = node.Value
		default:
			return fmt.Errorf("unknown key %q", k)
		}
	}
	return nil
}

func readNamespaces(node *yaml.Node, out map[string]herald.Namespace) error {
	var nss map[string]map[string]yaml.Node
	if err := node.Decode(&nss); err != nil {
		return fmt.Errorf("key \"namespaces\": want a map of namespace names to options: %w", err)
	}
	for name, fields := range nss {
		ns := out[name]
		for k, v := range fields {
			var err error
			switch k {
			case "history-size":
				ns.HistorySize, err = strconv.Atoi(v.Value)
			case "history-ttl":
				ns.HistoryTTL, err = time.ParseDuration(v.Value)
			case "presence":
				var on bool
				on, err = strconv.ParseBool(v.Value)
				ns.NoPresence = !on
			case "join-leave":
				ns.JoinLeave, err = strconv.ParseBool(v.Value)
			case "client-publish":
				var on bool
				on, err = strconv.ParseBool(v.Value)
				ns.NoClientPublish = !on
			case "anonymous-subscribe":
				var on bool
				on, err = strconv.ParseBool(v.Value)
				ns.NoAnonymousSubscribe = !on
			case "anonymous-publish":
				var on bool
				on, err = strconv.ParseBool(v.Value)
				ns.NoAnonymousPublish = !on
			default:
				err = errors.New("unknown key")
			}
			if err != nil {
				return fmt.Errorf("key \"namespaces.%s.%s\": %w", name, k, err)
			}
		}
		out[name] = ns
	}
	return nil
}

// envName is the environment variable of a setting.
func envName(name string) string {
	return "HERALD_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

func envToMap(env []string) map[string]string {
	m := make(map[string]string, len(env))
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return m
}
