package herald_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/heraldtest"
)

// flood sends cmds from a client that reads nothing, then a publish to
// "flood-done" that a watcher waits for. It samples the heap every few
// milliseconds until the server has handled every command (the watcher
// gets the publish) and, with untilClosed, has also closed the client
// (its writes stalled past WriteTimeout); it reports the highest heap
// seen and how many commands the client could write. The garbage
// collector runs often meanwhile, so that the heap seen is what the
// server holds, not garbage waiting for a collection.
func flood(t *testing.T, base string, attacker *frameConn, cmds [][]byte, untilClosed bool) (peak int64, written int) {
	t.Helper()
	defer debug.SetGCPercent(debug.SetGCPercent(10))
	watcher := dial(t, base)
	watcher.MustOK(map[string]any{"op": "subscribe", "channel": "flood-done"})
	cmds = append(cmds, []byte(`{"id":999999,"op":"publish","channel":"flood-done","data":"done"}`))
	var sent atomic.Int64
	go func() {
		for _, c := range cmds {
			_ = attacker.c.SetWriteDeadline(time.Now().Add(heraldtest.Timeout))
			if _, err := attacker.c.Write(clientFrame(true, opText, c)); err != nil {
				return
			}
			sent.Add(1)
		}
	}()
	deadline := time.Now().Add(heraldtest.Timeout)
	done := false
	for i := 0; ; i++ {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		peak = max(peak, int64(ms.HeapInuse))
		m, err := watcher.Poll(5 * time.Millisecond)
		if err != nil {
			t.Fatalf("watcher: %v", err)
		}
		done = done || m != nil && m["op"] == "message"
		if done && !untilClosed {
			return peak, int(sent.Load())
		}
		if i%20 == 19 && metric(t, base, `herald_connections{transport="ws"}`) == 1 {
			return peak, int(sent.Load()) // only the watcher is left
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v the server has not closed a client that reads nothing (handled every command: %v)", heraldtest.Timeout, done)
		}
	}
}

// One anonymous client that reads nothing cannot make the server hold
// more than its queue bound (plus a small constant), whatever commands it
// sends: catch-up from history, history reads, presence reads and pings
// all count against the bound, and its commands stop being read while the
// bound is full. Before catch-up was paged and counted, 400 subscribe
// (since "") / unsubscribe pairs on a channel holding 20 × 60 KB of
// history grew the heap by hundreds of MiB.
func TestOneClientCannotExhaustMemory(t *testing.T) {
	pad := make([]byte, 30<<10)
	cases := []struct {
		name string
		// stalls: the replies and pushes are more than the sockets hold,
		// so the client's writes stall and the server closes it. Not so
		// for catch-up: each unsubscribe ends its catch-up wherever it
		// got to, and when most end early (the command reader ran ahead
		// of the catch-ups) the rest fits the sockets (the server's send
		// buffer grows to 4 MiB), so the server may finish every command
		// with nothing left to write; flood then ends as soon as the
		// server has handled every command or closed the client.
		stalls bool
		cmds   func(i int) []string
	}{
		{"catch-up", false, func(i int) []string {
			return []string{
				fmt.Sprintf(`{"id":%d,"op":"subscribe","channel":"room","since":""}`, 2*i+1),
				fmt.Sprintf(`{"id":%d,"op":"unsubscribe","channel":"room"}`, 2*i+2),
			}
		}},
		{"many catch-ups", true, func(i int) []string {
			if i >= 64 {
				return nil
			}
			return []string{fmt.Sprintf(`{"id":%d,"op":"subscribe","channel":"room%d","since":""}`, i+1, i)}
		}},
		{"history", true, func(i int) []string {
			return []string{fmt.Sprintf(`{"id":%d,"op":"history","channel":"room","limit":100}`, i+1)}
		}},
		{"presence", false, func(i int) []string {
			return []string{fmt.Sprintf(`{"id":%d,"op":"presence","channel":"room"}`, i+1)}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv, base := newServer(t, herald.Config{
				WriteTimeout: 2 * time.Second,
				PingInterval: time.Hour,
				CommandRate:  -1, // the queue bound alone must hold
			})
			// 20 messages of 60 KB in "room"; for many catch-ups, 8 in
			// each of room0 … room63.
			channels, perChannel := []string{"room"}, 20
			if tc.name == "many catch-ups" {
				channels, perChannel = nil, 8
				for c := range 64 {
					channels = append(channels, fmt.Sprint("room", c))
				}
			}
			for _, ch := range channels {
				for n := range perChannel {
					_, _ = rand.Read(pad)
					if _, err := srv.Publish(context.Background(), ch, map[string]any{"n": n, "pad": hex.EncodeToString(pad)}); err != nil {
						t.Fatal(err)
					}
				}
			}
			attacker := dialFrames(t, base, "/ws")
			_ = attacker.c.(*net.TCPConn).SetReadBuffer(4096)
			var cmds [][]byte
			for i := range 400 {
				for _, c := range tc.cmds(i) {
					cmds = append(cmds, []byte(c))
				}
			}
			before := heapInUse()
			peak, written := flood(t, base, attacker, cmds, tc.stalls)
			grew := peak - before
			out := metric(t, base, "herald_messages_out_total")
			t.Logf("%d of %d commands written; %v pushes written; heap %d MiB → peak %d MiB", written, len(cmds)+1, out, before>>20, peak>>20)
			if grew > 16<<20 {
				t.Fatalf("one client that reads nothing grew the heap by %d MiB (bound: 1 MiB queue)", grew>>20)
			}
			if tc.name == "catch-up" && out < float64(perChannel) {
				// The bound held over catch-ups that ran, not over
				// unsubscribes that all came first.
				t.Fatalf("the server wrote %v pushes, want at least one whole catch-up (%d)", out, perChannel)
			}
			if got := metric(t, base, "herald_slow_consumer_disconnects_total"); got != 0 {
				t.Errorf("%v slow consumer disconnects: what a client asked for must pace it, not close it", got)
			}
			c := dial(t, base)
			c.MustOK(map[string]any{"op": "ping"})
		})
	}
}

// One client that subscribes and unsubscribes as fast as it can, in a
// namespace with join and leave pushes, cannot get the channel's other
// subscribers closed as slow consumers: join and leave are coalesced per
// channel, so readers that keep up stay connected, and when the churn
// stops each of them has seen the churning client leave as often as it
// joined.
func TestJoinLeaveChurnKeepsReadersConnected(t *testing.T) {
	t.Parallel()
	_, base := newServer(t, herald.Config{
		Namespaces:  map[string]herald.Namespace{"chat": {JoinLeave: true}},
		CommandRate: -1, // the coalescing alone must hold
	})
	const readers = 10
	type tally struct {
		mu     sync.Mutex
		joins  map[string]int
		leaves map[string]int
		bad    error
	}
	tallies := make([]*tally, readers)
	var wg sync.WaitGroup
	var stop atomic.Bool
	clients := make([]*heraldtest.Client, readers)
	for i := range readers {
		clients[i] = dial(t, base)
		clients[i].MustOK(map[string]any{"op": "subscribe", "channel": "chat:lobby"})
		tallies[i] = &tally{joins: map[string]int{}, leaves: map[string]int{}}
	}
	attacker := dial(t, base, "herald.v1.jsonl")
	who := clientID(attacker)
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tl := tallies[i]
			for !stop.Load() {
				m, err := c.Poll(50 * time.Millisecond)
				if err != nil {
					tl.mu.Lock()
					tl.bad = fmt.Errorf("reader %d: %w", i, err)
					tl.mu.Unlock()
					return
				}
				if m == nil {
					continue
				}
				tl.mu.Lock()
				switch m["op"] {
				case "join":
					tl.joins[m["client"].(string)]++
				case "leave":
					tl.leaves[m["client"].(string)]++
				}
				if j, l := tl.joins[who], tl.leaves[who]; j-l < 0 || j-l > 1 {
					tl.bad = fmt.Errorf("reader %d saw the churning client join %d and leave %d times", i, j, l)
				}
				tl.mu.Unlock()
			}
		}()
	}
	// 2,000 cycles, sent in batches, reading the replies.
	const cycles = 2000
	for i := 0; i < cycles; i += 100 {
		var batch []byte
		for k := i; k < i+100; k++ {
			line, _ := json.Marshal(map[string]any{"id": 1e6 + 2*k, "op": "subscribe", "channel": "chat:lobby"})
			batch = append(append(batch, line...), '\n')
			line, _ = json.Marshal(map[string]any{"id": 1e6 + 2*k + 1, "op": "unsubscribe", "channel": "chat:lobby"})
			batch = append(append(batch, line...), '\n')
		}
		attacker.SendRaw(string(batch[:len(batch)-1]))
	}
	// When the churn stops, every reader learns where the churning client
	// is: present after one more subscribe, gone after its unsubscribe.
	settled := func(present int) {
		t.Helper()
		heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
			for i, tl := range tallies {
				tl.mu.Lock()
				seen, bad := tl.joins[who]-tl.leaves[who], tl.bad
				tl.mu.Unlock()
				if bad != nil {
					return fmt.Errorf("reader %d: %w", i, bad)
				}
				if seen != present {
					return fmt.Errorf("reader %d sees %s present %d times (joins minus leaves), want %d", i, who, seen, present)
				}
			}
			return nil
		})
	}
	attacker.MustOK(map[string]any{"op": "subscribe", "channel": "chat:lobby"})
	settled(1)
	attacker.MustOK(map[string]any{"op": "unsubscribe", "channel": "chat:lobby"})
	settled(0)
	stop.Store(true)
	wg.Wait()
	for i, c := range clients {
		if tallies[i].bad != nil {
			t.Error(tallies[i].bad)
		}
		c.MustOK(map[string]any{"op": "ping"})
	}
	if got := metric(t, base, "herald_slow_consumer_disconnects_total"); got != 0 {
		t.Fatalf("%v readers were closed as slow consumers by another client's churn", got)
	}
	joins := 0
	for _, tl := range tallies {
		joins += tl.joins[who]
	}
	t.Logf("readers saw %d joins of the churning client over %d cycles", joins/readers, cycles)
}

// Catch-up is read a page at a time as the subscriber drains, and still
// gives every message after since exactly once and in order, followed by
// the live ones published meanwhile (a few ahead of the reader): here a
// queue bound of 16 KiB makes a resume over 800 messages of 1 KB take
// about a hundred pages while a publisher goes on, on each broker.
func TestPagedCatchUpIsExact(t *testing.T) {
	t.Parallel()
	brokers := map[string]func() broker.Broker{
		"memory": nil,
		"redis":  redisBrokers(t),
		"nats":   natsBrokers(t),
	}
	for name, mk := range brokers {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			cfg := herald.Config{QueueBytes: 16 << 10, HistorySize: 5000, PublishRate: -1}
			if mk != nil {
				cfg.Broker = mk()
			}
			srv, base := newServer(t, cfg)
			pad := strings.Repeat("x", 1000)
			const before, during = 800, 150
			for n := 1; n <= before; n++ {
				if _, err := srv.Publish(context.Background(), "paged", map[string]any{"n": n, "pad": pad}); err != nil {
					t.Fatal(err)
				}
			}
			published := make(chan error, 1)
			var received atomic.Int64
			c := dial(t, base)
			c.Send(map[string]any{"op": "subscribe", "channel": "paged", "since": ""})
			go func() {
				for n := before + 1; n <= before+during; n++ {
					// At most a few live messages ahead of the reader: the
					// live queue is only 16 KiB, and a reader slowed by a
					// busy machine would be closed as a slow consumer.
					for int64(n)-received.Load() > 8 {
						time.Sleep(time.Millisecond) // poll the reader's progress
					}
					if _, err := srv.Publish(context.Background(), "paged", map[string]any{"n": n, "pad": pad}); err != nil {
						published <- err
						return
					}
				}
				published <- nil
			}()
			reply := c.Next()
			if reply["ok"] != true || reply["recovered"] != true {
				t.Fatalf("subscribe reply %v", reply)
			}
			for want := 1; want <= before+during; want++ {
				if got := counter(t, nextMessage(t, c)); got != want {
					t.Fatalf("got message %d, want %d", got, want)
				}
				received.Store(int64(want))
			}
			if err := <-published; err != nil {
				t.Fatal(err)
			}
		})
	}
}
