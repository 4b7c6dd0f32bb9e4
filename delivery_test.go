package herald_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/centrifugal/fdelta"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/heraldtest"
	"github.com/heraldhq/herald/webhook"
)

// deliveryBrokers are the brokers every delivery option is tested on:
// a maker of brokers for the nodes (nil: one memory node).
var deliveryBrokers = []struct {
	name  string
	nodes func(t *testing.T) func() broker.Broker
}{
	{"memory", nil},
	{"redis", redisBrokers},
	{"nats", natsBrokers},
}

// deliveryNodes starts two nodes of cfg on the named broker (on memory,
// one node serves as both) and returns them with their base URLs.
func deliveryNodes(t *testing.T, nodes func(t *testing.T) func() broker.Broker, cfg herald.Config) ([2]*herald.Server, [2]string) {
	t.Helper()
	if nodes == nil {
		srv, base := newServer(t, cfg)
		return [2]*herald.Server{srv, srv}, [2]string{base, base}
	}
	newBroker := nodes(t)
	var srvs [2]*herald.Server
	var bases [2]string
	for i := range srvs {
		c := cfg
		c.Broker = newBroker()
		srvs[i], bases[i] = newServer(t, c)
	}
	return srvs, bases
}

// Tags travel with a message; a filter on a subscription, an SSE stream
// and a history read lets only the messages it matches through, across
// nodes; a malformed filter or too many tags is a bad_request that names
// why.
func TestFiltersOnEveryBroker(t *testing.T) {
	t.Parallel()
	for _, b := range deliveryBrokers {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			_, bases := deliveryNodes(t, b.nodes, herald.Config{})
			pub, sub := dial(t, bases[0]), dial(t, bases[1])
			filter := map[string]any{"any": []any{
				map[string]any{"tag": "sym", "in": []any{"AAPL", "MSFT"}},
				map[string]any{"all": []any{map[string]any{"tag": "alert", "exists": true}, map[string]any{"not": map[string]any{"tag": "sym", "eq": "TSLA"}}}},
			}}
			sub.MustOK(map[string]any{"op": "subscribe", "channel": "prices", "filter": filter})
			sse := openSSE(t, nil, bases[1]+"/sse?channel=prices&filter="+url.QueryEscape(string(mustJSON(filter))), nil)
			sent := []map[string]string{
				{"sym": "AAPL"}, {"sym": "TSLA"}, {"sym": "MSFT", "x": "1"}, {"sym": "TSLA", "alert": "1"},
				{"sym": "GOOG", "alert": "1"}, nil, {"sym": "IBM"},
			}
			for i, tags := range sent {
				cmd := map[string]any{"op": "publish", "channel": "prices", "data": map[string]any{"n": i}}
				if tags != nil {
					cmd["tags"] = tags
				}
				pub.MustOK(cmd)
			}
			pub.MustOK(map[string]any{"op": "publish", "channel": "prices", "data": map[string]any{"n": 99}, "tags": map[string]string{"sym": "AAPL"}})
			want := []int{0, 2, 4, 99}
			for _, n := range want {
				m := nextMessage(t, sub)
				if got := counter(t, m); got != n {
					t.Fatalf("filtered subscriber got message %d, want %d", got, n)
				}
				if tags, _ := m["tags"].(map[string]any); tags["sym"] == nil {
					t.Fatalf("message push without its tags: %v", m)
				}
			}
			for _, n := range want {
				e := sse.next()
				for e.Data == "" { // retry: and comments
					e = sse.next()
				}
				if e.Data != fmt.Sprintf(`{"n":%d}`, n) {
					t.Fatalf("filtered SSE stream got %s, want n=%d", e.Data, n)
				}
			}
			h := sub.MustOK(map[string]any{"op": "history", "channel": "prices", "filter": filter, "limit": 2})
			if got := historyCounters(t, h["messages"]); fmt.Sprint(got) != "[4 99]" {
				t.Fatalf("filtered history with limit 2 = %v, want [4 99]", got)
			}
			var api struct{ Messages []map[string]any }
			getJSON(t, bases[1]+"/api/channels/prices/history?filter="+url.QueryEscape(`{"tag":"sym","eq":"TSLA"}`), &api)
			if got := len(api.Messages); got != 2 {
				t.Fatalf("API history filtered on TSLA has %d messages, want 2", got)
			}
			for _, bad := range []struct {
				cmd  map[string]any
				want string
			}{
				{map[string]any{"op": "subscribe", "channel": "x", "filter": map[string]any{"tag": "a"}}, "filter"},
				{map[string]any{"op": "subscribe", "channel": "x", "filter": map[string]any{"tag": "a", "eq": "b"}, "delta": "fossil"}, "delta"},
				{map[string]any{"op": "history", "channel": "x", "filter": map[string]any{"any": []any{}}}, "filter"},
				{map[string]any{"op": "publish", "channel": "x", "data": 1, "tags": manyTags(17)}, "16"},
				{map[string]any{"op": "publish", "channel": "x", "data": 1, "tags": map[string]string{"k": strings.Repeat("v", 129)}}, "128"},
				{map[string]any{"op": "publish", "channel": "x", "data": 1, "key": strings.Repeat("k", 129)}, "128"},
			} {
				r := sub.Call(bad.cmd, nil)
				if heraldtest.ErrorCode(r) != "bad_request" || !strings.Contains(errorMessage(r), bad.want) {
					t.Fatalf("%v answered %v, want a bad_request naming %q", bad.cmd, r, bad.want)
				}
			}
			if code, body := httpGet(t, bases[1]+"/sse?channel=x&filter="+url.QueryEscape(`{"tag":1}`)); code != http.StatusBadRequest {
				t.Fatalf("SSE with a malformed filter: %d %s, want 400", code, body)
			}
		})
	}
}

func manyTags(n int) map[string]string {
	tags := map[string]string{}
	for i := range n {
		tags[fmt.Sprint("t", i)] = "v"
	}
	return tags
}

func historyCounters(t *testing.T, msgs any) []int {
	t.Helper()
	list, _ := msgs.([]any)
	out := make([]int, 0, len(list))
	for _, m := range list {
		out = append(out, counter(t, m.(map[string]any)))
	}
	return out
}

func getJSON(t *testing.T, u string, v any) {
	t.Helper()
	code, body := httpGet(t, u)
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", u, code, body)
	}
	if err := json.Unmarshal([]byte(body), v); err != nil {
		t.Fatalf("GET %s: %v in %s", u, err, body)
	}
}

func httpGet(t *testing.T, u string) (int, string) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// A delta subscription on another node gets a 4 KB document's changes as
// Fossil deltas that rebuild it byte for byte, much smaller than the
// document; the first push after (re)subscribing is whole.
func TestDeltasOnEveryBroker(t *testing.T) {
	t.Parallel()
	for _, b := range deliveryBrokers {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			srvs, bases := deliveryNodes(t, b.nodes, herald.Config{})
			sub := jsonFrames(t, bases[1])
			sub.call(t, `{"id":1,"op":"subscribe","channel":"doc","delta":"fossil"}`)
			doc := func(v int) json.RawMessage {
				fields := make([]string, 64)
				for i := range fields {
					fields[i] = fmt.Sprintf(`"field%02d":"%s"`, i, strings.Repeat(string(rune('a'+i%26)), 52))
				}
				fields[v%64] = fmt.Sprintf(`"field%02d":"changed in version %d"`, v%64, v)
				return json.RawMessage("{" + strings.Join(fields, ",") + fmt.Sprintf(`,"version":%d}`, v))
			}
			var base []byte
			var wire, whole int
			for v := range 20 {
				if _, err := srvs[0].Publish(context.Background(), "doc", doc(v)); err != nil {
					t.Fatal(err)
				}
				m, size := sub.nextPush(t)
				wire += size
				whole += len(doc(v))
				if v == 0 && m.Delta {
					t.Fatal("the first push after subscribing is a delta")
				}
				if v > 0 && !m.Delta {
					t.Fatalf("version %d went whole", v)
				}
				base = applyPush(t, base, m)
				if string(base) != string(doc(v)) {
					t.Fatalf("version %d rebuilt differently:\n got %.80s…\nwant %.80s…", v, base, doc(v))
				}
			}
			if wire*4 > whole {
				t.Fatalf("deltas took %d bytes on the wire for %d bytes of documents: want under a quarter", wire, whole)
			}
			sub.call(t, `{"id":2,"op":"unsubscribe","channel":"doc"}`)
			sub.call(t, `{"id":3,"op":"subscribe","channel":"doc","delta":"fossil"}`)
			if _, err := srvs[0].Publish(context.Background(), "doc", doc(20)); err != nil {
				t.Fatal(err)
			}
			if m, _ := sub.nextPush(t); m.Delta || string(m.Data) != string(doc(20)) {
				t.Fatalf("the first push after resubscribing is not whole: delta %v", m.Delta)
			}
		})
	}
}

// push is a message push as a delta-aware client reads it.
type push struct {
	Op    string          `json:"op"`
	Data  json.RawMessage `json:"data"`
	Delta bool            `json:"delta"`
}

// applyPush returns the data a client has after m, given base, the data
// of the message before: m's data, or its delta applied to base.
func applyPush(t *testing.T, base []byte, m push) []byte {
	t.Helper()
	if !m.Delta {
		return m.Data
	}
	var delta string
	if err := json.Unmarshal(m.Data, &delta); err != nil {
		t.Fatalf("delta push whose data is not a string: %s", m.Data)
	}
	out, err := fdelta.Apply(base, []byte(delta))
	if err != nil {
		t.Fatalf("apply delta: %v", err)
	}
	return out
}

// A conflating subscriber that reads nothing while 5,000 keyed messages
// over 50 keys are published is not disconnected, and once it reads it
// has the newest value of every key, in order per key; in a namespace
// that disconnects, the same reader is closed as a slow consumer.
func TestConflationOnEveryBroker(t *testing.T) {
	t.Parallel()
	for _, b := range deliveryBrokers {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			srvs, bases := deliveryNodes(t, b.nodes, herald.Config{
				QueueMessages: 64,
				// The reader reads nothing until everything is published:
				// it must not be closed for a write stalled meanwhile.
				WriteTimeout: 10 * time.Minute,
				Namespaces:   map[string]herald.Namespace{"ticks": {Overflow: herald.OverflowConflate, HistorySize: -1}, "plain": {HistorySize: -1}},
			})
			conflating := stalledSubscriber(t, bases[1], "ticks:all")
			cut := stalledSubscriber(t, bases[1], "plain:all")
			const messages, keys = 5000, 50
			pad := strings.Repeat("x", 900)
			last := map[string]int{}
			for i := messages - keys; i < messages; i++ {
				last[fmt.Sprint("k", i%keys)] = i
			}
			// One publisher per key: each key's messages go in order.
			var wg sync.WaitGroup
			errs := make(chan error, keys)
			for k := range keys {
				wg.Add(1)
				go func() {
					defer wg.Done()
					key := fmt.Sprint("k", k)
					for i := k; i < messages; i += keys {
						for _, ch := range []string{"ticks:all", "plain:all"} {
							if _, err := srvs[0].Publish(context.Background(), ch, map[string]any{"k": key, "v": i, "pad": pad}, herald.WithKey(key)); err != nil {
								errs <- err
								return
							}
						}
					}
				}()
			}

			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			// Both readers' queues overflowed before they read: the
			// conflating one conflated, the other was cut. (The brokers
			// deliver to node 2 after Publish returns, and the two overflow
			// at about the same message: seeing the first alone, the
			// readers' larger buffers could let the other's rest fit.)
			heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
				if n := metric(t, bases[1], "herald_conflated_messages_total"); n == 0 {
					return fmt.Errorf("nothing conflated yet")
				}
				if n := metric(t, bases[1], "herald_slow_consumer_disconnects_total"); n == 0 {
					return fmt.Errorf("the non-conflating reader not cut yet")
				}
				return nil
			})
			for _, c := range []*stalledConn{conflating, cut} {
				c.reads() // a socket that takes few bytes would read for minutes
			}
			newest := map[string]int{}
			for len(newest) < keys || !sameValues(newest, last) {
				m := conflating.nextJSON(t)
				if m["op"] != "message" {
					t.Fatalf("conflating subscriber got %v", m)
				}
				d := m["data"].(map[string]any)
				k, v := d["k"].(string), int(d["v"].(float64))
				if prev, ok := newest[k]; ok && v <= prev {
					t.Fatalf("key %s went back from %d to %d", k, prev, v)
				}
				newest[k] = v
			}
			if code := cut.closeCode(t); code != 1008 {
				t.Fatalf("a non-conflating reader that read nothing ended with %d, want 1008 (slow consumer)", code)
			}
		})
	}
}

func sameValues(a, b map[string]int) bool {
	for k, v := range b {
		if a[k] != v {
			return false
		}
	}
	return true
}

// stalledConn is a JSON-protocol client that reads frames only when the
// test asks, and sees them as they came.
type stalledConn struct{ *frameConn }

// jsonFrames connects to /ws and reads the welcome.
func jsonFrames(t *testing.T, base string) *stalledConn {
	t.Helper()
	s := &stalledConn{dialFrames(t, base, "/ws")}
	if w := s.nextJSON(t); w["op"] != "welcome" {
		t.Fatalf("first frame %v", w)
	}
	return s
}

// stalledSubscriber subscribes to channel with a socket that takes few
// bytes, and stops reading.
func stalledSubscriber(t *testing.T, base, channel string) *stalledConn {
	t.Helper()
	s := jsonFrames(t, base)
	_ = s.c.(*net.TCPConn).SetReadBuffer(64 << 10)
	// After a long stall on a full socket, TCP backs off (its probes of
	// a closed window and its retransmissions come at intervals that
	// double): once the reader reads again, a frame can come seconds
	// late on a busy machine, and on one in about ten runs of the full
	// suite it came more than 10 s late, with nothing left to write on
	// the server's side.
	s.wait = 4 * heraldtest.Timeout
	s.call(t, fmt.Sprintf(`{"id":1,"op":"subscribe","channel":%q}`, channel))
	return s
}

// reads gives the socket room again, for the reads to come.
func (s *stalledConn) reads() { _ = s.c.(*net.TCPConn).SetReadBuffer(4 << 20) }

// call sends a command and fails unless the next frame is its success.
func (s *stalledConn) call(t *testing.T, cmd string) {
	t.Helper()
	s.write(true, 1, []byte(cmd))
	if r := s.nextJSON(t); r["ok"] != true {
		t.Fatalf("%s: %v", cmd, r)
	}
}

// nextPush reads the next frame, a message push, and its size.
func (s *stalledConn) nextPush(t *testing.T) (push, int) {
	t.Helper()
	_, _, payload := s.read()
	var p push
	if err := json.Unmarshal(payload, &p); err != nil || p.Op != "message" {
		t.Fatalf("want a message push, got %q (%v)", payload, err)
	}
	return p, len(payload)
}

// nextJSON reads the next text frame as JSON.
func (s *stalledConn) nextJSON(t *testing.T) map[string]any {
	t.Helper()
	_, op, payload := s.read()
	if op != 1 {
		t.Fatalf("frame opcode %d, want text", op)
	}
	var m map[string]any
	if err := json.Unmarshal(payload, &m); err != nil {
		t.Fatalf("frame %q: %v", payload, err)
	}
	return m
}

// closeCode reads until the server's close frame and returns its code.
func (s *stalledConn) closeCode(t *testing.T) int {
	t.Helper()
	for {
		_, op, payload := s.read()
		if op == 8 {
			if len(payload) < 2 {
				return 1005
			}
			return int(payload[0])<<8 | int(payload[1])
		}
	}
}

// Receipts: clients on two nodes receive a message; the one that acks is
// acked and the other pending, as the API answers on any node; after the
// receipt timeout the app hears undelivered for the pending one only,
// once; a message history no longer holds is 404.
func TestReceiptsOnEveryBroker(t *testing.T) {
	t.Parallel()
	for _, b := range deliveryBrokers {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			app, hookURL := newHookApp(t)
			cfg := hookConfig(hookURL)
			cfg.Webhook.Events = []string{"undelivered"}
			cfg.Namespaces = map[string]herald.Namespace{"orders": {Receipts: true, ReceiptTimeout: 500 * time.Millisecond, HistorySize: 3}}
			srvs, bases := deliveryNodes(t, b.nodes, cfg)
			acker, silent := dial(t, bases[0]), dial(t, bases[1])
			for _, c := range []*heraldtest.Client{acker, silent} {
				if r := c.MustOK(map[string]any{"op": "subscribe", "channel": "orders:7"}); r["receipts"] != true {
					t.Fatalf("subscribe reply in a receipts namespace: %v", r)
				}
			}
			if r := acker.MustOK(map[string]any{"op": "subscribe", "channel": "news"}); r["receipts"] != nil {
				t.Fatalf("subscribe reply elsewhere says receipts: %v", r)
			}
			off, err := srvs[0].Publish(context.Background(), "orders:7", map[string]any{"n": 1})
			if err != nil {
				t.Fatal(err)
			}
			nextMessage(t, acker)
			nextMessage(t, silent)
			receiptsOf := func(base string) (acked, pending []string) {
				var r struct {
					Offset         string
					Acked, Pending []struct{ Client string }
				}
				getJSON(t, base+"/api/channels/orders:7/receipts?offset="+off, &r)
				for _, c := range r.Acked {
					acked = append(acked, c.Client)
				}
				for _, c := range r.Pending {
					pending = append(pending, c.Client)
				}
				return acked, pending
			}
			acker.MustOK(map[string]any{"op": "ack", "channel": "orders:7", "offset": off})
			heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
				acked, pending := receiptsOf(bases[1])
				if fmt.Sprint(acked) != fmt.Sprint([]string{clientID(acker)}) || fmt.Sprint(pending) != fmt.Sprint([]string{clientID(silent)}) {
					return fmt.Errorf("acked %v pending %v", acked, pending)
				}
				return nil
			})
			// A second message nobody acks: its undelivered events come
			// after the first's, so once they are in, the first's are all in.
			off2, err := srvs[1].Publish(context.Background(), "orders:7", map[string]any{"n": 2})
			if err != nil {
				t.Fatal(err)
			}
			heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
				if got := app.undelivered(off2); len(got) != 2 {
					return fmt.Errorf("undelivered for the second message: %v", got)
				}
				return nil
			})
			if got := app.undelivered(off); fmt.Sprint(got) != fmt.Sprint([]string{clientID(silent)}) {
				t.Fatalf("undelivered for the first message went to %v, want only %s", got, clientID(silent))
			}
			for i := range 3 { // push the first message out of history
				if _, err := srvs[0].Publish(context.Background(), "orders:7", map[string]any{"n": 3 + i}); err != nil {
					t.Fatal(err)
				}
			}
			if code, body := httpGet(t, bases[0]+"/api/channels/orders:7/receipts?offset="+off); code != http.StatusNotFound {
				t.Fatalf("receipts of a message history no longer holds: %d %s, want 404", code, body)
			}
			if code, body := httpGet(t, bases[0]+"/api/channels/news/receipts?offset="+off); code != http.StatusNotFound {
				t.Fatalf("receipts in a namespace without them: %d %s, want 404", code, body)
			}
		})
	}
}

// undelivered returns the clients the app was told did not acknowledge
// the message at offset.
func (a *hookApp) undelivered(offset string) []string {
	return a.pick(func(e webhook.Event) (string, bool) { return e.Client, e.Type == "undelivered" && e.Offset == offset })
}
