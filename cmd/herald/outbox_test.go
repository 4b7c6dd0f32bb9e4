package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/heraldhq/herald/heraldtest"
	"github.com/heraldhq/herald/outbox/outboxtest"
)

// --outbox comes from a flag, HERALD_OUTBOX or the config file's outbox
// key, and must be a PostgreSQL URL.
func TestOutboxSetting(t *testing.T) {
	t.Parallel()
	const u = "postgres://app@db.example:5432/app?search_path=herald"
	for _, tc := range []struct {
		name       string
		args, env  []string
		file, want string
	}{
		{name: "flag", args: []string{"--outbox", u}, want: u},
		{name: "environment", env: []string{"HERALD_OUTBOX=" + u}, want: u},
		{name: "file", file: "outbox: " + u + "\n", want: u},
		{name: "postgresql scheme", args: []string{"--outbox", "postgresql://db.example/app"}, want: "postgresql://db.example/app"},
		{name: "unset", want: ""},
	} {
		args := tc.args
		if tc.file != "" {
			args = append([]string{"--config", writeFile(t, tc.file)}, args...)
		}
		s, err := loadSettings(args, tc.env, io.Discard)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if s.outbox != tc.want {
			t.Errorf("%s: outbox %q, want %q", tc.name, s.outbox, tc.want)
		}
	}
	const secret = "hunter2"
	for _, bad := range []string{"mysql://u:" + secret + "@db/app", "host=db password=" + secret} {
		_, err := loadSettings([]string{"--outbox", bad}, nil, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "--outbox") || strings.Contains(err.Error(), secret) {
			t.Errorf("--outbox %s: error %v; want one that names --outbox and hides the password", bad, err)
		}
	}
}

// The outbox's password shows in no log line, error or herald config,
// even when the database cannot be reached.
func TestOutboxCredentialsMasked(t *testing.T) {
	t.Parallel()
	const secret = "hunter2"
	u := "postgres://app:" + secret + "@127.0.0.1:1/app?connect_timeout=1"
	var out bytes.Buffer
	if err := run(context.Background(), []string{"config", "--outbox", u}, nil, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), secret) || !strings.Contains(out.String(), "outbox: ") {
		t.Errorf("herald config printed:\n%s", out.String())
	}

	_, logs := serveInProcess(t, "--outbox", u, "--log-format", "json")
	heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
		if !strings.Contains(logs.String(), "outbox: database session ended") {
			return fmt.Errorf("no log of the failed connection yet:\n%s", logs.String())
		}
		return nil
	})
	if strings.Contains(logs.String(), secret) {
		t.Errorf("the logs show the password:\n%s", logs.String())
	}
}

// serveInProcess runs herald serve with args on a free port until t ends.
func serveInProcess(t *testing.T, args ...string) (addr string, logs *syncBuffer) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr = ln.Addr().String()
	ln.Close()
	logs = &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, append([]string{"serve", "--addr", addr}, args...), nil, io.Discard, logs) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve: %v", err)
			}
		case <-time.After(heraldtest.Timeout):
			t.Error("serve did not stop")
		}
	})
	waitHealthy(t, addr)
	return addr, logs
}

// metrics returns what addr serves on /metrics.
func metrics(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// receiveN reads from c until it has the messages with data {"n": 1…n}
// (duplicates allowed), and fails unless each first appears in order.
func receiveN(t *testing.T, c *heraldtest.Client, n int) {
	t.Helper()
	next := 1
	for next <= n {
		f := c.Next()
		if f["op"] != "message" {
			continue
		}
		d, _ := f["data"].(map[string]any)
		got, _ := d["n"].(float64)
		switch {
		case int(got) == next:
			next++
		case int(got) > next:
			t.Fatalf("got n=%v where %d was due", got, next)
		}
	}
}

// herald serve --outbox publishes what the app commits, shows the reader
// in /metrics, and lets go of the reader lock when it stops.
func TestServeOutbox(t *testing.T) {
	t.Parallel()
	d := outboxtest.New(t)
	addr, _ := serveInProcess(t, "--outbox", d.URL, "--queue-messages", "10000")
	d.WaitHolder(0)
	c := heraldtest.Dial(t, "ws://"+addr+"/ws")
	c.MustOK(map[string]any{"op": "subscribe", "channel": "orders"})
	d.Insert("orders", 1, 1000)
	receiveN(t, c, 1000)
	d.WaitEmpty()
	m := metrics(t, addr)
	for _, want := range []string{"\nherald_outbox_reading 1\n", "\nherald_outbox_published_total 1000\n"} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics lacks %q", strings.TrimSpace(want))
		}
	}
}

// Without --outbox nothing of the outbox runs.
func TestServeWithoutOutbox(t *testing.T) {
	t.Parallel()
	addr, logs := serveInProcess(t, "--log-format", "json")
	if m := metrics(t, addr); strings.Contains(m, "herald_outbox") {
		t.Errorf("/metrics has outbox metrics without --outbox")
	}
	if strings.Contains(logs.String(), "outbox") {
		t.Errorf("the log speaks of the outbox without --outbox:\n%s", logs.String())
	}
}

// Two herald processes on one Redis and one outbox: one reads; when it is
// killed (SIGKILL: no shutdown, its session just ends) the other takes
// over within seconds and every row is published.
func TestOutboxTakeoverAfterKill(t *testing.T) {
	t.Parallel()
	d := outboxtest.New(t)
	broker := "redis://127.0.0.1:6379/0"
	a, addrA, _ := startHerald(t, "--broker", broker, "--outbox", d.URL)
	b, addrB, _ := startHerald(t, "--broker", broker, "--outbox", d.URL)
	d.WaitHolder(0)
	type node struct {
		pid  int
		addr string
	}
	nodes := []node{{a.Process.Pid, addrA}, {b.Process.Pid, addrB}}
	var reader, standby node
	heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
		ra := strings.Contains(metrics(t, addrA), "\nherald_outbox_reading 1\n")
		rb := strings.Contains(metrics(t, addrB), "\nherald_outbox_reading 1\n")
		switch {
		case ra && !rb:
			reader, standby = nodes[0], nodes[1]
		case rb && !ra:
			reader, standby = nodes[1], nodes[0]
		default:
			return fmt.Errorf("herald_outbox_reading 1 on A: %v, on B: %v; want on one", ra, rb)
		}
		return nil
	})
	// A channel of the test's own: the Redis is shared.
	channel := "outbox-" + d.Schema
	c := heraldtest.Dial(t, "ws://"+standby.addr+"/ws")
	c.MustOK(map[string]any{"op": "subscribe", "channel": channel})
	d.Insert(channel, 1, 100)
	d.WaitEmpty()
	if err := syscall.Kill(reader.pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	d.Insert(channel, 101, 100)
	heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
		if !strings.Contains(metrics(t, standby.addr), "\nherald_outbox_reading 1\n") {
			return fmt.Errorf("the standby does not read")
		}
		return nil
	})
	t.Logf("taken over %v after the kill", time.Since(start))
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("the takeover took %v", took)
	}
	receiveN(t, c, 200)
	d.WaitEmpty()
}
