//go:build unix

package readme_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/heraldtest"
)

// The quick start's server is ready only when the herald on its port is
// the one the line started: another herald there (another run of this
// test, a server left running) refuses this run's API key, and must not
// be taken for it.
func TestQuickStartReadyOnlyForItsOwnServer(t *testing.T) {
	t.Parallel()
	_, other := heraldtest.NewServer(t, herald.Config{APIKey: "another run's key"})
	h := &harness{base: other.URL, apiKey: newAPIKey(t)}
	if err := h.quickStartReady(); err == nil {
		t.Fatal("a herald started with another API key passed for the quick start's server")
	}
	_, ours := heraldtest.NewServer(t, herald.Config{APIKey: h.apiKey})
	h.base = ours.URL
	if err := h.quickStartReady(); err != nil {
		t.Fatalf("the quick start's own server: %v", err)
	}
	if other := newAPIKey(t); other == h.apiKey {
		t.Fatalf("two runs got the same API key %q", other)
	}
}

// linePIDFile, set in its environment, makes the test binary the test
// that TestLinesStopWhenTheTestDies kills: it starts a line that writes
// its process id to the file and waits.
const linePIDFile = "READMETEST_LINE_PIDFILE"

// What a line starts stops when the test that started it dies without
// cleaning up (a -timeout, Ctrl-C, a crash): a herald left on :8080 would
// fail every later run, and hold the port for everyone else.
func TestLinesStopWhenTheTestDies(t *testing.T) {
	if path := os.Getenv(linePIDFile); path != "" {
		p := start(t, t.TempDir(), nil, "/bin/sh", "-c", "echo $$ > "+path+".tmp && mv "+path+".tmp "+path+" && exec sleep 300")
		<-p.done // until killed
		return
	}
	t.Parallel()
	pidFile := filepath.Join(t.TempDir(), "pid")
	victim := exec.Command(os.Args[0], "-test.run=^TestLinesStopWhenTheTestDies$")
	victim.Env = append(os.Environ(), linePIDFile+"="+pidFile)
	if err := victim.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- victim.Wait() }()

	var pid int
	deadline := time.Now().Add(30 * time.Second)
	for pid == 0 {
		select {
		case err := <-exited:
			t.Fatalf("the test to kill exited before its line started: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			_ = victim.Process.Kill()
			t.Fatal("the line did not start within 30s")
		}
		if b, err := os.ReadFile(pidFile); err == nil {
			pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		}
		time.Sleep(pollEvery)
	}
	t.Cleanup(func() {
		if alive(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL) // the line this test started, left behind
		}
	})
	_ = victim.Process.Kill() // as a -timeout or a crash ends a test: no cleanup runs
	<-exited

	deadline = time.Now().Add(stopWithin + 5*time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("the line's process %d still runs %v after the test that started it died", pid, stopWithin+5*time.Second)
		}
		time.Sleep(pollEvery)
	}
}

// alive reports whether process pid runs (a zombie, exited but not yet
// reaped by whoever adopted it, does not).
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true // no /proc: kill's answer is all there is
	}
	// The state follows the command name, which is in parentheses.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}
