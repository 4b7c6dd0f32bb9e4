package main

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/heraldhq/herald/heraldtest"
)

// loadSettings parses `herald serve ARGS` with env, as run would, and
// returns the settings serve would start with, without starting it.
func loadSettings(args, env []string, stderr io.Writer) (*settings, error) {
	var c cli
	l := newLayers(env)
	parser, err := newParser(&c, l, io.Discard, stderr)
	if err != nil {
		return nil, err
	}
	if _, err := parser.Parse(append([]string{"serve"}, args...)); err != nil {
		return nil, err
	}
	return c.Serve.settings(l.namespaces, l.origin)
}

// serveInBackground runs `herald serve --addr <a free loopback port> ARGS`
// until stop, which returns what serve returned (failing the test if it
// does not stop); it returns once the server answers /healthz.
func serveInBackground(t *testing.T, args ...string) (addr string, stop func() error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr = ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, append([]string{"--addr", addr}, args...), nil, io.Discard, io.Discard) }()
	waitHealthy(t, addr)
	return addr, func() error {
		t.Helper()
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(heraldtest.Timeout):
			t.Fatal("serve did not stop")
			return nil
		}
	}
}
