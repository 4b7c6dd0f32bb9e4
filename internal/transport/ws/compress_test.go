package ws

import (
	"bufio"
	"bytes"
	"compress/flate"
	"context"
	"runtime"
	"testing"

	"github.com/gobwas/httphead"
	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsflate"
)

// A permessage-deflate message that is small on the wire but inflates to
// many times MaxMessageSize (a deflate bomb: 40 MB of spaces in ~40 KB) is
// refused with 1009 once it inflates past the limit: the server never
// holds the inflated message, the Handler is never handed it, the refusal
// is reported once as too_large, and the connection is not left open.
func TestDeflateBombClosesTooBig(t *testing.T) {
	var refused refusals
	_, url, echoes := echoServer(t, Config{Refused: refused.add})
	d := ws.Dialer{
		Timeout:    waitTimeout,
		Extensions: []httphead.Option{wsflate.Parameters{ServerNoContextTakeover: true, ClientNoContextTakeover: true}.Option()},
	}
	nc, br, hs, err := d.Dial(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	accepted := false
	for _, ext := range hs.Extensions {
		accepted = accepted || string(ext.Name) == wsflate.ExtensionName
	}
	e := <-echoes
	if !accepted || !e.c.deflate {
		t.Fatalf("permessage-deflate not negotiated (response header %v, server side %v)", accepted, e.c.deflate)
	}

	var zipped bytes.Buffer
	w, _ := flate.NewWriter(&zipped, flate.BestCompression)
	spaces := bytes.Repeat([]byte(" "), 1<<20)
	_, _ = w.Write([]byte(`{"id":1,"op":"ping"`))
	for range 40 {
		_, _ = w.Write(spaces)
	}
	_, _ = w.Write([]byte(`}`))
	_ = w.Flush()
	payload := bytes.TrimSuffix(zipped.Bytes(), []byte{0, 0, 0xff, 0xff})
	if len(payload) > 65536 {
		t.Fatalf("the bomb is %d bytes on the wire, over MaxMessageSize itself", len(payload))
	}
	before := heapInUse()
	f := ws.NewTextFrame(payload)
	f.Header.Rsv = ws.Rsv(true, false, false) // compressed
	sendFrame(t, nc, f)
	if br == nil {
		br = bufio.NewReader(nc)
	}
	for {
		fr := readFrame(t, nc, br)
		if fr.Header.OpCode == ws.OpClose {
			if code, _ := ws.ParseCloseFrameData(fr.Payload); code != ws.StatusMessageTooBig {
				t.Fatalf("close code %d, want 1009", code)
			}
			break
		}
		t.Fatalf("got a %v frame of %d bytes before the close: the bomb was handled", fr.Header.OpCode, len(fr.Payload))
	}
	if grew := heapInUse() - before; grew > 4<<20 {
		t.Fatalf("a %d-byte compressed message grew the heap by %d MiB", len(payload), grew>>20)
	}
	if got := refused.get(); len(got) != 1 || got[0] != "too_large" {
		t.Fatalf("refusals %q, want one too_large", got)
	}
	waitClosed(t, e.closed, "the bomb's connection")
}

func heapInUse() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapInuse)
}
