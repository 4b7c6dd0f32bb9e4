package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"golang.org/x/crypto/acme/autocert"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/memory"
	"github.com/heraldhq/herald/broker/nats"
	"github.com/heraldhq/herald/broker/redis"
	"github.com/heraldhq/herald/internal/backend"
	"github.com/heraldhq/herald/internal/mask"
	"github.com/heraldhq/herald/outbox"
)

const (
	// defaultGCPercent is the GC target of herald serve when GOGC is unset.
	defaultGCPercent = 50
)

// serveCmd runs the server.
type serveCmd struct {
	serveFlags
}

// Help is serve's description under its usage line.
func (serveCmd) Help() string {
	return "Every flag is also an environment variable (shown after it) and a key of the --config file; " +
		"flags win over the environment, which wins over the file. " +
		"Per-namespace rules live in the file (namespaces:); herald config prints the result."
}

// Run runs the server until the run's context is done, then shuts it
// down gracefully.
func (c *serveCmd) Run(r *runEnv) error {
	s, err := c.settings(r.layers.namespaces, r.layers.origin)
	if err != nil {
		return err
	}
	return serve(r.ctx, s, r.layers.env, r.stderr)
}

// serve runs the server until ctx is done, then shuts it down gracefully.
func serve(ctx context.Context, s *settings, env map[string]string, stderr io.Writer) error {
	var err error
	if _, set := env["GOGC"]; !set {
		// A connection server is memory-bound: collecting at 50% heap
		// growth instead of Go's 100% costs a little CPU in connection
		// storms and saves about 1.5 KiB per idle connection
		// (docs/benchmarks.md). GOGC overrides it.
		debug.SetGCPercent(defaultGCPercent)
	}
	logger := newLogger(stderr, s.logFormat, s.logLevel)
	cfg := s.config
	cfg.Logger = logger
	tp, err := newTracerProvider(ctx, s.otelEndpoint, s.otelFrom, env, logger)
	if err != nil {
		return err
	}
	if tp != nil {
		cfg.TracerProvider = tp
		defer func() {
			// Send what is still batched before the process ends.
			fctx, cancel := context.WithTimeout(context.Background(), s.shutdownTimeout)
			defer cancel()
			if err := tp.Shutdown(fctx); err != nil {
				logger.Warn("tracing: flush on shutdown", "err", err)
			}
		}()
	}
	if s.proxied() {
		pc := s.proxy
		pc.Logger = logger
		p, err := backend.New(pc)
		if err != nil {
			return err
		}
		cfg.Hooks = p.Hooks()
	}
	if cfg.Broker, err = newBroker(s, logger); err != nil {
		return err
	}
	srv, err := herald.New(cfg)
	if err != nil {
		return err
	}
	ob, err := newOutbox(s, srv, logger)
	if err != nil {
		_ = srv.Shutdown(context.Background())
		return err
	}
	tlsConfig, err := s.tls()
	if err != nil {
		_ = srv.Shutdown(context.Background())
		return err
	}
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		_ = srv.Shutdown(context.Background())
		return fmt.Errorf("listen: %w", err)
	}
	scheme := "http"
	if tlsConfig != nil {
		ln = tls.NewListener(ln, tlsConfig)
		scheme = "https"
	}
	httpSrv := &http.Server{
		Handler:           srv,
		ReadHeaderTimeout: s.config.HandshakeTimeout,
		IdleTimeout:       s.idleTimeout,
		ConnState:         srv.ConnState,
		ConnContext:       srv.ConnContext,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
		TLSConfig:         tlsConfig,
	}
	logger.Info("herald listening", "addr", ln.Addr().String(), "url", scheme+"://"+displayHost(ln.Addr()), "broker", mask.URL(s.broker))

	errc := make(chan error, 1)
	go func() { errc <- httpSrv.Serve(ln) }()
	stopOutbox := runOutbox(ob)
	select {
	case err := <-errc:
		stopOutbox()
		_ = srv.Shutdown(context.Background())
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	logger.Info("shutting down")
	stopOutbox() // first: nothing is published into a server that closes
	sctx, cancel := context.WithTimeout(context.Background(), s.shutdownTimeout)
	defer cancel()
	herr := httpSrv.Shutdown(sctx)
	serr := srv.Shutdown(sctx)
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	return errors.Join(herr, serr)
}

// newOutbox makes the outbox reader --outbox asks for, publishing through
// srv; nil without --outbox.
func newOutbox(s *settings, srv *herald.Server, logger *slog.Logger) (*outbox.Reader, error) {
	if s.outbox == "" {
		return nil, nil
	}
	r, err := outbox.New(outbox.Config{
		URL:            s.outbox,
		Publisher:      srv,
		MaxMessageSize: s.config.MaxMessageSize,
		Registerer:     srv.Registerer(),
		Logger:         logger,
	})
	if err != nil {
		return nil, fmt.Errorf("--outbox %s: %w", mask.URL(s.outbox), err)
	}
	return r, nil
}

// runOutbox runs r (nil: nothing) until the returned function is called,
// which stops it and waits until it has deleted what it published.
func runOutbox(r *outbox.Reader) (stop func()) {
	if r == nil {
		return func() {}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = r.Run(ctx) // it logs what goes wrong, and returns nil when ctx is done
	}()
	return func() {
		cancel()
		<-done
	}
}

// tls returns the TLS configuration the settings ask for, nil for plain
// HTTP. It offers HTTP/2 (SSE streams share one connection) and
// HTTP/1.1 (WebSocket upgrades).
func (s *settings) tls() (*tls.Config, error) {
	switch {
	case s.acmeHost != "" && (s.tlsCert != "" || s.tlsKey != ""):
		return nil, errors.New("--acme-host and --tls-cert/--tls-key: choose one")
	case s.acmeHost != "":
		m := &autocert.Manager{Prompt: autocert.AcceptTOS, HostPolicy: autocert.HostWhitelist(s.acmeHost)}
		if s.acmeCache != "" {
			m.Cache = autocert.DirCache(s.acmeCache)
		}
		c := m.TLSConfig()
		c.NextProtos = append([]string{"h2", "http/1.1"}, c.NextProtos...)
		return c, nil
	case s.tlsCert == "" && s.tlsKey == "":
		return nil, nil
	case s.tlsCert == "" || s.tlsKey == "":
		return nil, errors.New("--tls-cert and --tls-key go together")
	}
	cert, err := tls.LoadX509KeyPair(s.tlsCert, s.tlsKey)
	if err != nil {
		return nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}, MinVersion: tls.VersionTLS12}, nil
}

// newLogger logs to w as text or JSON; format "" picks text for a
// terminal and JSON for anything else (a file, a pipe, a log collector).
func newLogger(w io.Writer, format string, level slog.Level) *slog.Logger {
	if format == "" {
		format = "json"
		if f, ok := w.(*os.File); ok {
			if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
				format = "text"
			}
		}
	}
	opts := &slog.HandlerOptions{Level: level}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// newBroker makes the broker the settings name; herald.New starts it.
func newBroker(s *settings, logger *slog.Logger) (broker.Broker, error) {
	var (
		b   broker.Broker
		err error
	)
	switch {
	case s.broker == "memory":
		return memory.NewWithConfig(memory.Config{MaxHistoryBytes: int64(s.historyBytes)})
	case strings.HasPrefix(s.broker, "nats://"):
		b, err = nats.New(natsConfig(s, s.broker, logger))
	default:
		// go-redis logs through one logger for the whole process, not one
		// per client: herald serve makes one broker and sets it here, once.
		redis.SetLibraryLogger(logger)
		b, err = redis.New(redis.Config{URL: s.broker, Logger: logger})
	}
	if err != nil {
		return nil, fmt.Errorf("broker %s: %w", mask.URL(s.broker), err)
	}
	return b, nil
}

// natsConfig sizes the NATS stream for the history the settings keep: as
// many messages per channel and as long (and a minute, as Redis keeps a
// channel's offsets) as the namespace that keeps most, in at most
// --history-bytes.
func natsConfig(s *settings, url string, logger *slog.Logger) nats.Config {
	c := nats.Config{URL: url, Logger: logger, MaxBytes: int64(s.historyBytes)}
	size, ttl := s.config.HistorySize, s.config.HistoryTTL
	for _, ns := range s.config.Namespaces {
		size, ttl = max(size, ns.HistorySize), max(ttl, ns.HistoryTTL)
	}
	// Zero leaves herald's default, which nats.Config's defaults cover.
	if s.config.HistorySize != 0 {
		c.MaxHistory = max(size, 1) // the newest message carries the channel's chain
	}
	if s.config.HistoryTTL != 0 {
		c.MaxAge = ttl + time.Minute
	}
	return c
}

// displayHost names a listen address the way a browser would reach it.
func displayHost(a net.Addr) string {
	host, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "localhost"
	}
	return net.JoinHostPort(host, port)
}
