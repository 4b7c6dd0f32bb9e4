package redis

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	goredis "github.com/redis/go-redis/v9"
)

// SetLibraryLogger sends the log lines of go-redis, the client library
// the broker is built on (a connection pool that cannot dial, a
// connection it had to drop), to l at warn level with the attribute
// lib=go-redis, in l's format, instead of go-redis's own logger on
// stderr. nil discards them.
//
// go-redis keeps one logger for the whole process, not one per client, so
// Config.Logger cannot receive these lines: call SetLibraryLogger once,
// before any Broker starts, as herald serve does. The last call wins.
func SetLibraryLogger(l *slog.Logger) {
	if l == nil {
		l = slog.New(slog.DiscardHandler)
	}
	goredis.SetLogger(libraryLogger{l})
}

// libraryLogger is go-redis's logging interface on a slog.Logger.
type libraryLogger struct{ l *slog.Logger }

// Printf logs one go-redis line.
func (g libraryLogger) Printf(ctx context.Context, format string, v ...any) {
	if ctx == nil {
		ctx = context.Background()
	}
	if !g.l.Enabled(ctx, slog.LevelWarn) {
		return
	}
	g.l.Log(ctx, slog.LevelWarn, strings.TrimSpace(fmt.Sprintf(format, v...)), "lib", "go-redis")
}
