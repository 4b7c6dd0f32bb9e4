package outbox

import "github.com/prometheus/client_golang/prometheus"

// metrics are a Reader's collectors, which Config.Registerer lists.
type metrics struct {
	published, dead, retries prometheus.Counter
	lag, reading             prometheus.Gauge
}

// newMetrics creates the collectors and registers them with reg (nil:
// none).
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_outbox_published_total",
			Help: "Outbox rows published.",
		}),
		dead: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_outbox_dead_total",
			Help: "Outbox rows that could not be published, moved to herald_outbox_dead.",
		}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_outbox_retries_total",
			Help: "Outbox publishes that failed and were retried.",
		}),
		lag: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "herald_outbox_lag_seconds",
			Help: "Age of the oldest outbox row waiting at the last read; 0 when none was.",
		}),
		reading: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "herald_outbox_reading",
			Help: "1 while this node holds the outbox reader lock.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.published, m.dead, m.retries, m.lag, m.reading} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
