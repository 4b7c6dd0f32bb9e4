//go:build unix

package readme_test

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
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

// process is a command the test started, under a supervisor of its own:
// the test binary run again (superviseArg), the leader of a new process
// group in which it runs the command, so that what the command starts in
// turn (go run's build of herald, Chromium) is stopped with it. The
// supervisor reads its stdin, a pipe only the test holds open: when the
// test closes it (stop), or dies without cleaning up (a -timeout, Ctrl-C,
// a crash), the supervisor stops the group.
type process struct {
	cmd    *exec.Cmd
	hold   *os.File      // the pipe's end the supervisor waits on
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
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	p := &process{
		cmd:    exec.Command(self, append([]string{superviseArg, name}, args...)...),
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
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close() // the supervisor's, once started
	p.cmd.Stdin, p.hold = r, w
	if err := p.cmd.Start(); err != nil {
		w.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(p.stop)
	return p
}

// stop has the supervisor stop the process group and returns once the
// supervisor has exited; should it not, it kills the group.
func (p *process) stop() {
	_ = p.hold.Close()
	select {
	case <-p.done:
	case <-time.After(stopWithin + 5*time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL) // the group may be gone already
		<-p.done
	}
}

// superviseArg, as the test binary's first argument, makes it the
// supervisor of the command that follows (see process).
const superviseArg = "-readme.supervise"

// TestMain runs the test binary as a supervisor when it is started as
// one, and the tests otherwise.
func TestMain(m *testing.M) {
	if len(os.Args) > 2 && os.Args[1] == superviseArg {
		os.Exit(supervise(os.Args[2], os.Args[3:]))
	}
	os.Exit(m.Run())
}

// supervise runs name with args in its own process group, of which it is
// the leader, and exits as it exits. When its stdin ends — the test
// closed it, or is gone — it sends the group SIGINT, as Ctrl-C in a
// terminal would, and SIGKILL if the command has not exited within
// stopWithin. (SIGTERM would end go run at once, before the herald it
// started, leaving its build directory behind.)
func supervise(name string, args []string) int {
	signal.Notify(make(chan os.Signal, 1), os.Interrupt) // the group's SIGINT is for the command; this waits for it
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 127
	}
	exited := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		group := -os.Getpid()
		_ = syscall.Kill(group, syscall.SIGINT)
		select {
		case <-exited:
		case <-time.After(stopWithin):
			_ = syscall.Kill(group, syscall.SIGKILL)
		}
	}()
	err := cmd.Wait()
	close(exited)
	if code := cmd.ProcessState.ExitCode(); code >= 0 {
		return code
	}
	fmt.Fprintln(os.Stderr, err) // killed by a signal
	return 1
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
