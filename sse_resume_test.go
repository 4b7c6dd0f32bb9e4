package herald_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"testing"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/internal/protocol"
)

func TestSSEResume(t *testing.T) {
	t.Parallel()
	for _, via := range []string{"header", "query"} {
		t.Run(via, func(t *testing.T) {
			t.Parallel()
			srv, base := newServer(t, herald.Config{})
			ctx := context.Background()
			pub := func(ch, data string) {
				t.Helper()
				if _, err := srv.Publish(ctx, ch, data); err != nil {
					t.Fatal(err)
				}
			}
			// "b" is empty when the stream starts: its position is the
			// start of history, so nothing published to it is missed.
			s := openSSE(t, nil, base+"/sse?channel=a&channel=b", nil)
			pub("a", "a1")
			last := s.nextEvent().ID
			s.Close()
			pub("b", "b1")
			pub("a", "a2")
			pub("b", "b2")
			s = resumeSSE(t, base, "/sse?channel=a&channel=b", last, via)
			// Each channel in order; the replays of two channels are
			// not interleaved by publish time.
			got := map[string][]string{}
			for range 3 {
				d := s.nextEvent().Data
				got[d[:1]] = append(got[d[:1]], d)
			}
			if want := map[string][]string{"a": {"a2"}, "b": {"b1", "b2"}}; !equalJSON(got, want) {
				t.Fatalf("resumed with %v, want %v", got, want)
			}
			// Live messages follow, and a channel new to the stream
			// starts live.
			pub("c", "c0")
			s.Close()
			s = resumeSSE(t, base, "/sse?channel=a&channel=c", last, via)
			pub("c", "c1")
			for _, want := range []string{"a2", "c1"} {
				if ev := s.nextEvent(); ev.Data != want {
					t.Fatalf("got %q, want %q", ev.Data, want)
				}
			}
		})
	}
}

// resumeSSE opens path with the cursor last, in the Last-Event-ID header or
// the lastEventId query parameter.
func resumeSSE(t *testing.T, base, path, last, via string) *sseStream {
	t.Helper()
	if via == "query" {
		return openSSE(t, nil, base+path+"&lastEventId="+url.QueryEscape(last), nil)
	}
	return openSSE(t, nil, base+path, http.Header{"Last-Event-Id": {last}})
}

// TestSSEResumeRace cuts a stream of two channels and resumes it from its
// last id again and again while a publisher runs flat out: every message
// arrives exactly once, in order.
func TestSSEResumeRace(t *testing.T) {
	t.Parallel()
	const perChannel = 3000
	srv, base := newServer(t, herald.Config{HistorySize: 2 * perChannel, QueueMessages: 4 * perChannel, QueueBytes: 64 << 20})
	channels := []string{"race:x", "race:y"}

	path := "/sse?channel=race:x&channel=race:y"
	s := openSSE(t, nil, base+path, nil)

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 1; i <= perChannel; i++ {
			for _, ch := range channels {
				if _, err := srv.Publish(context.Background(), ch, map[string]any{"ch": ch, "n": i}); err != nil {
					t.Errorf("publish: %v", err)
					return
				}
			}
		}
	}()
	defer wg.Wait()

	next := map[string]int{"race:x": 1, "race:y": 1}
	last, reconnects := "", 0
	for seen := 1; next["race:x"] <= perChannel || next["race:y"] <= perChannel; seen++ {
		ev := s.nextEvent()
		var d struct {
			Ch string
			N  int
		}
		if err := json.Unmarshal([]byte(ev.Data), &d); err != nil {
			t.Fatalf("data %q: %v", ev.Data, err)
		}
		ch := d.Ch
		if last != "" && movedChannel(t, last, ev.ID) != ch {
			t.Fatalf("id %q after %q does not move %s", ev.ID, last, ch)
		}
		if d.N != next[ch] {
			t.Fatalf("%s: got message %d, want %d (after %d reconnects)", ch, d.N, next[ch], reconnects)
		}
		next[ch]++
		last = ev.ID
		if seen%397 == 0 {
			s.Close()
			via := []string{"header", "query"}[reconnects%2]
			s = resumeSSE(t, base, path, last, via)
			reconnects++
		}
	}
	if reconnects < 10 {
		t.Fatalf("only %d reconnects", reconnects)
	}
}

// movedChannel returns the channel whose offset differs between two
// consecutive ids of a stream.
func movedChannel(t *testing.T, prev, cur string) string {
	t.Helper()
	c, err := protocol.ParseSSECursor(cur)
	if err != nil {
		t.Fatalf("id %q: %v", cur, err)
	}
	old := map[string]string{}
	p, _ := protocol.ParseSSECursor(prev)
	for _, pos := range p {
		old[pos.Channel] = pos.Offset.String()
	}
	moved := ""
	for _, pos := range c {
		if old[pos.Channel] != pos.Offset.String() {
			if moved != "" {
				t.Fatalf("ids %q → %q move two channels", prev, cur)
			}
			moved = pos.Channel
		}
	}
	if moved == "" {
		t.Fatalf("id %q repeats the previous one", cur)
	}
	return moved
}

func TestSSEUnrecovered(t *testing.T) {
	t.Parallel()
	srv, base := newServer(t, herald.Config{HistorySize: 3})
	ctx := context.Background()
	s := openSSE(t, nil, base+"/sse?channel=keep&channel=lossy", nil)
	if _, err := srv.Publish(ctx, "lossy", "m0"); err != nil {
		t.Fatal(err)
	}
	last := s.nextEvent().ID
	s.Close()
	for i := 1; i <= 10; i++ {
		if _, err := srv.Publish(ctx, "lossy", "m"+strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := srv.Publish(ctx, "keep", "k1"); err != nil {
		t.Fatal(err)
	}
	s = openSSE(t, nil, base+"/sse?channel=keep&channel=lossy", http.Header{"Last-Event-Id": {last}})
	got := map[string][]string{}
	for range 5 {
		ev := s.nextEvent()
		if ev.Event == protocol.SSEEventUnrecovered {
			if ev.HasID {
				t.Errorf("the unrecovered event has an id: %+v", ev)
			}
			var d struct{ Channel string }
			if err := json.Unmarshal([]byte(ev.Data), &d); err != nil {
				t.Fatalf("unrecovered data %q: %v", ev.Data, err)
			}
			got[d.Channel] = append(got[d.Channel], "!")
			continue
		}
		ch := map[byte]string{'k': "keep", 'm': "lossy"}[ev.Data[0]]
		got[ch] = append(got[ch], ev.Data)
	}
	want := map[string][]string{"keep": {"k1"}, "lossy": {"!", "m8", "m9", "m10"}}
	if !equalJSON(got, want) {
		t.Fatalf("resumed with %v, want %v", got, want)
	}
}

// A stream that breaks before its first message resumes from where it
// started: its opening block's id is the starting cursor.
func TestSSEResumeBeforeTheFirstMessage(t *testing.T) {
	t.Parallel()
	srv, base := newServer(t, herald.Config{})
	ctx := context.Background()
	if _, err := srv.Publish(ctx, "quiet", "before"); err != nil {
		t.Fatal(err)
	}
	s := openSSE(t, nil, base+"/sse?channel=quiet", nil)
	opening := s.next()
	if !opening.HasID {
		t.Fatalf("opening block %+v has no id", opening)
	}
	s.Close()
	if _, err := srv.Publish(ctx, "quiet", "while away"); err != nil {
		t.Fatal(err)
	}
	r := openSSE(t, nil, base+"/sse?channel=quiet", http.Header{"Last-Event-ID": {opening.ID}})
	r.next() // its own opening
	if ev := r.next(); ev.Data != "while away" {
		t.Fatalf("resumed stream got %+v, want only what came after the first stream started", ev)
	}
}
