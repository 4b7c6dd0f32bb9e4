package sse_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if a goroutine a test started (a stream's
// Serve, a test server's) outlives the tests.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
