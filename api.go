package herald

import (
	"net/http"

	"github.com/heraldhq/herald/internal/api"
)

// APIHandler serves the server API (the contract's /api/…): publish, the
// active channels, history and presence, and the application's orders
// (disconnect, subscribe, unsubscribe, broadcast, connections), which act
// on every node. Mount it on "/api/" for every
// method; it routes on the full path. Callers authenticate with
// "Authorization: Bearer <Config.APIKey>"; without an APIKey only loopback
// callers are served, and no web page (see Config.APIKey). Each call
// returns a new handler over the same server; they are interchangeable.
func (s *Server) APIHandler() http.Handler {
	return api.New(api.Config{
		Hub:            s.hub,
		APIKey:         s.cfg.APIKey,
		Origins:        s.origins,
		MaxMessageSize: s.cfg.MaxMessageSize,
		Orders:         apiOrders{s},
		Metrics:        s.metrics,
		Logger:         s.cfg.Logger,
	})
}
