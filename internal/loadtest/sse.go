package loadtest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

func runSSE(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("herald bench sse", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cm common
	cm.registerNoProto(fs, "sse")
	var ff fanoutFlags
	ff.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := ff.check("sse", fs); err != nil {
		return err
	}
	t, err := cm.target()
	if err != nil {
		return err
	}
	u := t.sseURL()
	sc := fanoutScenario{name: "sse", proto: "sse", url: u.String(),
		subscribe: func(ctx context.Context, r *fanoutRun) (*subscriber, error) {
			ctx, cancel := context.WithTimeout(ctx, cm.dialTimeout)
			defer cancel()
			c, err := dialSSE(ctx, u, 4096)
			if err != nil {
				return nil, err
			}
			s := r.newSubscriber(c.close)
			go s.readSSE(c)
			return s, nil
		}}
	return runFanoutScenario(ctx, sc, &cm, t, ff, stdout, stderr)
}

// sseURL is the stream of the target's channel: /sse beside /ws.
func (t *target) sseURL() *url.URL {
	u := *t.ws
	u.Scheme = "http"
	u.Path = strings.TrimSuffix(strings.TrimSuffix(u.Path, "/"), "/ws") + "/sse"
	u.RawPath = ""
	u.RawQuery = url.Values{"channel": {t.channel}}.Encode()
	return &u
}

// sseConn is one Server-Sent Events stream on its own HTTP/1.1
// connection, read with no goroutine of its own.
type sseConn struct {
	nc   net.Conn
	body *bufio.Reader // the response body, de-chunked
	long []byte        // a line longer than body's buffer, being assembled
}

// dialSSE opens a stream from u (http:// only): a GET with Accept:
// text/event-stream, which must be answered 200 with that content type.
// readBuf sizes the reader of the body.
func dialSSE(ctx context.Context, u *url.URL, readBuf int) (*sseConn, error) {
	nc, err := dialTCP(ctx, u, "http")
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(dl)
	}
	req := "GET " + u.RequestURI() + " HTTP/1.1\r\nHost: " + u.Host +
		"\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
	if _, err := io.WriteString(nc, req); err != nil {
		_ = nc.Close()
		return nil, fmt.Errorf("sse request: %w", err)
	}
	resp, err := http.ReadResponse(bufio.NewReaderSize(nc, readBuf), nil)
	if err != nil {
		_ = nc.Close()
		return nil, fmt.Errorf("sse response: %w", err)
	}
	ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if resp.StatusCode != http.StatusOK || ct != "text/event-stream" {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
		_ = nc.Close()
		return nil, fmt.Errorf("sse response: %s, %q: %s", resp.Status, ct, strings.TrimSpace(string(body)))
	}
	_ = nc.SetDeadline(time.Time{})
	return &sseConn{nc: nc, body: bufio.NewReaderSize(resp.Body, readBuf)}, nil
}

// readLine returns the next line without its ending (LF or CRLF); it is
// only valid until the next call. A line cut short by the end of the
// stream is dropped, as EventSource does.
func (c *sseConn) readLine() ([]byte, error) {
	c.long = c.long[:0]
	for {
		b, err := c.body.ReadSlice('\n')
		switch {
		case err == nil:
			if len(c.long) > 0 {
				b = append(c.long, b...)
				c.long = b
			}
			b = b[:len(b)-1]
			if n := len(b); n > 0 && b[n-1] == '\r' {
				b = b[:n-1]
			}
			return b, nil
		case errors.Is(err, bufio.ErrBufferFull):
			c.long = append(c.long, b...)
			if len(c.long) > maxFrame {
				return nil, errors.New("sse: line too long")
			}
		default:
			return nil, err
		}
	}
}

func (c *sseConn) close() { _ = c.nc.Close() }

// sseEvent is one event of a stream; its slices are only valid until the
// parser's next line.
type sseEvent struct {
	typ  []byte // "message" unless the event named another
	data []byte // the data lines, joined by \n
	id   []byte // the stream's last event id when the event was dispatched
}

// sseParser turns the lines of a text/event-stream into events, by the
// rules EventSource follows: "field: value" lines (one space after the
// colon is dropped), a line without a colon is a field with an empty
// value, lines starting with ':' are comments, and a blank line ends an
// event, which is dispatched only when it had data.
type sseParser struct {
	typ, data, id []byte
	hasData       bool
	retry         int64 // the last retry: value, -1 before any
	comments      int64
}

func newSSEParser() *sseParser { return &sseParser{retry: -1} }

// line takes one line and returns the event it completes, if any.
func (p *sseParser) line(l []byte) (ev sseEvent, ok bool) {
	if len(l) == 0 {
		if !p.hasData {
			p.typ = p.typ[:0]
			return sseEvent{}, false
		}
		ev = sseEvent{typ: p.typ, data: p.data, id: p.id}
		if len(ev.typ) == 0 {
			ev.typ = []byte("message")
		}
		p.typ, p.data, p.hasData = p.typ[:0], p.data[:0], false
		return ev, true
	}
	if l[0] == ':' {
		p.comments++
		return sseEvent{}, false
	}
	field, value, _ := bytes.Cut(l, []byte{':'})
	value = bytes.TrimPrefix(value, []byte{' '})
	switch string(field) {
	case "event":
		p.typ = append(p.typ[:0], value...)
	case "data":
		if p.hasData {
			p.data = append(p.data, '\n')
		}
		p.data = append(p.data, value...)
		p.hasData = true
	case "id":
		if bytes.IndexByte(value, 0) < 0 {
			p.id = append(p.id[:0], value...)
		}
	case "retry":
		if n, err := strconv.ParseInt(string(value), 10, 64); err == nil && allDigits(value) {
			p.retry = n
		}
	}
	return sseEvent{}, false
}

func allDigits(b []byte) bool {
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// readSSE reads a stream's events until it ends and tallies those that
// carry the bench fields. The stream must open with a retry: line, and
// each event must have an id and the type "message" (the publisher names
// none); anything else is logged as an error, once per kind.
func (s *subscriber) readSSE(c *sseConn) {
	defer close(s.done)
	p := newSSEParser()
	first := true
	for {
		l, err := c.readLine()
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				if !s.r.closing.Load() {
					s.r.closed.Add(1)
					s.r.errs.add("stream ended by server", err)
				}
				return
			}
			s.ended(err)
			return
		}
		if first && len(l) > 0 && l[0] != ':' {
			first = false
			if !bytes.HasPrefix(l, []byte("retry:")) {
				s.r.errs.add("sse: no retry: first", fmt.Errorf("stream opened with %.60q", l))
			}
		}
		ev, ok := p.line(l)
		if !ok {
			continue
		}
		now := time.Now().UnixNano()
		if len(ev.id) == 0 {
			s.r.errs.add("sse: event without id", fmt.Errorf("data %.60q", ev.data))
		}
		if string(ev.typ) != "message" {
			s.r.errs.add("sse: event type", fmt.Errorf("event %.60q", ev.typ))
		}
		s.handle(ev.data, now)
		s.pending.flush(s.lat)
	}
}
