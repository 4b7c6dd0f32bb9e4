package ws

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// While attackers complete a good handshake and then send bytes that are
// no WebSocket frames, each is closed — with a close frame or a reset,
// never left open — and a clean client meanwhile gets every one of its
// messages echoed, once, in order. Afterwards only the clean client is
// left.
func TestGarbageFramesLeaveOthersClean(t *testing.T) {
	tr, url, _ := echoServer(t, Config{PingInterval: time.Hour})
	clean, br := dialWS(t, url, nil)

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var wg sync.WaitGroup
	var attacks atomic.Int64
	for range 4 {
		wg.Go(func() {
			for ctx.Err() == nil {
				if err := sendGarbage(url); err != nil && ctx.Err() == nil {
					t.Errorf("garbage frames: %v", err)
					return
				}
				attacks.Add(1)
			}
		})
	}

	const n = 300
	for i := 1; i <= n; i++ {
		sendFrame(t, clean, ws.NewTextFrame([]byte(strconv.Itoa(i))))
		if i%10 == 0 {
			time.Sleep(5 * time.Millisecond) // spread the messages over the attack
		}
	}
	for i := 1; i <= n; i++ {
		f := readFrame(t, clean, br)
		if f.Header.OpCode != ws.OpText || string(f.Payload) != strconv.Itoa(i) {
			t.Fatalf("the clean client got %v %q, want text %d", f.Header.OpCode, f.Payload, i)
		}
	}
	stop()
	wg.Wait()
	// A ping fences the echoes: its pong comes after anything still due.
	sendFrame(t, clean, ws.NewPingFrame([]byte("fence")))
	if f := readFrame(t, clean, br); f.Header.OpCode != ws.OpPong || string(f.Payload) != "fence" {
		t.Fatalf("the clean client got more: %v %q", f.Header.OpCode, f.Payload)
	}
	t.Logf("%d attacking connections meanwhile", attacks.Load())
	waitFor(t, "only the clean client left", func() bool { return tr.Len() == 1 })
}

// sendGarbage upgrades a connection to url, sends 1 KiB that is no
// WebSocket frame, and reports an error unless the server closes it.
func sendGarbage(url string) error {
	nc, _, _, err := ws.Dialer{Timeout: waitTimeout}.Dial(context.Background(), url)
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	defer nc.Close()
	junk := make([]byte, 1024)
	_, _ = rand.Read(junk)
	junk[0] |= 0x30 // reserved bits no extension gave a meaning: a frame that cannot be waited on
	_, _ = nc.Write(junk)
	_ = nc.SetReadDeadline(time.Now().Add(waitTimeout))
	// Closed either way: with a close frame and FIN, or a reset when the
	// server drops what it did not read. Only a timeout is wrong.
	var ne net.Error
	if _, err := io.Copy(io.Discard, nc); errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("the server did not close a connection sending garbage: %w", err)
	}
	return nil
}
