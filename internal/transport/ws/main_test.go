package ws

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if a goroutine outlives the tests: every test's
// Transport — its keepalive ticker, flushers and poller — is closed, and
// every connection's reader and writer has ended, by then.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
