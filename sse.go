package herald

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"

	"github.com/heraldhq/herald/internal/filter"
	"github.com/heraldhq/herald/internal/hub"
	"github.com/heraldhq/herald/internal/protocol"
	"github.com/heraldhq/herald/internal/session"
)

// SSEHandler serves Server-Sent Events (the contract's /sse): GET with 1–32
// `channel` parameters opens a stream of their messages; OPTIONS answers
// CORS preflight. A `Last-Event-ID` header (or `lastEventId` parameter)
// resumes after the cursor it holds. Everything that can refuse the stream
// — origin, channels, cursor, the Connect and AuthorizeSubscribe hooks,
// the broker — answers with an HTTP error before the first byte of it.
func (s *Server) SSEHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodOptions {
			s.serveSSE(w, r)
			return
		}
		if !s.allowOrigin(w, r) {
			return
		}
		corsPreflight(w)
		w.WriteHeader(http.StatusNoContent)
	})
}

// serveSSE validates a stream request, subscribes it and runs it. With a
// Connect hook, a request may name no channel: the hook's server-side
// channels may be all it streams.
func (s *Server) serveSSE(w http.ResponseWriter, r *http.Request) {
	channels, cursor, perr := sseRequest(r, s.cfg.Hooks.Connect != nil)
	if perr != nil {
		writeHTTPError(w, perr)
		return
	}
	f, perr := queryFilter(r)
	if perr != nil {
		writeHTTPError(w, perr)
		return
	}
	who, ip, ok := s.admit(w, r, TransportSSE)
	if !ok {
		return
	}
	if len(channels) == 0 && len(who.channels) == 0 {
		s.limits.release(ip)
		writeHTTPError(w, errSSEChannels)
		return
	}
	s.runSSE(w, r, channels, cursor, clientSpec{who: who, ip: ip, policy: s.newAccess(who), filter: f})
}

// queryFilter parses a request's `filter` parameter (v1.1), a tag filter
// as JSON; nil when there is none.
func queryFilter(r *http.Request) (hub.Filter, *protocol.Error) {
	raw := r.URL.Query().Get("filter")
	if raw == "" {
		return nil, nil
	}
	f, err := filter.Parse(json.RawMessage(raw))
	if err != nil {
		return nil, protocol.Public(err, nil)
	}
	return f, nil
}

// runSSE subscribes an admitted stream (c's caller, slot and policy) to
// its server-side channels and to channels, after cursor, and serves it
// until it ends.
func (s *Server) runSSE(w http.ResponseWriter, r *http.Request, channels []string, cursor protocol.SSECursor, c clientSpec) {
	s.endSSEOnShutdown(r)
	stream, err := s.sse.NewStream(w)
	if err != nil {
		if c.ip != "" {
			s.limits.release(c.ip)
		}
		writeHTTPError(w, Errorf(CodeUnavailable, "server is shutting down"))
		return
	}
	defer stream.Release()
	c.transport, c.conn, c.mode = "sse", stream, session.ModeSSE
	cc := s.newClientConn(c)
	_ = cc.sess.Open(nil, c.who.expires) // an SSE session only starts its token's expiry there
	// Subscribe every channel before the stream starts, so that a refusal
	// is still an HTTP error and the first `id:` covers every channel.
	// Server-side channels come first, unchecked.
	all := slices.Concat(c.who.channels, channels)
	for n, ch := range all {
		server := n < len(c.who.channels)
		if !server && slices.Contains(c.who.channels, ch) {
			continue
		}
		var since *string
		i := slices.IndexFunc(cursor, func(p protocol.SSEPosition) bool { return p.Channel == ch })
		if i >= 0 {
			v := cursor[i].Offset.String()
			since = &v
		}
		f := c.filter
		if server {
			f = nil // the application's own channels are not the client's to filter
		}
		res, err := cc.sess.SubscribeStream(ch, since, server, f)
		if err != nil {
			cc.abandon()
			pe := s.publicError(err)
			s.countRefusal(pe)
			writeHTTPError(w, pe)
			return
		}
		// Until a message of it is written, the channel stays where the
		// stream started it: after the cursor, or live after Latest.
		if i >= 0 {
			stream.SetPosition(ch, cursor[i].Offset)
		} else {
			stream.SetPosition(ch, res.Latest)
		}
	}
	cc.opened()
	if err := stream.Serve(r.Context()); err != nil {
		s.cfg.Logger.Debug("sse stream ended", "client", cc.sess.Client().Client, "err", err)
	}
	cc.closed()
}

// errSSEChannels refuses a stream request with too few or too many
// channels.
var errSSEChannels = Errorf(CodeBadRequest, fmt.Sprintf("give 1 to %d channel parameters", protocol.MaxSSEChannels))

// sseRequest reads a stream request's channels (each once, in order; none
// only where noneOK) and its resume cursor (nil when it has none).
func sseRequest(r *http.Request, noneOK bool) ([]string, protocol.SSECursor, *Error) {
	q := r.URL.Query()
	var channels []string
	for _, ch := range q["channel"] {
		if !protocol.ValidChannel(ch) {
			return nil, nil, protocol.BadChannel()
		}
		if !slices.Contains(channels, ch) {
			channels = append(channels, ch)
		}
	}
	if (len(channels) == 0 && !noneOK) || len(channels) > protocol.MaxSSEChannels {
		return nil, nil, errSSEChannels
	}
	last := r.Header.Get("Last-Event-ID")
	if last == "" {
		last = q.Get("lastEventId")
	}
	if last == "" {
		return channels, nil, nil
	}
	cursor, err := protocol.ParseSSECursor(last)
	if err != nil {
		return nil, nil, Errorf(CodeBadRequest, "bad Last-Event-ID: "+err.Error())
	}
	return channels, cursor, nil
}

// corsPreflight adds the preflight headers for an allowed cross-origin
// stream request.
func corsPreflight(w http.ResponseWriter) {
	h := w.Header()
	if h.Get("Access-Control-Allow-Origin") == "" {
		return
	}
	h.Set("Access-Control-Allow-Methods", "GET, OPTIONS")
	h.Set("Access-Control-Allow-Headers", "Authorization, Last-Event-ID, Cache-Control")
	h.Set("Access-Control-Max-Age", "600")
}

// endSSEOnShutdown makes the http.Server serving r end every SSE stream
// when it shuts down: a stream is a request that never finishes by itself,
// and http.Server.Shutdown waits for requests. Registered once per server.
func (s *Server) endSSEOnShutdown(r *http.Request) {
	hs, ok := r.Context().Value(http.ServerContextKey).(*http.Server)
	if !ok {
		return
	}
	if _, loaded := s.sseServers.LoadOrStore(hs, struct{}{}); !loaded {
		hs.RegisterOnShutdown(s.sse.CloseAll)
	}
}
