package herald_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/heraldtest"
	"github.com/heraldhq/herald/internal/protocol"
)

// An SSE stream's `id:` line is the cursor of all its channels: with 32
// channels of long names it is kilobytes long, before every message. A
// stream that resumes all 32 from the start of full histories of tiny
// messages and never reads must still cost the server about its queue
// bound, not the encoded size of its whole catch-up (3,200 id lines of
// ~12 KB each, ~38 MB per stream).
func TestSSEResumeOfLongCursorsIsBounded(t *testing.T) {
	srv, base := newServer(t, herald.Config{WriteTimeout: time.Minute, PingInterval: time.Hour})
	var channels []string
	var cursor protocol.SSECursor
	for i := range protocol.MaxSSEChannels {
		ch := fmt.Sprintf("%02d%s", i, strings.Repeat("c", 253))
		channels = append(channels, ch)
		cursor = append(cursor, protocol.SSEPosition{Channel: ch, Offset: broker.Offset{}})
		for n := range 100 {
			if _, err := srv.Publish(context.Background(), ch, n); err != nil {
				t.Fatal(err)
			}
		}
	}
	path := "/sse?channel=" + strings.Join(channels, "&channel=")
	host := mustHost(t, base)
	before := heapInUse()
	const streams = 8
	for range streams {
		c, err := net.Dial("tcp", host)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		_ = c.(*net.TCPConn).SetReadBuffer(4096)
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nLast-Event-ID: %s\r\n\r\n", path, host, cursor)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("stream: %s", resp.Status)
		}
	}
	heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
		if got := metric(t, base, `herald_connections{transport="sse"}`); got != streams {
			return fmt.Errorf("%v SSE connections open, want %d", got, streams)
		}
		return nil
	})
	var peak int64
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		peak = max(peak, heapInUse()-before)
	}
	t.Logf("%d streams that never read hold %d MiB", streams, peak>>20)
	if limit := int64(streams) * 3 << 20; peak > limit {
		t.Fatalf("%d SSE streams that never read hold %d MiB, want within %d MiB (queue bound 1 MiB each)", streams, peak>>20, limit>>20)
	}
}
