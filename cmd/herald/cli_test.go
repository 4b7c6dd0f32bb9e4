package main

import (
	"bytes"
	"context"
	"io"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/memory"
)

// Booleans are booleans: bare, with =true/=false, from the environment and
// from the file; a bare one does not swallow the flag after it.
func TestBooleanFlags(t *testing.T) {
	t.Parallel()
	file := writeFile(t, "allow-anonymous: true\n")
	cases := []struct {
		name string
		args []string
		env  []string
		want bool
	}{
		{"bare", []string{"--token-secret", "s", "--allow-anonymous", "--addr", "127.0.0.1:7"}, nil, true},
		{"=false", []string{"--allow-anonymous=false", "--addr", "127.0.0.1:7"}, nil, false},
		{"=true", []string{"--allow-anonymous=true", "--addr", "127.0.0.1:7"}, nil, true},
		{"environment", []string{"--addr", "127.0.0.1:7"}, []string{"HERALD_ALLOW_ANONYMOUS=true"}, true},
		{"file", []string{"--config", file, "--addr", "127.0.0.1:7"}, nil, true},
		{"flag over file", []string{"--config", file, "--allow-anonymous=false", "--addr", "127.0.0.1:7"}, nil, false},
		{"unset", []string{"--addr", "127.0.0.1:7"}, nil, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, err := loadSettings(tc.args, tc.env, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if s.config.AllowAnonymous != tc.want || s.addr != "127.0.0.1:7" {
				t.Fatalf("allow-anonymous %v, addr %q; want %v and the --addr after it", s.config.AllowAnonymous, s.addr, tc.want)
			}
		})
	}
}

// A bad number or duration is refused when it is parsed, naming the flag
// (or the variable, or the file's key) and what was expected.
func TestValuesCheckedAtParseTime(t *testing.T) {
	t.Parallel()
	cases := []struct {
		args []string
		env  []string
		want []string
	}{
		{args: []string{"--history-ttl", "soon"}, want: []string{"--history-ttl", "want a duration", `"soon"`}},
		{args: []string{"--history-ttl=-1s"}, want: []string{"--history-ttl", "want a duration"}},
		{args: []string{"--queue-bytes", "1.5"}, want: []string{"--queue-bytes", "want a whole number"}},
		{args: []string{"--publish-rate", "fast"}, want: []string{"--publish-rate", "want a number per second"}},
		{args: []string{"--log-level", "loud"}, want: []string{"--log-level", "loud"}},
		{env: []string{"HERALD_WRITE_TIMEOUT=10"}, want: []string{"HERALD_WRITE_TIMEOUT", "want a duration"}},
		{args: []string{"--allow-anonymus"}, want: []string{`did you mean "--allow-anonymous"`}},
		{args: []string{"--histroy-size", "5"}, want: []string{`did you mean "--history-size"`}},
	}
	for _, tc := range cases {
		_, err := loadSettings(tc.args, tc.env, io.Discard)
		if err == nil {
			t.Errorf("%v %v: no error", tc.args, tc.env)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%v %v: error %q does not say %q", tc.args, tc.env, err, w)
			}
		}
	}
}

// herald --help and herald help list the commands, one line each, and
// not serve's flags; herald COMMAND --help shows the command's flags, in
// groups, with their defaults and environment variables.
func TestHelp(t *testing.T) {
	t.Parallel()
	commands := []string{"serve", "pub", "sub", "disconnect", "subscribe", "unsubscribe", "broadcast", "connections", "token", "config", "bench", "version", "help"}
	for _, args := range [][]string{{"--help"}, {"help"}, {"-h"}} {
		var out bytes.Buffer
		if err := run(context.Background(), args, nil, &out, io.Discard); err != nil {
			t.Fatalf("herald %v: %v", args, err)
		}
		text := out.String()
		for _, c := range commands {
			if !regexp.MustCompile(`(?m)^  ` + c + `\b.*\s{2,}\S`).MatchString(text) {
				t.Errorf("herald %v does not list %q with its summary on one line:\n%s", args, c, text)
			}
		}
		if strings.Contains(text, "--history-size") {
			t.Errorf("herald %v shows serve's flags:\n%s", args, text)
		}
	}

	for _, args := range [][]string{{"serve", "--help"}, {"help", "serve"}} {
		var out bytes.Buffer
		if err := run(context.Background(), args, nil, &out, io.Discard); err != nil {
			t.Fatalf("herald %v: %v", args, err)
		}
		text := out.String()
		for _, want := range []string{
			"Server:", "Limits:", "Tokens:", "Brokers and history:", "TLS:", "Observability:",
			"--history-size=100", "--history-ttl=10m", "--addr=\":8080\"", "--queue-bytes=1048576",
			"$HERALD_HISTORY_SIZE", "--allow-anonymous ",
		} {
			if !strings.Contains(text, want) {
				t.Errorf("herald %v does not show %q:\n%s", args, want, text)
			}
		}
	}

	// A command with required arguments still shows its help.
	var out bytes.Buffer
	if err := run(context.Background(), []string{"pub", "--help"}, nil, &out, io.Discard); err != nil || !strings.Contains(out.String(), "<channel> <data>") {
		t.Fatalf("herald pub --help: %v\n%s", err, out.String())
	}
}

// A mistyped command gets the nearest one suggested, not serve's usage.
func TestUnknownCommand(t *testing.T) {
	t.Parallel()
	for args, want := range map[string]string{
		"subb x":  `unknown command "subb", did you mean "sub"?`,
		"cofnig":  `unknown command "cofnig", did you mean "config"?`,
		"publish": `unknown command "publish"`,
	} {
		err := run(context.Background(), strings.Fields(args), nil, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("herald %s: error %v, want %q", args, err, want)
		}
	}
}

func TestVersionFlagAndCommand(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"version"}, {"--version"}} {
		var out bytes.Buffer
		if err := run(context.Background(), args, nil, &out, io.Discard); err != nil {
			t.Fatalf("herald %v: %v", args, err)
		}
		if !regexp.MustCompile(`^herald \S+\n$`).MatchString(out.String()) {
			t.Fatalf("herald %v printed %q", args, out.String())
		}
	}
}

// Every default serve shows is the one herald.Config runs with.
func TestFlagDefaultsAreTheLibrarys(t *testing.T) {
	t.Parallel()
	s, err := loadSettings(nil, nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	c := s.config
	if c.HistorySize != 100 || c.HistoryTTL != 10*time.Minute || c.PingInterval != 25*time.Second ||
		c.PongTimeout != 10*time.Second || c.SSERetry != 2*time.Second || c.CommandBurst != 200 {
		t.Fatalf("serve's defaults differ from herald.DefaultConfig: %+v", c)
	}
}

// herald help bench SCENARIO shows the scenario's flags, as herald bench
// SCENARIO -h does; herald help with a mistyped command says so, with the
// nearest one.
func TestHelpOfBenchScenarioAndUnknownCommand(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	if err := run(context.Background(), []string{"help", "bench", "fanout"}, nil, &out, io.Discard); err != nil {
		t.Fatalf("herald help bench fanout: %v", err)
	}
	if !strings.Contains(out.String(), "-channel") {
		t.Fatalf("herald help bench fanout printed %q, want the scenario's flags", out.String())
	}
	err := run(context.Background(), []string{"help", "cofnig"}, nil, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), `unknown command "cofnig", did you mean "config"?`) {
		t.Fatalf("herald help cofnig: %v", err)
	}
}

// --history-size 0 keeps no history: herald.Config's zero would be its
// default of 100, which is not what the flag says.
func TestHistorySizeZeroKeepsNone(t *testing.T) {
	t.Parallel()
	s, err := loadSettings([]string{"--history-size", "0"}, nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	b := memory.New()
	cfg := s.config
	cfg.Broker = b
	srv, err := herald.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown(context.Background())
	if _, err := srv.Publish(context.Background(), "news", "one"); err != nil {
		t.Fatal(err)
	}
	res, err := b.History(context.Background(), "news", broker.HistoryQuery{Limit: -1})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Messages) != 0 {
		t.Fatalf("--history-size 0 kept %d messages, want none", len(res.Messages))
	}
}
