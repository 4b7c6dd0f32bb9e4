package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/heraldhq/herald/client"
)

// pubCmd publishes DATA to CHANNEL and prints the offset: as a client
// over WebSocket when --token is given (the token's rights apply), else
// through the server API (with --api-key, or from the server's own
// machine). DATA is sent as JSON when it is valid JSON, else as a JSON
// string; "-" reads it from stdin.
type pubCmd struct {
	serverAPI `embed:""`
	Token     string `help:"client token: publish over WebSocket as its user"`
	Event     string `help:"event name of the message" environ:"-"`
	Channel   string `arg:"" help:"The channel to publish to."`
	Data      string `arg:"" help:"The message: JSON, else sent as a string; - reads it from stdin (put -- before data that starts with -)."`
}

// Run publishes and prints the offset.
func (c *pubCmd) Run(r *runEnv) error {
	return c.publish(r.ctx, r.stdin, r.stdout)
}

func (c *pubCmd) publish(ctx context.Context, stdin io.Reader, stdout io.Writer) error {
	data, err := readData(c.Data, stdin)
	if err != nil {
		return fmt.Errorf("pub: %w", err)
	}
	var off string
	if c.Token != "" {
		off, err = publishWS(ctx, c.URL, c.Token, c.Channel, data, c.Event)
	} else {
		off, err = c.publishHTTP(ctx, data)
	}
	if err != nil {
		return fmt.Errorf("pub: %w", err)
	}
	_, err = fmt.Fprintln(stdout, off)
	return err
}

// publishWS publishes as a client with token and returns the offset.
func publishWS(ctx context.Context, baseURL, token, channel string, data json.RawMessage, event string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	c, err := client.Dial(ctx, baseURL, &client.Options{Token: token})
	if err != nil {
		return "", err
	}
	defer c.Close()
	return c.Publish(ctx, channel, data, event)
}

// publishHTTP publishes through the server API and returns the offset.
func (c *pubCmd) publishHTTP(ctx context.Context, data json.RawMessage) (string, error) {
	body := struct {
		Channel string          `json:"channel"`
		Data    json.RawMessage `json:"data"`
		Event   string          `json:"event,omitempty"`
	}{c.Channel, data, c.Event}
	var answer struct {
		Offset string `json:"offset"`
	}
	if err := c.call(ctx, http.MethodPost, "/api/publish", body, &answer); err != nil {
		return "", err
	}
	if answer.Offset == "" {
		return "", errors.New("the answer has no offset")
	}
	return answer.Offset, nil
}
