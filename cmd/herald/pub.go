package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/heraldhq/herald/client"
)

// pubTimeout bounds one publish request.
const pubTimeout = 30 * time.Second

// pub publishes DATA to CHANNEL and prints the offset: as a client over
// WebSocket when --token is given (the token's rights apply), else through
// the server API (with --api-key, or from the server's own machine). DATA
// is sent as JSON when it is valid JSON, else as a JSON string; "-" reads
// it from stdin.
func pub(ctx context.Context, args, env []string, stdin io.Reader, stdout, stderr io.Writer) error {
	envMap := envToMap(env)
	fs := flag.NewFlagSet("herald pub", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "usage: herald pub [flags] CHANNEL DATA\n\n"+
			"DATA is sent as JSON when it is valid JSON, else as a string; - reads it from stdin.\n"+
			"With --token it publishes as a client over WebSocket; otherwise through the server API.\n\n")
		fs.PrintDefaults()
	}
	baseURL := fs.String("url", envOr(envMap, "HERALD_URL", "http://localhost:8080"), "herald server (env HERALD_URL)")
	apiKey := fs.String("api-key", envMap["HERALD_API_KEY"], "server API key (env HERALD_API_KEY)")
	token := fs.String("token", envMap["HERALD_TOKEN"], "client token: publish over WebSocket as its user (env HERALD_TOKEN)")
	event := fs.String("event", "", "event name of the message")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		fs.Usage()
		return fmt.Errorf("pub: want CHANNEL DATA, got %d arguments", len(pos))
	}
	channel, text := pos[0], pos[1]
	if text == "-" {
		b, err := io.ReadAll(stdin)
		if err != nil {
			return fmt.Errorf("pub: read stdin: %w", err)
		}
		// What echo and most editors add is not part of the data.
		text = strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	}
	data := json.RawMessage(text)
	if !json.Valid(data) {
		data, _ = json.Marshal(text) // a string always encodes
	}
	if *token != "" {
		off, err := publishWS(ctx, *baseURL, *token, channel, data, *event)
		if err != nil {
			return fmt.Errorf("pub: %w", err)
		}
		_, err = fmt.Fprintln(stdout, off)
		return err
	}
	body, err := json.Marshal(struct {
		Channel string          `json:"channel"`
		Data    json.RawMessage `json:"data"`
		Event   string          `json:"event,omitempty"`
	}{channel, data, *event})
	if err != nil {
		return fmt.Errorf("pub: encode request: %w", err)
	}
	off, err := publishHTTP(ctx, strings.TrimRight(*baseURL, "/")+"/api/publish", *apiKey, body)
	if err != nil {
		return fmt.Errorf("pub: %w", err)
	}
	_, err = fmt.Fprintln(stdout, off)
	return err
}

// publishWS publishes as a client with token and returns the offset.
func publishWS(ctx context.Context, baseURL, token, channel string, data json.RawMessage, event string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, pubTimeout)
	defer cancel()
	c, err := client.Dial(ctx, baseURL, &client.Options{Token: token})
	if err != nil {
		return "", err
	}
	defer c.Close()
	return c.Publish(ctx, channel, data, event)
}

// publishHTTP posts body to url and returns the offset of the answer, or
// an error naming the code and message of the server's error body.
func publishHTTP(ctx context.Context, url, apiKey string, body []byte) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, pubTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return "", fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	if apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+apiKey)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("post: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", fmt.Errorf("read answer: %w", err)
	}
	var answer struct {
		Offset string `json:"offset"`
		Error  *struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	jerr := json.Unmarshal(b, &answer)
	switch {
	case resp.StatusCode/100 != 2 && jerr == nil && answer.Error != nil:
		return "", fmt.Errorf("%s: %s (HTTP %d)", answer.Error.Code, answer.Error.Message, resp.StatusCode)
	case resp.StatusCode/100 != 2:
		return "", fmt.Errorf("HTTP %s: %q", resp.Status, truncate(string(b), 200))
	case jerr != nil || answer.Offset == "":
		return "", fmt.Errorf("unexpected answer %q", truncate(string(b), 200))
	}
	return answer.Offset, nil
}

// parseInterspersed parses flags that may come before, between or after
// the positional arguments, which it returns; everything after "--" is
// positional.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		pos, args = append(pos, rest[0]), rest[1:]
	}
}

func envOr(env map[string]string, key, def string) string {
	if v, ok := env[key]; ok && v != "" {
		return v
	}
	return def
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
