package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/internal/protocol"
)

// Orders carries out the application's orders on every node of the
// cluster (BACKEND.md, "Server API: the app gives orders"); the Server
// implements it.
type Orders interface {
	// Disconnect closes the target's connections with reason.
	Disconnect(ctx context.Context, t Target, reason string) error
	// Subscribe subscribes the target's connections to channel, resuming
	// after since when it is set.
	Subscribe(ctx context.Context, t Target, channel string, since *string) error
	// Unsubscribe ends the target's subscriptions to channel.
	Unsubscribe(ctx context.Context, t Target, channel string) error
	// Connections lists the target's connections on every node; the zero
	// Target lists all of them, up to MaxListed.
	Connections(ctx context.Context, t Target) ([]Connection, error)
}

// MaxListed bounds the connections GET /api/connections lists.
const MaxListed = 1000

// Target selects connections: of a user (User set, "" for anonymous ones)
// or one client. The zero Target selects every connection.
type Target struct {
	User   *string
	Client string
}

// Connection is one connection as GET /api/connections lists it.
type Connection struct {
	Client    string   `json:"client"`
	User      string   `json:"user"`
	Node      string   `json:"node"`
	Transport string   `json:"transport"`
	Channels  []string `json:"channels"`
}

var orderEndpoints = map[string]endpoint{
	"disconnect":  {method: http.MethodPost, serve: (*Handler).disconnect},
	"subscribe":   {method: http.MethodPost, serve: (*Handler).subscribe},
	"unsubscribe": {method: http.MethodPost, serve: (*Handler).unsubscribe},
	"broadcast":   {method: http.MethodPost, serve: (*Handler).broadcast},
	"connections": {method: http.MethodGet, serve: (*Handler).connections},
}

// orderRequest is the body of the order endpoints.
type orderRequest struct {
	User     *string         `json:"user"`
	Client   *string         `json:"client"`
	Reason   *string         `json:"reason"`
	Channel  *string         `json:"channel"`
	Since    *string         `json:"since"`
	Channels []string        `json:"channels"`
	Data     json.RawMessage `json:"data"`
	Event    *string         `json:"event"`
}

// decodeOrder reads an order's body and its target: exactly one of user
// and client, when needTarget.
func (h *Handler) decodeOrder(w http.ResponseWriter, r *http.Request, needTarget bool) (orderRequest, Target, bool) {
	var req orderRequest
	if needTarget && !h.takesOrders(w) {
		return req, Target{}, false
	}
	b, ok := h.readBody(w, r)
	if !ok {
		return req, Target{}, false
	}
	b = bytes.TrimSpace(b)
	if len(b) == 0 || b[0] != '{' {
		writeError(w, protocol.Errorf(protocol.CodeBadRequest, "the body is a JSON object"))
		return req, Target{}, false
	}
	if err := json.Unmarshal(b, &req); err != nil {
		writeError(w, protocol.BadJSON(err))
		return req, Target{}, false
	}
	if !needTarget {
		return req, Target{}, true
	}
	if (req.User == nil) == (req.Client == nil) {
		writeError(w, protocol.Errorf(protocol.CodeBadRequest, "give exactly one of user and client"))
		return req, Target{}, false
	}
	t := Target{User: req.User}
	if req.Client != nil {
		if *req.Client == "" {
			writeError(w, protocol.Errorf(protocol.CodeBadRequest, "client is empty"))
			return req, Target{}, false
		}
		t.Client = *req.Client
	}
	return req, t, true
}

// takesOrders reports whether orders are served, answering 404 when not.
func (h *Handler) takesOrders(w http.ResponseWriter) bool {
	if h.cfg.Orders == nil {
		writeError(w, protocol.Errorf(protocol.CodeNotFound, "this server takes no orders"))
		return false
	}
	return true
}

// orderChannel checks an order's channel: valid, and not herald's own.
func (h *Handler) orderChannel(w http.ResponseWriter, channel *string) bool {
	switch {
	case channel == nil:
		writeError(w, protocol.Errorf(protocol.CodeBadRequest, "channel is required"))
	case !protocol.ValidChannel(*channel):
		writeError(w, protocol.BadChannel())
	case protocol.Reserved(*channel) != nil:
		e := protocol.Reserved(*channel)
		h.refused(string(e.Code))
		writeError(w, e)
	default:
		return true
	}
	return false
}

// orderDone answers an order that is on its way to every node.
func (h *Handler) orderDone(w http.ResponseWriter, what string, err error) {
	if err != nil {
		writeError(w, h.publicError(fmt.Errorf("api: %s: %w", what, err)))
		return
	}
	h.writeJSON(w, struct{}{})
}

// disconnect serves POST /api/disconnect.
func (h *Handler) disconnect(w http.ResponseWriter, r *http.Request, _ string) {
	req, t, ok := h.decodeOrder(w, r, true)
	if !ok {
		return
	}
	reason := "disconnected"
	if req.Reason != nil && *req.Reason != "" {
		reason = *req.Reason
	}
	h.orderDone(w, "disconnect", h.cfg.Orders.Disconnect(r.Context(), t, reason))
}

// subscribe serves POST /api/subscribe.
func (h *Handler) subscribe(w http.ResponseWriter, r *http.Request, _ string) {
	req, t, ok := h.decodeOrder(w, r, true)
	if !ok || !h.orderChannel(w, req.Channel) {
		return
	}
	if req.Since != nil {
		if _, err := broker.ParseOffset(*req.Since); err != nil {
			writeError(w, protocol.Errorf(protocol.CodeBadRequest, "bad since: "+err.Error()))
			return
		}
	}
	h.orderDone(w, "subscribe", h.cfg.Orders.Subscribe(r.Context(), t, *req.Channel, req.Since))
}

// unsubscribe serves POST /api/unsubscribe.
func (h *Handler) unsubscribe(w http.ResponseWriter, r *http.Request, _ string) {
	req, t, ok := h.decodeOrder(w, r, true)
	if !ok || !h.orderChannel(w, req.Channel) {
		return
	}
	h.orderDone(w, "unsubscribe", h.cfg.Orders.Unsubscribe(r.Context(), t, *req.Channel))
}

// broadcast serves POST /api/broadcast: one publish to each channel.
func (h *Handler) broadcast(w http.ResponseWriter, r *http.Request, _ string) {
	req, _, ok := h.decodeOrder(w, r, false)
	if !ok {
		return
	}
	if len(req.Channels) == 0 {
		writeError(w, protocol.Errorf(protocol.CodeBadRequest, "channels is required: a list of channel names"))
		return
	}
	for i, ch := range req.Channels {
		if !h.orderChannel(w, &ch) {
			return
		}
		if slices.Contains(req.Channels[:i], ch) {
			writeError(w, protocol.Errorf(protocol.CodeBadRequest, "channel "+ch+" is listed twice"))
			return
		}
	}
	if req.Data == nil {
		writeError(w, protocol.Errorf(protocol.CodeBadRequest, "data is required"))
		return
	}
	var data bytes.Buffer
	if err := json.Compact(&data, req.Data); err != nil {
		writeError(w, protocol.Errorf(protocol.CodeBadRequest, "malformed data"))
		return
	}
	offsets := make(map[string]string, len(req.Channels))
	for _, ch := range req.Channels {
		off, err := h.cfg.Hub.Publish(r.Context(), ch, broker.Publication{Data: data.Bytes(), Event: deref(req.Event)})
		if err != nil {
			writeError(w, h.publicError(fmt.Errorf("api: broadcast to %q: %w", ch, err)))
			return
		}
		if h.cfg.Metrics != nil {
			h.cfg.Metrics.MessagesIn.WithLabelValues("api").Inc()
		}
		offsets[ch] = off.String()
	}
	h.writeJSON(w, struct {
		Offsets map[string]string `json:"offsets"`
	}{offsets})
}

// connections serves GET /api/connections[?user=U].
func (h *Handler) connections(w http.ResponseWriter, r *http.Request, _ string) {
	if !h.takesOrders(w) {
		return
	}
	var t Target
	if q := r.URL.Query(); q.Has("user") {
		u := q.Get("user")
		t.User = &u
	}
	list, err := h.cfg.Orders.Connections(r.Context(), t)
	if err != nil {
		writeError(w, h.publicError(fmt.Errorf("api: connections: %w", err)))
		return
	}
	if list == nil {
		list = []Connection{}
	}
	h.writeJSON(w, struct {
		Connections []Connection `json:"connections"`
	}{list})
}
