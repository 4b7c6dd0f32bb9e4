package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/heraldtest"
)

// apiHistory returns the messages of channel, through the server API.
func apiHistory(t *testing.T, base, channel, key string) []map[string]any {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"/api/channels/"+channel+"/history", nil)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct{ Messages []map[string]any }
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("history: %d %v", resp.StatusCode, err)
	}
	return body.Messages
}

func TestPub(t *testing.T) {
	t.Parallel()
	_, hs := heraldtest.NewServer(t, herald.Config{})
	cases := []struct {
		name    string
		channel string
		args    []string
		stdin   string
		data    any
		event   string
	}{
		{channel: "c1", name: "JSON object", args: []string{"c1", `{"text": "hi"}`}, data: map[string]any{"text": "hi"}},
		{channel: "c2", name: "number", args: []string{"c2", "42"}, data: 42.0},
		{channel: "c3", name: "quoted string", args: []string{"c3", `"42"`}, data: "42"},
		{channel: "c4", name: "not JSON is a string", args: []string{"c4", "hello world"}, data: "hello world"},
		{channel: "c5", name: "event", args: []string{"--event", "note", "c5", "true"}, data: true, event: "note"},
		{channel: "c6", name: "flags after arguments", args: []string{"c6", "1", "--event", "late"}, data: 1.0, event: "late"},
		{channel: "c7", name: "stdin JSON", args: []string{"c7", "-"}, stdin: "{\"a\":[1, 2]}\n", data: map[string]any{"a": []any{1.0, 2.0}}},
		{channel: "c8", name: "stdin text", args: []string{"c8", "-"}, stdin: "line one\nline two\n", data: "line one\nline two"},
		{channel: "c9", name: "dash dash", args: []string{"c9", "--", "-5"}, data: -5.0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var out bytes.Buffer
			args := append([]string{"--url", hs.URL + "/"}, tc.args...)
			if err := runWithStdin(context.Background(), append([]string{"pub"}, args...), nil, strings.NewReader(tc.stdin), &out, io.Discard); err != nil {
				t.Fatal(err)
			}
			msgs := apiHistory(t, hs.URL, tc.channel, "")
			if len(msgs) != 1 {
				t.Fatalf("history holds %d messages, want 1", len(msgs))
			}
			m := msgs[0]
			if got := strings.TrimSpace(out.String()); got != m["offset"] {
				t.Errorf("printed %q, want the offset %v", got, m["offset"])
			}
			if b, _ := json.Marshal(m["data"]); string(b) != string(jsonOf(t, tc.data)) {
				t.Errorf("data %s, want %s", b, jsonOf(t, tc.data))
			}
			if ev, _ := m["event"].(string); ev != tc.event {
				t.Errorf("event %q, want %q", ev, tc.event)
			}
		})
	}
}

func jsonOf(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestPubAPIKey(t *testing.T) {
	t.Parallel()
	_, hs := heraldtest.NewServer(t, herald.Config{APIKey: "k3y"})
	args := []string{"pub", "--url", hs.URL, "keyed", "1"}

	err := run(context.Background(), args, nil, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "unauthorized") || !strings.Contains(err.Error(), "401") {
		t.Fatalf("without a key: %v, want an error naming unauthorized", err)
	}
	var out bytes.Buffer
	if err := run(context.Background(), args, []string{"HERALD_API_KEY=k3y"}, &out, io.Discard); err != nil {
		t.Fatalf("key from the environment: %v", err)
	}
	if err := run(context.Background(), append([]string{"pub", "--api-key", "k3y"}, args[1:]...), []string{"HERALD_API_KEY=wrong"}, &out, io.Discard); err != nil {
		t.Fatalf("the flag wins over the environment: %v", err)
	}
	if n := len(apiHistory(t, hs.URL, "keyed", "k3y")); n != 2 {
		t.Fatalf("%d messages published, want 2", n)
	}
}

func TestPubErrors(t *testing.T) {
	t.Parallel()
	_, hs := heraldtest.NewServer(t, herald.Config{MaxMessageSize: 64})
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"bad channel", []string{"a b", "1"}, "bad_request: bad channel name"},
		{"too large", []string{"c", strings.Repeat("x", 100)}, "too_large"},
		{"one argument", []string{"c"}, `expected "<data>"`},
		{"three arguments", []string{"c", "1", "2"}, "unexpected argument 2"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			args := append([]string{"pub", "--url", hs.URL}, tc.args...)
			err := run(context.Background(), args, nil, io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one naming %q", err, tc.want)
			}
		})
	}
	// An answer without the error shape: the status is named.
	err := run(context.Background(), []string{"pub", "--url", hs.URL + "/nothing-here", "c", "1"}, nil, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "HTTP 405") {
		t.Fatalf("unknown URL: %v", err)
	}
}
