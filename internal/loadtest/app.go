package loadtest

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"time"
)

// appResult is the app scenario's JSON line.
type appResult struct {
	Scenario string `json:"scenario"`
	Addr     string `json:"addr"`
	Requests int64  `json:"requests"`
}

// runApp stands in for the application behind herald's proxies
// (--proxy-connect and the rest) until ctx is done: it answers every POST
// at once with {"result":{}} — allowed, anonymous — or, with -user U,
// {"result":{"user":U}}. It measures nothing itself: it lets churn and
// idle measure what asking an application costs herald, with an
// application that costs as little as one can.
func runApp(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("herald bench app", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:18091", "address to answer on")
	user := fs.String("user", "", "the user every connect is let in as (empty: anonymous)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("bench app: unexpected argument %q", fs.Arg(0))
	}
	answer := []byte(`{"result":{}}`)
	if *user != "" {
		b, err := json.Marshal(map[string]any{"result": map[string]string{"user": *user}})
		if err != nil {
			return fmt.Errorf("bench app: %w", err)
		}
		answer = b
	}
	var requests atomic.Int64
	srv := &http.Server{
		ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body) // read it all: the connection is kept for the next request
			requests.Add(1)
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(answer)
		}),
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("bench app: %w", err)
	}
	fmt.Fprintf(stderr, "bench app: answering on http://%s until interrupted\n", ln.Addr())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("bench app: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("bench app: shutdown: %w", err)
	}
	res := appResult{Scenario: "app", Addr: ln.Addr().String(), Requests: requests.Load()}
	return report(stdout, "herald bench app", []row{{"requests", fmt.Sprint(res.Requests)}}, res)
}
