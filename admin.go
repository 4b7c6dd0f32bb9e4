package herald

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/internal/hub"
	"github.com/heraldhq/herald/internal/metrics"
	"github.com/heraldhq/herald/internal/protocol"
	"github.com/heraldhq/herald/web"
)

// The admin page (/admin) shows live numbers of every node of the cluster.
// Each node publishes a snapshot of its counters every second to the
// reserved channel adminChannel, through the broker, so that the page —
// reading that channel over herald's own SSE — sees every node, whichever
// it is connected to. Clients can neither subscribe nor publish there.
const (
	adminNamespace = protocol.ReservedNamespace
	adminChannel   = adminNamespace + ":nodes"
	adminInterval  = time.Second
)

// nodeStats is one node's snapshot on adminChannel.
type nodeStats struct {
	Node          string  `json:"node"`
	Time          int64   `json:"time"` // unix milliseconds
	Connections   float64 `json:"connections"`
	Subscriptions float64 `json:"subscriptions"`
	Channels      int     `json:"channels"`
	MessagesIn    float64 `json:"messages_in"`  // counters: the page takes rates
	MessagesOut   float64 `json:"messages_out"` // from two snapshots
	SlowConsumers float64 `json:"slow_consumers"`
	Refusals      float64 `json:"refusals"`
	BrokerUp      bool    `json:"broker_up"`
}

// appChannels returns this node's channels with subscribers, herald's own
// (the admin stream's, the orders') left out: they are not the
// application's.
func (s *Server) appChannels() []hub.ChannelCount {
	all := s.hub.Channels()
	out := all[:0]
	for _, c := range all {
		if protocol.Reserved(c.Channel) == nil {
			out = append(out, c)
		}
	}
	return out
}

// adminEnabled reports whether the admin page is served: it needs a token.
func (s *Server) adminEnabled() bool { return s.cfg.AdminToken != "" }

// adminAuthorized checks the admin token (`?token=` or Authorization:
// Bearer) in constant time.
func (s *Server) adminAuthorized(r *http.Request) bool {
	tok := requestToken(r)
	return tok != "" && s.adminToken.Matches(tok)
}

// AdminHandler serves the admin page and its data: GET /admin (the page),
// GET /admin/stream (the nodes' snapshots, SSE), GET /admin/channels and
// POST /admin/publish. Everything but the page and its script needs the
// admin token. Without Config.AdminToken it answers 404 to everything.
// Mount it on "/admin" and "/admin/".
func (s *Server) AdminHandler() http.Handler {
	if !s.adminEnabled() {
		return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			writeHTTPError(w, Errorf(CodeNotFound, "the admin page is off: set --admin-token (Config.AdminToken)"))
		})
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /admin", func(w http.ResponseWriter, r *http.Request) {
		http.ServeFileFS(w, r, web.FS(), "admin.html")
	})
	mux.HandleFunc("GET /admin/admin.js", func(w http.ResponseWriter, r *http.Request) {
		http.ServeFileFS(w, r, web.FS(), "admin.js")
	})
	mux.HandleFunc("GET /admin/stream", s.adminOnly(func(w http.ResponseWriter, r *http.Request) {
		s.requestArrived(r)
		if s.draining.Load() {
			writeHTTPError(w, Errorf(CodeUnavailable, "server is shutting down"))
			return
		}
		s.runSSE(w, r, []string{adminChannel}, nil, clientSpec{who: caller{user: "admin"}, policy: adminPolicy{}})
	}))
	mux.HandleFunc("GET /admin/channels", s.adminOnly(func(w http.ResponseWriter, _ *http.Request) {
		type channel struct {
			Channel     string `json:"channel"`
			Subscribers int    `json:"subscribers"`
		}
		out := []channel{}
		for _, c := range s.appChannels() {
			out = append(out, channel{c.Channel, c.Subscribers})
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"node": s.nodeID, "channels": out})
	}))
	mux.HandleFunc("POST /admin/publish", s.adminOnly(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Channel string          `json:"channel"`
			Data    json.RawMessage `json:"data"`
			Event   string          `json:"event"`
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, int64(s.cfg.MaxMessageSize)))
		if err == nil {
			err = json.Unmarshal(body, &req)
		}
		if err != nil || req.Data == nil {
			writeHTTPError(w, Errorf(CodeBadRequest, `want {"channel":"…","data":…,"event"?}`))
			return
		}
		off, err := s.Publish(r.Context(), req.Channel, req.Data, WithEvent(req.Event))
		if err != nil {
			writeHTTPError(w, s.publicError(err))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{"offset": off})
	}))
	return mux
}

// adminOnly answers 401 without the admin token.
func (s *Server) adminOnly(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		switch {
		case !s.adminAuthorized(r):
			s.refusal(r, "unauthorized", "bad or missing admin token")
			w.Header().Set("WWW-Authenticate", `Bearer realm="herald admin"`)
			writeHTTPError(w, Errorf(CodeUnauthorized, "the admin token is missing or wrong"))
		default:
			h(w, r)
		}
	}
}

// adminPolicy lets the admin stream read the reserved channel.
type adminPolicy struct{}

func (adminPolicy) AuthorizeSubscribe(context.Context, broker.ClientInfo, string) error { return nil }
func (adminPolicy) AuthorizePublish(context.Context, broker.ClientInfo, string, *broker.Publication) error {
	return Errorf(CodeForbidden, "the admin stream publishes nothing")
}
func (adminPolicy) Refresh(context.Context, broker.ClientInfo, string) (time.Time, error) {
	return time.Time{}, Errorf(CodeBadRequest, "the admin stream takes no tokens")
}

// reportStats publishes this node's snapshot every adminInterval until
// stop is closed.
func (s *Server) reportStats(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(adminInterval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		b, err := json.Marshal(s.stats())
		if err != nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), adminInterval)
		_, err = s.hub.Publish(ctx, adminChannel, broker.Publication{Data: b, Event: "node"})
		cancel()
		if err != nil {
			s.cfg.Logger.Debug("admin: publish stats", "err", err)
		}
	}
}

// stats reads this node's snapshot from its metrics.
func (s *Server) stats() nodeStats {
	st := nodeStats{Node: s.nodeID, Time: time.Now().UnixMilli(), BrokerUp: true}
	st.Channels = len(s.appChannels())
	for _, t := range []string{"ws", "raw", "sse"} {
		st.Connections += value(s.metrics.Connections.WithLabelValues(t))
	}
	st.Subscriptions = value(s.metrics.Subscriptions)
	for _, src := range []string{"client", "api", "server"} {
		st.MessagesIn += value(s.metrics.MessagesIn.WithLabelValues(src))
	}
	st.MessagesOut = value(s.metrics.MessagesOut)
	st.SlowConsumers = value(s.metrics.SlowConsumers)
	for _, r := range metrics.RefusalReasons {
		st.Refusals += value(s.metrics.Refusals.WithLabelValues(r))
	}
	if hc, ok := s.broker.(broker.HealthChecker); ok {
		ctx, cancel := context.WithTimeout(context.Background(), healthTimeout)
		st.BrokerUp = hc.Healthy(ctx) == nil
		cancel()
	}
	return st
}

// value reads a counter's or gauge's current value.
func value(m prometheus.Metric) float64 {
	var d dto.Metric
	if m.Write(&d) != nil {
		return 0
	}
	switch {
	case d.Counter != nil:
		return d.Counter.GetValue()
	case d.Gauge != nil:
		return d.Gauge.GetValue()
	}
	return 0
}
