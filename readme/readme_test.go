//go:build unix

// Package readme_test runs README.md: every command and snippet it shows
// runs, exactly as written, and does what the README says it does.
//
// TestREADME builds herald once, puts it first on PATH and runs the sh
// blocks line by line with bash from the repository root, in the README's
// order. The quick start's `go run ./cmd/herald serve` listens on :8080 as
// the README says, so the lines that name http://localhost:8080, or use
// the default --url, reach it. The yaml block is loaded with `herald
// config`; the go blocks are compiled in a generated main package, and the
// library one run; the html and js blocks run in headless Chromium against
// the same server (e2e/readme.test.mjs).
//
// A block or command line of the README that the test neither runs nor
// exempts fails it, and so does a check for a line the README no longer
// has. The package needs a Unix: bash, and process groups to stop what the
// lines start.
package readme_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald/client"
)

// secret is $SECRET, which the README's sh lines find in their
// environment: the servers' token secret; $TOKEN is signed with it.
const secret = "readme-token-secret"

// readmeURL is where the README's quick start serves.
const readmeURL = "http://localhost:8080"

// lineTimeout bounds a line that must exit.
const lineTimeout = 30 * time.Second

// exempt lists the README command lines the test does not run, and why.
// It is the only such list.
func exempt() map[string]string {
	return map[string]string{
		"make test": "the whole test suite, this test included: run here, it would run itself",
	}
}

// knownBroken lists the README command lines that fail today, and why. The
// test logs each one's failure and fails when one passes, so that a fix
// takes its line out of this list. Add a line here only with the reason and
// a fix on its way.
func knownBroken() map[string]string {
	return map[string]string{}
}

// lineCheck says how one README command line runs and what shows that it
// did what the README says.
type lineCheck struct {
	// env is added to the line's environment: the harness's choice (a
	// port, a secret), never a change of the line's text.
	env func(h *harness) []string
	// background lines run until the test ends; the others must exit 0
	// within lineTimeout, and print what the README shows below them, in
	// shape.
	background bool
	// within bounds how long a background line may take to be ready.
	within time.Duration
	// before, when set, runs ahead of the line: it makes what the line
	// acts on.
	before func(h *harness) error
	// ready says whether the line did what it should: polled until it
	// returns nil for a background line, called once after exit with the
	// line's stdout for the others. Nil: exiting 0 is enough.
	ready func(h *harness, stdout string) error
}

// lineChecks has a check for every README command line the test runs,
// by command.key.
func lineChecks() map[string]lineCheck {
	var ann *client.Subscription // a connection of ann's, for herald disconnect to close
	return map[string]lineCheck{
		// Quick start. The server gets the token secret (so that $TOKEN is
		// a token it takes) and lets anonymous clients in, as the lines
		// below without a token need.
		"go run ./cmd/herald serve": {
			env: func(*harness) []string {
				return []string{"HERALD_TOKEN_SECRET=" + secret, "HERALD_ALLOW_ANONYMOUS=true"}
			},
			background: true,
			within:     3 * time.Minute, // go run builds herald first
			ready:      func(h *harness, _ string) error { return h.quickStartReady() },
		},

		// From a back end: the server API.
		`curl -X POST http://localhost:8080/api/publish -H "Authorization: Bearer $HERALD_API_KEY" -d '{"channel":"news","data":{"title":"from the back end"},"event":"headline"}'`: {},
		`herald pub --event headline news '{"title":"from the back end"}'`: {
			ready: func(_ *harness, out string) error { return isOffset(out) },
		},

		// On the command line.
		"herald sub chat:lobby news": {
			background: true,
			within:     15 * time.Second,
			ready: func(h *harness, out string) error {
				// Ready once it prints a message published after it started.
				probe := fmt.Sprintf("probe-%d", h.probes.Add(1))
				if status, err := apiPublish(h.base, h.apiKey, "news", probe); err != nil || status != http.StatusOK {
					return fmt.Errorf("publish: %d %v", status, err)
				}
				if !strings.Contains(out, "news probe-") {
					return fmt.Errorf("no \"news probe-…\" line in its output %q", out)
				}
				return nil
			},
		},
		`herald pub --token "$TOKEN" chat:lobby 'hello'`: {
			ready: func(h *harness, out string) error {
				if err := isOffset(out); err != nil {
					return err
				}
				// herald sub, running since the line above, prints it.
				sub, ok := h.bg["herald sub chat:lobby news"]
				if !ok {
					return fmt.Errorf("herald sub chat:lobby news is not running")
				}
				return sub.until(10*time.Second, func() error {
					if !strings.Contains(sub.stdout.String(), "chat:lobby hello\n") {
						return fmt.Errorf("herald sub did not print %q", "chat:lobby hello")
					}
					return nil
				})
			},
		},
		"herald disconnect --user ann": {
			before: func(h *harness) error {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				c, err := client.Dial(ctx, h.base, &client.Options{Token: h.token}) // $TOKEN is ann's
				if err != nil {
					return fmt.Errorf("ann's client: %w", err)
				}
				h.t.Cleanup(func() { _ = c.Close() })
				ann, err = c.Subscribe(ctx, "chat:lobby")
				return err
			},
			ready: func(*harness, string) error {
				// Her client ends rather than reconnect.
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				for {
					_, err := ann.Next(ctx)
					if errors.Is(err, client.ErrKicked) {
						return nil
					}
					if err != nil {
						return fmt.Errorf("ann's subscription: %w, want client.ErrKicked", err)
					}
				}
			},
		},
		`herald token --token-secret "$SECRET" --user ann`: {
			ready: func(_ *harness, out string) error {
				return hasClaims(out, map[string]any{"sub": "ann"})
			},
		},

		// Tokens. The quick start's server holds :8080; this one gets
		// another port through the environment.
		`herald serve --token-secret "$SECRET" --allow-anonymous`: {
			env: func(h *harness) []string {
				return []string{"HERALD_ADDR=" + h.secondAddr}
			},
			background: true,
			within:     15 * time.Second,
			ready: func(h *harness, _ string) error {
				url := "http://" + h.secondAddr
				if err := healthy(url); err != nil {
					return err
				}
				// --allow-anonymous: a client without a token may subscribe.
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				c, err := client.Dial(ctx, url, nil)
				if err != nil {
					return fmt.Errorf("an anonymous client: %w", err)
				}
				defer c.Close()
				if _, err := c.Subscribe(ctx, "chat:lobby"); err != nil {
					return fmt.Errorf("an anonymous client's subscribe: %w", err)
				}
				return nil
			},
		},
		`herald token --token-secret "$SECRET" --user ann --sub 'chat:*' --pub 'chat:*' --ttl 1h`: {
			ready: func(_ *harness, out string) error {
				if err := hasClaims(out, map[string]any{
					"sub":      "ann",
					"channels": map[string]any{"subscribe": []any{"chat:*"}, "publish": []any{"chat:*"}},
				}); err != nil {
					return err
				}
				claims, _ := claimsOf(out)
				exp, _ := claims["exp"].(float64)
				if left := time.Until(time.Unix(int64(exp), 0)); left < 59*time.Minute || left > time.Hour+time.Second {
					return fmt.Errorf("the token expires in %v, want 1h (--ttl 1h)", left)
				}
				return nil
			},
		},
	}
}

// harness is what the README's lines share.
type harness struct {
	t          *testing.T          // TestREADME's: background lines stop when it ends
	base       string              // the quick start's server: readmeURL
	apiKey     string              // $HERALD_API_KEY, this run's own: the quick start's server requires it
	root       string              // the repository root
	bin        string              // the directory of the herald binary built for the test
	env        []string            // every line's environment
	token      string              // $TOKEN
	secondAddr string              // HERALD_ADDR of a second herald serve line
	bg         map[string]*process // background lines by key
	probes     atomic.Int64        // messages published to see herald sub ready
}

// TestREADME runs README.md's blocks in the README's order; see the
// package doc.
func TestREADME(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	bs, err := blocks(string(md))
	if err != nil {
		t.Fatalf("README.md: %v", err)
	}
	checks, exemptions, broken := lineChecks(), exempt(), knownBroken()
	if err := covered(bs, checks, exemptions, broken); err != nil {
		t.Fatal(err)
	}
	if ln, err := net.Listen("tcp", ":8080"); err != nil {
		t.Fatalf("port 8080 is taken: the README's quick start serves there, and its lines name http://localhost:8080; "+
			"stop what listens on :8080 and run the test again (%v)", err)
	} else {
		ln.Close()
	}

	h := &harness{t: t, base: readmeURL, apiKey: newAPIKey(t), root: root, bin: buildHerald(t, root), bg: map[string]*process{}, secondAddr: freeAddr(t)}
	h.env = append(withoutHerald(os.Environ()),
		"PATH="+h.bin+string(os.PathListSeparator)+os.Getenv("PATH"),
		"HERALD_API_KEY="+h.apiKey,
		"SECRET="+secret,
	)
	tok, err := exec.Command(filepath.Join(h.bin, "herald"), "token", "--token-secret", secret, "--user", "ann").Output()
	if err != nil {
		t.Fatalf("herald token, to make $TOKEN: %v", err)
	}
	h.token = strings.TrimSpace(string(tok))
	h.env = append(h.env, "TOKEN="+h.token)

	for _, b := range bs {
		switch b.lang {
		case "sh":
			for _, c := range commands(b) {
				key := c.key()
				if why, ok := exemptions[key]; ok {
					t.Logf("README.md:%d: not run: %s: %s", c.line, key, why)
					continue
				}
				ok := t.Run(key, func(t *testing.T) {
					err := h.run(t, c, checks[key])
					why, isBroken := broken[key]
					switch {
					case isBroken && err != nil:
						t.Logf("README.md:%d: known broken (%s); today: %v", c.line, why, err)
					case isBroken:
						t.Errorf("README.md:%d: %s passes now: take it out of knownBroken", c.line, key)
					case err != nil:
						t.Errorf("README.md:%d: %s\n%v", c.line, key, err)
					}
				})
				if !ok && key == "go run ./cmd/herald serve" {
					t.Fatal("the quick start's server did not start: the lines below need it")
				}
			}
		case "yaml":
			t.Run(fmt.Sprintf("yaml block at line %d", b.line), func(t *testing.T) { h.config(t, b) })
		case "go":
			t.Run(fmt.Sprintf("go block at line %d", b.line), func(t *testing.T) { h.goBlock(t, b) })
		}
	}
	// The html and js blocks run together, against the quick start's
	// server, once the lines above have run.
	t.Run("browser", func(t *testing.T) { h.browser(t) })
}

// covered fails unless every block of the README has a language the test
// runs, every command line of its sh blocks has a check or an exemption,
// and every check, exemption and known breakage names a line it has.
func covered(bs []block, checks map[string]lineCheck, exempt, broken map[string]string) error {
	var problems []string
	seen := map[string]bool{}
	for _, b := range bs {
		switch b.lang {
		case "sh":
			for _, c := range commands(b) {
				key := c.key()
				seen[key] = true
				_, checked := checks[key]
				_, exempted := exempt[key]
				switch {
				case checked && exempted:
					problems = append(problems, fmt.Sprintf("README.md:%d: %s is both checked and exempt", c.line, key))
				case !checked && !exempted:
					problems = append(problems, fmt.Sprintf("README.md:%d: %s has no check: add one to lineChecks (or, if it cannot run here, to exempt, saying why)", c.line, key))
				}
			}
		case "go":
			seen[firstLine(b)] = true
			if _, ok := goPrograms()[firstLine(b)]; !ok {
				problems = append(problems, fmt.Sprintf("README.md:%d: a go block with no program: add one to goPrograms", b.line))
			}
		case "yaml", "html", "js": // e2e/readme.test.mjs checks that it runs every html and js block
		default:
			problems = append(problems, fmt.Sprintf("README.md:%d: a %q block, which the test does not know how to run", b.line, b.lang))
		}
	}
	for _, m := range []map[string]string{exempt, broken, keysOf(checks), keysOf(goPrograms())} {
		for key := range m {
			if !seen[key] {
				problems = append(problems, fmt.Sprintf("the test names %s, which README.md no longer has", key))
			}
		}
	}
	if len(problems) > 0 {
		slices.Sort(problems)
		return fmt.Errorf("README.md and the test disagree:\n%s", strings.Join(problems, "\n"))
	}
	return nil
}

// keysOf returns m's keys as a set.
func keysOf[V any](m map[string]V) map[string]string {
	out := make(map[string]string, len(m))
	for k := range m {
		out[k] = ""
	}
	return out
}

// run runs one command line with bash from the repository root and checks
// it.
func (h *harness) run(t *testing.T, c command, chk lineCheck) error {
	env := h.env
	if chk.env != nil {
		env = append(slices.Clone(env), chk.env(h)...)
	}
	if chk.before != nil {
		if err := chk.before(h); err != nil {
			return fmt.Errorf("before the line: %w", err)
		}
	}
	owner := t
	if chk.background {
		owner = h.t // it runs on after this line's subtest
	}
	p := start(owner, h.root, env, "bash", "-c", c.text)
	if chk.background {
		h.bg[c.key()] = p
		return p.until(chk.within, func() error {
			if chk.ready == nil {
				return nil
			}
			return chk.ready(h, p.stdout.String())
		})
	}
	if err := p.wait(lineTimeout); err != nil {
		return err
	}
	out := p.stdout.String()
	if len(c.output) > 0 {
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		if len(lines) != len(c.output) {
			return fmt.Errorf("printed %q, want %d lines like %q", out, len(c.output), c.output)
		}
		for i, want := range c.output {
			if !shape(want).MatchString(lines[i]) {
				return fmt.Errorf("printed %q, want a line like %q", lines[i], want)
			}
		}
	}
	if chk.ready != nil {
		if err := chk.ready(h, out); err != nil {
			return fmt.Errorf("%w%s", err, p.output())
		}
	}
	return nil
}

// quickStartReady returns nil once the quick start's server answers at
// h.base and is the one this run started: it refuses a publish without
// the API key, even from loopback, and takes one with this run's key.
// Another herald on the port (another run of this test, a server left
// running) refuses the key: it must not pass for this run's, whose own
// then fails to listen and exits, with the reason in its output.
func (h *harness) quickStartReady() error {
	if err := healthy(h.base); err != nil {
		return err
	}
	if status, err := apiPublish(h.base, "", "news", "no key"); err != nil || status != http.StatusUnauthorized {
		return fmt.Errorf("a publish without the API key: %d %v, want 401", status, err)
	}
	if status, err := apiPublish(h.base, h.apiKey, "news", "this run's key"); err != nil || status != http.StatusOK {
		return fmt.Errorf("the herald at %s refuses this run's API key (%d %v): it is not the server this line started", h.base, status, err)
	}
	return nil
}

// newAPIKey returns an API key of this run's own.
func newAPIKey(t *testing.T) string {
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "readme-" + hex.EncodeToString(b)
}

// buildHerald builds ./cmd/herald into a temporary directory and returns
// the directory.
func buildHerald(t *testing.T, root string) string {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command("go", "build", "-o", filepath.Join(dir, "herald"), "./cmd/herald")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/herald: %v\n%s", err, out)
	}
	return dir
}

// withoutHerald drops herald's own variables (HERALD_…) from env, so that
// the environment the test runs in cannot change what a line does.
func withoutHerald(env []string) []string {
	return slices.DeleteFunc(slices.Clone(env), func(kv string) bool { return strings.HasPrefix(kv, "HERALD_") })
}

// freeAddr returns a loopback address with a port free right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// healthy returns nil once base/healthz answers 200.
func healthy(base string) error {
	resp, err := http.Get(base + "/healthz")
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("/healthz answers %s", resp.Status)
	}
	return nil
}

// apiPublish publishes data to channel through the server API at base
// with key ("": none) and returns the status it answers.
func apiPublish(base, key, channel string, data any) (int, error) {
	body, err := json.Marshal(map[string]any{"channel": channel, "data": data})
	if err != nil {
		return 0, err
	}
	req, err := http.NewRequest(http.MethodPost, base+"/api/publish", bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// isOffset returns nil if out is one line holding an offset.
func isOffset(out string) error {
	if !shape("1-a1b2c3d4\n").MatchString(out) {
		return fmt.Errorf("printed %q, want an offset line like 1-a1b2c3d4", out)
	}
	return nil
}

// hasClaims returns nil if out is one line holding a JWT whose payload has
// each of want's claims, equal (as JSON).
func hasClaims(out string, want map[string]any) error {
	claims, err := claimsOf(out)
	if err != nil {
		return err
	}
	for k, v := range want {
		got, _ := json.Marshal(claims[k])
		w, err := json.Marshal(v)
		if err != nil {
			return err
		}
		if string(got) != string(w) {
			return fmt.Errorf("the token's %s claim is %s, want %s", k, got, w)
		}
	}
	return nil
}

// claimsOf decodes the payload of the JWT that out holds on one line.
func claimsOf(out string) (map[string]any, error) {
	tok := strings.TrimSuffix(out, "\n")
	parts := strings.Split(tok, ".")
	if len(parts) != 3 || strings.ContainsAny(tok, "\n ") {
		return nil, fmt.Errorf("printed %q, want one token line (header.payload.signature)", out)
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, fmt.Errorf("the token's payload: %w", err)
	}
	var claims map[string]any
	if err := json.Unmarshal(b, &claims); err != nil {
		return nil, fmt.Errorf("the token's payload: %w", err)
	}
	return claims, nil
}
