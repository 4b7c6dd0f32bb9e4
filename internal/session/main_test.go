package session_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if a goroutine a test started (a hub's, a
// token expiry's, a fake connection's) outlives the tests.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
