// Command embedded mounts herald in an application's own net/http server,
// beside the application's routes: the Go counterpart of bolting a
// WebSocket server onto an Express or Koa app.
//
//	go run ./embedded        then open http://localhost:3000
package main

import (
	"context"
	"encoding/json"
	"errors"
	"log"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/heraldhq/herald"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	rt, err := herald.New(herald.Config{
		Hooks: herald.Hooks{
			// Name the user from the app's own session cookie.
			Connect: func(_ context.Context, req herald.ConnectRequest) (herald.ConnectResult, error) {
				if c, err := req.Request.Cookie("user"); err == nil {
					return herald.ConnectResult{User: c.Value}, nil
				}
				return herald.ConnectResult{}, nil
			},
			// Only signed-in users may publish, and never to "announcements".
			AuthorizePublish: func(_ context.Context, c herald.Client, channel string, _ *herald.Publication) error {
				if c.User == "" || strings.HasPrefix(channel, "announcements") {
					return herald.Errorf(herald.CodeForbidden, "sign in to publish here")
				}
				return nil
			},
		},
	})
	if err != nil {
		log.Fatal(err)
	}

	mux := http.NewServeMux()
	// The application's own routes.
	mux.HandleFunc("GET /api/hello", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]string{"hello": "world"})
	})
	mux.HandleFunc("POST /api/announce", func(w http.ResponseWriter, r *http.Request) {
		off, err := rt.Publish(r.Context(), "announcements", map[string]string{"text": r.FormValue("text")})
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]string{"offset": off})
	})
	// herald's endpoints, mounted one by one.
	mux.Handle("GET /ws", rt.WebSocketHandler())
	mux.Handle("GET /ws/{channel}", rt.RawHandler())
	mux.Handle("GET /herald.js", rt.SDKHandler())
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte(page))
	})

	srv := &http.Server{Addr: "localhost:3000", Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		_ = rt.Shutdown(sctx)
	}()
	log.Printf("app with herald on http://%s", srv.Addr)
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatal(err)
	}
}

const page = `<!doctype html>
<title>app + herald</title>
<pre id="log"></pre>
<script type="module">
import { Herald } from '/herald.js';
const h = new Herald();
h.subscribe('announcements', (data) => {
  document.getElementById('log').textContent += JSON.stringify(data) + '\n';
});
</script>`
