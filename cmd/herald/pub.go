package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/heraldhq/herald/client"
)

// pubTimeout bounds one publish request.
const pubTimeout = 30 * time.Second

// pubCmd publishes DATA to CHANNEL and prints the offset: as a client
// over WebSocket when --token is given (the token's rights apply), else
// through the server API (with --api-key, or from the server's own
// machine). DATA is sent as JSON when it is valid JSON, else as a JSON
// string; "-" reads it from stdin.
type pubCmd struct {
	URL     string `default:"http://localhost:8080" help:"herald server"`
	APIKey  string `name:"api-key" help:"server API key"`
	Token   string `help:"client token: publish over WebSocket as its user"`
	Event   string `help:"event name of the message" environ:"-"`
	Channel string `arg:"" help:"The channel to publish to."`
	Data    string `arg:"" help:"The message: JSON, else sent as a string; - reads it from stdin (put -- before data that starts with -)."`
}

// Run publishes and prints the offset.
func (c *pubCmd) Run(r *runEnv) error {
	return c.publish(r.ctx, r.stdin, r.stdout)
}

func (c *pubCmd) publish(ctx context.Context, stdin io.Reader, stdout io.Writer) error {
	channel, text := c.Channel, c.Data
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
	if c.Token != "" {
		off, err := publishWS(ctx, c.URL, c.Token, channel, data, c.Event)
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
	}{channel, data, c.Event})
	if err != nil {
		return fmt.Errorf("pub: encode request: %w", err)
	}
	off, err := publishHTTP(ctx, strings.TrimRight(c.URL, "/")+"/api/publish", c.APIKey, body)
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

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
