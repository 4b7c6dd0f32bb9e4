package ws

import (
	"runtime"
	"testing"
	"time"
)

// A ping round over many idle connections does not start a goroutine for
// every pong at once. The sweep used to send every ping of the round
// together; the pongs then came back together, and the event loop's
// goroutine for each readable connection held a stack apiece — after
// every round an idle server's memory had grown by a stack per
// connection. Pings now go out a batch at a time.
func TestPingRoundKeepsReadersFew(t *testing.T) {
	const n = 4000
	tr, url := serveWith(t, Config{PingInterval: 2 * time.Second, PongTimeout: 10 * time.Second}, nil,
		func(*Conn) Handler { return newRecorder() })
	pongers := make([]*ponger, n)
	for i := range pongers {
		pongers[i] = dialPonger(t, url)
	}
	t.Cleanup(func() {
		for _, p := range pongers {
			_ = p.nc.Close()
		}
	})
	waitFor(t, "every connection served", func() bool { return tr.Len() == n })
	base := runtime.NumGoroutine()
	peak := base
	deadline := time.Now().Add(waitTimeout)
	for answered := 0; answered < n; {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d connections answered a ping", answered, n)
		}
		peak = max(peak, runtime.NumGoroutine())
		runtime.Gosched() // the server's goroutines come first
		answered = 0
		for _, p := range pongers {
			if p.pings.Load() > 0 {
				answered++
			}
		}
	}
	// A few batches' pongs at once (the goroutines that read them wait
	// their turn behind the clients here, which answer on the server's
	// cores, as remote clients would not): 450–900 of them, as against
	// 2,500–3,000 when the whole round went out together.
	const most = n / 3
	t.Logf("%d connections: %d goroutines before the ping round, at most %d during it", n, base, peak)
	if peak-base > most {
		t.Fatalf("the ping round ran %d goroutines more than before it, want at most %d", peak-base, most)
	}
}
