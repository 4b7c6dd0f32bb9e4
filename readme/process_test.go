//go:build unix

package readme_test

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// pollEvery is how often a condition is polled.
const pollEvery = 50 * time.Millisecond

// stopWithin is how long a process may take to exit after SIGINT before
// it is killed.
const stopWithin = 10 * time.Second

// process is a command the test started in a process group of its own, so
// that what it starts in turn (go run's build of herald, Chromium) is
// stopped with it.
type process struct {
	cmd    *exec.Cmd
	stdout file          // what it writes, readable while it runs
	stderr file          // likewise
	done   chan struct{} // closed once it has exited
	err    error         // how it exited, once done is closed
}

// file is a file a process writes to.
type file string

// String returns what the file holds now.
func (f file) String() string {
	b, _ := os.ReadFile(string(f)) // a process's output; gone, it is nothing
	return string(b)
}

// start runs name with args in dir with env, and stops its process group
// when the test ends.
func start(t *testing.T, dir string, env []string, name string, args ...string) *process {
	t.Helper()
	out := t.TempDir()
	p := &process{
		cmd:    exec.Command(name, args...),
		stdout: file(filepath.Join(out, "stdout")),
		stderr: file(filepath.Join(out, "stderr")),
		done:   make(chan struct{}),
	}
	p.cmd.Dir, p.cmd.Env = dir, env
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	for _, f := range []struct {
		name file
		to   *io.Writer
	}{{p.stdout, &p.cmd.Stdout}, {p.stderr, &p.cmd.Stderr}} {
		w, err := os.Create(string(f.name))
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close() // the process has its own copy once started
		*f.to = w
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(p.stop)
	return p
}

// stop sends SIGINT to the process group, as Ctrl-C in a terminal would,
// and SIGKILL if its leader has not exited within stopWithin; it returns
// once the leader has exited. (SIGTERM would end go run at once, before
// the herald it started, leaving its build directory behind.)
func (p *process) stop() {
	pgid := p.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGINT) // the group may be gone already
	select {
	case <-p.done:
	case <-time.After(stopWithin):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
	}
}

// exited reports whether the process has exited.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// wait waits up to d for the process to exit and returns an error unless it
// exited with status 0.
func (p *process) wait(d time.Duration) error {
	select {
	case <-p.done:
	case <-time.After(d):
		return fmt.Errorf("still running after %v%s", d, p.output())
	}
	if p.err != nil {
		return fmt.Errorf("%w%s", p.err, p.output())
	}
	return nil
}

// until polls ready until it returns nil, and fails after d, or as soon as
// the process exits, with ready's last error and the process's output.
func (p *process) until(d time.Duration, ready func() error) error {
	deadline := time.Now().Add(d)
	for {
		err := ready()
		switch {
		case err == nil:
			return nil
		case p.exited():
			return fmt.Errorf("exited (%v) before it was ready: %w%s", p.err, err, p.output())
		case time.Now().After(deadline):
			return fmt.Errorf("not ready within %v: %w%s", d, err, p.output())
		}
		time.Sleep(pollEvery)
	}
}

// output is what the process wrote, to append to an error.
func (p *process) output() string {
	out, errOut := p.stdout.String(), p.stderr.String()
	if out == "" && errOut == "" {
		return " (no output)"
	}
	return fmt.Sprintf("\nstdout:\n%s\nstderr:\n%s", out, errOut)
}
