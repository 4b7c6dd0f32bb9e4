// Package loadtest is herald's load tool, `herald bench SCENARIO [flags]`.
// It drives a running herald server over real WebSockets (and, in sse,
// real HTTP streams) and reports what the server costs and how fast it
// delivers:
//
//   - idle: N connections each subscribed to a channel, held open; the
//     server's RSS (from /proc, given -pid) before and after gives memory
//     per connection, and the dial phase gives the connect rate.
//   - fanout: S subscribers on one channel and one publisher at a fixed
//     rate; every message carries its send time and a sequence number, so
//     each subscriber measures latency, loss, duplicates and order.
//     -sub-urls spreads the subscribers over other nodes than the
//     publisher's, to measure fan-out through a shared broker. -filters
//     and -delta measure herald's delivery options (see options.go).
//   - sse: fanout with Server-Sent Events streams (GET /sse?channel=C, one
//     HTTP/1.1 connection each) as the subscribers; the publisher still
//     speaks WebSocket.
//   - channels: fanout over many channels with few subscribers each.
//   - churn: connections opened, subscribed and closed as fast as -c
//     workers can; cycles per second and connect latency.
//   - app: not a measurement but a stand-in for the application behind
//     herald's proxies, answering every request at once, so that churn
//     and idle measure what asking an application costs herald.
//
// fanout -window W runs a closed loop instead of a fixed rate: the
// publisher sends as fast as every subscriber keeps up, with at most W
// messages not yet delivered to all of them, which measures how many
// deliveries per second a server sustains.
//
// -proto picks the protocol, so that one tool measures herald and its
// peers the same way: herald's json, jsonl and raw; ws, a broadcast server
// such as Node's ws (subscribers only connect; the publisher sends the data
// itself and its own copy of the broadcast is its ack); and centrifugo,
// Centrifugo's JSON protocol (connect, subscribe, publish with replies,
// several messages a frame, "{}" pings answered).
//
// The client is lean on purpose, so that it measures the server and not
// itself: its own WebSocket code (no compression, no extensions), dialling
// from a bounded pool of workers, and no goroutine per idle connection —
// one sweeper drains all idle sockets without blocking and answers the
// server's pings. Fan-out subscribers (WebSocket or SSE) have one reader
// goroutine each.
//
// Progress goes to stderr while it runs; at the end a table and one JSON
// line with every figure go to stdout. Runs are bounded by their flags and
// by ctx, and close every connection they opened.
package loadtest

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"
)

const usage = `usage: herald bench SCENARIO [flags]

scenarios:
  idle     hold N subscribed connections; memory per connection, connect rate
  fanout   S subscribers, one publisher at a fixed rate (or a closed loop with
           -window); deliveries per second, latency and loss
  sse      the same with S Server-Sent Events streams (/sse) as subscribers
  channels many channels with few subscribers each, published round-robin
  churn    connect, subscribe and disconnect as fast as -c workers can
  app      stand in for the application behind herald's proxies, answering
           every request at once (for measuring what the proxies cost)

herald bench SCENARIO -h lists the scenario's flags.
`

// Run runs `herald bench` with args (the scenario name first).
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return flag.ErrHelp
	}
	switch args[0] {
	case "idle":
		return runIdle(ctx, args[1:], stdout, stderr)
	case "fanout":
		return runFanout(ctx, args[1:], stdout, stderr)
	case "sse":
		return runSSE(ctx, args[1:], stdout, stderr)
	case "channels":
		return runChannels(ctx, args[1:], stdout, stderr)
	case "churn":
		return runChurn(ctx, args[1:], stdout, stderr)
	case "app":
		return runApp(ctx, args[1:], stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		return fmt.Errorf("bench: unknown scenario %q\n%s", args[0], usage)
	}
}

// common are the flags every scenario takes.
type common struct {
	url         string
	proto       string
	channel     string
	concurrency int
	dialTimeout time.Duration
}

func (c *common) register(fs *flag.FlagSet, channel string) {
	c.registerNoProto(fs, channel)
	fs.StringVar(&c.proto, "proto", "json", "json (herald.v1), jsonl (herald.v1.jsonl), raw (/ws/{channel}); peers: ws (a broadcast server such as Node's ws: every message to every client) or centrifugo (Centrifugo's JSON protocol)")
}

// registerNoProto registers every common flag but -proto, which stays json.
func (c *common) registerNoProto(fs *flag.FlagSet, channel string) {
	c.proto = "json"
	fs.StringVar(&c.url, "url", "ws://127.0.0.1:8080/ws", "herald's /ws endpoint (an http:// base URL works too); with -proto ws the broadcast server's URL, with -proto centrifugo Centrifugo's (its /connection/websocket by default)")
	fs.StringVar(&c.channel, "channel", channel, "channel to subscribe to")
	fs.IntVar(&c.concurrency, "c", 100, "connections dialled at once")
	fs.DurationVar(&c.dialTimeout, "dial-timeout", 10*time.Second, "bound on one dial, handshake and subscribe")
}

// target is where and how a scenario connects.
type target struct {
	ws          *url.URL // the /ws endpoint
	metrics     string   // the server's /metrics, best effort
	proto       string
	subprotocol string
	channel     string
	// subscribeFields are members added to herald's subscribe command,
	// such as a filter: `,"delta":"fossil"`.
	subscribeFields string
}

func (c *common) target() (*target, error) {
	u, err := url.Parse(c.url)
	if err != nil {
		return nil, fmt.Errorf("bench: -url: %w", err)
	}
	switch u.Scheme {
	case "ws":
	case "http":
		u.Scheme = "ws"
	default:
		return nil, fmt.Errorf("bench: -url %q: want ws:// or http://", c.url)
	}
	bare := u.Path == "" || u.Path == "/"
	t := &target{ws: u, proto: c.proto, channel: c.channel}
	switch c.proto {
	case "json":
		t.subprotocol = "herald.v1"
	case "jsonl":
		t.subprotocol = "herald.v1.jsonl"
	case "raw":
	case "ws":
		if bare {
			u.Path, bare = "/", false // the URL as given
		}
	case "centrifugo":
		if bare {
			u.Path, bare = "/connection/websocket", false
		}
	default:
		return nil, fmt.Errorf("bench: -proto %q: want json, jsonl, raw, ws or centrifugo", c.proto)
	}
	if bare {
		u.Path = "/ws"
	}
	m := *u
	m.Scheme, m.Path, m.RawQuery = "http", "/metrics", ""
	t.metrics = m.String()
	if c.concurrency < 1 {
		return nil, fmt.Errorf("bench: -c must be at least 1")
	}
	return t, nil
}

// subscriberURL is where a subscriber dials: /ws, or /ws/{channel} in raw
// mode; a peer's URL as it is.
func (t *target) subscriberURL() *url.URL {
	if t.proto != "raw" {
		return t.ws
	}
	u := *t.ws
	u.Path = strings.TrimSuffix(u.Path, "/") + "/" + url.PathEscape(t.channel)
	u.RawPath = ""
	return &u
}

// subscribe dials one connection and subscribes it to the channel. In the
// JSON protocol it waits for the welcome and the ok reply; in raw mode the
// upgrade is the subscription.
func (t *target) subscribe(ctx context.Context, readBuf int, timeout time.Duration) (*wsConn, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := t.dial(ctx, readBuf)
	if err != nil {
		return nil, err
	}
	switch t.proto {
	case "raw", "ws":
		return c, nil // connected is subscribed
	case "centrifugo":
		err = t.command(ctx, c, `{"id":2,"subscribe":{"channel":`+quote(t.channel)+`}}`, 2)
	default:
		err = t.command(ctx, c, `{"id":1,"op":"subscribe","channel":`+quote(t.channel)+t.subscribeFields+`}`, 1)
	}
	if err != nil {
		_ = c.nc.Close()
		return nil, fmt.Errorf("subscribe: %w", err)
	}
	return c, nil
}

// dial opens one connection of the target's protocol, past its handshake:
// a Centrifugo connection has sent its connect command.
func (t *target) dial(ctx context.Context, readBuf int) (*wsConn, error) {
	c, err := dialWS(ctx, t.subscriberURL(), t.subprotocol, readBuf)
	if err != nil {
		return nil, err
	}
	if t.proto == "centrifugo" {
		c.appPing = true
		if err := t.command(ctx, c, `{"id":1,"connect":{}}`, 1); err != nil {
			_ = c.nc.Close()
			return nil, fmt.Errorf("connect: %w", err)
		}
	}
	return c, nil
}

// command sends cmd and reads until the reply with id, which must be ok.
func (t *target) command(ctx context.Context, c *wsConn, cmd string, id uint64) error {
	if dl, ok := ctx.Deadline(); ok {
		_ = c.nc.SetDeadline(dl)
		defer func() { _ = c.nc.SetDeadline(time.Time{}) }()
	}
	if err := c.writeText([]byte(cmd)); err != nil {
		return err
	}
	for {
		_, msg, err := c.readMessage()
		if err != nil {
			return err
		}
		for _, line := range strings.Split(string(msg), "\n") {
			var r struct {
				ID    *uint64         `json:"id"`
				OK    bool            `json:"ok"`
				Error json.RawMessage `json:"error"`
			}
			if json.Unmarshal([]byte(line), &r) != nil || r.ID == nil || *r.ID != id {
				continue // the welcome, or a push
			}
			// herald answers "ok"; Centrifugo answers without "error".
			if r.Error != nil || (!r.OK && t.proto != "centrifugo") {
				return fmt.Errorf("refused: %s", r.Error)
			}
			return nil
		}
	}
}

func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// errorLog counts errors by kind and keeps the first example of each.
type errorLog struct {
	mu    sync.Mutex
	n     atomic.Int64
	kinds map[string]int
	first map[string]string
}

func (e *errorLog) add(kind string, err error) {
	e.n.Add(1)
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.kinds == nil {
		e.kinds, e.first = map[string]int{}, map[string]string{}
	}
	e.kinds[kind]++
	if _, ok := e.first[kind]; !ok {
		e.first[kind] = err.Error()
	}
}

// summary returns, for each kind, its count and first error.
func (e *errorLog) summary() map[string]string {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := map[string]string{}
	for k, n := range e.kinds {
		out[k] = fmt.Sprintf("%d, first: %s", n, e.first[k])
	}
	return out
}

// dialAll subscribes n connections with at most concurrency at a time and
// calls keep with each (from the dialling goroutines). It stops early when
// ctx is done.
func dialAll(ctx context.Context, t *target, n, concurrency, readBuf int, timeout time.Duration, errs *errorLog, keep func(*wsConn)) {
	dialPool(ctx, n, concurrency, errs, func(ctx context.Context) error {
		c, err := t.subscribe(ctx, readBuf, timeout)
		if err != nil {
			return err
		}
		keep(c)
		return nil
	})
}

// dialPool calls dial n times, at most concurrency at a time, and logs
// its errors as "dial". It stops early when ctx is done.
func dialPool(ctx context.Context, n, concurrency int, errs *errorLog, dial func(context.Context) error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(concurrency, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) && ctx.Err() == nil {
				if err := dial(ctx); err != nil && ctx.Err() == nil {
					errs.add("dial", err)
				}
			}
		}()
	}
	wg.Wait()
}

// progress prints a line to w every interval until stop is closed.
func progress(w io.Writer, interval time.Duration, stop <-chan struct{}, line func() string) *sync.WaitGroup {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tk := time.NewTicker(interval)
		defer tk.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tk.C:
				fmt.Fprintln(w, line())
			}
		}
	}()
	return &wg
}

// row is one line of the summary table.
type row struct{ name, value string }

// report prints the table and then the JSON line.
func report(w io.Writer, title string, rows []row, result any) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "%s\n", title)
	for _, r := range rows {
		fmt.Fprintf(tw, "  %s\t%s\n", r.name, r.value)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	b, err := json.Marshal(result)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func round(f float64, digits int) float64 {
	p := 1.0
	for range digits {
		p *= 10
	}
	if f < 0 {
		return -float64(int64(-f*p+0.5)) / p
	}
	return float64(int64(f*p+0.5)) / p
}
