package ws

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/heraldhq/herald/internal/wire"
)

// TestMain fails the run if a goroutine outlives the tests: every test's
// Transport — its keepalive ticker, flushers and poller — is closed, and
// every connection's reader and writer has ended, by then.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fixedBatch is a wire.Source of payloads fixed in advance, for the tests
// that write without a session.
type fixedBatch struct {
	ps      []*wire.Payload
	written func(error)
}

func (b *fixedBatch) Take() []*wire.Payload { return b.ps }
func (b *fixedBatch) Written(err error)     { b.written(err) }

// batchOf returns a Source that gives ps and calls written when they are
// written or failed.
func batchOf(ps []*wire.Payload, written func(error)) wire.Source {
	return &fixedBatch{ps: ps, written: written}
}
