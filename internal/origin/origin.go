// Package origin decides which browser origins may call herald's HTTP
// endpoints (SSE and the server API) and sets the CORS headers for them.
package origin

import (
	"net/http"
	"net/url"
	"strings"
)

// Policy is a list of allowed origins. The zero Policy allows only the
// server's own host.
type Policy struct {
	allowed []string // normalised: no trailing slash
	any     bool
}

// New returns a Policy allowing origins ("scheme://host[:port]"); "*" in
// the list allows any origin.
func New(origins []string) Policy {
	var p Policy
	for _, o := range origins {
		if o == "*" {
			p.any = true
			continue
		}
		p.allowed = append(p.allowed, strings.TrimSuffix(o, "/"))
	}
	return p
}

// Allow reports whether r may go on: it carries no Origin (not a browser's
// cross-origin call), comes from the server's own host, or from an allowed
// origin. For an allowed cross-origin request it sets
// Access-Control-Allow-Origin to that origin. It always adds Vary: Origin,
// since the answer depends on it.
func (p Policy) Allow(w http.ResponseWriter, r *http.Request) bool {
	w.Header().Add("Vary", "Origin")
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	if u, err := url.Parse(origin); err == nil && u.Host != "" && strings.EqualFold(u.Host, r.Host) {
		return true // same host: no CORS needed
	}
	for _, o := range p.allowed {
		if strings.EqualFold(o, origin) {
			w.Header().Set("Access-Control-Allow-Origin", origin)
			return true
		}
	}
	if p.any {
		w.Header().Set("Access-Control-Allow-Origin", origin)
		return true
	}
	return false
}
