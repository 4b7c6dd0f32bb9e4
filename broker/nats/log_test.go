package nats_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/nats"
	"github.com/heraldhq/herald/internal/logtest"
	"github.com/heraldhq/herald/internal/serverproc"
)

// nats.go's asynchronous errors (here, the server refusing a publish the
// user may not make) go to Config.Logger, not to nats.go's default
// handler on stderr.
func TestAsyncErrorsAreLogged(t *testing.T) {
	t.Parallel()
	conf := filepath.Join(t.TempDir(), "nats.conf")
	const rules = `authorization { users = [ { user: herald, password: pw, permissions: { publish: { deny: ["denied.live.>"] } } } ] }`
	if err := os.WriteFile(conf, []byte(rules), 0o600); err != nil {
		t.Fatal(err)
	}
	s := serverproc.NATS(t, "-c", conf)
	h := logtest.New()
	b := startBroker(t, nats.Config{URL: "nats://herald:pw@127.0.0.1:" + strconv.Itoa(s.Port()), Prefix: "denied", Logger: h.Logger()})
	if err := b.PublishJoin(context.Background(), "c", broker.ClientInfo{Client: "x"}); err != nil {
		t.Fatal(err) // the refusal comes later, from the server
	}
	waitUntil(t, "the refused publish is logged", func() bool {
		return h.Has(func(r slog.Record) bool {
			return r.Level == slog.LevelWarn && strings.Contains(logtest.Attrs(r)["err"], "ermissions violation")
		})
	})
}

// A server that enters lame duck mode (about to shut down) is logged.
func TestLameDuckModeIsLogged(t *testing.T) {
	t.Parallel()
	s := serverproc.NATS(t)
	h := logtest.New()
	startBroker(t, nats.Config{URL: natsURL(s), Prefix: "ldm", Logger: h.Logger()})
	s.Signal(syscall.SIGUSR2) // nats-server: enter lame duck mode
	waitUntil(t, "lame duck mode is logged", func() bool {
		return h.Has(func(r slog.Record) bool { return r.Level == slog.LevelInfo && strings.Contains(r.Message, "lame duck") })
	})
}
