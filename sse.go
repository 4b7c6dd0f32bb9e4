package herald

import "net/http"

// SSEHandler serves Server-Sent Events (the contract's /sse).
func (s *Server) SSEHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeHTTPError(w, Errorf(CodeNotFound, "SSE is not built yet"))
	})
}
