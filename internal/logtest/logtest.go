// Package logtest records what code logs through log/slog, so that tests
// can check what was logged.
package logtest

import (
	"context"
	"log/slog"
	"slices"
	"sync"
)

// Recorder is a slog.Handler that keeps every record, at every level,
// with the attributes of its logger (WithAttrs) added; groups are not
// kept apart (WithGroup returns the same Recorder). Make one with New; it
// is safe for concurrent use.
type Recorder struct {
	store *store
	attrs []slog.Attr
}

type store struct {
	mu   sync.Mutex
	recs []slog.Record
}

var _ slog.Handler = (*Recorder)(nil)

// New returns an empty Recorder.
func New() *Recorder { return &Recorder{store: &store{}} }

// Logger returns a logger that logs to r.
func (r *Recorder) Logger() *slog.Logger { return slog.New(r) }

// Enabled reports true: every level is kept.
func (r *Recorder) Enabled(context.Context, slog.Level) bool { return true }

// Handle keeps rec.
func (r *Recorder) Handle(_ context.Context, rec slog.Record) error {
	rec = rec.Clone()
	rec.AddAttrs(r.attrs...)
	r.store.mu.Lock()
	defer r.store.mu.Unlock()
	r.store.recs = append(r.store.recs, rec)
	return nil
}

// WithAttrs returns a Recorder that adds attrs to every record it keeps,
// in the same store as r.
func (r *Recorder) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &Recorder{store: r.store, attrs: append(slices.Clip(r.attrs), attrs...)}
}

// WithGroup returns r.
func (r *Recorder) WithGroup(string) slog.Handler { return r }

// Records returns the records kept so far, oldest first.
func (r *Recorder) Records() []slog.Record {
	r.store.mu.Lock()
	defer r.store.mu.Unlock()
	return slices.Clone(r.store.recs)
}

// Has reports whether a record kept so far satisfies match.
func (r *Recorder) Has(match func(slog.Record) bool) bool {
	return slices.ContainsFunc(r.Records(), match)
}

// Attrs returns rec's attributes as strings by key (slog.Value.String).
func Attrs(rec slog.Record) map[string]string {
	m := make(map[string]string, rec.NumAttrs())
	rec.Attrs(func(a slog.Attr) bool {
		m[a.Key] = a.Value.String()
		return true
	})
	return m
}
