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
	// Conflated counts queued messages dropped from a conflating
	// connection's full queue because a newer one of the same channel and
	// key was queued behind them.
	Conflated prometheus.Counter
	// Refusals counts what herald turned away, by reason (RefusalReasons).
	Refusals *prometheus.CounterVec
	// ReceiptsDropped counts messages whose recipients were not recorded
	// for receipts (too many waiting for the broker, or the broker
	// failed).
	ReceiptsDropped prometheus.Counter
	// DeliveryLatency is the time from a message's acceptance by the
	// broker to its write to a subscriber's socket, per delivery.
	DeliveryLatency *Latency
	// BytesIn and BytesOut count bytes read from and written to client
	// connections (WebSocket frames, SSE streams), by transport.
	BytesIn, BytesOut *prometheus.CounterVec
	// BrokerOps, BrokerErrors and BrokerSeconds count the broker's
	// operations, their failures and their latency, by operation.
	BrokerOps, BrokerErrors *prometheus.CounterVec
	BrokerSeconds           *prometheus.HistogramVec
}

// BrokerOps are the values of the broker metrics' op label.
var BrokerOps = []string{"publish", "history", "subscribe", "unsubscribe", "join", "leave", "presence_add", "presence_remove", "presence"}

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
		ReceiptsDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_receipts_dropped_total",
			Help: "Messages whose recipients were not recorded for delivery receipts.",
		}),
		Conflated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_conflated_messages_total",
			Help: "Queued messages dropped because a newer one of the same key was queued behind them (overflow: conflate).",
		}),
		Refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_refusals_total",
			Help: "Requests, commands and connections refused or cut off, by reason.",
		}, []string{"reason"}),
	}
	for _, r := range RefusalReasons {
		m.Refusals.WithLabelValues(r)
	}
	m.DeliveryLatency = NewLatency("herald_delivery_latency_seconds",
		"From a message's acceptance by the broker to its write to a subscriber's socket.",
		[]float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5})
	m.BytesIn = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herald_bytes_in_total",
		Help: "Bytes read from client connections, by transport.",
	}, []string{"transport"})
	m.BytesOut = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herald_bytes_out_total",
		Help: "Bytes written to client connections, by transport.",
	}, []string{"transport"})
	for _, t := range []string{"ws", "sse"} {
		m.BytesIn.WithLabelValues(t)
		m.BytesOut.WithLabelValues(t)
	}
	m.BrokerOps = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herald_broker_operations_total",
		Help: "Broker operations, by operation.",
	}, []string{"op"})
	m.BrokerErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herald_broker_errors_total",
		Help: "Broker operations that failed, by operation.",
	}, []string{"op"})
	m.BrokerSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "herald_broker_operation_seconds",
		Help:    "Latency of broker operations, by operation.",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1},
	}, []string{"op"})
	for _, op := range BrokerOps {
		m.BrokerOps.WithLabelValues(op)
		m.BrokerErrors.WithLabelValues(op)
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
		reg.MustRegister(m.Connections, m.Subscriptions, m.MessagesIn, m.MessagesOut, m.SlowConsumers, m.Conflated, m.Refusals,
			m.DeliveryLatency, m.BytesIn, m.BytesOut, m.BrokerOps, m.BrokerErrors, m.BrokerSeconds, m.ReceiptsDropped)
	}
	return m
}
