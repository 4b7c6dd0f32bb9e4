package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/client"
	"github.com/heraldhq/herald/heraldtest"
	"github.com/heraldhq/herald/outbox/outboxtest"
)

const (
	testSessionKey    = "test session key"
	testWebhookSecret = "test webhook secret"
)

// TestBackend runs the app beside a real herald binary started with the
// flags README.md gives, and goes through everything the app does: the
// connect proxy names the user from the app's cookie and subscribes its
// inbox, rpc reaches the app, a note committed with its outbox row
// reaches the browser's connection, and the webhooks keep GET /online.
func TestBackend(t *testing.T) {
	db := outboxtest.New(t) // a schema of this test's own; its URL sets search_path
	bin := buildHerald(t)
	heraldAddr := freeAddr(t)

	ctx, cancel := context.WithTimeout(context.Background(), 3*heraldtest.Timeout)
	defer cancel()
	a, err := newApp(ctx, config{
		HeraldURL:     "http://" + heraldAddr,
		DatabaseURL:   db.URL,
		SessionKey:    []byte(testSessionKey),
		WebhookSecret: []byte(testWebhookSecret),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.close)
	app := httptest.NewServer(a.routes())
	t.Cleanup(app.Close)

	startHerald(t, bin,
		"--addr", heraldAddr,
		"--proxy-connect", app.URL+"/herald/connect",
		"--proxy-rpc", app.URL+"/herald/rpc",
		"--webhook", app.URL+"/herald/events",
		"--webhook-secret", testWebhookSecret,
		"--outbox", db.URL,
	)

	// The browser's page and herald.js come from the app's one origin.
	if body := get(t, app.URL+"/herald.js"); !strings.Contains(body, "class Herald") {
		t.Fatalf("/herald.js through the app is not herald.js: %.80q", body)
	}

	// Without a session the connect proxy refuses, and the client is
	// told why.
	var herr *client.Error
	if _, err := client.Dial(ctx, app.URL, nil); !errors.As(err, &herr) || herr.Code != "unauthorized" {
		t.Fatalf("dial without a session: %v, want unauthorized", err)
	}

	cookie := login(t, app.URL, "alice")
	subs := make(chan *client.Subscription, 1)
	c, err := client.Dial(ctx, app.URL, &client.Options{
		// A browser sends the cookie and its page's Origin; herald allows
		// the origin because the app's proxy keeps the Host it was asked for.
		Header:            http.Header{"Cookie": {cookie}, "Origin": {app.URL}},
		OnServerSubscribe: func(s *client.Subscription) { subs <- s },
	})
	if err != nil {
		t.Fatalf("dial with alice's session: %v", err)
	}
	defer c.Close()
	if c.User() != "alice" {
		t.Fatalf("connected as %q, want alice", c.User())
	}
	var inbox *client.Subscription
	select {
	case inbox = <-subs:
	case <-ctx.Done():
		t.Fatal("no server-side subscription from the connect proxy")
	}
	if inbox.Channel() != "inbox:alice" {
		t.Fatalf("server-side subscription to %q, want inbox:alice", inbox.Channel())
	}

	// rpc goes to the app, which answers for the session's user.
	data, err := c.RPC(ctx, "whoami", nil)
	if err != nil || string(data) != `{"user":"alice"}` {
		t.Fatalf("rpc whoami: %s, %v", data, err)
	}
	if _, err := c.RPC(ctx, "nope", nil); !errors.As(err, &herr) || herr.Code != "bad_request" {
		t.Fatalf("rpc of an unknown method: %v, want bad_request", err)
	}

	// A note committed with its outbox row reaches alice's inbox.
	post(t, app.URL+"/notes", cookie, url.Values{"text": {"remember the milk"}}, http.StatusCreated)
	m, err := inbox.Next(ctx)
	if err != nil {
		t.Fatalf("the note did not arrive: %v", err)
	}
	var n note
	if err := json.Unmarshal(m.Data, &n); err != nil || n.Text != "remember the milk" || n.From != "alice" || n.To != "alice" || m.Event != "note" {
		t.Fatalf("got %s (event %q), want alice's note to herself (event note): %v", m.Data, m.Event, err)
	}
	db.WaitEmpty() // herald deleted the row it published
	// A note to someone else is in their inbox, not in alice's.
	post(t, app.URL+"/notes", cookie, url.Values{"to": {"bob"}, "text": {"hi bob"}}, http.StatusCreated)
	if got := db.Int(`SELECT count(*) FROM notes WHERE recipient = 'bob'`); got != 1 {
		t.Fatalf("%d notes to bob, want 1", got)
	}
	data, err = c.RPC(ctx, "notes", nil)
	var mine []note
	if err != nil || json.Unmarshal(data, &mine) != nil || len(mine) != 1 || mine[0].ID != n.ID {
		t.Fatalf("rpc notes: %s, %v; want alice's one note %d", data, err, n.ID)
	}

	// The connect webhook put alice online.
	waitOnline(t, app.URL, []string{"alice"})

	// What reaches the app's /herald/ routes from elsewhere is refused:
	// an rpc naming a user without that user's cookie, an unsigned event.
	var refused struct{ Error struct{ Code string } }
	body := post(t, app.URL+"/herald/rpc", "", `{"client":"x","user":"alice","method":"whoami"}`, http.StatusOK)
	if err := json.Unmarshal([]byte(body), &refused); err != nil || refused.Error.Code != "unauthorized" {
		t.Fatalf("forged rpc: %s, want an unauthorized error", body)
	}
	post(t, app.URL+"/herald/events", "", `{"id":"x","type":"connect","client":"x","user":"mallory"}`, http.StatusUnauthorized)

	// The disconnect webhook takes her off again.
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	waitOnline(t, app.URL, []string{})
}

// buildHerald builds herald from this repository into a temporary
// directory and returns the binary's path.
func buildHerald(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "herald")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/herald")
	cmd.Dir = filepath.Join("..", "..") // examples/backend is two levels down
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build herald: %v\n%s", err, out)
	}
	return bin
}

// freeAddr returns a loopback address that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startHerald runs `herald serve args…` until the test ends, waits until
// it answers /healthz, and shows its log if the test failed.
func startHerald(t *testing.T, bin string, args ...string) {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), "herald.log")
	logs, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, append([]string{"serve", "--log-format", "text"}, args...)...)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt) // a graceful shutdown: it sends its last webhooks
		select {
		case <-done:
		case <-time.After(heraldtest.Timeout):
			_ = cmd.Process.Kill()
			<-done
			t.Errorf("herald did not stop within %v", heraldtest.Timeout)
		}
		_ = logs.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("herald's log:\n%s", b)
		}
	})
	var addr string
	for i, a := range args {
		if a == "--addr" {
			addr = args[i+1]
		}
	}
	heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
		select {
		case err := <-done:
			t.Fatalf("herald exited: %v", err)
		default:
		}
		resp, err := http.Get("http://" + addr + "/healthz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/healthz: %s", resp.Status)
		}
		return nil
	})
}

// login logs user in and returns the Cookie header that carries the
// session.
func login(t *testing.T, base, user string) string {
	t.Helper()
	resp, err := http.PostForm(base+"/login", url.Values{"user": {user}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	for _, c := range resp.Cookies() {
		if c.Name == sessionCookie {
			return c.Name + "=" + c.Value
		}
	}
	t.Fatalf("POST /login: %s and no %s cookie", resp.Status, sessionCookie)
	return ""
}

// request sends method u with cookie and body (url.Values as a form, a
// string as JSON, nil for none), checks the status and returns the
// response body.
func request(t *testing.T, method, u, cookie string, body any, want int) string {
	t.Helper()
	var r io.Reader
	ctype := "application/json"
	switch b := body.(type) {
	case url.Values:
		r, ctype = strings.NewReader(b.Encode()), "application/x-www-form-urlencoded"
	case string:
		r = strings.NewReader(b)
	}
	req, err := http.NewRequest(method, u, r)
	if err != nil {
		t.Fatal(err)
	}
	if r != nil {
		req.Header.Set("Content-Type", ctype)
	}
	if cookie != "" {
		req.Header.Set("Cookie", cookie)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("%s %s: %s %s, want %d", method, u, resp.Status, b, want)
	}
	return string(b)
}

// post is request with POST.
func post(t *testing.T, u, cookie string, body any, want int) string {
	t.Helper()
	return request(t, http.MethodPost, u, cookie, body, want)
}

// get returns the body of GET u, which must answer 200.
func get(t *testing.T, u string) string {
	t.Helper()
	return request(t, http.MethodGet, u, "", nil, http.StatusOK)
}

// waitOnline waits until GET /online lists exactly users.
func waitOnline(t *testing.T, base string, users []string) {
	t.Helper()
	heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
		var got struct{ Users []string }
		if err := json.Unmarshal([]byte(get(t, base+"/online")), &got); err != nil {
			return err
		}
		if !slices.Equal(got.Users, users) {
			return fmt.Errorf("online: %q, want %q", got.Users, users)
		}
		return nil
	})
}
