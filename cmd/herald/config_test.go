package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestConfigCommand(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	env := []string{"HERALD_TOKEN_SECRET=very-secret", "HERALD_HISTORY_SIZE=7"}
	args := []string{"config", "--addr", "127.0.0.1:9", "--broker", "redis://user:pw@cache:6379/0"}
	if err := run(context.Background(), args, env, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	for _, want := range []string{
		"addr: 127.0.0.1:9 # --addr",
		"history-size: 7 # HERALD_HISTORY_SIZE",
		"token-secret: '****' # HERALD_TOKEN_SECRET",
		"history-ttl: 10m # default",
		"broker: redis://user:xxxxx@cache:6379/0 # --broker",
		"  chat:\n    presence: true\n    join-leave: true",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("herald config does not print %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "very-secret") || strings.Contains(text, ":pw@") {
		t.Fatalf("herald config printed a secret:\n%s", text)
	}

	// Without secrets, what it prints is a config file that gives the same
	// configuration back.
	out.Reset()
	if err := run(context.Background(), []string{"config", "--history-ttl", "3m", "--publish-rate", "0"}, nil, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "printed.yaml")
	if err := os.WriteFile(path, out.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := loadSettings([]string{"--config", path}, nil, io.Discard)
	if err != nil {
		t.Fatalf("the printed configuration does not load: %v\n%s", err, out.String())
	}
	if s.config.HistoryTTL.String() != "3m0s" || s.config.PublishRate != -1 || !s.config.Namespaces["chat"].JoinLeave {
		t.Fatalf("round trip lost settings: %+v", s.config)
	}
}

func TestLogFormat(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	newLogger(&b, "", slog.LevelInfo).Info("hello", "k", 1) // not a terminal: JSON
	var line map[string]any
	if err := json.Unmarshal(b.Bytes(), &line); err != nil || line["msg"] != "hello" {
		t.Fatalf("default format off a terminal: %q (%v), want JSON", b.String(), err)
	}
	b.Reset()
	newLogger(&b, "text", slog.LevelInfo).Info("hello")
	if !strings.Contains(b.String(), "msg=hello") {
		t.Fatalf("text format: %q", b.String())
	}
	b.Reset()
	newLogger(&b, "json", slog.LevelWarn).Info("quiet")
	if b.Len() != 0 {
		t.Fatalf("info logged at warn level: %q", b.String())
	}
	if _, err := loadSettings([]string{"--log-format", "xml"}, nil, io.Discard); err == nil || !strings.Contains(err.Error(), "--log-format") {
		t.Fatalf("--log-format xml: %v", err)
	}
}
