// Command ticker pushes a count every second to the channel "counter": a
// server that publishes on its own, with no client sending anything.
//
//	go run ./ticker        then: new WebSocket('ws://localhost:8080/ws/counter')
package main

import (
	"context"
	"errors"
	"log"
	"net/http"
	"os"
	"os/signal"
	"time"

	"github.com/heraldhq/herald"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	rt, err := herald.New(herald.Config{})
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Addr: "localhost:8080", Handler: rt, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Fatal(err)
		}
	}()

	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for n := 1; ; n++ {
		select {
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
			_ = rt.Shutdown(sctx)
			return
		case <-tick.C:
			if _, err := rt.Publish(ctx, "counter", map[string]int{"count": n}); err != nil {
				log.Printf("publish: %v", err)
			}
		}
	}
}
