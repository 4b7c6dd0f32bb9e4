package herald_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/heraldtest"
	"github.com/heraldhq/herald/internal/backend"
)

// The application herald asks is one set of decisions (an app's decide
// function over the questions of the proxy contract) reached two ways: over
// real HTTP by herald serve's proxies (internal/backend calling an
// httptest server), and as Go hooks in library mode. The tests run each
// behaviour both ways and expect the same of both.

// question is one thing the application was asked: the proxy kind, the
// JSON body as the application reads it, and the headers it got.
type question struct {
	kind   string
	body   map[string]any
	header http.Header
}

// answer is what the application answers.
type answer struct {
	result any           // allow with {"result": result}; nil answers {}
	err    *herald.Error // refuse with {"error": err}
	// Over HTTP only: a body sent as it is, another status, a late answer.
	raw    string
	status int
	delay  time.Duration
}

// app records what it is asked and answers with decide.
type app struct {
	decide func(q question) answer

	mu    sync.Mutex
	asked []question
}

func (a *app) ask(q question) answer {
	a.mu.Lock()
	a.asked = append(a.asked, q)
	a.mu.Unlock()
	return a.decide(q)
}

// questions returns what the application was asked of kind so far.
func (a *app) questions(kind string) []question {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []question
	for _, q := range a.asked {
		if q.kind == kind {
			out = append(out, q)
		}
	}
	return out
}

// proxyHeaders are herald serve's default --proxy-headers.
var proxyHeaders = []string{"Cookie", "Authorization", "X-Request-Id"}

// askMode installs an app in a Config's hooks, one way or the other;
// without rpc, the rpc hook is left out.
type askMode struct {
	name    string
	install func(t *testing.T, a *app, cfg *herald.Config, rpc bool)
}

var askModes = []askMode{{"proxy", installProxy}, {"library", installLibrary}}

// installProxy serves a over HTTP and points herald's proxies at it, with
// a call timeout of askTimeout.
func installProxy(t *testing.T, a *app, cfg *herald.Config, rpc bool) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("proxy request %s %s with Content-Type %q, want a POST of JSON", r.Method, r.URL.Path, r.Header.Get("Content-Type"))
		}
		var body map[string]any
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			t.Errorf("proxy request body: %v", err)
		}
		ans := a.ask(question{kind: strings.TrimPrefix(r.URL.Path, "/"), body: body, header: r.Header.Clone()})
		if ans.delay > 0 {
			select {
			case <-time.After(ans.delay):
			case <-r.Context().Done():
				return
			}
		}
		w.Header().Set("Content-Type", "application/json")
		if ans.status != 0 {
			w.WriteHeader(ans.status)
		}
		switch {
		case ans.raw != "":
			_, _ = w.Write([]byte(ans.raw))
		case ans.err != nil:
			_ = json.NewEncoder(w).Encode(map[string]any{"error": ans.err})
		case ans.result == nil:
			_, _ = w.Write([]byte(`{"result":{}}`))
		default:
			_ = json.NewEncoder(w).Encode(map[string]any{"result": ans.result})
		}
	}))
	t.Cleanup(srv.Close)
	pc := backend.Config{
		Connect:   srv.URL + "/connect",
		Subscribe: srv.URL + "/subscribe",
		Publish:   srv.URL + "/publish",
		Refresh:   srv.URL + "/refresh",
		Headers:   proxyHeaders,
		Timeout:   askTimeout,
	}
	if rpc {
		pc.RPC = srv.URL + "/rpc"
	}
	p, err := backend.New(pc)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Hooks = p.Hooks()
}

// askTimeout bounds a proxy call in these tests; a late answer waits
// longer.
const askTimeout = time.Second

// installLibrary gives herald Go hooks that ask a directly, with the same
// questions the proxies send and the same reading of the answers.
func installLibrary(t *testing.T, a *app, cfg *herald.Config, rpc bool) {
	ask := func(kind string, body map[string]any, header http.Header, out any) error {
		b, _ := json.Marshal(body) // the body as the application reads it
		var m map[string]any
		_ = json.Unmarshal(b, &m)
		ans := a.ask(question{kind: kind, body: m, header: header})
		if ans.raw != "" || ans.status != 0 || ans.delay != 0 {
			t.Errorf("a Go hook cannot answer %+v", ans)
		}
		if ans.err != nil {
			return ans.err
		}
		b, _ = json.Marshal(ans.result)
		return json.Unmarshal(b, out)
	}
	cfg.Hooks = herald.Hooks{
		Headers: proxyHeaders,
		Connect: func(_ context.Context, req herald.ConnectRequest) (herald.ConnectResult, error) {
			var r struct {
				User     string          `json:"user"`
				ExpireAt int64           `json:"expire_at"`
				Channels []string        `json:"channels"`
				Info     json.RawMessage `json:"info"`
			}
			body := map[string]any{"client": req.Client, "transport": req.Transport, "remote_addr": req.Request.RemoteAddr}
			if err := ask("connect", body, req.Request.Header, &r); err != nil {
				return herald.ConnectResult{}, err
			}
			res := herald.ConnectResult{User: r.User, Channels: r.Channels, Info: r.Info}
			if r.ExpireAt > 0 {
				res.ExpireAt = time.Unix(r.ExpireAt, 0)
			}
			return res, nil
		},
		AuthorizeSubscribe: func(_ context.Context, c herald.Client, channel string) error {
			body := map[string]any{"client": c.ID, "user": c.User, "channel": channel, "transport": c.Transport}
			return ask("subscribe", body, c.Header, &struct{}{})
		},
		AuthorizePublish: func(_ context.Context, c herald.Client, channel string, p *herald.Publication) error {
			var r struct {
				Data json.RawMessage `json:"data"`
			}
			body := map[string]any{"client": c.ID, "user": c.User, "channel": channel, "data": p.Data, "event": p.Event}
			if err := ask("publish", body, c.Header, &r); err != nil {
				return err
			}
			if r.Data != nil {
				p.Data = r.Data
			}
			return nil
		},
		Refresh: func(_ context.Context, c herald.Client) (herald.RefreshResult, error) {
			var r struct {
				ExpireAt int64 `json:"expire_at"`
				Expired  bool  `json:"expired"`
			}
			if err := ask("refresh", map[string]any{"client": c.ID, "user": c.User}, c.Header, &r); err != nil {
				return herald.RefreshResult{}, err
			}
			res := herald.RefreshResult{Expired: r.Expired}
			if r.ExpireAt > 0 {
				res.ExpireAt = time.Unix(r.ExpireAt, 0)
			}
			return res, nil
		},
	}
	if rpc {
		cfg.Hooks.RPC = func(_ context.Context, c herald.Client, method string, data json.RawMessage) (json.RawMessage, error) {
			var r struct {
				Data json.RawMessage `json:"data"`
			}
			if err := ask("rpc", map[string]any{"client": c.ID, "user": c.User, "method": method, "data": data}, c.Header, &r); err != nil {
				return nil, err
			}
			return r.Data, nil
		}
	}
}

// session is the value of the session cookie in a question's headers.
func session(q question) string {
	r := http.Request{Header: q.header}
	c, err := r.Cookie("session")
	if err != nil {
		return ""
	}
	return c.Value
}

// expiry is the session cookie's expiry: "short-…" sessions end 2 s from
// now (expire_at is in whole seconds).
const shortSession = 2 * time.Second

// demoApp is the application of the tests that run both ways. Sessions
// (the cookie "session"): "alice", with info; "banned" and "nobody",
// refused; "feed-<user>", with server-side channels feed:<user> and news;
// "short-<user>", which expires soon: user "renewed" is renewed for a
// minute, "expired" is told it expired, "failing" gets failures. Channel
// "secret" is refused, publishes to "ro" are refused and those to "rw"
// rewritten; rpc "whoami" answers, "missing" is refused.
func demoApp(q question) answer {
	user, _ := q.body["user"].(string)
	switch q.kind {
	case "connect":
		s := session(q)
		switch {
		case s == "":
			return answer{}
		case s == "alice":
			return answer{result: map[string]any{"user": "alice", "info": map[string]any{"name": "Alice"}}}
		case s == "banned":
			return answer{err: herald.Errorf(herald.CodeForbidden, "go away")}
		case s == "nobody":
			return answer{err: herald.Errorf(herald.CodeUnauthorized, "who are you")}
		case strings.HasPrefix(s, "feed-"):
			u := strings.TrimPrefix(s, "feed-")
			return answer{result: map[string]any{"user": u, "channels": []string{"feed:" + u, "news"}}}
		case strings.HasPrefix(s, "short-"):
			return answer{result: map[string]any{"user": strings.TrimPrefix(s, "short-"), "expire_at": time.Now().Add(shortSession).Unix()}}
		}
		return answer{result: map[string]any{"user": s}}
	case "subscribe":
		if q.body["channel"] == "secret" {
			return answer{err: herald.Errorf(herald.CodeForbidden, "members only")}
		}
	case "publish":
		switch q.body["channel"] {
		case "ro":
			return answer{err: herald.Errorf(herald.CodeForbidden, "read only")}
		case "rw":
			return answer{result: map[string]any{"data": map[string]any{"by": user, "original": q.body["data"]}}}
		}
	case "rpc":
		if q.body["method"] == "whoami" {
			return answer{result: map[string]any{"data": map[string]any{"user": user, "echo": q.body["data"]}}}
		}
		return answer{err: herald.Errorf(herald.CodeNotFound, "no such method")}
	case "refresh":
		switch user {
		case "renewed":
			return answer{result: map[string]any{"expire_at": time.Now().Add(time.Minute).Unix()}}
		case "expired":
			return answer{result: map[string]any{"expired": true}}
		}
		return answer{err: herald.Errorf(herald.CodeUnavailable, "try later")}
	}
	return answer{}
}

// askServer starts a server with cfg that asks a demo app the way m does
// (with the rpc hook unless noRPC).
func askServer(t *testing.T, m askMode, cfg herald.Config, noRPC bool) (*herald.Server, string, *app) {
	t.Helper()
	a := &app{decide: demoApp}
	m.install(t, a, &cfg, !noRPC)
	srv, base := newServer(t, cfg)
	return srv, base, a
}

// as is the request header of a client whose app session is s.
func as(s string) http.Header { return http.Header{"Cookie": {"session=" + s}} }

// dialAs connects to /ws (path and query in pathQuery) with session s.
func dialAs(t *testing.T, base, pathQuery, s string) *heraldtest.Client {
	t.Helper()
	return heraldtest.DialHeader(t, heraldtest.WSURL(base, pathQuery), as(s))
}

// forEachMode runs test once per way of asking the application.
func forEachMode(t *testing.T, test func(t *testing.T, m askMode)) {
	t.Parallel()
	for _, m := range askModes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			test(t, m)
		})
	}
}

// A connection the application lets in is its user everywhere: the
// welcome, what it publishes, presence (with the application's info). A
// refused one is answered before the upgrade with the refusal's status.
// Connections with a token never ask, and the application decides about
// those without one whatever AllowAnonymous says.
func TestAskConnect(t *testing.T) {
	forEachMode(t, func(t *testing.T, m askMode) {
		_, base, a := askServer(t, m, herald.Config{TokenSecret: tokenSecret}, false)
		alice := dialAs(t, base, "/ws", "alice")
		if alice.Welcome["user"] != "alice" {
			t.Fatalf("welcome %v, want user alice", alice.Welcome)
		}
		q := a.questions("connect")
		if len(q) != 1 || q[0].body["client"] != clientID(alice) || q[0].body["transport"] != "websocket" {
			t.Fatalf("connect questions %v, want one for alice's client over websocket", q)
		}
		anon := heraldtest.Dial(t, heraldtest.WSURL(base, "/ws"))
		if anon.Welcome["user"] != "" {
			t.Fatalf("welcome %v, want an anonymous client: the app let it in without a user", anon.Welcome)
		}
		alice.MustOK(map[string]any{"op": "subscribe", "channel": "room"})
		anon.MustOK(map[string]any{"op": "subscribe", "channel": "room"})
		publish(t, alice, "room", "hi")
		if msg := nextMessage(t, anon); msg["user"] != "alice" || msg["client"] != clientID(alice) {
			t.Fatalf("message %v, want it from alice", msg)
		}
		r := anon.MustOK(map[string]any{"op": "presence", "channel": "room"})
		found := false
		for _, c := range r["clients"].([]any) {
			c := c.(map[string]any)
			if c["client"] == clientID(alice) {
				found = c["user"] == "alice" && equalJSON(c["info"], map[string]any{"name": "Alice"})
			} else if _, has := c["info"]; has {
				t.Errorf("presence entry %v has info; only alice's connection was given one", c)
			}
		}
		if !found {
			t.Fatalf("presence %v, want alice with her info", r)
		}

		for _, tt := range []struct {
			session string
			status  int
			code    string
		}{{"banned", 403, "forbidden"}, {"nobody", 401, "unauthorized"}} {
			for _, path := range []string{"/ws", "/ws/room"} {
				status, body := dialStatusHeader(t, heraldtest.WSURL(base, path), as(tt.session))
				if status != tt.status || !strings.Contains(body, `"`+tt.code+`"`) {
					t.Errorf("%s as %s: HTTP %d %s, want %d %s", path, tt.session, status, body, tt.status, tt.code)
				}
			}
			resp, cancel := getSSE(t, nil, base+"/sse?channel=room", as(tt.session))
			if resp.StatusCode != tt.status || httpError(t, resp) != tt.code {
				t.Errorf("/sse as %s: HTTP %d, want %d %s", tt.session, resp.StatusCode, tt.status, tt.code)
			}
			cancel()
		}

		// A token is verified by herald alone: the app is not asked.
		before := len(a.questions("connect"))
		tok := heraldtest.DialHeader(t, wsWithToken(base, mint(t, "tina", time.Hour, nil)), as("alice"))
		if tok.Welcome["user"] != "tina" {
			t.Fatalf("welcome %v, want the token's user", tok.Welcome)
		}
		if status, _ := dialStatusHeader(t, wsWithToken(base, "bad.token.here"), as("alice")); status != http.StatusUnauthorized {
			t.Fatalf("bad token: HTTP %d, want 401", status)
		}
		if n := len(a.questions("connect")); n != before {
			t.Fatalf("the app was asked %d times about connections with a token", n-before)
		}
	})
}

// The application decides every subscription (and history and presence
// read) on every transport, and every publish, which it may rewrite.
func TestAskSubscribeAndPublish(t *testing.T) {
	forEachMode(t, func(t *testing.T, m askMode) {
		_, base, a := askServer(t, m, herald.Config{}, false)
		c := dialAs(t, base, "/ws", "alice")
		for _, op := range []string{"subscribe", "history", "presence"} {
			r := c.Call(map[string]any{"op": op, "channel": "secret"}, nil)
			if heraldtest.ErrorCode(r) != "forbidden" || errorMessage(r) != "members only" {
				t.Errorf("%s secret: %v, want forbidden \"members only\"", op, r)
			}
		}
		sub := dialAs(t, base, "/ws", "bob")
		sub.MustOK(map[string]any{"op": "subscribe", "channel": "rw"})
		if code, reason := dialRawAs(t, base, "secret", "alice").closedWith(); code != 1008 || reason != "members only" {
			t.Errorf("raw on secret: closed %d %q, want 1008 \"members only\"", code, reason)
		}
		resp, cancel := getSSE(t, nil, base+"/sse?channel=news&channel=secret", as("alice"))
		if resp.StatusCode != http.StatusForbidden || httpError(t, resp) != "forbidden" {
			t.Errorf("/sse with secret: HTTP %d, want 403 forbidden", resp.StatusCode)
		}
		cancel()
		seen := map[any]bool{}
		for _, q := range a.questions("subscribe") {
			seen[q.body["transport"]] = true
			if q.body["channel"] == "rw" && q.body["user"] != "alice" && q.body["user"] != "bob" {
				t.Errorf("subscribe question %v, want it to name the user", q.body)
			}
		}
		if !seen["websocket"] || !seen["raw"] || !seen["sse"] {
			t.Errorf("subscribe questions came over %v, want websocket, raw and sse", seen)
		}

		r := c.Call(map[string]any{"op": "publish", "channel": "ro", "data": 1}, nil)
		if heraldtest.ErrorCode(r) != "forbidden" || errorMessage(r) != "read only" {
			t.Errorf("publish to ro: %v, want forbidden \"read only\"", r)
		}
		off := publish(t, c, "rw", map[string]any{"n": 1})
		msg := nextMessage(t, sub)
		if want := map[string]any{"by": "alice", "original": map[string]any{"n": 1.0}}; !equalJSON(msg["data"], want) || msg["offset"] != off {
			t.Fatalf("message %v, want the app's data %v", msg, want)
		}
		q := a.questions("publish")
		if last := q[len(q)-1].body; last["client"] != clientID(c) || last["user"] != "alice" || last["channel"] != "rw" || last["event"] != "" {
			t.Fatalf("publish question %v", last)
		}
		ro := dialRawAs(t, base, "ro", "alice")
		ro.send(websocket.MessageText, "x")
		if code, reason := ro.closedWith(); code != 1008 || reason != "read only" {
			t.Errorf("raw publish to ro: closed %d %q, want 1008 \"read only\"", code, reason)
		}
	})
}

// dialRawAs connects in raw mode to channel with session s.
func dialRawAs(t *testing.T, base, channel, s string) *rawClient {
	t.Helper()
	return dialRawHeader(t, base, channel, as(s))
}

// rpc asks the application and replies with its data; a refusal is an
// error reply; without the rpc hook (or --proxy-rpc), rpc is bad_request.
func TestAskRPC(t *testing.T) {
	forEachMode(t, func(t *testing.T, m askMode) {
		_, base, a := askServer(t, m, herald.Config{}, false)
		c := dialAs(t, base, "/ws", "alice")
		r := c.MustOK(map[string]any{"op": "rpc", "method": "whoami", "data": map[string]any{"x": []any{1, "two"}}})
		if want := map[string]any{"user": "alice", "echo": map[string]any{"x": []any{1.0, "two"}}}; !equalJSON(r["data"], want) {
			t.Fatalf("rpc reply %v, want data %v", r, want)
		}
		q := a.questions("rpc")
		if len(q) != 1 || q[0].body["client"] != clientID(c) || q[0].body["method"] != "whoami" {
			t.Fatalf("rpc questions %v", q)
		}
		r = c.Call(map[string]any{"op": "rpc", "method": "missing"}, nil)
		if heraldtest.ErrorCode(r) != "not_found" || errorMessage(r) != "no such method" {
			t.Fatalf("rpc missing: %v, want not_found \"no such method\"", r)
		}

		_, plain, _ := askServer(t, m, herald.Config{}, true)
		r = dialAs(t, plain, "/ws", "alice").Call(map[string]any{"op": "rpc", "method": "whoami"}, nil)
		if heraldtest.ErrorCode(r) != "bad_request" {
			t.Fatalf("rpc without an rpc hook: %v, want bad_request", r)
		}
	})
}

// A connection let in with an expiry behaves as a token's: the application
// renews it shortly before, may end it, and without an answer it ends at
// its expiry with 1008 "token expired" (an SSE stream ends).
func TestAskExpiry(t *testing.T) {
	forEachMode(t, func(t *testing.T, m askMode) {
		_, base, a := askServer(t, m, herald.Config{}, false)
		start := time.Now()
		renewed := dialAs(t, base, "/ws", "short-renewed")
		expired := dialAs(t, base, "/ws", "short-expired")
		failing := dialAs(t, base, "/ws", "short-failing")
		stream := openSSE(t, nil, base+"/sse?channel=news", as("short-expired"))

		if code, reason := expired.ClosedWith(); code != 1008 || reason != "token expired" {
			t.Errorf("the expired connection closed %d %q, want 1008 \"token expired\"", code, reason)
		}
		stream.ended()
		if code, reason := failing.ClosedWith(); code != 1008 || reason != "token expired" {
			t.Errorf("the connection whose renewal failed closed %d %q, want 1008 \"token expired\"", code, reason)
		}
		if took := time.Since(start); took < shortSession-time.Second {
			t.Errorf("the connection whose renewal failed lasted %v, want it to last until its expiry", took)
		}
		// The renewed one outlives its first expiry (at most shortSession
		// after it connected).
		heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
			if time.Since(start) < shortSession+300*time.Millisecond {
				return errors.New("not yet past the renewed connection's first expiry")
			}
			return nil
		})
		renewed.MustOK(map[string]any{"op": "ping"})
		users := map[any]int{}
		for _, q := range a.questions("refresh") {
			users[q.body["user"]]++
		}
		if users["renewed"] != 1 || users["expired"] != 2 || users["failing"] < 1 {
			t.Fatalf("refresh questions by user %v, want renewed once, expired twice (WebSocket, SSE), failing at least once", users)
		}
	})
}

// The application's channels are subscribed at connect, without checks and
// outside MaxSubscriptions: a JSON client gets "subscribed", then the
// messages, and resumes them without a gap with ?since=; an SSE stream
// carries them (with or without channels of its own); raw mode ignores
// them.
func TestAskServerChannels(t *testing.T) {
	forEachMode(t, func(t *testing.T, m askMode) {
		srv, base, a := askServer(t, m, herald.Config{MaxSubscriptions: 1}, false)
		ctx := context.Background()
		pub := func(channel string, n int) string {
			t.Helper()
			off, err := srv.Publish(ctx, channel, map[string]any{"n": n})
			if err != nil {
				t.Fatal(err)
			}
			return off
		}
		newsOff := pub("news", 1)
		c := dialAs(t, base, "/ws", "feed-ann")
		for _, want := range []map[string]any{
			{"op": "subscribed", "channel": "feed:ann", "offset": "", "recovered": true},
			{"op": "subscribed", "channel": "news", "offset": newsOff, "recovered": true},
		} {
			if got := c.Next(); !equalJSON(got, want) {
				t.Fatalf("got %v, want %v", got, want)
			}
		}
		c.MustOK(map[string]any{"op": "subscribe", "channel": "mine"}) // the one MaxSubscriptions allows
		offs := []string{pub("feed:ann", 1), pub("feed:ann", 2)}
		for i := range offs {
			if msg := nextMessage(t, c); msg["channel"] != "feed:ann" || counter(t, msg) != i+1 {
				t.Fatalf("message %v, want feed:ann %d", msg, i+1)
			}
		}
		if n := len(a.questions("subscribe")); n != 1 {
			t.Fatalf("the app was asked about %d subscriptions, want only the client's own", n)
		}
		_ = c.Conn.CloseNow()

		offs = append(offs, pub("feed:ann", 3), pub("feed:ann", 4))
		since, _ := json.Marshal(map[string]string{"feed:ann": offs[1]})
		again := dialAs(t, base, "/ws?since="+url.QueryEscape(string(since)), "feed-ann")
		if got, want := again.Next(), map[string]any{"op": "subscribed", "channel": "feed:ann", "offset": offs[3], "recovered": true}; !equalJSON(got, want) {
			t.Fatalf("resumed: got %v, want %v", got, want)
		}
		for _, n := range []int{3, 4} {
			if msg := nextMessage(t, again); msg["channel"] != "feed:ann" || counter(t, msg) != n {
				t.Fatalf("resumed message %v, want feed:ann %d", msg, n)
			}
		}
		if got := again.Next(); got["op"] != "subscribed" || got["channel"] != "news" {
			t.Fatalf("got %v, want the news subscription", got)
		}
		if status, body := dialStatusHeader(t, heraldtest.WSURL(base, "/ws?since=nope"), as("feed-ann")); status != http.StatusBadRequest {
			t.Fatalf("?since=nope: HTTP %d %s, want 400", status, body)
		}

		stream := openSSE(t, nil, base+"/sse", as("feed-ann"))
		stream.next() // retry: and the opening id
		raw := dialRawAs(t, base, "room", "feed-ann")
		waitPresent(t, again, "room", 1)
		pub("news", 2)
		if ev := stream.nextEvent(); !strings.Contains(ev.Data, `"n":2`) {
			t.Fatalf("SSE event %+v, want news 2", ev)
		}
		pub("room", 9)
		if got := raw.nextText(); got != `{"n":9}` {
			t.Fatalf("raw client got %q first, want only its channel's message", got)
		}
		if status, _ := dialStatus(t, heraldtest.WSURL(base, "/ws")); status != http.StatusSwitchingProtocols {
			t.Fatalf("a client without server-side channels: HTTP %d", status)
		}
		resp, cancel := getSSE(t, nil, base+"/sse", nil)
		defer cancel()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("/sse without channels of either kind: HTTP %d, want 400", resp.StatusCode)
		}
	})
}

// A connection the application let in has the limits of any other.
func TestAskLimits(t *testing.T) {
	forEachMode(t, func(t *testing.T, m askMode) {
		_, base, _ := askServer(t, m, herald.Config{PublishRate: 0.001, PublishBurst: 1}, false)
		c := dialAs(t, base, "/ws", "alice")
		publish(t, c, "room", 1)
		if r := c.Call(map[string]any{"op": "publish", "channel": "room", "data": 2}, nil); heraldtest.ErrorCode(r) != "rate_limited" {
			t.Fatalf("second publish: %v, want rate_limited", r)
		}
	})
}
