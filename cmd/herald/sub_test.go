package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/heraldtest"
	"github.com/heraldhq/herald/internal/auth"
)

// runSub runs herald sub with args until the test ends, printing to the
// returned buffer; stop cancels it and returns its error.
func runSub(t *testing.T, args ...string) (out *syncBuffer, stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out = &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, append([]string{"sub"}, args...), nil, out, io.Discard) }()
	stop = sync.OnceValue(func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(heraldtest.Timeout):
			t.Error("herald sub did not stop")
			return nil
		}
	})
	t.Cleanup(func() { _ = stop() })
	return out, stop
}

func TestSub(t *testing.T) {
	t.Parallel()
	srv, hs := heraldtest.NewServer(t, herald.Config{})
	plain, stopPlain := runSub(t, "--url", hs.URL, "news", "chat")
	asJSON, stopJSON := runSub(t, "--url", hs.URL, "--json", "news")
	heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
		resp, err := http.Get(hs.URL + "/api/channels")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		const want = `{"channels":[{"channel":"chat","subscribers":1},{"channel":"news","subscribers":2}]}` + "\n"
		if string(b) != want {
			return fmt.Errorf("/api/channels = %q, want %q", b, want)
		}
		return nil
	})
	ctx := context.Background()
	off, err := srv.Publish(ctx, "news", "hello world")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Publish(ctx, "chat", map[string]int{"n": 1}); err != nil {
		t.Fatal(err)
	}
	heraldtest.WaitFor(t, heraldtest.Timeout, printedLines("herald sub", plain, 2))
	// Each channel's lines are in order; two channels may interleave.
	if got := plain.String(); got != "news hello world\nchat {\"n\":1}\n" && got != "chat {\"n\":1}\nnews hello world\n" {
		t.Fatalf("herald sub printed %q", got)
	}
	heraldtest.WaitFor(t, heraldtest.Timeout, printedLines("herald sub --json", asJSON, 1))
	var m struct{ Channel, Offset, Data string }
	if err := json.Unmarshal([]byte(asJSON.String()), &m); err != nil || m.Channel != "news" || m.Offset != off || m.Data != "hello world" {
		t.Fatalf("herald sub --json printed %q (%v)", asJSON.String(), err)
	}
	if err := stopPlain(); err != nil {
		t.Fatalf("herald sub stopped with %v", err)
	}
	if err := stopJSON(); err != nil {
		t.Fatalf("herald sub --json stopped with %v", err)
	}
}

// printedLines is a WaitFor condition: out holds n lines.
func printedLines(name string, out *syncBuffer, n int) func() error {
	return func() error {
		if got := out.String(); strings.Count(got, "\n") != n {
			return fmt.Errorf("%s printed %q, want %d lines", name, got, n)
		}
		return nil
	}
}

func TestSubErrors(t *testing.T) {
	t.Parallel()
	_, hs := heraldtest.NewServer(t, herald.Config{TokenSecret: "s"})
	for name, args := range map[string][]string{
		"no channel":           {"sub", "--url", hs.URL},
		"no token":             {"sub", "--url", hs.URL, "a"},
		"since with two":       {"sub", "--url", hs.URL, "--since", "", "a", "b"},
		"not a herald address": {"sub", "--url", "ftp://x", "a"},
	} {
		if err := run(context.Background(), args, nil, io.Discard, io.Discard); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestPubWithToken(t *testing.T) {
	t.Parallel()
	const secret = "pub secret"
	_, hs := heraldtest.NewServer(t, herald.Config{TokenSecret: secret})
	tok, err := auth.MintHS256([]byte(secret), auth.Spec{User: "ann", Channels: &auth.Channels{Publish: []string{"a"}}}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if err := run(context.Background(), []string{"pub", "--url", hs.URL, "--token", tok, "a", "hi"}, nil, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	msgs := apiHistory(t, hs.URL, "a", "")
	if len(msgs) != 1 || msgs[0]["offset"] != strings.TrimSpace(out.String()) || msgs[0]["user"] != "ann" || msgs[0]["data"] != "hi" {
		t.Fatalf("history %v after printing %q", msgs, out.String())
	}
	err = run(context.Background(), []string{"pub", "--url", hs.URL, "--token", tok, "b", "hi"}, nil, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "forbidden") {
		t.Fatalf("publish outside the token: %v, want forbidden", err)
	}
}
