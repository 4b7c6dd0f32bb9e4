// Command echo is an echo server on herald's raw mode: each client gets a
// channel of its own, so everything it sends comes straight back.
//
//	go run ./echo        then: ws = new WebSocket('ws://localhost:8080/echo'); ws.send('hi')
package main

import (
	"crypto/rand"
	"encoding/hex"
	"log"
	"net/http"
	"time"

	"github.com/heraldhq/herald"
)

func main() {
	rt, err := herald.New(herald.Config{HistorySize: -1})
	if err != nil {
		log.Fatal(err)
	}
	raw := rt.RawHandler()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /echo", func(w http.ResponseWriter, r *http.Request) {
		// A fresh private channel per connection makes raw mode an echo.
		var b [8]byte
		_, _ = rand.Read(b[:])
		r.SetPathValue("channel", "echo:"+hex.EncodeToString(b[:]))
		raw.ServeHTTP(w, r)
	})
	srv := &http.Server{Addr: "localhost:8080", Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	log.Printf("echo on ws://%s/echo", srv.Addr)
	log.Fatal(srv.ListenAndServe())
}
