package loadtest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/centrifugal/fdelta"
	"github.com/coder/websocket"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/heraldtest"
	"github.com/heraldhq/herald/internal/filter"
)

// runBench runs `herald bench args…` against a fresh in-process server and
// decodes the JSON line it prints last.
func runBench(t *testing.T, args ...string) map[string]any {
	t.Helper()
	_, hs := heraldtest.NewServer(t, herald.Config{PublishRate: -1}) // the tool publishes from one connection
	return runBenchAt(t, heraldtest.WSURL(hs.URL, "/ws"), args...)
}

// runBenchAt runs `herald bench args… -url url` and decodes the JSON line
// it prints last.
func runBenchAt(t *testing.T, url string, args ...string) map[string]any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	args = append(args, "-url", url)
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

// TestFanoutCPUPerDelivery measures this process as the server and as the
// broker: it serves and loads at once, so its CPU per delivery is positive.
func TestFanoutCPUPerDelivery(t *testing.T) {
	self := strconv.Itoa(os.Getpid())
	res := runBench(t, "fanout", "-subs", "20", "-window", "20", "-duration", "500ms", "-pid", self, "-broker-pids", self)
	if v, _ := res["server_cpu_us_per_delivery"].(float64); v <= 0 || res["received"].(float64) == 0 {
		t.Fatalf("server_cpu_us_per_delivery %v: %v", res["server_cpu_us_per_delivery"], res)
	}
	cpu := res["cpu"].(map[string]any)
	if v, _ := cpu["broker_cores"].(float64); v <= 0 {
		t.Fatalf("broker_cores %v: %v", cpu["broker_cores"], cpu)
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
		{"fanout", "-filters", "-1"},
		{"fanout", "-filters", "4", "-delta"}, // the contract refuses delta with filter
		{"fanout", "-filters", "4", "-proto", "raw"},
		{"fanout", "-delta", "-proto", "centrifugo"},
		{"fanout", "-delta", "-size", "1000"}, // no room for the document
		{"fanout", "-doc", "-size", "128"},
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

func TestServerCPUPerDelivery(t *testing.T) {
	t.Parallel()
	a := cpuSample{ok: true, other: 1000}
	for _, c := range []struct {
		name       string
		a, b       cpuSample
		deliveries int64
		want       float64
	}{
		// 150 ticks = 1.5 s of CPU over 1,000,000 deliveries.
		{"measured", a, cpuSample{ok: true, other: 1150}, 1_000_000, 1.5},
		{"nothing delivered", a, cpuSample{ok: true, other: 1150}, 0, 0},
		{"no server", cpuSample{ok: true}, cpuSample{ok: true}, 1000, 0},
		{"a node ended", a, cpuSample{ok: true, other: 400}, 1000, 0},
		{"unreadable /proc", a, cpuSample{other: 1150}, 1000, 0},
	} {
		if got := serverCPUPerDelivery(c.a, c.b, c.deliveries); got != c.want {
			t.Errorf("%s: %v µs per delivery, want %v", c.name, got, c.want)
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

// recorder is a TCP proxy in front of a server that keeps the text of
// every WebSocket message a client sends through it, so a test can see
// the commands the tool really sent.
type recorder struct {
	mu   sync.Mutex
	sent []string
}

// recordCommands starts a recorder in front of upstream (host:port) and
// returns its address.
func recordCommands(t *testing.T, upstream string) (string, *recorder) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	rec := &recorder{}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go rec.forward(c, upstream)
		}
	}()
	return ln.Addr().String(), rec
}

// forward copies c to upstream and back, decoding what c sends: an HTTP
// upgrade, then masked frames.
func (rec *recorder) forward(c net.Conn, upstream string) {
	defer c.Close()
	u, err := net.Dial("tcp", upstream)
	if err != nil {
		return
	}
	defer u.Close()
	go func() {
		_, _ = io.Copy(c, u)
		_ = c.Close()
	}()
	r := bufio.NewReader(io.TeeReader(c, u))
	if _, err := http.ReadRequest(r); err != nil {
		return
	}
	for {
		var h [14]byte
		if _, err := io.ReadFull(r, h[:2]); err != nil {
			return
		}
		n, hl := uint64(h[1]&0x7F), 2
		switch n {
		case 126:
			hl = 4
		case 127:
			hl = 10
		}
		if _, err := io.ReadFull(r, h[2:hl+4]); err != nil {
			return
		}
		switch n {
		case 126:
			n = uint64(binary.BigEndian.Uint16(h[2:4]))
		case 127:
			n = binary.BigEndian.Uint64(h[2:10])
		}
		p := make([]byte, n)
		if _, err := io.ReadFull(r, p); err != nil {
			return
		}
		for i := range p {
			p[i] ^= h[hl+i%4]
		}
		if h[0]&0x0F == opText {
			rec.mu.Lock()
			rec.sent = append(rec.sent, string(p))
			rec.mu.Unlock()
		}
	}
}

// commands returns the commands sent with op, decoded.
func (rec *recorder) commands(t *testing.T, op string) []map[string]json.RawMessage {
	t.Helper()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	var out []map[string]json.RawMessage
	for _, s := range rec.sent {
		var c map[string]json.RawMessage
		if err := json.Unmarshal([]byte(s), &c); err != nil {
			t.Fatalf("command %.80q: %v", s, err)
		}
		if string(c["op"]) == quote(op) {
			out = append(out, c)
		}
	}
	return out
}

// -filters N: the subscribers ask for N distinct filters, each of which
// passes only its own group's tag g and every message tagged all; the
// publisher tags every message with both, so each message still reaches
// every subscriber.
func TestFanoutFilters(t *testing.T) {
	for _, proto := range []string{"json", "jsonl"} {
		t.Run("proto="+proto, func(t *testing.T) {
			_, hs := heraldtest.NewServer(t, herald.Config{PublishRate: -1})
			addr, rec := recordCommands(t, hs.Listener.Addr().String())
			res := runBenchAt(t, "ws://"+addr+"/ws", "fanout", "-subs", "12", "-filters", "4",
				"-rate", "100", "-duration", "500ms", "-proto", proto)
			published := res["published"].(float64)
			if published < 40 || res["acked"] != published || res["filters"] != 4.0 || res["errors"] != 0.0 {
				t.Fatalf("result %v", res)
			}
			if res["lost"] != 0.0 || res["received"] != published*12 || res["subs_complete"] != 12.0 {
				t.Fatalf("want every message delivered to every filtered subscriber: %v", res)
			}

			subs := rec.commands(t, "subscribe")
			if len(subs) != 12 {
				t.Fatalf("%d subscribe commands, want 12", len(subs))
			}
			perKey := map[string]int{}
			for _, c := range subs {
				f, err := filter.Parse(c["filter"])
				if err != nil {
					t.Fatalf("subscribe %v: %v", c, err)
				}
				perKey[f.Key()]++
				// Without the all tag a filter passes one group of the four.
				var groups []string
				for g := range 4 {
					if f.Match(map[string]string{"g": strconv.Itoa(g)}) {
						groups = append(groups, strconv.Itoa(g))
					}
				}
				if len(groups) != 1 || !f.Match(map[string]string{"g": "9", "all": "1"}) {
					t.Fatalf("filter %s passes groups %v alone and all? %v", c["filter"], groups, f.Match(map[string]string{"all": "1"}))
				}
			}
			if len(perKey) != 4 {
				t.Fatalf("%d distinct filters, want 4: %v", len(perKey), perKey)
			}
			for k, n := range perKey {
				if n != 3 {
					t.Fatalf("filter %s has %d subscribers, want 3", k, n)
				}
			}

			groups := map[string]int{}
			for _, c := range rec.commands(t, "publish") {
				var tags map[string]string
				if err := json.Unmarshal(c["tags"], &tags); err != nil || tags["all"] == "" || len(tags) != 2 {
					t.Fatalf("publish tags %s: %v", c["tags"], err)
				}
				groups[tags["g"]]++
			}
			if len(groups) != 4 || groups["0"] < 10 || groups["3"] < 10 {
				t.Fatalf("publishes per group %v, want the four cycled", groups)
			}
		})
	}
}

// -doc publishes a document in which one field changes per message; with
// -delta the subscribers ask for Fossil deltas and rebuild every push, so
// far fewer bytes arrive per delivery for the same deliveries.
func TestFanoutDelta(t *testing.T) {
	const size = 4096
	bytesPer := map[string]float64{}
	for _, mode := range []string{"-doc", "-delta"} {
		t.Run(mode, func(t *testing.T) {
			res := runBench(t, "fanout", "-subs", "5", mode, "-size", strconv.Itoa(size),
				"-rate", "100", "-duration", "500ms", "-proto", "jsonl")
			published := res["published"].(float64)
			if published < 40 || res["acked"] != published || res["errors"] != 0.0 || res["doc"] != true {
				t.Fatalf("result %v", res)
			}
			if res["lost"] != 0.0 || res["received"] != published*5 || res["duplicates"] != 0.0 || res["out_of_order"] != 0.0 {
				t.Fatalf("result %v", res)
			}
			per := res["bytes_per_delivery"].(float64)
			if got := per * res["received"].(float64); math.Abs(got-res["payload_bytes"].(float64)) > res["received"].(float64) {
				t.Fatalf("bytes_per_delivery %v × received ≠ payload_bytes %v", per, res["payload_bytes"])
			}
			bytesPer[mode] = per
			deltas, _ := res["delta_pushes"].(float64)
			switch mode {
			case "-delta":
				// Every timed push follows the warm-up: each one a delta.
				if res["delta"] != true || deltas != res["received"] {
					t.Fatalf("delta pushes %v of %v received: %v", deltas, res["received"], res)
				}
			default:
				if per < size || deltas != 0 || res["delta"] != nil {
					t.Fatalf("whole documents: %v bytes per delivery, %v delta pushes", per, deltas)
				}
			}
		})
	}
	if bytesPer["-delta"]*10 > bytesPer["-doc"] {
		t.Fatalf("bytes per delivery: %v with deltas, %v without: want a tenth or less", bytesPer["-delta"], bytesPer["-doc"])
	}
}

// A delta subscriber rebuilds each push from the one before; a delta that
// does not apply to what it has is an error, not a delivery.
func TestDeltaRebuild(t *testing.T) {
	d := newDocument(2048)
	var docs [][]byte
	for seq := range uint64(4) {
		var b bytes.Buffer
		d.write(&b, seq, time.Unix(0, int64(1e18+seq)))
		docs = append(docs, b.Bytes())
	}
	whole := func(doc []byte) []byte {
		return []byte(`{"op":"message","channel":"c","offset":"1-a","data":` + string(doc) + `}`)
	}
	deltaPush := func(from, to []byte) []byte {
		return []byte(`{"op":"message","channel":"c","offset":"1-a","data":` + quote(string(fdelta.Create(from, to))) + `,"delta":true}`)
	}
	r := &fanoutRun{lat: new(shardedHistogram)}
	s := r.newSubscriber(func() {})
	s.delta = &deltaState{}

	s.handle([]byte(`{"id":1,"ok":true}`), 0)
	s.handle(deltaPush(docs[0], docs[1]), 0) // nothing to apply it to
	if r.errs.n.Load() != 1 || s.distinct != 0 {
		t.Fatalf("a delta before any whole push: errors %d, delivered %d", r.errs.n.Load(), s.distinct)
	}
	// The subscriber has message 1 with another value in f10; the delta
	// from the real message 1 copies f10 from what it has.
	other := bytes.Clone(docs[1])
	i := bytes.Index(other, []byte(`"f10":"`)) + len(`"f10":"`)
	copy(other[i:], "ZZZZZ")
	s.handle(whole(other), 0)
	s.handle(deltaPush(docs[1], docs[2]), 0)
	if r.errs.n.Load() != 2 || s.distinct != 1 {
		t.Fatalf("a delta against the wrong base: errors %d, delivered %d", r.errs.n.Load(), s.distinct)
	}
	s.handle(whole(docs[2]), 0)
	s.handle(deltaPush(docs[2], docs[3]), 0)
	if r.errs.n.Load() != 2 || s.distinct != 3 || s.deltas != 1 || s.maxSeq != 3 || !bytes.Equal(s.delta.base, docs[3]) {
		t.Fatalf("errors %d, delivered %d, deltas %d, last seq %d", r.errs.n.Load(), s.distinct, s.deltas, s.maxSeq)
	}
	if want := int64(len(whole(other)) + len(whole(docs[2])) + len(deltaPush(docs[2], docs[3]))); s.bytes != want {
		t.Fatalf("payload bytes %d, want %d", s.bytes, want)
	}
}

// A document is exactly its size, valid JSON of the bench fields and 64
// more, and each message changes one of those 64 besides the bench fields.
func TestDocument(t *testing.T) {
	for _, size := range []int{minDocSize, 4096, 65536} {
		d := newDocument(size)
		var prev map[string]any
		for _, seq := range []uint64{0, 1, 2, 9, 10, 64, 65, 99999, 100000, 1<<63 + 5} {
			var b bytes.Buffer
			d.write(&b, seq, time.Unix(0, 1_700_000_000_000_000_000+int64(seq%1000)))
			if b.Len() != size {
				t.Fatalf("size %d, seq %d: %d bytes", size, seq, b.Len())
			}
			var doc map[string]any
			if err := json.Unmarshal(b.Bytes(), &doc); err != nil {
				t.Fatalf("size %d, seq %d: %v\n%s", size, seq, err, b.Bytes())
			}
			if got, ok := numberAfter(b.Bytes(), keySeq); !ok || got != seq || len(doc) != docFields+2 {
				t.Fatalf("size %d, seq %d: bench_seq %d, %d fields", size, seq, got, len(doc))
			}
			if prev != nil {
				var changed []string
				for k, v := range doc {
					if k != "bench_ts" && k != "bench_seq" && k != fmt.Sprintf("f%02d", docFields-1) && prev[k] != v {
						changed = append(changed, k)
					}
				}
				if want := fmt.Sprintf("f%02d", seq%docFields); seq%docFields != docFields-1 && !slices.Equal(changed, []string{want}) {
					t.Fatalf("size %d, seq %d: fields %v changed, want %s", size, seq, changed, want)
				}
			}
			prev = doc
		}
	}
}

// A subscriber reads each push's numbers wherever they are, also when
// the envelope before them grows or shrinks from one push to the next
// (it looks where they were last first), and a frame's latencies are in
// the histogram once the frame is read: count, sum and maximum.
func TestSubscriberTalliesFramesWhereverTheFieldsMove(t *testing.T) {
	r := &fanoutRun{lat: new(shardedHistogram)}
	s := r.newSubscriber(func() {})
	push := func(offset string, seq, ts int) string {
		return `{"op":"message","channel":"c","offset":"` + offset + `","data":{"bench_ts":` + strconv.Itoa(ts) + `,"bench_seq":` + strconv.Itoa(seq) + `,"pad":"x"}}`
	}
	frame := strings.Join([]string{push("9-e", 1, 1000), push("10-e", 2, 2000), push("1-e", 3, 3000), `{"id":7,"ok":true}`, push("11-e", 4, 1500)}, "\n")
	s.message([]byte(frame), 5000, true)
	if s.distinct != 4 || s.maxSeq != 4 || s.ooo != 0 || s.dups != 0 {
		t.Fatalf("delivered %d, last seq %d, out of order %d, duplicates %d; want 4, 4, 0, 0", s.distinct, s.maxSeq, s.ooo, s.dups)
	}
	lat := r.lat.merged()
	if lat.n.Load() != 4 || lat.sum.Load() != 4000+3000+2000+3500 || lat.max.Load() != 4000 {
		t.Fatalf("latencies: n %d, sum %d, max %d; want 4, 12500, 4000", lat.n.Load(), lat.sum.Load(), lat.max.Load())
	}
	if got := lat.quantile(0.5); got < 3000 || got > 3000*129/128 {
		t.Fatalf("median %v, want 3µs", got)
	}
}

// BenchmarkSubscriberMessage is the load tool's work per delivery: frames
// of 16 pushes as herald packs them under load, each a new message
// tallied (frames are made ahead, 1,024 of them, used in turn; a
// subscriber starts over at the end of them).
func BenchmarkSubscriberMessage(b *testing.B) {
	const perFrame, frames = 16, 1024
	all := make([][]byte, frames)
	for f := range all {
		lines := make([]string, perFrame)
		for i := range lines {
			seq := strconv.Itoa(1 + f*perFrame + i)
			lines[i] = `{"op":"message","channel":"bench-1","offset":"` + seq + `-0123456789abcdef","data":{"bench_ts":1,"bench_seq":` + seq + `,"pad":"` + strings.Repeat("x", 100) + `"},"client":"0123456789abcdef"}`
		}
		all[f] = []byte(strings.Join(lines, "\n"))
	}
	r := &fanoutRun{lat: new(shardedHistogram)}
	s := r.newSubscriber(func() {})
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if i%frames == 0 {
			s = r.newSubscriber(func() {})
			s.seen = make([]uint64, 0, frames*perFrame/64+1)
		}
		s.message(all[i%frames], 2, true)
		i++
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*perFrame), "ns/push")
}
