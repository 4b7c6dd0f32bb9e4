package web_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/heraldtest"
)

// TestChatPageInChromium drives the demo chat page in headless Chromium
// (e2e/*.test.mjs, through playwright-core) against a real server: one in
// this process (HERALD_URL), and herald binaries the tests start and stop
// themselves (HERALD_BIN), for what needs a server restart.
func TestChatPageInChromium(t *testing.T) {
	e2e, err := filepath.Abs("../e2e")
	if err != nil {
		t.Fatal(err)
	}
	for _, dep := range []string{"playwright-core", "esbuild"} {
		if _, err := os.Stat(filepath.Join(e2e, "node_modules", dep)); err != nil {
			t.Fatalf("%s is not installed: run `npm ci --prefix e2e` (make test does): %v", dep, err)
		}
	}
	if _, err := os.Stat("/usr/bin/chromium"); err != nil {
		t.Fatalf("Chromium is not installed (Debian package chromium; .ci/run installs it): %v", err)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is not installed: %v", err)
	}
	bin := buildHerald(t)
	const adminToken = "e2e-admin-token"
	_, hs := heraldtest.NewServer(t, herald.Config{
		Namespaces: map[string]herald.Namespace{"chat": {JoinLeave: true}},
		AdminToken: adminToken,
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	files, err := filepath.Glob(filepath.Join(e2e, "*.test.mjs"))
	// readme.test.mjs runs README.md's browser blocks against the README's
	// own server on :8080 (one names ws://localhost:8080); the readme
	// package's test starts that server and runs it.
	files = slices.DeleteFunc(files, func(f string) bool { return filepath.Base(f) == "readme.test.mjs" })
	if err != nil || len(files) == 0 {
		t.Fatalf("no browser tests in %s: %v", e2e, err)
	}
	cmd := exec.CommandContext(ctx, node, append([]string{"--test"}, files...)...)
	cmd.Env = append(os.Environ(), "HERALD_URL="+hs.URL, "HERALD_BIN="+bin, "HERALD_ADMIN_TOKEN="+adminToken)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("browser test failed: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}

// buildHerald builds the herald binary (./cmd/herald) once into a temporary
// directory and returns its path.
func buildHerald(t *testing.T) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go tool is not on PATH: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "herald")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goTool, "build", "-o", bin, "./cmd/herald")
	cmd.Dir = ".." // the repository root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/herald: %v\n%s", err, out)
	}
	return bin
}
