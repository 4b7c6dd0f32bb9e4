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
)

// apiTimeout bounds one server API request.
const apiTimeout = 30 * time.Second

// serverAPI is what a command needs to call herald's server API: the
// server's URL and its API key (none from the server's own machine).
type serverAPI struct {
	URL    string `default:"http://localhost:8080" help:"herald server"`
	APIKey string `name:"api-key" help:"server API key"`
}

// call sends method path (with its query) to the server, with body as
// JSON unless it is nil, and decodes a 2xx answer into answer unless it
// is nil (a *json.RawMessage keeps the answer as it is). A refusal is an
// error naming the code and message of the server's error body and the
// HTTP status: "unauthorized: an API key is required (HTTP 401)".
func (a serverAPI) call(ctx context.Context, method, path string, body, answer any) error {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	var in io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		in = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(a.URL, "/")+path, in)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if a.APIKey != "" {
		req.Header.Set("Authorization", "Bearer "+a.APIKey)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", strings.ToLower(method), err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("read answer: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		var refusal struct {
			Error *struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		if json.Unmarshal(b, &refusal) == nil && refusal.Error != nil {
			return fmt.Errorf("%s: %s (HTTP %d)", refusal.Error.Code, refusal.Error.Message, resp.StatusCode)
		}
		return fmt.Errorf("HTTP %s: %q", resp.Status, truncate(string(b), 200))
	}
	if answer != nil {
		if err := json.Unmarshal(b, answer); err != nil {
			return fmt.Errorf("unexpected answer %q", truncate(string(b), 200))
		}
	}
	return nil
}

// readData is a message's DATA argument as herald pub and herald
// broadcast take it: JSON as it is, anything else as a JSON string; "-"
// reads it from stdin, less the line end that echo and editors add.
func readData(text string, stdin io.Reader) (json.RawMessage, error) {
	if text == "-" {
		b, err := io.ReadAll(stdin)
		if err != nil {
			return nil, fmt.Errorf("read stdin: %w", err)
		}
		text = strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	}
	data := json.RawMessage(text)
	if !json.Valid(data) {
		data, _ = json.Marshal(text) // a string always encodes
	}
	return data, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
