// Command backend is a small notes app with herald running beside it as a
// standalone server, wired the way docs/backend.md describes: herald asks
// the app (connect and rpc proxies), tells it (webhooks) and publishes
// what it commits (outbox).
//
//   - POST /login sets the app's own signed session cookie.
//   - POST /herald/connect is herald's connect proxy: the session names the
//     user, who is subscribed to inbox:<user> at once.
//   - POST /herald/rpc answers the rpc methods "whoami" and "notes".
//   - POST /herald/events takes herald's signed webhooks and keeps who is
//     online, shown by GET /online.
//   - POST /notes stores a note and its outbox row in one transaction;
//     herald delivers it to the recipient's inbox.
//
// The browser sees one origin: the app passes /ws, /sse and /herald.js on
// to herald (a reverse proxy, which carries WebSocket upgrades too), so
// the session cookie goes with the connection and herald forwards it to
// the connect proxy. herald itself listens on loopback only.
//
// Run it, with PostgreSQL on 127.0.0.1 and herald built from this
// repository (go build ./cmd/herald):
//
//	export SESSION_KEY=$(openssl rand -hex 32) WEBHOOK_SECRET=$(openssl rand -hex 32)
//	export DATABASE_URL='postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable'
//	herald serve --addr 127.0.0.1:8080 \
//	  --proxy-connect http://127.0.0.1:3000/herald/connect \
//	  --proxy-rpc http://127.0.0.1:3000/herald/rpc \
//	  --webhook http://127.0.0.1:3000/herald/events --webhook-secret "$WEBHOOK_SECRET" \
//	  --outbox "$DATABASE_URL"
//	cd examples && go run ./backend        then open http://localhost:3000
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv); err != nil {
		log.Fatal(err)
	}
}

// run serves the app until ctx is done. Secrets come from the
// environment only, so that they do not show in the process list.
func run(ctx context.Context, args []string, getenv func(string) string) error {
	fs := flag.NewFlagSet("backend", flag.ContinueOnError)
	addr := fs.String("addr", "localhost:3000", "listen address")
	heraldURL := fs.String("herald", "http://127.0.0.1:8080", "herald's URL; /ws, /sse and /herald.js are passed on to it")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg := config{
		HeraldURL:     *heraldURL,
		DatabaseURL:   getenv("DATABASE_URL"),
		SessionKey:    []byte(getenv("SESSION_KEY")),
		WebhookSecret: []byte(getenv("WEBHOOK_SECRET")),
	}
	if cfg.DatabaseURL == "" || len(cfg.SessionKey) == 0 || len(cfg.WebhookSecret) == 0 {
		return errors.New("set DATABASE_URL (the database herald's --outbox names), SESSION_KEY and WEBHOOK_SECRET (herald's --webhook-secret)")
	}
	a, err := newApp(ctx, cfg)
	if err != nil {
		return err
	}
	defer a.close()

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv := &http.Server{Handler: a.routes(), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	log.Printf("notes on http://%s, herald at %s", ln.Addr(), cfg.HeraldURL)
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}

// routes is the app's HTTP interface.
func (a *app) routes() http.Handler {
	mux := http.NewServeMux()
	// The app's own pages and API.
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte(page))
	})
	mux.HandleFunc("POST /login", a.login)
	mux.HandleFunc("POST /notes", a.addNote)
	mux.HandleFunc("GET /online", a.listOnline)
	// What herald calls. Anyone who reaches the app can call these too,
	// so each trusts only what it can check: the cookie, the signature.
	mux.HandleFunc("POST /herald/connect", a.connect)
	mux.HandleFunc("POST /herald/rpc", a.rpc)
	mux.HandleFunc("POST /herald/events", a.event)
	// herald's endpoints, on the app's origin.
	mux.Handle("GET /ws", a.herald)
	mux.Handle("GET /sse", a.herald)
	mux.Handle("GET /herald.js", a.herald)
	return mux
}

// heraldProxy passes requests on to herald at target. It keeps the Host
// the browser asked for: herald lets a browser's WebSocket in when its
// Origin is the host it was asked for (or one of --origins).
func heraldProxy(target *url.URL) http.Handler {
	return &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
		pr.SetURL(target)
		pr.Out.Host = pr.In.Host
		pr.SetXForwarded()
	}}
}

// page logs in, connects through the app to herald, lists the notes of
// the user's inbox as they arrive, and sends notes.
const page = `<!doctype html>
<title>notes</title>
<form id="login">name <input name="user" pattern="[a-z0-9_\-]{1,32}" required> <button>log in</button></form>
<div id="main" hidden>
  <p>you are <b id="me"></b>; online: <span id="online"></span></p>
  <form id="send">to <input name="to" placeholder="yourself"> <input name="text" required> <button>send</button></form>
  <ul id="notes"></ul>
</div>
<script type="module">
import { Herald } from '/herald.js';
const $ = (id) => document.getElementById(id);
const show = (n) => {
  const li = document.createElement('li');
  li.textContent = n.from + ': ' + n.text;
  $('notes').prepend(li);
};
$('login').onsubmit = async (e) => {
  e.preventDefault();
  const res = await fetch('/login', { method: 'POST', body: new URLSearchParams(new FormData(e.target)) });
  if (!res.ok) return alert(await res.text());
  $('login').hidden = true;
  $('main').hidden = false;
  // /ws on this origin: the session cookie goes along, and herald asks the app who this is.
  const h = new Herald();
  // inbox:<user>, subscribed by the connect proxy.
  h.on('subscription', (sub) => sub.on('message', show));
  $('me').textContent = (await h.rpc('whoami')).user;
  (await h.rpc('notes')).reverse().forEach(show);
  setInterval(async () => { $('online').textContent = (await (await fetch('/online')).json()).users.join(', '); }, 1000);
};
$('send').onsubmit = async (e) => {
  e.preventDefault();
  const res = await fetch('/notes', { method: 'POST', body: new URLSearchParams(new FormData(e.target)) });
  if (!res.ok) return alert(await res.text());
  e.target.text.value = '';
};
</script>`
