package herald_test

import (
	"bufio"
	"bytes"
	"compress/flate"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/heraldtest"
)

// A permessage-deflate message that is small on the wire but inflates to
// many times MaxMessageSize (a deflate bomb: 40 MB of spaces in ~40 KB) is
// refused with 1009 once it inflates past the limit: the server never
// holds the inflated message, and the connection is not left open.
func TestDeflateBombClosesTooBig(t *testing.T) {
	_, base := newServer(t, herald.Config{})
	host := mustHost(t, base)
	c, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var key [16]byte
	_, _ = rand.Read(key[:])
	_ = c.SetDeadline(time.Now().Add(heraldtest.Timeout))
	fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
		host, base64.StdEncoding.EncodeToString(key[:]))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols || !strings.Contains(resp.Header.Get("Sec-WebSocket-Extensions"), "permessage-deflate") {
		t.Fatalf("handshake: %s, extensions %q", resp.Status, resp.Header.Get("Sec-WebSocket-Extensions"))
	}
	f := &frameConn{t: t, c: c, br: br}
	f.read() // welcome

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
	f.write(true, 0x40|opText, payload) // RSV1: compressed
	f.expectClose(1009)
	if grew := heapInUse() - before; grew > 4<<20 {
		t.Fatalf("a %d-byte compressed message grew the heap by %d MiB", len(payload), grew>>20)
	}
	if got := metric(t, base, `herald_refusals_total{reason="too_large"}`); got != 1 {
		t.Errorf("too_large refusals counted %v, want 1", got)
	}
}
