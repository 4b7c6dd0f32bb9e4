package ws

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldhq/herald/internal/protocol"
	"github.com/heraldhq/herald/internal/wire"
	"github.com/heraldhq/herald/internal/wire/wiretest"
)

// serveJSONL serves connections that speak herald.v1.jsonl and hands
// each (two at most) to the returned channel.
func serveJSONL(t *testing.T) (string, chan served) {
	conns := make(chan served, 2)
	_, url := serveWith(t, Config{}, nil, func(c *Conn) Handler {
		h := newRecorder()
		conns <- served{c, h}
		return h
	}, protocol.SubprotocolJSONL)
	return url, conns
}

// In herald.v1.jsonl a batch of several payloads goes out as one text
// message of lines, with and without permessage-deflate (where each
// payload is compressed on its own and the pieces are joined): every line
// is one whole payload, in order. Pushes, framed once for every
// connection, go to both connections and come out right in both forms.
func TestJSONLBatchIsOneMessageOfLines(t *testing.T) {
	url, conns := serveJSONL(t)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	type client struct {
		c *websocket.Conn
		s served
	}
	var clients []client
	for _, mode := range []websocket.CompressionMode{websocket.CompressionDisabled, websocket.CompressionNoContextTakeover} {
		c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: []string{protocol.SubprotocolJSONL}, CompressionMode: mode})
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseNow()
		s := accepted(t, conns)
		if s.c.Subprotocol() != protocol.SubprotocolJSONL || s.c.deflate != (mode != websocket.CompressionDisabled) {
			t.Fatalf("connection speaks %q, deflate %v; want %q, deflate %v", s.c.Subprotocol(), s.c.deflate, protocol.SubprotocolJSONL, mode != websocket.CompressionDisabled)
		}
		clients = append(clients, client{c, s})
	}

	for round := range 20 {
		// Small payloads (not worth compressing on their own), large ones,
		// pushes and replies, mixed.
		n := 2 + round%5
		ps := make([]*wire.Payload, n)
		want := make([][]byte, n)
		for i := range ps {
			size := 10
			if (round+i)%2 == 0 {
				size = 2000
			}
			b := make([]byte, size/2)
			_, _ = rand.Read(b)
			want[i] = fmt.Appendf(nil, `{"n":%d,"pad":"%s"}`, round*10+i, hex.EncodeToString(b))
			ps[i] = &wire.Payload{Bytes: want[i], Push: i%3 != 1}
		}
		for _, cl := range clients {
			sent := make(chan error, 1)
			cl.s.c.Send(wiretest.Batch(ps, func(err error) { sent <- err }))
			select {
			case err := <-sent:
				if err != nil {
					t.Fatalf("round %d: send: %v", round, err)
				}
			case <-time.After(waitTimeout):
				t.Fatalf("round %d: the batch was not written within %v", round, waitTimeout)
			}
			typ, msg, err := cl.c.Read(ctx)
			if err != nil {
				t.Fatalf("round %d (deflate %v): read: %v", round, cl.s.c.deflate, err)
			}
			if typ != websocket.MessageText || !bytes.Equal(msg, bytes.Join(want, []byte("\n"))) {
				t.Fatalf("round %d (deflate %v): got a %v message of %d lines, %.80q; want the %d payloads as lines",
					round, cl.s.c.deflate, typ, bytes.Count(msg, []byte("\n"))+1, msg, n)
			}
		}
	}
}

// lateSource is a wire.Source whose write may begin only once the test
// says so (begin): Take waits for it, so a Send that took the payloads
// itself, before returning, would find only what was queued by then.
type lateSource struct {
	begin   chan struct{}
	written chan error

	mu sync.Mutex
	ps []*wire.Payload
}

func (s *lateSource) add(p *wire.Payload) {
	s.mu.Lock()
	s.ps = append(s.ps, p)
	s.mu.Unlock()
}

func (s *lateSource) Take() []*wire.Payload {
	select {
	case <-s.begin:
	case <-time.After(waitTimeout):
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ps
}

func (s *lateSource) Written(err error) { s.written <- err }

// A write takes its payloads when it begins, not when Send starts it: a
// payload queued after Send returned goes out in the same frame.
func TestWriteTakesItsPayloadsWhenItBegins(t *testing.T) {
	url, conns := serveJSONL(t)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: []string{protocol.SubprotocolJSONL}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	s := accepted(t, conns)

	src := &lateSource{begin: make(chan struct{}), written: make(chan error, 1)}
	src.add(&wire.Payload{Bytes: []byte(`{"n":1}`), Push: true})
	s.c.Send(src)
	src.add(&wire.Payload{Bytes: []byte(`{"n":2}`), Push: true})
	close(src.begin)
	waitWritten(t, src.written, 2*waitTimeout)
	_, msg, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if want := "{\"n\":1}\n{\"n\":2}"; string(msg) != want {
		t.Fatalf("the write carried %q, want both payloads, %q", msg, want)
	}
}
