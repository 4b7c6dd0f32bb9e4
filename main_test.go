package herald_test

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestMain fails the run if goroutines started by herald outlive the
// tests: every test's server is shut down and every client closed by then.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if leak := leakedGoroutine(5 * time.Second); leak != "" {
			fmt.Fprintf(os.Stderr, "goroutine leaked by herald:\n%s\n", leak)
			code = 1
		}
	}
	os.Exit(code)
}

// leakedGoroutine waits up to d for every goroutine whose stack mentions
// herald's packages to end, and returns the stack of one that did not.
func leakedGoroutine(d time.Duration) string {
	deadline := time.Now().Add(d)
	for {
		leak := heraldGoroutine()
		if leak == "" || time.Now().After(deadline) {
			return leak
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func heraldGoroutine() string {
	buf := make([]byte, 4<<20)
	buf = buf[:runtime.Stack(buf, true)]
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "github.com/heraldhq/herald") && !strings.Contains(g, "heraldGoroutine") {
			return g
		}
	}
	return ""
}
