package main

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/auth"
)

func TestTokenCommand(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	args := []string{"token", "--user", "ann", "--sub", "chat:*,news", "--pub", "chat:a", "--ttl", "1m"}
	if err := run(context.Background(), args, []string{"HERALD_TOKEN_SECRET=s3cret"}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	v, err := auth.New(auth.Keys{Secret: []byte("s3cret")})
	if err != nil {
		t.Fatal(err)
	}
	id, err := v.Verify(strings.TrimSpace(out.String()))
	if err != nil {
		t.Fatalf("the printed token does not verify: %v", err)
	}
	if id.User != "ann" || !id.CanSubscribe("news") || !id.CanSubscribe("chat:x") || id.CanSubscribe("other") ||
		!id.CanPublish("chat:a") || id.CanPublish("chat:b") {
		t.Fatalf("token grants the wrong channels: %+v", id)
	}
	if left := time.Until(id.Expires); left < 50*time.Second || left > time.Minute {
		t.Fatalf("token expires in %v, want about a minute", left)
	}

	for name, args := range map[string][]string{
		"no secret":   {"token", "--user", "ann"},
		"bad pattern": {"token", "--token-secret", "x", "--sub", "a b"},
		"argument":    {"token", "--token-secret", "x", "extra"},
	} {
		if err := run(context.Background(), args, nil, io.Discard, io.Discard); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestAuthAndLimitSettings(t *testing.T) {
	t.Parallel()
	file := writeFile(t, "token-secret: abc\ntoken-issuer: https://id.example\nallow-anonymous: true\npublish-rate: 0\nmax-subscriptions: 5\n"+
		"namespaces:\n  news:\n    client-publish: false\n  members:\n    anonymous-subscribe: false\n    anonymous-publish: false\n")
	s, err := loadSettings([]string{"--config", file, "--max-connections", "0"}, []string{"HERALD_TOKEN_AUDIENCE=herald.example"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	c := s.config
	if c.TokenSecret != "abc" || !c.AllowAnonymous || c.PublishRate != -1 || c.MaxSubscriptions != 5 || c.MaxConnections != -1 {
		t.Fatalf("settings: %+v", c)
	}
	if c.TokenAudience != "herald.example" || c.TokenIssuer != "https://id.example" {
		t.Fatalf("token audience %q and issuer %q, want them from the environment and the file", c.TokenAudience, c.TokenIssuer)
	}
	if !c.Namespaces["news"].NoClientPublish || !c.Namespaces["members"].NoAnonymousSubscribe || !c.Namespaces["members"].NoAnonymousPublish {
		t.Fatalf("namespaces: %+v", c.Namespaces)
	}
	d, err := loadSettings(nil, nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if d.config.PublishRate != 100 || d.config.MaxSubscriptions != 128 || d.config.HandshakeTimeout != 10*time.Second || d.shutdownTimeout != 10*time.Second {
		t.Fatalf("defaults: %+v, shutdown %v", d.config, d.shutdownTimeout)
	}
	if d.idleTimeout != 30*time.Second {
		t.Fatalf("idle timeout %v by default, want 30s", d.idleTimeout)
	}
	for key, args := range map[string][]string{
		"--token-public-key": {"--token-public-key", "/nonexistent/key.pem"},
		"--allow-anonymous":  {"--allow-anonymous=maybe"},
		"--publish-rate":     {"--publish-rate", "-1"},
	} {
		if _, err := loadSettings(args, nil, io.Discard); err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%v: error %v, want one naming %s", args, err, key)
		}
	}
}
