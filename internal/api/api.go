// Package api serves herald's server API, the contract's /api/…: publish,
// the active channels, history and presence, as JSON over HTTP for
// application back ends.
//
// Every error answers {"error":{"code","message"}} with the status its code
// maps to (protocol.Code.HTTPStatus); the one exception is a wrong method,
// 405 with code bad_request, since the contract has no code of its own for
// it. Requests are checked in this order: origin (CORS), API key, path,
// method, then the endpoint's own input. Without an API key, the caller,
// the Host and the Origin are checked first (see Config.APIKey).
package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/internal/auth"
	"github.com/heraldhq/herald/internal/filter"
	"github.com/heraldhq/herald/internal/hub"
	"github.com/heraldhq/herald/internal/metrics"
	"github.com/heraldhq/herald/internal/origin"
	"github.com/heraldhq/herald/internal/protocol"
	"github.com/heraldhq/herald/internal/tracing"
)

// Config configures a Handler.
type Config struct {
	// Hub is the node's hub; required.
	Hub *hub.Hub
	// APIKey is the key callers send as "Authorization: Bearer <key>".
	// Empty: only loopback callers are served, and only requests whose
	// Host is a loopback name or address (localhost, 127.0.0.0/8, ::1)
	// and that carry no Origin or a loopback one. A web page can reach a
	// loopback port through the browser of the server's machine, and by
	// rebinding its own name to 127.0.0.1 it chooses Host and Origin
	// both; Origins never opens the key-less API to it. Behind a reverse
	// proxy on the same host every caller looks like loopback: set a key
	// there.
	APIKey string
	// Origins are the origins allowed for CORS. A request whose Origin
	// header is not allowed is refused with 403, so a web page cannot
	// publish through a browser on the server's machine.
	Origins origin.Policy
	// MaxMessageSize bounds a publish body, in bytes; 0 means no bound.
	MaxMessageSize int
	// Orders carries out disconnect, subscribe, unsubscribe and
	// connections across the cluster; nil: those endpoints are not served.
	Orders Orders
	// Metrics, when set, counts publishes as MessagesIn{source="api"} and
	// refusals.
	Metrics *metrics.Metrics
	// Logger receives internal errors, which callers see only as
	// "internal"; nil discards them.
	Logger *slog.Logger
}

// Handler serves the server API. It is mounted on "/api/" and routes on the
// full request path. It is safe for concurrent use.
type Handler struct {
	cfg Config
	key auth.Secret
	log *slog.Logger
}

var _ http.Handler = (*Handler)(nil)

// New returns a Handler for cfg.
func New(cfg Config) *Handler {
	h := &Handler{cfg: cfg, key: auth.NewSecret(cfg.APIKey), log: cfg.Logger}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	return h
}

// Methods the API answers, for Allow and CORS preflights.
const allowedMethods = "GET, POST, OPTIONS"

// ServeHTTP answers one API request.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	if h.cfg.APIKey == "" {
		if e := localOnly(r); e != nil {
			h.refused(string(e.Code))
			writeError(w, e)
			return
		}
	}
	if !h.cfg.Origins.Allow(w, r) {
		h.refused("origin")
		writeError(w, protocol.Errorf(protocol.CodeForbidden, "origin not allowed: add it to --origins (Config.Origins)"))
		return
	}
	if r.Method == http.MethodOptions {
		h.preflight(w)
		return
	}
	if e := h.authorize(r); e != nil {
		h.refused(string(e.Code))
		w.Header().Set("WWW-Authenticate", `Bearer realm="herald"`)
		writeError(w, e)
		return
	}
	endpoint, channel, ok := route(r.URL)
	if !ok {
		writeError(w, protocol.Errorf(protocol.CodeNotFound, "no such endpoint: "+r.URL.Path))
		return
	}
	if !endpoint.allows(r.Method) {
		w.Header().Set("Allow", endpoint.method+", OPTIONS")
		protocol.WriteHTTPStatus(w, http.StatusMethodNotAllowed, protocol.Errorf(protocol.CodeBadRequest,
			"method "+r.Method+" not allowed here: use "+endpoint.method))
		return
	}
	if endpoint.channel && !protocol.ValidChannel(channel) {
		writeError(w, protocol.BadChannel())
		return
	}
	endpoint.serve(h, w, r, channel)
}

// endpoint is one route of the API.
type endpoint struct {
	method  string
	channel bool // the path names a channel
	serve   func(h *Handler, w http.ResponseWriter, r *http.Request, channel string)
}

func (e endpoint) allows(method string) bool {
	return method == e.method || (e.method == http.MethodGet && method == http.MethodHead)
}

var (
	publishEndpoint  = endpoint{method: http.MethodPost, serve: (*Handler).publish}
	channelsEndpoint = endpoint{method: http.MethodGet, serve: (*Handler).channels}
	historyEndpoint  = endpoint{method: http.MethodGet, channel: true, serve: (*Handler).history}
	receiptsEndpoint = endpoint{method: http.MethodGet, channel: true, serve: (*Handler).receipts}
	presenceEndpoint = endpoint{method: http.MethodGet, channel: true, serve: (*Handler).presence}
)

// route finds the endpoint of a path and the channel it names. A channel
// is taken from the escaped path, so an encoded "/" stays inside it (and
// makes it a bad name) instead of adding a segment.
func route(u *url.URL) (e endpoint, channel string, ok bool) {
	rest, found := strings.CutPrefix(u.EscapedPath(), "/api/")
	if !found {
		return e, "", false
	}
	seg := strings.Split(rest, "/")
	switch {
	case len(seg) == 1 && seg[0] == "publish":
		return publishEndpoint, "", true
	case len(seg) == 1 && seg[0] == "channels":
		return channelsEndpoint, "", true
	case len(seg) == 1 && orderEndpoints[seg[0]].serve != nil:
		return orderEndpoints[seg[0]], "", true
	case len(seg) == 3 && seg[0] == "channels":
		channel, err := url.PathUnescape(seg[1])
		if err != nil {
			channel = seg[1] // not a valid name either way
		}
		switch seg[2] {
		case "history":
			return historyEndpoint, channel, true
		case "presence":
			return presenceEndpoint, channel, true
		case "receipts":
			return receiptsEndpoint, channel, true
		}
	}
	return e, "", false
}

// localOnly admits a request to the key-less API: from loopback,
// addressed to a loopback name, from no web page but a loopback one.
func localOnly(r *http.Request) *protocol.Error {
	if !loopbackHost(r.RemoteAddr) {
		return protocol.Errorf(protocol.CodeUnauthorized,
			"no API key is configured, so the server API answers loopback callers only: configure --api-key (Config.APIKey) to call it from elsewhere")
	}
	if !loopbackHost(r.Host) {
		return protocol.Errorf(protocol.CodeForbidden,
			"no API key is configured, so the server API answers requests to localhost, 127.0.0.1 or [::1] only: configure --api-key (Config.APIKey) to call it by another name")
	}
	if o := r.Header.Get("Origin"); o != "" {
		if u, err := url.Parse(o); err != nil || u.Host == "" || !loopbackHost(u.Host) {
			return protocol.Errorf(protocol.CodeForbidden,
				"no API key is configured, so the server API answers no web page but one on localhost: configure --api-key (Config.APIKey)")
		}
	}
	return nil
}

// authorize checks the caller's API key; without a configured key,
// localOnly has admitted the request.
func (h *Handler) authorize(r *http.Request) *protocol.Error {
	if h.cfg.APIKey == "" {
		return nil
	}
	key := auth.Bearer(r)
	if key == "" {
		return protocol.Errorf(protocol.CodeUnauthorized, "missing API key: send Authorization: Bearer <key>")
	}
	if !h.key.Matches(key) {
		return protocol.Errorf(protocol.CodeUnauthorized, "bad API key")
	}
	return nil
}

// loopbackHost reports whether a Host or a RemoteAddr ("name[:port]") is
// localhost or a loopback address (127.0.0.0/8, ::1, also IPv4-mapped).
func loopbackHost(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = strings.TrimSuffix(strings.TrimPrefix(hostport, "["), "]")
	}
	if strings.EqualFold(strings.TrimSuffix(host, "."), "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// preflight answers an OPTIONS request; cors has set the origin already.
func (h *Handler) preflight(w http.ResponseWriter) {
	hd := w.Header()
	hd.Set("Allow", allowedMethods)
	if hd.Get("Access-Control-Allow-Origin") != "" {
		hd.Set("Access-Control-Allow-Methods", allowedMethods)
		hd.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, Traceparent")
		hd.Set("Access-Control-Max-Age", "600")
	}
	w.WriteHeader(http.StatusNoContent)
}

// publishRequest is the body of POST /api/publish.
type publishRequest struct {
	Channel *string         `json:"channel"`
	Data    json.RawMessage `json:"data"`
	Event   *string         `json:"event"`
	// Tags and Key are the delivery options of v1.1.
	Tags map[string]string `json:"tags"`
	Key  string            `json:"key"`
}

// publish serves POST /api/publish.
func (h *Handler) publish(w http.ResponseWriter, r *http.Request, _ string) {
	b, ok := h.readBody(w, r)
	if !ok {
		return
	}
	req, perr := decodePublish(b)
	if perr != nil {
		writeError(w, perr)
		return
	}
	if e := protocol.Reserved(*req.Channel); e != nil {
		h.refused(string(e.Code))
		writeError(w, e)
		return
	}
	// A W3C traceparent header makes herald's spans part of the caller's
	// trace.
	ctx := tracing.WithTraceparent(r.Context(), r.Header.Get("Traceparent"))
	off, err := h.cfg.Hub.Publish(ctx, *req.Channel, broker.Publication{Data: req.Data, Event: deref(req.Event), Tags: req.Tags, Key: req.Key})
	if err != nil {
		writeError(w, h.publicError(fmt.Errorf("api: publish: %w", err)))
		return
	}
	if h.cfg.Metrics != nil {
		h.cfg.Metrics.MessagesIn.WithLabelValues("api").Inc()
	}
	h.writeJSON(w, protocol.PublishReply{Offset: off.String()})
}

// readBody reads a request's body, at most MaxMessageSize bytes; on
// failure it has answered and reports false.
func (h *Handler) readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	body := r.Body
	if h.cfg.MaxMessageSize > 0 {
		body = http.MaxBytesReader(w, r.Body, int64(h.cfg.MaxMessageSize))
	}
	b, err := io.ReadAll(body)
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			h.refused("too_large")
			writeError(w, protocol.Errorf(protocol.CodeTooLarge,
				"body over "+strconv.FormatInt(tooLarge.Limit, 10)+" bytes (--max-message-size)"))
			return nil, false
		}
		writeError(w, protocol.Errorf(protocol.CodeBadRequest, "cannot read the body"))
		return nil, false
	}
	return b, true
}

// decodePublish decodes and checks a publish body; unknown fields are
// ignored and data is compacted, as the JSON protocol does.
func decodePublish(b []byte) (publishRequest, *protocol.Error) {
	var req publishRequest
	b = bytes.TrimSpace(b)
	if len(b) == 0 || b[0] != '{' {
		return req, protocol.Errorf(protocol.CodeBadRequest, `the body is a JSON object: {"channel":"…","data":…}`)
	}
	if err := json.Unmarshal(b, &req); err != nil {
		return req, protocol.BadJSON(err)
	}
	if req.Channel == nil {
		return req, protocol.Errorf(protocol.CodeBadRequest, "channel is required")
	}
	if !protocol.ValidChannel(*req.Channel) {
		return req, protocol.BadChannel()
	}
	if req.Data == nil {
		return req, protocol.Errorf(protocol.CodeBadRequest, "data is required")
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, req.Data); err != nil {
		return req, protocol.Errorf(protocol.CodeBadRequest, "malformed data")
	}
	req.Data = buf.Bytes()
	return req, nil
}

// channelCount is one entry of GET /api/channels.
type channelCount struct {
	Channel     string `json:"channel"`
	Subscribers int    `json:"subscribers"`
}

// channels serves GET /api/channels: this node's channels with subscribers.
func (h *Handler) channels(w http.ResponseWriter, _ *http.Request, _ string) {
	counts := h.cfg.Hub.Channels()
	out := make([]channelCount, 0, len(counts))
	for _, c := range counts {
		if protocol.Reserved(c.Channel) == nil { // herald's own are not the application's
			out = append(out, channelCount{Channel: c.Channel, Subscribers: c.Subscribers})
		}
	}
	h.writeJSON(w, struct {
		Channels []channelCount `json:"channels"`
	}{out})
}

// history serves GET /api/channels/{channel}/history?since=&limit=, with
// the semantics of the JSON protocol's history command.
func (h *Handler) history(w http.ResponseWriter, r *http.Request, channel string) {
	q := broker.HistoryQuery{Limit: -1}
	params := r.URL.Query()
	if params.Has("since") {
		off, err := broker.ParseOffset(params.Get("since"))
		if err != nil {
			writeError(w, protocol.Errorf(protocol.CodeBadRequest, "bad since: "+err.Error()))
			return
		}
		q.Since = off
	}
	if params.Has("limit") {
		n, err := strconv.Atoi(params.Get("limit"))
		if err != nil || n < 0 {
			writeError(w, protocol.Errorf(protocol.CodeBadRequest, "limit must be a non-negative integer"))
			return
		}
		q.Limit = n
	}
	var f hub.Filter
	if params.Has("filter") {
		parsed, err := filter.Parse(json.RawMessage(params.Get("filter")))
		if err != nil {
			writeError(w, protocol.Public(err, nil))
			return
		}
		f = parsed
	}
	res, err := h.cfg.Hub.FilteredHistory(r.Context(), channel, q, f)
	if err != nil {
		writeError(w, h.publicError(fmt.Errorf("api: history: %w", err)))
		return
	}
	msgs := make([]protocol.WireMessage, len(res.Messages))
	for i, m := range res.Messages {
		msgs[i] = protocol.ToWire(m)
	}
	h.writeJSON(w, protocol.HistoryReply{Messages: msgs})
}

// receiptsReply is the answer of GET /api/channels/{channel}/receipts.
type receiptsReply struct {
	Offset  string              `json:"offset"`
	Acked   []broker.ClientInfo `json:"acked"`
	Pending []broker.ClientInfo `json:"pending"`
}

// receipts serves GET /api/channels/{channel}/receipts?offset=: who the
// message was delivered to live, across the cluster, and who of them
// acknowledged it; 404 where the channel keeps no receipts or history no
// longer holds the message.
func (h *Handler) receipts(w http.ResponseWriter, r *http.Request, channel string) {
	raw := r.URL.Query().Get("offset")
	off, err := broker.ParseOffset(raw)
	if err != nil || off.IsZero() {
		writeError(w, protocol.Errorf(protocol.CodeBadRequest, "offset is required: ?offset=SEQ-EPOCH"))
		return
	}
	st, err := h.cfg.Hub.Receipts(r.Context(), channel, off)
	if err != nil {
		writeError(w, h.publicError(fmt.Errorf("api: receipts: %w", err)))
		return
	}
	h.writeJSON(w, receiptsReply{Offset: off.String(), Acked: clientList(st.Acked), Pending: clientList(st.Pending)})
}

// clientList is cs with Client and User only, never null.
func clientList(cs []broker.ClientInfo) []broker.ClientInfo {
	out := make([]broker.ClientInfo, len(cs))
	for i, c := range cs {
		out[i] = broker.ClientInfo{Client: c.Client, User: c.User}
	}
	return out
}

// presence serves GET /api/channels/{channel}/presence.
func (h *Handler) presence(w http.ResponseWriter, r *http.Request, channel string) {
	cs, err := h.cfg.Hub.Presence(r.Context(), channel)
	if err != nil {
		writeError(w, h.publicError(fmt.Errorf("api: presence: %w", err)))
		return
	}
	if cs == nil {
		cs = []broker.ClientInfo{}
	}
	h.writeJSON(w, protocol.PresenceReply{Clients: cs})
}

// publicError turns an error into what a caller may see, logging what
// it hides (protocol.Public).
func (h *Handler) publicError(err error) *protocol.Error {
	return protocol.Public(err, func(err error) { h.log.Error("api request failed", "err", err) })
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// refused counts a refusal by reason (metrics.RefusalReasons).
func (h *Handler) refused(reason string) {
	if h.cfg.Metrics != nil {
		h.cfg.Metrics.Refusals.WithLabelValues(reason).Inc()
	}
}

// writeError answers with the contract's error shape and the status of its
// code (protocol.WriteHTTP).
func writeError(w http.ResponseWriter, e *protocol.Error) { protocol.WriteHTTP(w, e) }

// writeJSON answers 200 with v as JSON (protocol.Marshal: no HTML
// escaping).
func (h *Handler) writeJSON(w http.ResponseWriter, v any) {
	b, err := protocol.Marshal(v)
	if err != nil {
		writeError(w, h.publicError(fmt.Errorf("api: encode reply: %w", err)))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(append(b, '\n'))
}
