package ws

import (
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestMain fails the run if a goroutine outlives the tests: every test's
// Transport — its keepalive ticker, flushers and poller — is closed, and
// every connection's reader and writer has ended, by then.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitWritten waits up to within for the write's report on written, and
// fails the test when it is an error or does not come.
func waitWritten(t *testing.T, written <-chan error, within time.Duration) {
	t.Helper()
	select {
	case err := <-written:
		if err != nil {
			t.Fatalf("write: %v", err)
		}
	case <-time.After(within):
		t.Fatalf("the write did not end within %v", within)
	}
}
