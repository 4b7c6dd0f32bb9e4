// Package sse is herald's Server-Sent Events transport, the only code that
// writes an SSE stream. A Stream is one response: it implements the
// session's Conn (Send, Close), prepends the stream's cursor as the `id:`
// of every message it writes, and sends a heartbeat comment while idle.
//
// A stream runs on its request's goroutine (Serve): nothing else writes to
// the response. Transport tracks the open streams so that a server can end
// them all on shutdown.
package sse

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/internal/protocol"
	"github.com/heraldhq/herald/internal/wire"
)

// errClosed is what a batch that could not be written reports.
var errClosed = errors.New("sse: stream closed")

// Config configures a Transport. Every duration is required: herald's
// Server passes its own Config's (whose defaults are in brackets), so
// that defaults live in one place; New refuses a zero one.
type Config struct {
	// Heartbeat is how long a stream may stay silent before it gets a
	// comment line [15s].
	Heartbeat time.Duration
	// Retry is the reconnect delay the stream's opening `retry:` line
	// tells EventSource [2s].
	Retry time.Duration
	// WriteTimeout bounds one batch of writes [10s]; a stream that takes
	// longer ends.
	WriteTimeout time.Duration
	// Wrote, when set, is told of the bytes written to streams.
	Wrote func(n int)
}

// Transport keeps the open streams. Its methods are safe for concurrent
// use.
type Transport struct {
	cfg Config

	mu      sync.Mutex
	streams map[*Stream]struct{}
	closing bool // Shutdown was called: no new streams
}

// ErrClosing is returned by NewStream once Shutdown was called.
var ErrClosing = errors.New("sse: shutting down")

// New returns a Transport, or an error naming a required field that is
// not set.
func New(cfg Config) (*Transport, error) {
	if cfg.Heartbeat <= 0 || cfg.Retry <= 0 || cfg.WriteTimeout <= 0 {
		return nil, fmt.Errorf("sse: Heartbeat (%v), Retry (%v) and WriteTimeout (%v) must be set", cfg.Heartbeat, cfg.Retry, cfg.WriteTimeout)
	}
	return &Transport{cfg: cfg, streams: make(map[*Stream]struct{})}, nil
}

// Stream is one SSE response. Send and Close may be called from any
// goroutine; everything else from the request's goroutine.
type Stream struct {
	t      *Transport
	w      http.ResponseWriter
	rc     *http.ResponseController
	wake   chan struct{} // a batch is pending, or the stream is closing
	closed chan struct{} // closed by Close
	once   sync.Once

	mu      sync.Mutex  // guards pending and ended
	pending wire.Source // what has payloads to write, from Send; nil when nothing waits
	ended   bool

	cursor protocol.SSECursor
	index  map[string]int // channel → position in cursor
	buf    []byte
}

// NewStream returns a stream over w, registered with t, or ErrClosing
// after Shutdown. Nothing is written until Serve: the caller may answer
// with an HTTP error instead. The caller calls Release when done.
func (t *Transport) NewStream(w http.ResponseWriter) (*Stream, error) {
	s := &Stream{
		t:      t,
		w:      w,
		rc:     http.NewResponseController(w),
		wake:   make(chan struct{}, 1),
		closed: make(chan struct{}),
		index:  make(map[string]int),
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closing {
		return nil, ErrClosing
	}
	t.streams[s] = struct{}{}
	return s, nil
}

// Len returns how many streams are open.
func (t *Transport) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.streams)
}

// Shutdown refuses new streams and ends every open one.
func (t *Transport) Shutdown() {
	t.mu.Lock()
	t.closing = true
	t.mu.Unlock()
	t.CloseAll()
}

// CloseAll ends every open stream; new ones are still taken.
func (t *Transport) CloseAll() {
	t.mu.Lock()
	streams := make([]*Stream, 0, len(t.streams))
	for s := range t.streams {
		streams = append(streams, s)
	}
	t.mu.Unlock()
	for _, s := range streams {
		s.Close(protocol.CloseGoingAway, "server shutting down")
	}
}

// Wait waits until every stream has ended (Release), or ctx is done.
func (t *Transport) Wait(ctx context.Context) error {
	tk := time.NewTicker(5 * time.Millisecond)
	defer tk.Stop()
	for t.Len() > 0 {
		select {
		case <-ctx.Done():
			return fmt.Errorf("sse: %d streams still open: %w", t.Len(), ctx.Err())
		case <-tk.C:
		}
	}
	return nil
}

// SetPosition sets channel's place in the stream's cursor: where the
// channel starts when no message of it has been written yet. Channels
// appear in the cursor in the order they are first set. Call it before
// Serve.
func (s *Stream) SetPosition(channel string, off broker.Offset) {
	if i, ok := s.index[channel]; ok {
		s.cursor[i].Offset = off
		return
	}
	s.index[channel] = len(s.cursor)
	s.cursor = append(s.cursor, protocol.SSEPosition{Channel: channel, Offset: off})
}

// Send wakes the stream's writer without blocking: it takes what src has
// queued (src.Take) when it gets to write it, and then calls src.Written,
// which may call Send again; a stream that has ended calls Written with
// the error without taking anything. One write is in flight at a time.
func (s *Stream) Send(src wire.Source) {
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		src.Written(errClosed)
		return
	}
	s.pending = src
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Close ends the stream without blocking; code and reason are not sent
// (SSE has no close frame). It may be called more than once.
func (s *Stream) Close(code int, reason string) {
	s.once.Do(func() { close(s.closed) })
}

// Serve writes the response head and the opening block (`retry:`, and
// `id:` with the starting cursor), then the batches
// it is sent, a heartbeat comment whenever the stream stayed silent for
// Heartbeat, until ctx is done (the client went away), Close is called or
// a write fails. The caller calls Release afterwards.
func (s *Stream) Serve(ctx context.Context) error {
	h := s.w.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	s.w.WriteHeader(http.StatusOK)
	if err := s.write(protocol.SSEOpening(s.t.cfg.Retry.Milliseconds(), s.cursor)); err != nil {
		return err
	}
	heartbeat := time.NewTimer(s.t.cfg.Heartbeat)
	defer heartbeat.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.closed:
			return nil
		case <-heartbeat.C:
			if err := s.write([]byte(protocol.SSEHeartbeat)); err != nil {
				return err
			}
		case <-s.wake:
			s.mu.Lock()
			src := s.pending
			s.pending = nil
			s.mu.Unlock()
			if src == nil {
				continue
			}
			err := s.writeBatch(src.Take())
			src.Written(err)
			if err != nil {
				return err
			}
		}
		heartbeat.Reset(s.t.cfg.Heartbeat)
	}
}

// Release ends the stream's bookkeeping: a batch still pending reports
// failure, later Sends fail at once, and the Transport forgets the stream.
// Call it once, after Serve (or instead of it).
func (s *Stream) Release() {
	s.Close(0, "")
	s.mu.Lock()
	s.ended = true
	src := s.pending
	s.pending = nil
	s.mu.Unlock()
	if src != nil {
		src.Written(errClosed)
	}
	s.t.mu.Lock()
	delete(s.t.streams, s)
	s.t.mu.Unlock()
}

// chunkBytes is about how much of a batch is encoded before it is
// written. Every message carries the cursor of all the stream's channels
// as its `id:` line, up to ~12 KB with 32 long channel names: a batch the
// queue bound lets through (counted by the messages' own bytes) can encode
// to hundreds of times its size, so it is written a chunk at a time rather
// than joined whole.
const chunkBytes = 64 << 10

// writeBatch writes a batch, each message after the `id:` line of the
// cursor that includes it, a chunk at a time, and flushes it, all within
// one WriteTimeout.
func (s *Stream) writeBatch(ps []*wire.Payload) error {
	_ = s.rc.SetWriteDeadline(time.Now().Add(s.t.cfg.WriteTimeout))
	b := s.buf[:0]
	for i, p := range ps {
		if p.Channel != "" {
			s.SetPosition(p.Channel, p.Offset)
			b = append(b, "id: "...)
			b = s.cursor.AppendTo(b)
			b = append(b, '\n')
		}
		b = append(b, p.Bytes...)
		if len(b) < chunkBytes && i < len(ps)-1 {
			continue
		}
		if err := s.writeChunk(b); err != nil {
			return err
		}
		b = b[:0]
	}
	if cap(b) <= 2*chunkBytes {
		s.buf = b // keep a modest buffer for the next batch
	}
	return s.flush()
}

// write writes b and flushes it, within WriteTimeout.
func (s *Stream) write(b []byte) error {
	// Deadlines are best effort: a ResponseWriter without them (a test
	// recorder, some middleware) still gets the write.
	_ = s.rc.SetWriteDeadline(time.Now().Add(s.t.cfg.WriteTimeout))
	if err := s.writeChunk(b); err != nil {
		return err
	}
	return s.flush()
}

// writeChunk writes b under the deadline already set.
func (s *Stream) writeChunk(b []byte) error {
	n, err := s.w.Write(b)
	if s.t.cfg.Wrote != nil {
		s.t.cfg.Wrote(n)
	}
	if err != nil {
		return fmt.Errorf("sse: write: %w", err)
	}
	return nil
}

// flush flushes what was written and clears the write deadline.
func (s *Stream) flush() error {
	if err := s.rc.Flush(); err != nil {
		return fmt.Errorf("sse: flush: %w", err)
	}
	_ = s.rc.SetWriteDeadline(time.Time{})
	return nil
}
