package loadtest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/heraldtest"
)

// runBench runs `herald bench args…` against a fresh in-process server and
// decodes the JSON line it prints last.
func runBench(t *testing.T, args ...string) map[string]any {
	t.Helper()
	_, hs := heraldtest.NewServer(t, herald.Config{PublishRate: -1}) // the tool publishes from one connection
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	args = append(args, "-url", heraldtest.WSURL(hs.URL, "/ws"))
	if err := Run(ctx, args, &stdout, &stderr); err != nil {
		t.Fatalf("bench %v: %v\nstdout:\n%s\nstderr:\n%s", args, err, &stdout, &stderr)
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	var res map[string]any
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res); err != nil {
		t.Fatalf("last line is not JSON: %v\n%s", err, &stdout)
	}
	return res
}

func TestIdle(t *testing.T) {
	for _, proto := range []string{"json", "jsonl", "raw"} {
		t.Run("proto="+proto, func(t *testing.T) {
			res := runBench(t, "idle", "-n", "40", "-c", "8", "-hold", "300ms", "-proto", proto,
				"-pid", strconv.Itoa(os.Getpid()), "-settle", "2s")
			if res["subscribed"] != 40.0 || res["errors"] != 0.0 || res["dropped"] != 0.0 {
				t.Fatalf("result %v", res)
			}
			if res["rss_after_kib"].(float64) <= 0 || res["connect_rate"].(float64) <= 0 {
				t.Fatalf("missing figures: %v", res)
			}
			if proto != "raw" && res["server_subscriptions"] != 40.0 {
				t.Fatalf("server has %v subscriptions, want 40", res["server_subscriptions"])
			}
		})
	}
}

func TestFanout(t *testing.T) {
	for _, proto := range []string{"json", "jsonl", "raw"} {
		t.Run("proto="+proto, func(t *testing.T) {
			res := runBench(t, "fanout", "-subs", "10", "-rate", "100", "-duration", "500ms", "-size", "300", "-proto", proto)
			published := res["published"].(float64)
			if published < 40 || res["acked"] != published || res["expected"] != published*10 {
				t.Fatalf("published %v, result %v", published, res)
			}
			if res["lost"] != 0.0 || res["received"] != published*10 || res["duplicates"] != 0.0 || res["out_of_order"] != 0.0 {
				t.Fatalf("result %v", res)
			}
			if res["p99_ms"].(float64) <= 0 || res["max_ms"].(float64) < res["p50_ms"].(float64) {
				t.Fatalf("latencies %v", res)
			}
		})
	}
}

// TestFanoutSubURLs spreads the subscribers over two servers that share no
// broker, so exactly the half dialled to the publisher's server receive.
func TestFanoutSubURLs(t *testing.T) {
	_, a := heraldtest.NewServer(t, herald.Config{})
	_, b := heraldtest.NewServer(t, herald.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	args := []string{"fanout", "-subs", "10", "-rate", "100", "-duration", "300ms", "-drain", "1s",
		"-dial-timeout", "1s", "-url", heraldtest.WSURL(a.URL, "/ws"), "-node-pids", strconv.Itoa(os.Getpid()),
		"-sub-urls", heraldtest.WSURL(a.URL, "/ws") + ", " + b.URL}
	if err := Run(ctx, args, &stdout, &stderr); err != nil {
		t.Fatalf("bench %v: %v\nstderr:\n%s", args, err, &stderr)
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	var res map[string]any
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res); err != nil {
		t.Fatalf("last line is not JSON: %v\n%s", err, &stdout)
	}
	published := res["published"].(float64)
	if published < 20 || res["acked"] != published || res["subscribed"] != 10.0 {
		t.Fatalf("result %v", res)
	}
	if res["subs_complete"] != 5.0 || res["received"] != published*5 || res["lost"] != published*5 {
		t.Fatalf("want half the subscribers complete and half lost: %v", res)
	}
	if res["server_nodes"] != 1.0 {
		t.Fatalf("server_nodes %v, want 1", res["server_nodes"])
	}
	if urls, _ := res["sub_urls"].([]any); len(urls) != 2 || !strings.HasPrefix(urls[1].(string), "ws://") {
		t.Fatalf("sub_urls %v", res["sub_urls"])
	}
}

func TestSSE(t *testing.T) {
	res := runBench(t, "sse", "-subs", "10", "-rate", "100", "-duration", "500ms", "-size", "300")
	published := res["published"].(float64)
	if published < 40 || res["acked"] != published || res["expected"] != published*10 {
		t.Fatalf("published %v, result %v", published, res)
	}
	if res["lost"] != 0.0 || res["received"] != published*10 || res["duplicates"] != 0.0 || res["out_of_order"] != 0.0 {
		t.Fatalf("result %v", res)
	}
	if res["errors"] != 0.0 || res["proto"] != "sse" || !strings.Contains(res["url"].(string), "/sse?channel=sse") {
		t.Fatalf("result %v", res)
	}
	if res["p99_ms"].(float64) <= 0 || res["max_ms"].(float64) < res["p50_ms"].(float64) {
		t.Fatalf("latencies %v", res)
	}
}

func TestSSEParser(t *testing.T) {
	stream := "retry: 2000\r\n: hello\n\nid: 7\nevent: news\ndata: a\ndata\ndata:b\n\n" +
		"data: x\nid\n\nid: 9\u0000\nevent: lone\n\ndata: " + strings.Repeat("z", 5000) + "\n\nid: 10\ndata: cut"
	c := &sseConn{body: bufio.NewReaderSize(strings.NewReader(stream), 16)}
	p := newSSEParser()
	type event struct{ typ, data, id string }
	var got []event
	for {
		l, err := c.readLine()
		if err != nil {
			break
		}
		if ev, ok := p.line(l); ok {
			got = append(got, event{string(ev.typ), string(ev.data), string(ev.id)})
		}
	}
	want := []event{{"news", "a\n\nb", "7"}, {"message", "x", ""}, {"message", strings.Repeat("z", 5000), ""}}
	if !slices.Equal(got, want) {
		t.Errorf("events %q, want %q", got, want)
	}
	if p.retry != 2000 || p.comments != 1 {
		t.Errorf("retry %d, comments %d", p.retry, p.comments)
	}
}

func TestRunRefusesBadInput(t *testing.T) {
	ctx := context.Background()
	for _, args := range [][]string{
		{"nope"},
		{"idle", "-n", "0"},
		{"idle", "-proto", "xml"},
		{"idle", "-url", "https://127.0.0.1:1/ws"},
		{"fanout", "-rate", "0"},
		{"fanout", "extra"},
		{"fanout", "-sub-urls", "ws://127.0.0.1:1/ws,ftp://127.0.0.1:1/ws"},
		{"fanout", "-node-pids", "1,x"},
		{"sse", "-subs", "0"},
		{"sse", "-proto", "raw"},
	} {
		if err := Run(ctx, args, &bytes.Buffer{}, &bytes.Buffer{}); err == nil {
			t.Errorf("%v: no error", args)
		}
	}
}

func TestHistogram(t *testing.T) {
	var h histogram
	for i := 1; i <= 1000; i++ {
		h.add(time.Duration(i) * time.Microsecond)
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Microsecond}, {0.99, 990 * time.Microsecond}, {1, time.Millisecond}} {
		got := h.quantile(c.q)
		if got < c.want || float64(got) > float64(c.want)*1.008 {
			t.Errorf("quantile(%v) = %v, want %v within 0.8%%", c.q, got, c.want)
		}
	}
	if h.max.Load() != int64(time.Millisecond) {
		t.Errorf("max %v", time.Duration(h.max.Load()))
	}
	for v := int64(0); v < 1<<20; v = v*3/2 + 1 {
		if i := bucketOf(v); v > upperOf(i) || (i > 0 && v <= upperOf(i-1)) {
			t.Fatalf("value %d lands in bucket %d [%d, %d]", v, i, upperOf(i-1)+1, upperOf(i))
		}
	}
}

func TestParseFrame(t *testing.T) {
	long := bytes.Repeat([]byte("a"), 300)
	frame := append([]byte{0x81, 126, 0x01, 0x2C}, long...)
	frame = append(frame, 0x89, 0x00) // and a ping
	for cut := 0; cut < 4+300; cut++ {
		if _, _, _, n, err := parseFrame(frame[:cut]); n != 0 || err != nil {
			t.Fatalf("partial frame of %d bytes: n=%d err=%v", cut, n, err)
		}
	}
	fin, op, p, n, err := parseFrame(frame)
	if err != nil || !fin || op != opText || !bytes.Equal(p, long) || n != 304 {
		t.Fatalf("fin=%v op=%v len=%d n=%d err=%v", fin, op, len(p), n, err)
	}
	if _, op, _, n, _ := parseFrame(frame[n:]); op != opPing || n != 2 {
		t.Fatalf("second frame op=%v n=%d", op, n)
	}
}

// Closed loop: the publisher keeps at most -window messages undelivered,
// and every subscriber gets every message.
func TestFanoutClosedLoop(t *testing.T) {
	res := runBench(t, "fanout", "-subs", "20", "-window", "10", "-duration", "500ms", "-proto", "jsonl")
	published := res["published"].(float64)
	if published < 50 || res["window"] != 10.0 || res["rate"] != 0.0 {
		t.Fatalf("published %v, result %v", published, res)
	}
	if res["lost"] != 0.0 || res["received"] != published*20 || res["duplicates"] != 0.0 || res["out_of_order"] != 0.0 {
		t.Fatalf("result %v", res)
	}
}

// broadcastServer is the peer -proto ws measures: every text message goes
// to every open client, the sender included.
func broadcastServer(t *testing.T) string {
	var mu sync.Mutex
	conns := map[*websocket.Conn]bool{}
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		mu.Lock()
		conns[c] = true
		mu.Unlock()
		defer func() {
			mu.Lock()
			delete(conns, c)
			mu.Unlock()
		}()
		for {
			_, msg, err := c.Read(context.Background())
			if err != nil {
				return
			}
			mu.Lock()
			for o := range conns {
				_ = o.Write(context.Background(), websocket.MessageText, msg)
			}
			mu.Unlock()
		}
	}))
	t.Cleanup(hs.Close)
	return "ws://" + hs.Listener.Addr().String() + "/"
}

// With -proto ws the subscribers only connect, the publisher sends the
// data itself, and its own copy of the broadcast is its ack.
func TestFanoutBroadcastPeer(t *testing.T) {
	url := broadcastServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	if err := Run(ctx, []string{"fanout", "-proto", "ws", "-url", url, "-subs", "10", "-rate", "100", "-duration", "500ms"}, &stdout, &stderr); err != nil {
		t.Fatalf("bench: %v\n%s", err, &stderr)
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	var res map[string]any
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res); err != nil {
		t.Fatal(err)
	}
	published := res["published"].(float64)
	if published < 40 || res["acked"] != published || res["lost"] != 0.0 || res["received"] != published*10 {
		t.Fatalf("result %v", res)
	}
}

func TestChannels(t *testing.T) {
	res := runBench(t, "channels", "-channels", "7", "-subs", "21", "-rate", "200", "-duration", "500ms", "-proto", "jsonl")
	published := res["published"].(float64)
	// 21 subscribers over 7 channels: 3 per channel, so each publish
	// reaches 3 of them.
	if published < 50 || res["expected"] != published*3 || res["lost"] != 0.0 || res["received"] != published*3 {
		t.Fatalf("published %v, result %v", published, res)
	}
	if res["subs_complete"] != 21.0 || res["duplicates"] != 0.0 || res["out_of_order"] != 0.0 {
		t.Fatalf("result %v", res)
	}
}

func TestChurn(t *testing.T) {
	res := runBench(t, "churn", "-duration", "500ms", "-c", "4", "-pid", strconv.Itoa(os.Getpid()))
	if res["cycles"].(float64) < 10 || res["errors"] != 0.0 || res["connect_p99_ms"].(float64) <= 0 {
		t.Fatalf("result %v", res)
	}
}
