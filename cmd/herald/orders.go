package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
)

// The orders of the server API (POST /api/disconnect, subscribe,
// unsubscribe, broadcast; GET /api/connections): each command is one
// request, and the server carries it out on every node.

// target selects the connections an order acts on: exactly one of --user
// and --client. Neither is taken from the environment or a file: which
// connections to act on is said each time.
type target struct {
	User   *string `xor:"target" required:"" help:"the connections of this user (\"\" for anonymous ones); this or --client" environ:"-"`
	Client *string `xor:"target" required:"" help:"the connection of this client id; this or --user" environ:"-"`
}

// order is the body of an order for target's connections.
type order struct {
	User    *string `json:"user,omitempty"`
	Client  *string `json:"client,omitempty"`
	Reason  string  `json:"reason,omitempty"`
	Channel string  `json:"channel,omitempty"`
	Since   *string `json:"since,omitempty"`
}

func (t target) order() order { return order{User: t.User, Client: t.Client} }

// send posts order o to /api/NAME.
func (a serverAPI) send(r *runEnv, name string, o order) error {
	if err := a.call(r.ctx, http.MethodPost, "/api/"+name, o, nil); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// disconnectCmd closes the target's connections: WebSocket close 4000
// with the reason, after which herald.js and the Go client do not
// reconnect; SSE streams end.
type disconnectCmd struct {
	serverAPI `embed:""`
	target    `embed:""`
	Reason    string `help:"the close reason the clients get [disconnected]" environ:"-"`
}

// Run sends the order.
func (c *disconnectCmd) Run(r *runEnv) error {
	o := c.order()
	o.Reason = c.Reason
	return c.send(r, "disconnect", o)
}

// subscribeCmd subscribes the target's connections to CHANNEL: JSON
// clients get a subscribed push and then its messages, SSE streams add
// it.
type subscribeCmd struct {
	serverAPI `embed:""`
	target    `embed:""`
	Since     *string `placeholder:"OFFSET" help:"resume after this offset (\"\" from the oldest message history holds)" environ:"-"`
	Channel   string  `arg:"" help:"The channel to subscribe them to."`
}

// Run sends the order.
func (c *subscribeCmd) Run(r *runEnv) error {
	o := c.order()
	o.Channel, o.Since = c.Channel, c.Since
	return c.send(r, "subscribe", o)
}

// unsubscribeCmd ends the target's subscriptions to CHANNEL; JSON
// clients get an unsubscribed push.
type unsubscribeCmd struct {
	serverAPI `embed:""`
	target    `embed:""`
	Channel   string `arg:"" help:"The channel to unsubscribe them from."`
}

// Run sends the order.
func (c *unsubscribeCmd) Run(r *runEnv) error {
	o := c.order()
	o.Channel = c.Channel
	return c.send(r, "unsubscribe", o)
}

// broadcastCmd publishes DATA once to each channel of CHANNELS and prints
// each channel's offset, "CHANNEL OFFSET" a line, sorted by channel.
type broadcastCmd struct {
	serverAPI `embed:""`
	Event     string `help:"event name of the messages" environ:"-"`
	Channels  string `arg:"" help:"The channels to publish to, comma-separated."`
	Data      string `arg:"" help:"The message: JSON, else sent as a string; - reads it from stdin (put -- before data that starts with -)."`
}

// Run publishes and prints the offsets.
func (c *broadcastCmd) Run(r *runEnv) error {
	data, err := readData(c.Data, r.stdin)
	if err != nil {
		return fmt.Errorf("broadcast: %w", err)
	}
	body := struct {
		Channels []string        `json:"channels"`
		Data     json.RawMessage `json:"data"`
		Event    string          `json:"event,omitempty"`
	}{strings.Split(c.Channels, ","), data, c.Event}
	var answer struct {
		Offsets map[string]string `json:"offsets"`
	}
	if err := c.call(r.ctx, http.MethodPost, "/api/broadcast", body, &answer); err != nil {
		return fmt.Errorf("broadcast: %w", err)
	}
	for _, ch := range sortedKeys(answer.Offsets) {
		if _, err := fmt.Fprintln(r.stdout, ch, answer.Offsets[ch]); err != nil {
			return err
		}
	}
	return nil
}

// connectionsCmd lists connections on every node: a user's, or all (up
// to 1,000), as a table, or with --json as the API answers.
type connectionsCmd struct {
	serverAPI `embed:""`
	User      *string `help:"only this user's connections (\"\" for anonymous ones)" environ:"-"`
	JSON      bool    `name:"json" help:"print the server API's JSON answer" environ:"-"`
}

// Run lists the connections.
func (c *connectionsCmd) Run(r *runEnv) error {
	path := "/api/connections"
	if c.User != nil {
		path += "?user=" + url.QueryEscape(*c.User)
	}
	var raw json.RawMessage
	if err := c.call(r.ctx, http.MethodGet, path, nil, &raw); err != nil {
		return fmt.Errorf("connections: %w", err)
	}
	if c.JSON {
		_, err := fmt.Fprintln(r.stdout, string(raw))
		return err
	}
	var answer struct {
		Connections []struct {
			Client    string   `json:"client"`
			User      string   `json:"user"`
			Node      string   `json:"node"`
			Transport string   `json:"transport"`
			Channels  []string `json:"channels"`
		} `json:"connections"`
	}
	if err := json.Unmarshal(raw, &answer); err != nil {
		return fmt.Errorf("connections: unexpected answer %q", truncate(string(raw), 200))
	}
	return printTable(r.stdout, []string{"CLIENT", "USER", "NODE", "TRANSPORT", "CHANNELS"}, len(answer.Connections), func(i int) []string {
		c := answer.Connections[i]
		return []string{c.Client, c.User, c.Node, c.Transport, strings.Join(c.Channels, ",")}
	})
}

// printTable writes a header and n rows in aligned columns; an empty cell
// shows as "-".
func printTable(w io.Writer, header []string, n int, row func(i int) []string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for i := range n {
		cells := row(i)
		for j, cell := range cells {
			if cell == "" {
				cells[j] = "-"
			}
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}
