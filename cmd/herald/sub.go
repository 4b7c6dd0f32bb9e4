package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/heraldhq/herald/client"
)

// subCmd subscribes to CHANNEL… and prints each message as it comes,
// until interrupted: "CHANNEL DATA" lines (a string's text, else compact
// JSON), or one JSON object a line with --json. It reconnects and resumes
// by itself.
type subCmd struct {
	URL      string   `default:"http://localhost:8080" help:"herald server"`
	Token    string   `help:"client token"`
	JSON     bool     `name:"json" help:"print each message as a JSON object on its own line" environ:"-"`
	Since    *string  `help:"resume after this offset (one channel only; \"\" reads all history)" environ:"-"`
	Channels []string `arg:"" help:"The channels to print."`
}

// Run prints messages until the run's context is done.
func (sc *subCmd) Run(r *runEnv) error {
	ctx, stdout, channels := r.ctx, r.stdout, sc.Channels
	var opts []client.SubscribeOption
	if sc.Since != nil {
		if len(channels) > 1 {
			return errors.New("sub: --since takes one channel")
		}
		opts = append(opts, client.Since(*sc.Since))
	}
	c, err := client.Dial(ctx, sc.URL, &client.Options{Token: sc.Token})
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
				err = printMessage(stdout, m, sc.JSON)
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
