package ws

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/coder/websocket"

	"github.com/heraldhq/herald/internal/protocol"
	"github.com/heraldhq/herald/internal/wire"
	"github.com/heraldhq/herald/internal/wire/wiretest"
)

// The flushers leave one processor to the goroutines that read and fan
// out, and there is always one.
func TestFlusherCount(t *testing.T) {
	for procs, want := range map[int]int{1: 1, 2: 1, 4: 3, 16: 15} {
		if got := flusherCount(procs); got != want {
			t.Errorf("flusherCount(%d) = %d, want %d", procs, got, want)
		}
	}
}

// A flusher leaves to a writer goroutine the batches that would have it
// compress more than maxFlusherZip of replies for one connection; pushes
// (compressed once for all), small replies and connections that do not
// compress stay with it.
func TestCompressesMuch(t *testing.T) {
	big := bytes.Repeat([]byte("x"), maxFlusherZip+1)
	half := bytes.Repeat([]byte("x"), maxFlusherZip/2+1)
	zipping, plain := &Conn{deflate: true}, &Conn{}
	for _, tc := range []struct {
		name string
		c    *Conn
		ps   []*wire.Payload
		want bool
	}{
		{"a large reply", zipping, []*wire.Payload{{Bytes: big}}, true},
		{"two replies, larger together", zipping, []*wire.Payload{{Bytes: half}, {Bytes: half}}, true},
		{"a large push", zipping, []*wire.Payload{{Bytes: big, Push: true}}, false},
		{"a small reply", zipping, []*wire.Payload{{Bytes: half}}, false},
		{"no compression", plain, []*wire.Payload{{Bytes: big}}, false},
	} {
		if got := tc.c.compressesMuch(tc.ps); got != tc.want {
			t.Errorf("%s: compressesMuch = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// A batch handed to a writer goroutine for its compression (a large
// reply, behind a push) arrives whole and in order.
func TestLargeCompressedReplyIsWritten(t *testing.T) {
	url, conns := serveJSONL(t)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: []string{protocol.SubprotocolJSONL}, CompressionMode: websocket.CompressionNoContextTakeover})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	c.SetReadLimit(-1)
	s := accepted(t, conns)
	if !s.c.deflate {
		t.Fatal("the connection does not compress")
	}
	push := []byte(`{"op":"message","n":1}`)
	reply := []byte(`{"id":1,"ok":true,"pad":"` + strings.Repeat("history ", 4*maxFlusherZip/8) + `"}`)
	ps := []*wire.Payload{{Bytes: push, Push: true}, {Bytes: reply}}
	if !s.c.compressesMuch(ps) {
		t.Fatal("the batch is not one a flusher hands off")
	}
	sent := make(chan error, 1)
	s.c.Send(wiretest.Batch(ps, func(err error) { sent <- err }))
	waitWritten(t, sent, waitTimeout)
	_, msg, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if want := string(push) + "\n" + string(reply); string(msg) != want {
		t.Fatalf("got %d bytes, want the push and the %d-byte reply as two lines", len(msg), len(reply))
	}
}
