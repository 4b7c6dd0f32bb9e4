package herald_test

import (
	"context"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/heraldtest"
)

// A peer that sends commands and reads nothing must not make the server
// hold its replies without bound: once QueueBytes of replies wait, the
// session stops handling commands until they drain (TCP backpressure), and
// a write stuck past WriteTimeout closes it. Without that, one 64 KiB frame
// of herald.v1.jsonl history commands against a history of large messages
// could pin gigabytes.
//
// Here: 300 history commands whose replies are ~400 KB each (~120 MB);
// what the server holds on to must stay within a few QueueBytes (16 MB).
func TestRepliesToAPeerThatDoesNotReadAreBounded(t *testing.T) {
	var handled atomic.Int32
	srv, base := newServer(t, herald.Config{
		WriteTimeout: time.Minute, // the write timeout is not the bound
		PingInterval: time.Hour,
		Hooks: herald.Hooks{AuthorizeSubscribe: func(context.Context, herald.Client, string) error {
			handled.Add(1)
			return nil
		}},
	})
	pad := strings.Repeat("x", 4000)
	for i := range 100 {
		if _, err := srv.Publish(context.Background(), "big", map[string]any{"n": i, "pad": pad}); err != nil {
			t.Fatal(err)
		}
	}
	stuck := dialFrames(t, base, "/ws")
	_ = stuck.c.(*net.TCPConn).SetReadBuffer(4096)

	heapBefore := heapInUse()
	const commands = 300
	for i := 1; i <= commands; i++ {
		stuck.write(true, opText, []byte(`{"id":`+strconv.Itoa(i)+`,"op":"history","channel":"big"}`))
	}
	// Watch for a while: the server may answer every command, stop
	// reading commands, or close the connection — but never hold more than
	// a few QueueBytes for it.
	const limit = 16 << 20
	watchUntil := time.Now().Add(3 * time.Second)
	for handled.Load() < commands && !stuckGone(t, base) && time.Now().Before(watchUntil) {
		if held := heapInUse() - heapBefore; held > limit {
			t.Fatalf("after %d of %d history commands the server holds %d MB of replies for a peer that reads nothing (QueueBytes is 1 MiB)",
				handled.Load(), commands, held>>20)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if held := heapInUse() - heapBefore; held > limit && !stuckGone(t, base) {
		t.Fatalf("after %d of %d history commands the server holds %d MB of replies for a peer that reads nothing (QueueBytes is 1 MiB)",
			handled.Load(), commands, held>>20)
	}
}

// stuckGone reports whether the server has closed the test's only
// JSON connection.
func stuckGone(t *testing.T, base string) bool {
	return metric(t, base, `herald_connections{transport="ws"}`) == 0
}

func heapInUse() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapInuse)
}

// Shutdown must not return while a connection it has not closed is still
// being set up: a connection counts from its upgrade, before the Connected
// hook and Session.Open run, so Shutdown sends it 1001 and waits for it
// before closing the broker. Otherwise a raw client's Open would fail under
// a closed broker (1011) and a JSON client would stay connected to a server
// that has shut down. A slow Connected hook widens the window; here it is
// held open until Shutdown returns (or 2s pass, for a server that waits for
// it).
func TestShutdownClosesConnectionsBeingAccepted(t *testing.T) {
	for _, tt := range []struct{ name, path, send, reply string }{
		{"json", "/ws", `{"id":1,"op":"ping"}`, `{"id":1,"ok":true}`},
		{"raw", "/ws/room", "hello", "hello"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			entered := make(chan struct{})
			release := make(chan struct{})
			srv, base := newServer(t, herald.Config{Hooks: herald.Hooks{
				Connected: func(herald.Client) {
					close(entered)
					<-release
				},
			}})
			ctx, cancel := context.WithTimeout(context.Background(), heraldtest.Timeout)
			defer cancel()
			conn, _, err := websocket.Dial(ctx, heraldtest.WSURL(base, tt.path), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.CloseNow()
			<-entered

			shutdown := make(chan error, 1)
			go func() { shutdown <- srv.Shutdown(ctx) }()
			var shutdownErr error
			returned := false
			select {
			case shutdownErr = <-shutdown:
				returned = true // with the connection still being accepted
			case <-time.After(2 * time.Second):
			}
			close(release)

			if err := conn.Write(ctx, websocket.MessageText, []byte(tt.send)); err == nil {
				for {
					_, b, err := conn.Read(ctx)
					if err != nil {
						if code := websocket.CloseStatus(err); code != websocket.StatusGoingAway {
							t.Fatalf("connection accepted during Shutdown ended with %v (%v), want close 1001", code, err)
						}
						break
					}
					if string(b) == tt.reply && returned {
						t.Fatalf("Shutdown has returned, and the connection accepted meanwhile still answers: %s", b)
					}
				}
			}
			if !returned {
				shutdownErr = <-shutdown
			}
			if shutdownErr != nil {
				t.Fatalf("Shutdown: %v", shutdownErr)
			}
		})
	}
}
