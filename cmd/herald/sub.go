package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"sync"

	"github.com/heraldhq/herald/client"
)

// sub subscribes to CHANNEL… and prints each message as it comes, until
// interrupted: "CHANNEL DATA" lines (a string's text, else compact JSON),
// or one JSON object a line with --json. It reconnects and resumes by
// itself.
func sub(ctx context.Context, args, env []string, stdout, stderr io.Writer) error {
	envMap := envToMap(env)
	fs := flag.NewFlagSet("herald sub", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "usage: herald sub [flags] CHANNEL...\n\n"+
			"Prints each message as it comes: CHANNEL DATA, or JSON lines with --json. Stops on Ctrl-C.\n\n")
		fs.PrintDefaults()
	}
	baseURL := fs.String("url", envOr(envMap, "HERALD_URL", "http://localhost:8080"), "herald server (env HERALD_URL)")
	token := fs.String("token", envMap["HERALD_TOKEN"], "client token (env HERALD_TOKEN)")
	asJSON := fs.Bool("json", false, "print each message as a JSON object on its own line")
	since := fs.String("since", "", "resume after this offset (one channel only)")
	channels, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(channels) == 0 {
		fs.Usage()
		return errors.New("sub: want at least one CHANNEL")
	}
	var opts []client.SubscribeOption
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "since" {
			opts = append(opts, client.Since(*since))
		}
	})
	if len(opts) > 0 && len(channels) > 1 {
		return errors.New("sub: --since takes one channel")
	}
	c, err := client.Dial(ctx, *baseURL, &client.Options{Token: *token})
	if err != nil {
		return fmt.Errorf("sub: %w", err)
	}
	defer c.Close()
	ctx, stop := context.WithCancel(ctx) // the first failure stops every channel
	defer stop()

	var (
		out  sync.Mutex // one line at a time
		wg   sync.WaitGroup
		errs = make(chan error, len(channels))
	)
	for _, ch := range channels {
		s, err := c.Subscribe(ctx, ch, opts...)
		if err != nil {
			return fmt.Errorf("sub: %s: %w", ch, err)
		}
		wg.Go(func() {
			for {
				m, err := s.Next(ctx)
				if err != nil {
					if ctx.Err() == nil {
						errs <- fmt.Errorf("sub: %s: %w", ch, err)
						stop()
					}
					return
				}
				out.Lock()
				err = printMessage(stdout, m, *asJSON)
				out.Unlock()
				if err != nil {
					errs <- err
					stop()
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs // nil after an interrupt
}

// printMessage writes one message line.
func printMessage(w io.Writer, m client.Message, asJSON bool) error {
	if asJSON {
		b, err := json.Marshal(m)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	}
	text := string(m.Data)
	var s string
	if json.Unmarshal(m.Data, &s) == nil {
		text = s
	}
	_, err := fmt.Fprintf(w, "%s %s\n", m.Channel, text)
	return err
}
