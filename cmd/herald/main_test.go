package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/heraldtest"
)

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "herald.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSettingsPrecedence(t *testing.T) {
	t.Parallel()
	file := writeFile(t, "history-size: 7\nhistory-ttl: 1m\nmax-message-size: 1000\naddr: ':1'\n")
	env := []string{"HERALD_HISTORY_TTL=2m", "HERALD_MAX_MESSAGE_SIZE=2000", "HERALD_CONFIG=" + file}
	s, err := loadSettings([]string{"--max-message-size", "3000"}, env, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if s.config.HistorySize != 7 { // file over defaults
		t.Errorf("history-size = %d, want 7 from the file", s.config.HistorySize)
	}
	if s.config.HistoryTTL != 2*time.Minute { // env over file
		t.Errorf("history-ttl = %v, want 2m from the environment", s.config.HistoryTTL)
	}
	if s.config.MaxMessageSize != 3000 { // flag over env
		t.Errorf("max-message-size = %d, want 3000 from the flag", s.config.MaxMessageSize)
	}
	if s.addr != ":1" {
		t.Errorf("addr = %q, want :1 from the file", s.addr)
	}
}

func TestSettingsDefaults(t *testing.T) {
	t.Parallel()
	s, err := loadSettings(nil, nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if s.addr != ":8080" || s.broker != "memory" || s.config.HistorySize != 100 ||
		s.config.HistoryTTL != 10*time.Minute || s.config.MaxMessageSize != 65536 {
		t.Fatalf("defaults: %+v", s)
	}
	if !s.config.Namespaces["chat"].JoinLeave {
		t.Fatal("the chat namespace has no join/leave by default")
	}
}

func TestSettingsErrorsNameTheKey(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		args []string
		env  []string
		file string
		want string
	}{
		{name: "unknown file key", file: "histroy-size: 5\n", want: `unknown key "histroy-size"`},
		{name: "unknown namespace key", file: "namespaces:\n  chat:\n    joinleave: true\n", want: `namespaces.chat.joinleave`},
		{name: "bad file value", file: "history-ttl: soon\n", want: "history-ttl"},
		{name: "bad env value", env: []string{"HERALD_HISTORY_SIZE=many"}, want: "HERALD_HISTORY_SIZE"},
		{name: "bad flag value", args: []string{"--max-message-size", "-5"}, want: "--max-message-size"},
		{name: "unknown broker", args: []string{"--broker", "kafka://x"}, want: "--broker"},
		{name: "unknown flag", args: []string{"--nope"}, want: "nope"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			args := tc.args
			if tc.file != "" {
				args = append([]string{"--config", writeFile(t, tc.file)}, args...)
			}
			var stderr bytes.Buffer
			_, err := loadSettings(args, tc.env, &stderr)
			if err == nil {
				t.Fatal("no error")
			}
			if msg := err.Error() + stderr.String(); !strings.Contains(msg, tc.want) {
				t.Fatalf("error %q does not name %q", msg, tc.want)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	if err := run(context.Background(), []string{"version"}, nil, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "herald ") {
		t.Fatalf("version printed %q", out.String())
	}
}

func TestServeRunsAndStopsOnCancel(t *testing.T) {
	addr, stop := serveInBackground(t)
	for _, path := range []string{"/", "/herald.js"} {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || len(body) == 0 {
			t.Fatalf("GET %s: %d, %d bytes", path, resp.StatusCode, len(body))
		}
	}
	if err := stop(); err != nil {
		t.Fatalf("serve returned %v", err)
	}
}

func TestBrokerSetting(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{"memory", "redis://127.0.0.1:6379/0", "rediss://cache.example:6380/1", "nats://127.0.0.1:4222"} {
		if _, err := loadSettings([]string{"--broker", ok}, nil, io.Discard); err != nil {
			t.Errorf("--broker %s: %v", ok, err)
		}
	}
}

// waitHealthy waits until the server at addr answers /healthz with 200.
func waitHealthy(t *testing.T, addr string) {
	t.Helper()
	heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err != nil {
			return fmt.Errorf("GET /healthz: %w", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET /healthz: %s, want 200", resp.Status)
		}
		return nil
	})
}

// A password or token in a broker URL never reaches a log line, an error
// or herald config: whatever the broker and however the URL is wrong.
func TestBrokerCredentialsMasked(t *testing.T) {
	t.Parallel()
	const secret = "hunter2"
	urls := []string{
		"redis://user:" + secret + "@127.0.0.1:1/0",
		"redis://:" + secret + "@127.0.0.1:1/0",
		"rediss://default:" + secret + "@127.0.0.1:1/0?dial_timeout=1s",
		"redis://127.0.0.1:1/0?password=" + secret,
		"redis://user:" + secret + "%zz@127.0.0.1:1/0", // not a valid URL
		"redis://user:" + secret + "@127.0.0.1:1/99x",  // valid URL, bad database
		"nats://user:" + secret + "@127.0.0.1:1",
		"nats://" + secret + "@127.0.0.1:1", // a NATS token
		"nats://127.0.0.1:1?token=" + secret,
		"http://user:" + secret + "@127.0.0.1:1", // unsupported
	}
	for _, u := range urls {
		var out, logs bytes.Buffer
		err := run(context.Background(), []string{"config", "--broker", u}, nil, &out, &logs)
		for _, line := range strings.Split(out.String(), "\n") {
			if strings.Contains(line, secret) {
				t.Errorf("herald config --broker %s printed %q", u, line)
			}
		}
		if err != nil && strings.Contains(err.Error(), secret) {
			t.Errorf("herald config --broker %s: error %v", u, err)
		}
		logs.Reset()
		err = run(context.Background(), []string{"serve", "--addr", "127.0.0.1:0", "--broker", u, "--log-format", "json"}, nil, io.Discard, &logs)
		if err == nil {
			t.Errorf("serve --broker %s: started", u)
			continue
		}
		if strings.Contains(err.Error(), secret) || strings.Contains(logs.String(), secret) {
			t.Errorf("serve --broker %s: error %q, logs %q show the secret", u, err, logs.String())
		}
		if !strings.Contains(err.Error(), "127.0.0.1:1") {
			t.Errorf("serve --broker %s: error %q does not say which server", u, err)
		}
	}
}
