package herald_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/coder/websocket"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/heraldtest"
)

// Every bad command gets a bad_request reply with the command's id (0 when
// it has none that can be read), and the connection keeps working.
func TestBadCommands(t *testing.T) {
	t.Parallel()
	_, base := newServer(t, herald.Config{})
	tests := []struct {
		name   string
		frame  string
		wantID float64
	}{
		{"malformed JSON", `{"id":1,"op":`, 0},
		{"not JSON", `hello`, 0},
		{"empty frame", ``, 0},
		{"array", `[1]`, 0},
		{"string", `"x"`, 0},
		{"number", `7`, 0},
		{"null", `null`, 0},
		{"unknown op", `{"id":5,"op":"dance"}`, 5},
		{"missing op", `{"id":6}`, 6},
		{"missing id", `{"op":"ping"}`, 0},
		{"zero id", `{"id":0,"op":"ping"}`, 0},
		{"negative id", `{"id":-3,"op":"ping"}`, 0},
		{"fractional id", `{"id":2.5,"op":"ping"}`, 0},
		{"string id", `{"id":"7","op":"ping"}`, 0},
		{"missing channel", `{"id":8,"op":"subscribe"}`, 8},
		{"empty channel", `{"id":9,"op":"subscribe","channel":""}`, 9},
		{"channel of 256 bytes", `{"id":10,"op":"subscribe","channel":"` + strings.Repeat("c", 256) + `"}`, 10},
		{"channel with a space", `{"id":11,"op":"publish","channel":"a b","data":1}`, 11},
		{"channel with a slash", `{"id":12,"op":"history","channel":"a/b"}`, 12},
		{"channel with unicode", `{"id":13,"op":"presence","channel":"café"}`, 13},
		{"channel not a string", `{"id":14,"op":"subscribe","channel":["a"]}`, 14},
		{"bad since", `{"id":15,"op":"subscribe","channel":"a","since":"yesterday"}`, 15},
		{"since without epoch", `{"id":16,"op":"subscribe","channel":"a","since":"5-"}`, 16},
		{"bad since on history", `{"id":17,"op":"history","channel":"a","since":"-1-x"}`, 17},
		{"negative limit", `{"id":18,"op":"history","channel":"a","limit":-5}`, 18},
		{"limit not a number", `{"id":19,"op":"history","channel":"a","limit":"all"}`, 19},
		{"publish without data", `{"id":20,"op":"publish","channel":"a"}`, 20},
		{"event not a string", `{"id":21,"op":"publish","channel":"a","data":1,"event":{}}`, 21},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := dial(t, base)
			c.SendRaw(tt.frame)
			r := c.Next()
			if r["id"] != tt.wantID || r["ok"] != false || heraldtest.ErrorCode(r) != "bad_request" || errorMessage(r) == "" {
				t.Fatalf("%s: reply %v, want id %v, ok false, bad_request with a message", tt.frame, r, tt.wantID)
			}
			c.MustOK(map[string]any{"op": "ping"})
			c.MustOK(map[string]any{"op": "subscribe", "channel": "still-works"})
		})
	}
	// Nothing bad was subscribed or published on the way.
	c := dial(t, base)
	if r := c.MustOK(map[string]any{"op": "history", "channel": "a"}); len(r["messages"].([]any)) != 0 {
		t.Fatalf("a bad command published: %v", r)
	}
}

// In herald.v1.jsonl a bad line gets its error reply; the other lines of
// the frame still run, in order.
func TestBadLineInJSONLFrame(t *testing.T) {
	t.Parallel()
	_, base := newServer(t, herald.Config{})
	c := dial(t, base, "herald.v1.jsonl")
	c.SendRaw(`{"id":1,"op":"ping"}` + "\n" + `{"id":` + "\n" + `{"id":3,"op":"ping"}`)
	want := []struct {
		id float64
		ok bool
	}{{1, true}, {0, false}, {3, true}}
	for _, w := range want {
		r := c.Next()
		if r["id"] != w.id || r["ok"] != w.ok {
			t.Fatalf("reply %v, want id %v ok %v", r, w.id, w.ok)
		}
	}
}

func TestBinaryFrameOnJSONProtocol(t *testing.T) {
	t.Parallel()
	_, base := newServer(t, herald.Config{})
	for _, sp := range []string{"herald.v1", "herald.v1.jsonl"} {
		c := dial(t, base, sp)
		ctx, cancel := context.WithTimeout(context.Background(), heraldtest.Timeout)
		err := c.Conn.Write(ctx, websocket.MessageBinary, []byte(`{"id":1,"op":"ping"}`))
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		r := c.Next()
		if r["id"] != 0.0 || r["ok"] != false || heraldtest.ErrorCode(r) != "bad_request" {
			t.Fatalf("%s: binary frame got %v, want an error reply with id 0", sp, r)
		}
		c.MustOK(map[string]any{"op": "ping"})
	}
}

func TestOverSizeMessageCloses1009(t *testing.T) {
	t.Parallel()
	_, base := newServer(t, herald.Config{MaxMessageSize: 1024})
	c := dial(t, base)
	fits := strings.Repeat("x", 900)
	c.MustOK(map[string]any{"op": "publish", "channel": "big", "data": fits})
	c.SendRaw(`{"id":99,"op":"publish","channel":"big","data":"` + strings.Repeat("x", 2000) + `"}`)
	if code := c.Closed(); code != websocket.StatusMessageTooBig {
		t.Fatalf("close status %v, want 1009", code)
	}
	// The server carries on.
	d := dial(t, base)
	r := d.MustOK(map[string]any{"op": "history", "channel": "big"})
	if msgs := r["messages"].([]any); len(msgs) != 1 {
		t.Fatalf("history %v, want only the message that fit", r)
	}

	raw := dialRaw(t, base, "big")
	raw.send(websocket.MessageText, strings.Repeat("y", 2000))
	if code := raw.closed(); code != websocket.StatusMessageTooBig {
		t.Fatalf("raw client close status %v, want 1009", code)
	}
	heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
		if got := metric(t, base, `herald_refusals_total{reason="too_large"}`); got != 2 {
			return fmt.Errorf("too_large refusals counted %v, want 2", got)
		}
		return nil
	})
}
