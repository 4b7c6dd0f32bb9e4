package ws

import (
	"bytes"
	"compress/flate"
	"net"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/gobwas/ws"
)

// counter is a Handler that counts the messages it is handed.
type counter struct{ n *atomic.Int64 }

func (c counter) Opened()             {}
func (c counter) HandleText([]byte)   { c.n.Add(1) }
func (c counter) HandleBinary([]byte) { c.n.Add(1) }
func (c counter) Close()              {}

// Idle memory per connection, by what it negotiated, once each connection
// has sent one 2000-byte message (compressed where it compresses): a
// connection without client context takeover costs what a connection
// without compression does — herald keeps no window for it — and one with
// client context takeover costs the client's window on top, as much of it
// as the client has filled (here the one message; at most 32 KiB). The
// figures are the server's and the clients' heap together, the same
// clients for every kind: the differences are the server's.
func TestDeflateIdleMemory(t *testing.T) {
	const n = 1000
	msg := randomText(2000)
	var zipped bytes.Buffer
	zw, _ := flate.NewWriter(&zipped, flate.BestSpeed)
	_, _ = zw.Write(msg)
	_ = zw.Flush()
	payload := bytes.TrimSuffix(zipped.Bytes(), deflateTail)
	kinds := []struct {
		name   string
		offers []string
	}{
		{"warm-up", nil}, // the first round also pays for the test's own growth: not counted
		{"uncompressed", nil},
		{"no context takeover", []string{"permessage-deflate; client_no_context_takeover"}},
		{"client context takeover", []string{"permessage-deflate"}},
	}
	per := map[string]int64{}
	for _, k := range kinds {
		var handled atomic.Int64
		tr, url := serveWith(t, Config{}, nil, func(*Conn) Handler { return counter{&handled} })
		before := settledHeap()
		conns := make([]net.Conn, 0, n)
		for range n {
			nc, _, resp := handshake(t, url, "", k.offers...)
			if _, ok := parseAnswer(t, resp); ok != (k.offers != nil) {
				t.Fatalf("%s: permessage-deflate negotiated %v", k.name, ok)
			}
			f := ws.NewTextFrame(msg)
			if k.offers != nil {
				f = ws.NewTextFrame(payload)
				f.Header.Rsv = ws.Rsv(true, false, false)
			}
			sendFrame(t, nc, f)
			conns = append(conns, nc)
		}
		waitFor(t, k.name+": every message handled", func() bool { return handled.Load() == n })
		per[k.name] = (settledHeap() - before) / n
		t.Logf("%s: %d bytes of heap per connection (server and client)", k.name, per[k.name])
		tr.CloseAll(1001, "measured")
		for _, nc := range conns {
			_ = nc.Close()
		}
		waitFor(t, k.name+": every connection closed", func() bool { return tr.Len() == 0 })
	}
	if d := per["no context takeover"] - per["uncompressed"]; d > 512 {
		t.Errorf("a connection without context takeover costs %d bytes more than one without compression", d)
	}
	if d := per["client context takeover"] - per["uncompressed"]; d < int64(len(msg))/2 || d > 4096 {
		t.Errorf("a connection with client context takeover costs %d bytes more than one without compression; want about the %d-byte message it keeps", d, len(msg))
	}
}

// settledHeap is heapInUse without what pools hold: a second collection
// empties what the first left in their victim caches.
func settledHeap() int64 {
	runtime.GC()
	return heapInUse()
}
