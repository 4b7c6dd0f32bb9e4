// Package metrics holds herald's Prometheus collectors. Labels have bounded
// cardinality: never a channel name or a client id.
package metrics

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the collectors one herald server updates.
type Metrics struct {
	// Connections counts open connections by transport ("ws", "raw", "sse").
	Connections *prometheus.GaugeVec
	// Subscriptions counts subscriptions of this node's connections.
	Subscriptions prometheus.Gauge
	// MessagesIn counts messages accepted for publishing, by source
	// ("client", "api", "server").
	MessagesIn *prometheus.CounterVec
	// MessagesOut counts messages written to connections.
	MessagesOut prometheus.Counter
	// SlowConsumers counts connections closed because their outgoing queue
	// overflowed.
	SlowConsumers prometheus.Counter
	// Refusals counts what herald turned away, by reason (RefusalReasons).
	Refusals *prometheus.CounterVec
}

// RefusalReasons are the values of Refusals' reason label:
//   - unauthorized: no token where one is required, or a bad one (401)
//   - forbidden: a token, namespace rule or hook did not allow it (403)
//   - origin: a browser page from an origin not allowed (403)
//   - too_large: a frame or API body over MaxMessageSize (1009, 413)
//   - rate_limited: over a connection's publish rate (429)
//   - subscription_limit: over a connection's subscriptions (429)
//   - connection_limit: over the server's connections (503)
//   - ip_limit: over one client address's connections (429)
//   - token_expired: a connection closed when its token expired (1008)
//   - write_timeout: a connection closed because a write stalled
//   - handshake_timeout: a connection closed before it sent a complete
//     request within the handshake timeout
var RefusalReasons = []string{
	"unauthorized", "forbidden", "origin", "too_large", "rate_limited", "subscription_limit",
	"connection_limit", "ip_limit", "token_expired", "write_timeout", "handshake_timeout",
}

// New creates the collectors and registers them with reg (nil: none).
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Connections: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "herald_connections",
			Help: "Open client connections, by transport.",
		}, []string{"transport"}),
		Subscriptions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "herald_subscriptions",
			Help: "Channel subscriptions held by this node's connections.",
		}),
		MessagesIn: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_messages_in_total",
			Help: "Messages accepted for publishing, by source.",
		}, []string{"source"}),
		MessagesOut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_messages_out_total",
			Help: "Messages written to client connections.",
		}),
		SlowConsumers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_slow_consumer_disconnects_total",
			Help: "Connections closed because they did not read fast enough.",
		}),
		Refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_refusals_total",
			Help: "Requests, commands and connections refused or cut off, by reason.",
		}, []string{"reason"}),
	}
	for _, r := range RefusalReasons {
		m.Refusals.WithLabelValues(r)
	}
	// Every label value exists from the start, so dashboards see zeros
	// rather than missing series.
	for _, t := range []string{"ws", "raw", "sse"} {
		m.Connections.WithLabelValues(t)
	}
	for _, src := range []string{"client", "api", "server"} {
		m.MessagesIn.WithLabelValues(src)
	}
	if reg != nil {
		reg.MustRegister(m.Connections, m.Subscriptions, m.MessagesIn, m.MessagesOut, m.SlowConsumers, m.Refusals)
	}
	return m
}
