package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/heraldhq/herald/heraldtest"
	"github.com/heraldhq/herald/webhook"
)

// A node killed with its clients on it (SIGKILL: no shutdown) is noticed
// by the other node within --node-ttl, which reports each client's
// unsubscribes and its disconnect with reason node_lost, under the ids
// the dead node would have given, the channels it left vacant, and takes
// the clients out of presence.
func TestNodeLostReportedBySurvivor(t *testing.T) {
	t.Parallel()
	const secret = "node-lost-secret"
	var (
		mu     sync.Mutex
		events = map[string][]string{} // client → "type channel reason" in order
		ids    = map[string]string{}   // "client type channel" → id
	)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := webhook.Verify([]byte(secret), r.Header.Get(webhook.SignatureHeader), body, time.Now()); err != nil {
			t.Errorf("bad signature: %v", err)
			return
		}
		var e webhook.Event
		_ = json.Unmarshal(body, &e)
		mu.Lock()
		defer mu.Unlock()
		k := e.Client + " " + e.Type + " " + e.Channel
		if prev, ok := ids[k]; ok {
			if prev != e.ID {
				t.Errorf("%s reported under two ids: %s and %s", k, prev, e.ID)
			}
			return // a repeat
		}
		ids[k] = e.ID
		events[e.Client] = append(events[e.Client], strings.Join(strings.Fields(e.Type+" "+e.Channel+" "+e.Reason), " "))
	}))
	defer app.Close()
	of := func(client string) string {
		mu.Lock()
		defer mu.Unlock()
		return strings.Join(events[client], ", ")
	}

	args := []string{"--broker", "redis://127.0.0.1:6379/0", "--webhook", app.URL, "--webhook-secret", secret, "--node-ttl", "3s"}
	doomed, addrA, _ := startHerald(t, args...)
	_, addrB, _ := startHerald(t, args...)
	channel := fmt.Sprintf("lost-%d", time.Now().UnixNano())
	c := heraldtest.Dial(t, "ws://"+addrA+"/ws")
	client := c.Welcome["client"].(string)
	c.MustOK(map[string]any{"op": "subscribe", "channel": channel})
	heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
		if got := of(client); got != "connect, subscribe "+channel {
			return fmt.Errorf("events %q before the kill", got)
		}
		return nil
	})

	killed := time.Now()
	if err := syscall.Kill(doomed.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	heraldtest.WaitFor(t, 3*heraldtest.Timeout, func() error {
		if got, want := of(client), "connect, subscribe "+channel+", unsubscribe "+channel+", disconnect node_lost"; got != want {
			return fmt.Errorf("events %q, want %q", got, want)
		}
		return nil
	})
	t.Logf("node_lost reported %v after the kill (--node-ttl 3s)", time.Since(killed).Round(100*time.Millisecond))
	// The channel it left vacant is reported vacant too, once.
	heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
		mu.Lock()
		defer mu.Unlock()
		var mine []string
		for _, ev := range events[""] {
			if strings.HasSuffix(ev, " "+channel) {
				mine = append(mine, ev)
			}
		}
		if got, want := strings.Join(mine, ", "), "occupied "+channel+", vacated "+channel; got != want {
			return fmt.Errorf("channel events %q, want %q", got, want)
		}
		return nil
	})
	heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
		resp, err := http.Get("http://" + addrB + "/api/channels/" + channel + "/presence")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if strings.Contains(string(b), client) {
			return fmt.Errorf("the dead node's client is still in presence: %s", b)
		}
		return nil
	})
}
