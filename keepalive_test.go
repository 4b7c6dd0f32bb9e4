package herald_test

import (
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker/redis"
	"github.com/heraldhq/herald/heraldtest"
)

// Dead connections are closed on time while the broker does not answer:
// closing one leaves presence, sends its leave event and unsubscribes the
// channel, broker calls that each wait for the broker's timeout here, and
// none of that may hold up the keepalive that finds the others dead.
func TestDeadConnectionsClosedWhileBrokerStalls(t *testing.T) {
	t.Parallel()
	p := newFaultProxy(t, redisAddr())
	prefix := testPrefix() + ":"
	t.Cleanup(func() { dropRedisKeys(prefix) })
	b, err := redis.New(redis.Config{
		URL:    "redis://" + p.addr + "/0?dial_timeout=200ms&read_timeout=1s&write_timeout=1s&max_retries=0",
		Prefix: prefix,
	})
	if err != nil {
		t.Fatal(err)
	}
	const ping, pong, peers = 300 * time.Millisecond, 300 * time.Millisecond, 8
	_, base := newServer(t, herald.Config{
		Broker:       b,
		PingInterval: ping,
		PongTimeout:  pong,
		Namespaces:   map[string]herald.Namespace{"room": {JoinLeave: true}},
	})
	watcher := dial(t, base)
	start := time.Now()
	dead := make([]net.Conn, peers)
	for i := range dead {
		dead[i] = dialSilent(t, base, "/ws/room:dead") // never answers a ping
	}
	waitPresent(t, watcher, "room:dead", peers)
	p.stall()
	t.Cleanup(p.restore) // let the cleanup that waits on the broker end

	// Each peer is quiet from its start; the keepalive closes it at
	// ping + pong after that, give or take a tick.
	closed := make(chan time.Duration, peers)
	for _, c := range dead {
		go func() {
			_ = c.SetReadDeadline(time.Now().Add(heraldtest.Timeout))
			_, err := io.Copy(io.Discard, c)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				closed <- -1
				return
			}
			closed <- time.Since(start)
		}()
	}
	limit := ping + pong + 2*time.Second
	for range peers {
		d := <-closed
		if d < 0 {
			t.Fatalf("a dead connection is still open after %v", heraldtest.Timeout)
		}
		if d > limit {
			t.Fatalf("a dead connection was closed %v after it went quiet, want within %v: closing the others waited on the broker", d.Round(time.Millisecond), limit)
		}
	}
}
