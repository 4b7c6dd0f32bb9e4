package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/heraldtest"
	"github.com/heraldhq/herald/internal/auth"
)

const ordersSecret = "orders secret"

// ordersServer starts a herald server whose clients are users with a
// token, or anonymous; it returns the server and its URL.
func ordersServer(t *testing.T, cfg herald.Config) (*herald.Server, string) {
	t.Helper()
	cfg.TokenSecret, cfg.AllowAnonymous = ordersSecret, true
	srv, hs := heraldtest.NewServer(t, cfg)
	return srv, hs.URL
}

// dialUser connects a JSON client to the server at url as user ("" for
// anonymous).
func dialUser(t *testing.T, url, user string) *heraldtest.Client {
	t.Helper()
	if user == "" {
		return heraldtest.Dial(t, heraldtest.WSURL(url, "/ws"))
	}
	tok, err := auth.MintHS256([]byte(ordersSecret), auth.Spec{User: user}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return heraldtest.DialHeader(t, heraldtest.WSURL(url, "/ws"), http.Header{"Authorization": {"Bearer " + tok}})
}

// runCLI runs `herald ARGS` with env and stdin and returns what it
// printed.
func runCLI(t *testing.T, env []string, stdin string, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := runWithStdin(context.Background(), args, env, strings.NewReader(stdin), &out, io.Discard)
	return out.String(), err
}

// mustHerald is runCLI that fails the test on an error.
func mustHerald(t *testing.T, args ...string) string {
	t.Helper()
	out, err := runCLI(t, nil, "", args...)
	if err != nil {
		t.Fatalf("herald %s: %v", strings.Join(args, " "), err)
	}
	return out
}

func clientID(c *heraldtest.Client) string { s, _ := c.Welcome["client"].(string); return s }

func TestDisconnectCommand(t *testing.T) {
	t.Parallel()
	_, url := ordersServer(t, herald.Config{})
	ann1, ann2, bob := dialUser(t, url, "ann"), dialUser(t, url, "ann"), dialUser(t, url, "bob")

	if out := mustHerald(t, "disconnect", "--url", url, "--user", "ann", "--reason", "account closed"); out != "" {
		t.Errorf("herald disconnect printed %q, want nothing", out)
	}
	for _, c := range []*heraldtest.Client{ann1, ann2} {
		if code, reason := c.ClosedWith(); code != 4000 || reason != "account closed" {
			t.Errorf("ann's connection closed with %d %q, want 4000 \"account closed\"", code, reason)
		}
	}
	bob.MustOK(map[string]any{"op": "ping"})

	mustHerald(t, "disconnect", "--url", url, "--client", clientID(bob))
	if code, reason := bob.ClosedWith(); code != 4000 || reason != "disconnected" {
		t.Errorf("bob's connection closed with %d %q, want 4000 and the default reason", code, reason)
	}

	// --user "" selects the anonymous connections.
	anon := dialUser(t, url, "")
	mustHerald(t, "disconnect", "--url", url, "--user", "")
	if code := anon.Closed(); code != 4000 {
		t.Errorf("the anonymous connection closed with %d, want 4000", code)
	}
}

// Exactly one of --user and --client; the API's errors are printed as
// herald pub prints them.
func TestOrderErrors(t *testing.T) {
	t.Parallel()
	_, url := ordersServer(t, herald.Config{})
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"disconnect"}, "missing flags: --user=USER or --client=CLIENT"},
		{[]string{"disconnect", "--user", "a", "--client", "b"}, "--user and --client can't be used together"},
		{[]string{"subscribe", "--user", "a"}, `expected "<channel>"`},
		{[]string{"subscribe", "room"}, "missing flags: --user=USER or --client=CLIENT"},
		{[]string{"unsubscribe", "--client", "a", "--user", "b", "room"}, "can't be used together"},
		{[]string{"disconnect", "--client", ""}, "bad_request: client is empty (HTTP 400)"},
		{[]string{"subscribe", "--user", "a", "herald-admin:x"}, "forbidden: "},
		{[]string{"subscribe", "--user", "a", "--since", "soon", "room"}, "bad_request: bad since"},
		{[]string{"unsubscribe", "--user", "a", "bad channel"}, "bad_request: bad channel name"},
		{[]string{"broadcast", "a,a", "1"}, "bad_request: channel a is listed twice (HTTP 400)"},
		{[]string{"broadcast", "a"}, `expected "<data>"`},
	}
	for _, tc := range cases {
		_, err := runCLI(t, nil, "", append(tc.args, "--url", url)...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("herald %s: error %v, want %q", strings.Join(tc.args, " "), err, tc.want)
		}
	}
}

func TestSubscribeAndUnsubscribeCommands(t *testing.T) {
	t.Parallel()
	srv, url := ordersServer(t, herald.Config{})
	ctx := context.Background()
	first, err := srv.Publish(ctx, "inbox", "one")
	if err != nil {
		t.Fatal(err)
	}
	second, err := srv.Publish(ctx, "inbox", "two")
	if err != nil {
		t.Fatal(err)
	}
	ann := dialUser(t, url, "ann")

	if out := mustHerald(t, "subscribe", "--url", url, "--user", "ann", "--since", first, "inbox"); out != "" {
		t.Errorf("herald subscribe printed %q, want nothing", out)
	}
	if m := ann.Next(); m["op"] != "subscribed" || m["channel"] != "inbox" || m["recovered"] != true {
		t.Fatalf("after herald subscribe: %v, want a subscribed push of inbox, recovered", m)
	}
	if m := ann.Next(); m["op"] != "message" || m["offset"] != second || m["data"] != "two" {
		t.Fatalf("after subscribed: %v, want the message after --since", m)
	}

	mustHerald(t, "unsubscribe", "--url", url, "--client", clientID(ann), "inbox")
	if m := ann.Next(); m["op"] != "unsubscribed" || m["channel"] != "inbox" {
		t.Fatalf("after herald unsubscribe: %v, want an unsubscribed push of inbox", m)
	}
}

func TestBroadcastCommand(t *testing.T) {
	t.Parallel()
	_, url := ordersServer(t, herald.Config{})
	out := mustHerald(t, "broadcast", "--url", url, "--event", "note", "news:b,news:a", `{"x": 1}`)
	var printed []string
	for _, ch := range []string{"news:a", "news:b"} {
		msgs := apiHistory(t, url, ch, "")
		if len(msgs) != 1 {
			t.Fatalf("%s holds %d messages, want 1", ch, len(msgs))
		}
		m := msgs[0]
		if b, _ := json.Marshal(m["data"]); string(b) != `{"x":1}` || m["event"] != "note" {
			t.Errorf("%s: %v, want data {\"x\":1} and event note", ch, m)
		}
		printed = append(printed, ch+" "+m["offset"].(string)+"\n")
	}
	if want := strings.Join(printed, ""); out != want {
		t.Errorf("herald broadcast printed %q, want %q: one channel a line, sorted", out, want)
	}

	// DATA as herald pub takes it: - reads stdin, text that is not JSON
	// is a string.
	if _, err := runCLI(t, nil, "hello there\n", "broadcast", "--url", url, "plain", "-"); err != nil {
		t.Fatal(err)
	}
	if msgs := apiHistory(t, url, "plain", ""); len(msgs) != 1 || msgs[0]["data"] != "hello there" {
		t.Fatalf("plain holds %v, want the string from stdin", msgs)
	}
}

func TestConnectionsCommand(t *testing.T) {
	t.Parallel()
	_, url := ordersServer(t, herald.Config{})
	ann, bob := dialUser(t, url, "ann"), dialUser(t, url, "bob")
	ann.MustOK(map[string]any{"op": "subscribe", "channel": "room"})
	ann.MustOK(map[string]any{"op": "subscribe", "channel": "hall"})

	lines := strings.Split(strings.TrimSuffix(mustHerald(t, "connections", "--url", url, "--user", "ann"), "\n"), "\n")
	if len(lines) != 2 || !slices.Equal(strings.Fields(lines[0]), []string{"CLIENT", "USER", "NODE", "TRANSPORT", "CHANNELS"}) {
		t.Fatalf("herald connections --user ann printed %q, want a header and one line", lines)
	}
	row := strings.Fields(lines[1])
	if len(row) != 5 || row[0] != clientID(ann) || row[1] != "ann" || row[2] == "-" || row[3] != "websocket" {
		t.Fatalf("ann's row %q, want client, user, node, transport websocket, channels", lines[1])
	}
	if channels := strings.Split(row[4], ","); !slices.Equal(slices.Sorted(slices.Values(channels)), []string{"hall", "room"}) {
		t.Fatalf("ann's channels %q, want hall and room", row[4])
	}

	all := mustHerald(t, "connections", "--url", url)
	if n := strings.Count(all, "\n"); n != 3 || !strings.Contains(all, clientID(bob)) {
		t.Fatalf("herald connections printed %q, want a header, ann and bob", all)
	}

	// --json prints the API's answer.
	var listed struct {
		Connections []struct {
			Client, User, Node, Transport string
			Channels                      []string
		}
	}
	out := mustHerald(t, "connections", "--url", url, "--json", "--user", "bob")
	if err := json.Unmarshal([]byte(out), &listed); err != nil || len(listed.Connections) != 1 {
		t.Fatalf("herald connections --json printed %q (%v), want bob's one connection", out, err)
	}
	if c := listed.Connections[0]; c.Client != clientID(bob) || c.User != "bob" || c.Transport != "websocket" || len(c.Channels) != 0 {
		t.Fatalf("bob's connection %+v", c)
	}
}

// The orders take --url and --api-key from HERALD_URL and HERALD_API_KEY.
func TestOrdersAPIKey(t *testing.T) {
	t.Parallel()
	_, url := ordersServer(t, herald.Config{APIKey: "k3y"})
	c := dialUser(t, url, "ann")
	_, err := runCLI(t, []string{"HERALD_URL=" + url}, "", "disconnect", "--user", "ann")
	if err == nil || !strings.Contains(err.Error(), "unauthorized") || !strings.Contains(err.Error(), "(HTTP 401)") {
		t.Fatalf("without a key: %v, want unauthorized (HTTP 401)", err)
	}
	if _, err := runCLI(t, []string{"HERALD_URL=" + url, "HERALD_API_KEY=k3y"}, "", "disconnect", "--user", "ann"); err != nil {
		t.Fatalf("URL and key from the environment: %v", err)
	}
	if code := c.Closed(); code != 4000 {
		t.Fatalf("ann's connection closed with %d, want 4000", code)
	}
	// HERALD_USER is not --user: which connections to act on is never
	// taken from the environment.
	_, err = runCLI(t, []string{"HERALD_URL=" + url, "HERALD_API_KEY=k3y", "HERALD_USER=ann"}, "", "disconnect")
	if err == nil || !strings.Contains(err.Error(), "missing flags") {
		t.Fatalf("HERALD_USER: %v, want missing flags", err)
	}
}
