package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/heraldtest"
	"github.com/heraldhq/herald/internal/backend"
)

// bench app stands in for the application behind herald's proxies: churn
// against a herald that asks it connects, each let in as -user, and the
// app counts what it was asked.
func TestAppAnswersTheProxies(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	var appOut, appErr bytes.Buffer
	done := make(chan error, 1)
	go func() { done <- Run(ctx, []string{"app", "-addr", addr, "-user", "bench"}, &appOut, &appErr) }()

	p, err := backend.New(backend.Config{Connect: "http://" + addr + "/connect", Timeout: heraldtest.Timeout})
	if err != nil {
		t.Fatal(err)
	}
	_, hs := heraldtest.NewServer(t, herald.Config{Hooks: p.Hooks()})
	heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err
	})
	c := heraldtest.Dial(t, heraldtest.WSURL(hs.URL, "/ws"))
	if c.Welcome["user"] != "bench" {
		t.Fatalf("welcome %v, want the app's user", c.Welcome)
	}
	var out, errOut bytes.Buffer
	bctx, bcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer bcancel()
	if err := Run(bctx, []string{"churn", "-url", heraldtest.WSURL(hs.URL, "/ws"), "-duration", "300ms", "-c", "4"}, &out, &errOut); err != nil {
		t.Fatalf("churn: %v\n%s", err, &errOut)
	}
	var churn struct{ Cycles, Errors float64 }
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &churn); err != nil || churn.Cycles < 5 || churn.Errors != 0 {
		t.Fatalf("churn through the app: %+v, %v\n%s", churn, err, &out)
	}
	cancel()
	if err := <-done; err != nil && err != context.Canceled {
		t.Fatalf("app: %v\n%s", err, &appErr)
	}
	var app struct{ Requests float64 }
	lines = strings.Split(strings.TrimSpace(appOut.String()), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &app); err != nil || app.Requests < churn.Cycles+1 {
		t.Fatalf("app result %+v (%v), want at least %v requests\n%s", app, err, churn.Cycles+1, &appOut)
	}
}
