package herald_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/heraldtest"
)

// BenchmarkBroadcastOverWebSocket publishes to subs raw-mode subscribers,
// each a real WebSocket on loopback, and waits for every one of them to
// read each message: the whole path from publish to socket. allocs/op
// counts the server's allocations per message (the readers allocate
// nothing), so allocs/op ÷ subs is what one delivery allocates.
func BenchmarkBroadcastOverWebSocket(b *testing.B) {
	for _, subs := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("subs=%d", subs), func(b *testing.B) { benchBroadcast(b, subs) })
	}
}

func benchBroadcast(b *testing.B, subs int) {
	srv, hs := heraldtest.NewServer(b, herald.Config{AllowAnonymous: true, MaxConnectionsPerIP: -1})
	var (
		read   atomic.Int64 // messages read by all subscribers together
		target atomic.Int64 // read count at which the publisher goes on
		done   = make(chan struct{}, 1)
		failed = make(chan error, subs)
	)
	target.Store(-1)
	for range subs {
		br := bufio.NewReader(dialSilent(b, hs.URL, "/ws/bench"))
		go func() {
			for {
				if err := skipFrame(br); err != nil {
					failed <- err
					return
				}
				if read.Add(1) == target.Load() {
					done <- struct{}{}
				}
			}
		}()
	}
	ctx := context.Background()
	data := strings.Repeat("x", 128)
	heraldtest.WaitFor(b, heraldtest.Timeout, func() error {
		if n := subscribers(b, hs.URL, "bench"); n != subs {
			return fmt.Errorf("presence of bench: %d subscribers, want %d", n, subs)
		}
		return nil
	})
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 1; i <= b.N; i++ {
		target.Store(int64(i * subs))
		if _, err := srv.Publish(ctx, "bench", data); err != nil {
			b.Fatal(err)
		}
		select {
		case <-done:
		case err := <-failed:
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(subs), "ns/delivery")
}

// skipFrame reads past one unmasked frame without allocating.
func skipFrame(br *bufio.Reader) error {
	h, err := br.Peek(2)
	if err != nil {
		return err
	}
	n := int(h[1] & 0x7f)
	hlen := 2
	switch n {
	case 126:
		hlen = 4
	case 127:
		hlen = 10
	}
	if h, err = br.Peek(hlen); err != nil {
		return err
	}
	switch n {
	case 126:
		n = int(binary.BigEndian.Uint16(h[2:]))
	case 127:
		n = int(binary.BigEndian.Uint64(h[2:]))
	}
	if _, err := br.Discard(hlen + n); err != nil {
		return fmt.Errorf("frame: %w", err)
	}
	if n == 0 {
		return io.ErrUnexpectedEOF
	}
	return nil
}

// subscribers reads a channel's subscriber count from GET /api/channels.
func subscribers(tb testing.TB, base, channel string) int {
	tb.Helper()
	r := apiCall(tb, http.MethodGet, base+"/api/channels", "")
	list, _ := r.body["channels"].([]any)
	for _, v := range list {
		if c, _ := v.(map[string]any); c["channel"] == channel {
			n, _ := c["subscribers"].(float64)
			return int(n)
		}
	}
	return 0
}
