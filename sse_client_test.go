package herald_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/heraldtest"
)

// sseEvent is one thing read from an SSE stream: an event, a `retry:`, or
// a comment.
type sseEvent struct {
	ID, Event, Data string
	HasID           bool
	Retry           string
	Comment         string
}

// sseStream reads an SSE response the way the WHATWG parser does, for the
// lines herald writes.
type sseStream struct {
	t      *testing.T
	Resp   *http.Response
	events chan sseEvent // closed when the stream ends
	cancel context.CancelFunc
}

// openSSE opens an SSE stream with client (nil: the default client) and
// fails the test unless it answers 200.
func openSSE(t *testing.T, client *http.Client, u string, header http.Header) *sseStream {
	t.Helper()
	resp, cancel := getSSE(t, client, u, header)
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		cancel()
		t.Fatalf("GET %s: %s %s", u, resp.Status, body)
	}
	s := &sseStream{t: t, Resp: resp, events: make(chan sseEvent, 100000), cancel: cancel}
	t.Cleanup(s.Close)
	go s.read()
	return s
}

// getSSE sends a GET for a stream and returns the response as it is.
func getSSE(t *testing.T, client *http.Client, u string, header http.Header) (*http.Response, context.CancelFunc) {
	t.Helper()
	if client == nil {
		client = http.DefaultClient
	}
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := client.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("GET %s: %v", u, err)
	}
	return resp, func() { cancel(); resp.Body.Close() }
}

// Close cuts the stream from the client side.
func (s *sseStream) Close() { s.cancel() }

func (s *sseStream) read() {
	defer close(s.events)
	br := bufio.NewReader(s.Resp.Body)
	var ev sseEvent
	var data []string
	fields := false
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimSuffix(line, "\n")
		if line == "" {
			if fields {
				ev.Data = strings.Join(data, "\n")
				s.events <- ev
			}
			ev, data, fields = sseEvent{}, nil, false
			continue
		}
		if strings.HasPrefix(line, ":") {
			s.events <- sseEvent{Comment: strings.TrimPrefix(strings.TrimPrefix(line, ":"), " ")}
			continue
		}
		name, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		fields = true
		switch name {
		case "id":
			ev.ID, ev.HasID = value, true
		case "event":
			ev.Event = value
		case "data":
			data = append(data, value)
		case "retry":
			ev.Retry = value
		default:
			s.t.Errorf("unknown SSE field in line %q", line)
		}
	}
}

// next returns the next thing read, failing after heraldtest.Timeout or
// when the stream ends.
func (s *sseStream) next() sseEvent {
	s.t.Helper()
	select {
	case ev, ok := <-s.events:
		if !ok {
			s.t.Fatalf("the stream ended while waiting for an event")
		}
		return ev
	case <-time.After(heraldtest.Timeout):
		s.t.Fatalf("no event within %v", heraldtest.Timeout)
		return sseEvent{}
	}
}

// nextEvent returns the next event, skipping comments and `retry:`.
func (s *sseStream) nextEvent() sseEvent {
	s.t.Helper()
	for {
		if ev := s.next(); ev.Comment == "" && ev.Retry == "" {
			return ev
		}
	}
}

// ended waits until the server ends the stream, failing if an event
// (other than a comment) arrives first.
func (s *sseStream) ended() {
	s.t.Helper()
	for {
		select {
		case ev, ok := <-s.events:
			if !ok {
				return
			}
			if ev.Comment == "" && ev.Retry == "" {
				s.t.Fatalf("got %+v while waiting for the stream to end", ev)
			}
		case <-time.After(heraldtest.Timeout):
			s.t.Fatalf("the stream did not end within %v", heraldtest.Timeout)
		}
	}
}

// httpError returns the code of a contract error body.
func httpError(t *testing.T, resp *http.Response) string {
	t.Helper()
	var body struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("%s: body is not the contract's error shape: %v", resp.Status, err)
	}
	if body.Error.Message == "" {
		t.Fatalf("%s: error without a message", resp.Status)
	}
	return body.Error.Code
}
