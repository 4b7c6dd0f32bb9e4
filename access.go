package herald

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/internal/auth"
	"github.com/heraldhq/herald/internal/protocol"
	"github.com/heraldhq/herald/internal/session"
)

// caller is who a client request is, once its token or the Connect hook
// have spoken.
type caller struct {
	client    string // the connection's id, given before the Connect hook runs
	user      string
	transport string // TransportWebSocket, TransportRaw or TransportSSE
	// id is the verified token; nil without one.
	id *auth.Identity
	// expires is when the token or the Connect hook's ExpireAt ends the
	// connection; zero: never.
	expires time.Time
	// proxied is set when the Connect hook let the connection in; it then
	// has channels (server-side subscriptions) and info (for presence).
	proxied  bool
	channels []string
	info     json.RawMessage
	header   http.Header // the headers Hooks.Headers keeps; nil for none
}

// verifyToken reads and verifies the request's token (`?token=` or
// `Authorization: Bearer`). It reports whether the request carried one; a
// bad token, one that nothing can verify, or none where one is required
// (no Connect hook and no AllowAnonymous) is an unauthorized *Error.
func (s *Server) verifyToken(r *http.Request, c *caller) (bool, error) {
	tok := requestToken(r)
	switch {
	case tok != "" && s.verifier == nil:
		// A token nobody can check must not pass for anonymous: its holder
		// believes it is someone.
		return true, Errorf(CodeUnauthorized, "this server verifies no tokens: it has no token key")
	case tok != "":
		id, err := s.verifier.Verify(tok)
		if err != nil {
			return true, Errorf(CodeUnauthorized, err.Error())
		}
		c.id, c.user, c.expires = id, id.User, id.Expires
		return true, nil
	case s.verifier != nil && !s.cfg.AllowAnonymous && s.cfg.Hooks.Connect == nil:
		return false, Errorf(CodeUnauthorized, "a token is required: pass ?token= or Authorization: Bearer")
	}
	return false, nil
}

// connectHook asks the Connect hook about a request without a token and
// fills c from its answer.
func (s *Server) connectHook(r *http.Request, c *caller) error {
	res, err := s.cfg.Hooks.Connect(r.Context(), ConnectRequest{Request: r, Client: c.client, Transport: c.transport})
	if err != nil {
		return err
	}
	if res.Info != nil && !json.Valid(res.Info) {
		return Errorf(CodeUnavailable, "the application's answer to connect is unusable: info is not JSON")
	}
	for _, ch := range res.Channels {
		if !protocol.ValidChannel(ch) || protocol.Reserved(ch) != nil {
			return Errorf(CodeUnavailable, "the application's answer to connect is unusable: "+strconv.Quote(ch)+" is no channel it may subscribe")
		}
	}
	c.proxied, c.user, c.expires, c.info = true, res.User, res.ExpireAt, res.Info
	for _, ch := range res.Channels {
		if !slices.Contains(c.channels, ch) {
			c.channels = append(c.channels, ch)
		}
	}
	return nil
}

// requestToken is the token of r: its `token` parameter, or else its
// Authorization bearer credentials.
func requestToken(r *http.Request) string {
	if t := r.URL.Query().Get("token"); t != "" {
		return t
	}
	return auth.Bearer(r)
}

// access is one connection's session.Policy: the reserved namespace, the
// namespace rules, its token's channels, then the hooks. The token may
// change (refresh).
type access struct {
	s      *Server
	id     atomic.Pointer[auth.Identity] // nil without a token
	header http.Header                   // the headers Hooks.Headers keeps; nil for none
}

// newAccess returns the policy of a client connection: a connection that
// the Connect hook let in with an expiry, on a server with a Refresh hook,
// renews that expiry (session.Renewer).
func (s *Server) newAccess(c caller) session.Policy {
	a := &access{s: s, header: c.header}
	a.id.Store(c.id)
	if c.proxied && !c.expires.IsZero() && s.cfg.Hooks.Refresh != nil {
		return renewing{a}
	}
	return a
}

// hooks are the Hooks as this connection asks them.
func (a *access) hooks() hookPolicy { return hookPolicy{h: &a.s.cfg.Hooks, header: a.header} }

// anonymous reports whether the client has neither a token nor a user
// from the Connect hook.
func (a *access) anonymous(c broker.ClientInfo) bool { return a.id.Load() == nil && c.User == "" }

func (a *access) AuthorizeSubscribe(ctx context.Context, c broker.ClientInfo, channel string) error {
	if e := protocol.Reserved(channel); e != nil {
		return e
	}
	if a.anonymous(c) && a.s.cfg.rules(channel).noAnonymousSubscribe {
		return Errorf(CodeForbidden, fmt.Sprintf("anonymous clients may not subscribe to %q: connect with a token", channel))
	}
	if id := a.id.Load(); id != nil && !id.CanSubscribe(channel) {
		return Errorf(CodeForbidden, fmt.Sprintf("the token does not allow subscribing to %q", channel))
	}
	return a.hooks().AuthorizeSubscribe(ctx, c, channel)
}

func (a *access) AuthorizePublish(ctx context.Context, c broker.ClientInfo, channel string, p *broker.Publication) error {
	r := a.s.cfg.rules(channel)
	if e := protocol.Reserved(channel); e != nil {
		return e
	}
	if r.noClientPublish {
		return Errorf(CodeForbidden, fmt.Sprintf("clients may not publish to %q: only the server API does", channel))
	}
	if a.anonymous(c) && r.noAnonymousPublish {
		return Errorf(CodeForbidden, fmt.Sprintf("anonymous clients may not publish to %q: connect with a token", channel))
	}
	if id := a.id.Load(); id != nil && !id.CanPublish(channel) {
		return Errorf(CodeForbidden, fmt.Sprintf("the token does not allow publishing to %q", channel))
	}
	return a.hooks().AuthorizePublish(ctx, c, channel, p)
}

// RPC asks the RPC hook (session.RPCHandler).
func (a *access) RPC(ctx context.Context, c broker.ClientInfo, method string, data json.RawMessage) (json.RawMessage, error) {
	return a.hooks().RPC(ctx, c, method, data)
}

// Refresh verifies a new token for the connection: it must name the same
// user, and replaces the old token's channels and expiry.
func (a *access) Refresh(_ context.Context, c broker.ClientInfo, token string) (time.Time, error) {
	if a.s.verifier == nil {
		return time.Time{}, Errorf(CodeBadRequest, "this server verifies no tokens: it has no token key")
	}
	id, err := a.s.verifier.Verify(token)
	if err != nil {
		return time.Time{}, Errorf(CodeUnauthorized, err.Error())
	}
	if id.User != c.User {
		return time.Time{}, Errorf(CodeForbidden, "a refreshed token must name the connection's user (sub)")
	}
	a.id.Store(id)
	return id.Expires, nil
}

// renewing is the access of a connection whose expiry the Refresh hook
// renews; it takes no tokens.
type renewing struct{ *access }

// Refresh refuses a token: the application renews this connection.
func (renewing) Refresh(context.Context, broker.ClientInfo, string) (time.Time, error) {
	return time.Time{}, Errorf(CodeBadRequest, "this connection was let in by the application, which renews it: it takes no token")
}

// Renew asks the Refresh hook for the connection's new expiry
// (session.Renewer).
func (r renewing) Renew(ctx context.Context, c broker.ClientInfo) (time.Time, error) {
	res, err := r.s.cfg.Hooks.Refresh(ctx, r.hooks().client(c))
	switch {
	case err != nil:
		return time.Time{}, err
	case res.Expired:
		return time.Time{}, Errorf(CodeUnauthorized, "token expired")
	}
	return res.ExpireAt, nil
}

// connLimits counts open connections, in total and per client address.
type connLimits struct {
	max, perIP int // ≤ 0: no limit
	total      atomic.Int64

	mu   sync.Mutex
	byIP map[string]int // only when perIP > 0
}

// errConnLimit and errIPLimit are acquire's refusals.
var (
	errConnLimit = Errorf(CodeUnavailable, "connection limit reached: try again later")
	errIPLimit   = Errorf(CodeRateLimited, "too many connections from this address")
)

// acquire counts one more connection from ip, or refuses it (and counts
// nothing) when a limit is reached.
func (l *connLimits) acquire(ip string) error {
	if n := l.total.Add(1); l.max > 0 && n > int64(l.max) {
		l.total.Add(-1)
		return errConnLimit
	}
	if l.perIP <= 0 {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.byIP[ip] >= l.perIP {
		l.total.Add(-1)
		return errIPLimit
	}
	if l.byIP == nil {
		l.byIP = make(map[string]int)
	}
	l.byIP[ip]++
	return nil
}

// release counts one connection from ip less.
func (l *connLimits) release(ip string) {
	l.total.Add(-1)
	if l.perIP <= 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.byIP[ip]--; l.byIP[ip] <= 0 {
		delete(l.byIP, ip)
	}
}

// clientIP is the address a request came from, without its port.
func clientIP(r *http.Request) string { return hostOf(r.RemoteAddr) }

// hostOf is a "host:port" address without its port.
func hostOf(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return host
}

// admit runs every check a client connection passes before it is served —
// draining, origin, the token, the connection limits, then the Connect
// hook (last: it may be a call to the application) — and answers the
// request when one refuses. On success the caller must call
// s.limits.release(ip) once the connection ends.
func (s *Server) admit(w http.ResponseWriter, r *http.Request, transport string) (caller, string, bool) {
	s.requestArrived(r)
	if s.draining.Load() {
		writeHTTPError(w, Errorf(CodeUnavailable, "server is shutting down"))
		return caller{}, "", false
	}
	if !s.allowOrigin(w, r) {
		return caller{}, "", false
	}
	c := caller{client: s.newClientID(), transport: transport}
	hasToken, err := s.verifyToken(r, &c)
	if err != nil {
		s.refuseClient(w, r, err)
		return caller{}, "", false
	}
	ip := clientIP(r)
	if err := s.limits.acquire(ip); err != nil {
		reason := "connection_limit"
		if err == errIPLimit {
			reason = "ip_limit"
		}
		s.refusal(r, reason, err.Error())
		writeHTTPError(w, err.(*Error))
		return caller{}, "", false
	}
	if !hasToken && s.cfg.Hooks.Connect != nil {
		if err := s.connectHook(r, &c); err != nil {
			s.limits.release(ip)
			s.refuseClient(w, r, err)
			return caller{}, "", false
		}
	}
	c.header = keptHeaders(r.Header, s.cfg.Hooks.Headers)
	return c, ip, true
}

// refuseClient answers a client request that its token or the Connect
// hook refused, counting and logging the refusal.
func (s *Server) refuseClient(w http.ResponseWriter, r *http.Request, err error) {
	pe := s.publicError(err)
	s.countRefusal(pe)
	s.logRefusal(r, string(pe.Code), pe.Message)
	if pe.Code == CodeUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="herald"`)
	}
	writeHTTPError(w, pe)
}

// allowOrigin reports whether r's Origin may go on (origin.Policy.Allow);
// when it may not, it refuses r with 403 and logs the Origin header and
// the Host it was not the same as, so that the log says what to add to
// --origins.
func (s *Server) allowOrigin(w http.ResponseWriter, r *http.Request) bool {
	if s.origins.Allow(w, r) {
		return true
	}
	s.metrics.Refusals.WithLabelValues("origin").Inc()
	s.cfg.Logger.Info("refused", "reason", "origin", "why", "origin not allowed", "origin", r.Header.Get("Origin"),
		"host", r.Host, "path", r.URL.Path, "remote", r.RemoteAddr)
	writeHTTPError(w, Errorf(CodeForbidden, "origin not allowed: add it to --origins (Config.Origins)"))
	return false
}

// refusal counts and logs a request refused before it was served.
func (s *Server) refusal(r *http.Request, reason, why string) {
	s.metrics.Refusals.WithLabelValues(reason).Inc()
	s.logRefusal(r, reason, why)
}

// logRefusal logs one refusal at info: one line per refusal, never one per
// message.
func (s *Server) logRefusal(r *http.Request, reason, why string) {
	s.cfg.Logger.Info("refused", "reason", reason, "why", why, "path", r.URL.Path, "remote", r.RemoteAddr)
}

// countRefusal counts a refusal whose code says it was one.
func (s *Server) countRefusal(e *Error) {
	switch e.Code {
	case CodeUnauthorized, CodeForbidden:
		s.metrics.Refusals.WithLabelValues(string(e.Code)).Inc()
	}
}

// sessionLimits are the per-connection limits of the configuration.
func (s *Server) sessionLimits() session.Limits {
	return session.Limits{
		MaxSubscriptions: max(s.cfg.MaxSubscriptions, 0),
		PublishRate:      rate.Limit(max(s.cfg.PublishRate, 0)),
		PublishBurst:     s.cfg.PublishBurst,
		CommandRate:      rate.Limit(max(s.cfg.CommandRate, 0)),
		CommandBurst:     s.cfg.CommandBurst,
	}
}

// ConnState and ConnContext are hooks for the http.Server's fields of the
// same names. herald serve sets both. Together they:
//   - count, as handshake_timeout refusals, connections closed without
//     ever sending herald a request after at least HandshakeTimeout:
//     half-open handshakes cut off by the server's ReadHeaderTimeout;
//   - count idle keep-alive connections (HTTP/1.1 between requests,
//     HTTP/2 without streams) toward MaxConnections and
//     MaxConnectionsPerIP while they stay idle, since they hold a file
//     descriptor like any other; one that finds no place is closed. Set
//     the http.Server's IdleTimeout so that they do not hold their place
//     for long (herald serve does).
func (s *Server) ConnState(c net.Conn, state http.ConnState) {
	switch state {
	case http.StateNew:
		s.handshaking.Store(c, time.Now())
	case http.StateIdle:
		s.handshaking.Delete(c)
		s.idleBegins(c)
	case http.StateActive:
		s.idleEnds(c)
	case http.StateHijacked:
		s.handshaking.Delete(c)
		s.idleEnds(c)
	case http.StateClosed:
		s.idleEnds(c)
		if v, ok := s.handshaking.LoadAndDelete(c); ok && time.Since(v.(time.Time)) >= s.cfg.HandshakeTimeout*9/10 {
			s.metrics.Refusals.WithLabelValues("handshake_timeout").Inc()
		}
	}
}

// idleBegins counts an idle connection toward the limits, or closes it
// when they leave it no place.
func (s *Server) idleBegins(c net.Conn) {
	ip := hostOf(c.RemoteAddr().String())
	if err := s.limits.acquire(ip); err != nil {
		s.cfg.Logger.Debug("idle connection closed", "why", err.Error(), "remote", c.RemoteAddr().String())
		_ = c.Close()
		return
	}
	s.idle.Store(c, ip)
}

// idleEnds releases the place of a connection that was counted idle.
func (s *Server) idleEnds(c net.Conn) {
	if ip, ok := s.idle.LoadAndDelete(c); ok {
		s.limits.release(ip.(string))
	}
}

// ConnContext: see ConnState.
func (s *Server) ConnContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

type connKey struct{}

// requestArrived marks r's connection as past its handshake.
func (s *Server) requestArrived(r *http.Request) {
	if c, ok := r.Context().Value(connKey{}).(net.Conn); ok {
		s.handshaking.Delete(c)
	}
}
