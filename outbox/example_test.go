package outbox_test

import (
	"context"
	"log/slog"
	"os"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/outbox"
)

// A program that mounts a herald.Server runs the outbox reader beside it,
// and stops the reader before the server.
func Example() {
	cfg := herald.Config{MaxMessageSize: 65536}
	srv, err := herald.New(cfg)
	if err != nil {
		panic(err)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	r, err := outbox.New(outbox.Config{
		URL:            "postgres://herald@db.internal:5432/app?search_path=realtime",
		Publisher:      srv,
		MaxMessageSize: cfg.MaxMessageSize,
		Registerer:     srv.Registerer(),
		Logger:         logger,
	})
	if err != nil {
		panic(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = r.Run(ctx) // until ctx is done; it logs what goes wrong
	}()

	// … serve srv until it is time to shut down, then:
	stop()
	<-done
	_ = srv.Shutdown(context.Background())
}
