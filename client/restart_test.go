package client_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/client"
	"github.com/heraldhq/herald/heraldtest"
)

// buildHerald builds the herald command once per test binary.
var buildHerald = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "herald-client-test")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "herald")
	out, err := exec.Command("go", "build", "-o", bin, "../cmd/herald").CombinedOutput()
	if err != nil {
		return "", errors.New("go build ../cmd/herald: " + err.Error() + "\n" + string(out))
	}
	return bin, nil
})

func redisURL() string {
	if u := os.Getenv("HERALD_TEST_REDIS"); u != "" {
		return "redis://" + u + "/0"
	}
	return "redis://127.0.0.1:6379/0"
}

// heraldProcess is `herald serve` on Redis, killed and started again on
// the same address.
type heraldProcess struct {
	t    *testing.T
	bin  string
	addr string
	cmd  *exec.Cmd
}

func (p *heraldProcess) start() {
	p.t.Helper()
	p.cmd = exec.Command(p.bin, "serve", "--addr", p.addr, "--broker", redisURL(), "--publish-rate", "0", "--log-level", "error")
	p.cmd.Stderr = os.Stderr
	if err := p.cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	heraldtest.WaitFor(p.t, heraldtest.Timeout, func() error {
		c, err := net.Dial("tcp", p.addr)
		if err != nil {
			return fmt.Errorf("herald is not accepting connections yet: %w", err)
		}
		_ = c.Close()
		return nil
	})
}

func (p *heraldProcess) kill() {
	_ = p.cmd.Process.Kill()
	_ = p.cmd.Wait()
}

// The server is killed (SIGKILL: no goodbye to anyone) and started again
// while a publisher and a subscriber, each a Client, are mid-stream. The
// subscriber, which reconnects and resumes by itself, receives the exact
// sequence: every number once, in order. The publisher republishes a
// number whose ack was lost only when history shows it was not stored.
func TestServerKilledAndRestartedMidStream(t *testing.T) {
	t.Parallel()
	bin, err := buildHerald()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	p := &heraldProcess{t: t, bin: bin, addr: addr}
	p.start()
	t.Cleanup(p.kill)

	var b [6]byte
	_, _ = rand.Read(b[:])
	channel := "restart-" + hex.EncodeToString(b[:]) // the default Redis prefix is shared: a channel of this test's own
	t.Cleanup(func() { dropChannelKeys(channel) })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	opts := &client.Options{MinRetry: 20 * time.Millisecond, MaxRetry: 200 * time.Millisecond}
	sub := dial(t, "http://"+addr, opts)
	pub := dial(t, "http://"+addr, opts)
	s, err := sub.Subscribe(ctx, channel)
	if err != nil {
		t.Fatal(err)
	}

	const n = 60
	published := make(chan error, 1)
	go func() {
		published <- func() error {
			for i := 1; i <= n; i++ {
				if err := publishOnce(ctx, pub, channel, i); err != nil {
					return err
				}
				time.Sleep(5 * time.Millisecond)
			}
			return nil
		}()
	}()
	for i := 1; i <= n; i++ {
		m, err := s.Next(ctx)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if got := number(t, m); got != i {
			t.Fatalf("message %d is %d", i, got)
		}
		if i == n/3 || i == 2*n/3 {
			p.kill()
			p.start()
		}
	}
	if err := <-published; err != nil {
		t.Fatal(err)
	}
	if !s.Recovered() {
		t.Fatal("the last resubscription did not recover")
	}
}

// dropChannelKeys removes what herald serve's Redis broker (default prefix
// "herald:") keeps for channel.
func dropChannelKeys(channel string) {
	opt, err := goredis.ParseURL(redisURL())
	if err != nil {
		return
	}
	rdb := goredis.NewClient(opt)
	defer rdb.Close()
	ctx := context.Background()
	keys, _ := rdb.Keys(ctx, "herald:{"+channel+"}:*").Result()
	if len(keys) > 0 {
		rdb.Del(ctx, keys...)
	}
}

// publishOnce publishes i so that it is stored exactly once: a publish
// whose ack was lost with the connection is retried only when history,
// read after the reconnection, does not have it.
func publishOnce(ctx context.Context, c *client.Client, channel string, i int) error {
	for {
		_, err := c.Publish(ctx, channel, i, "")
		var herr *client.Error
		if err == nil || !errors.As(err, &herr) || herr.Code != "unavailable" {
			return err
		}
		// Unavailable: lost with the connection, or refused while the
		// server restarts. History tells which.
		hist, err := c.History(ctx, channel, client.HistoryOptions{Limit: 1})
		if err != nil {
			return err
		}
		if len(hist) == 1 {
			var last int
			if json.Unmarshal(hist[0].Data, &last) == nil && last == i {
				return nil
			}
		}
	}
}
