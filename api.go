package herald

import "net/http"

// APIHandler serves the server API (the contract's /api/…). Mount it on
// "/api/".
func (s *Server) APIHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeHTTPError(w, Errorf(CodeNotFound, "the server API is not built yet"))
	})
}
