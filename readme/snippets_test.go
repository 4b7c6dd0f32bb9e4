//go:build unix

package readme_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// snippetMark is where a go block of the README goes in its program.
const snippetMark = "\t// README.md's block\n"

// goProgram is the main package a go block of the README is compiled in:
// what the snippet assumes (imports, ctx, …) comes before it, and what
// uses the names it declares comes after.
type goProgram struct {
	source string // with snippetMark where the block goes, verbatim
	// want is what the program must print when it runs; "" means the
	// program is compiled only.
	want *regexp.Regexp
}

// goPrograms has a program for every go block of the README, by the
// block's first line.
func goPrograms() map[string]goProgram {
	return map[string]goProgram{
		// As a library: the program publishes, serves the mux (the app's
		// route, herald.js, /ws, whose publish the hook refuses to an
		// anonymous client) and returns, so that the block's deferred
		// Shutdown runs; a Publish after it must fail.
		"rt, err := herald.New(herald.Config{": {
			source: `package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/client"
)

func main() {
	rt := readme()
	if _, err := rt.Publish(context.Background(), "news", "after"); err == nil {
		log.Fatal("Publish works after the deferred Shutdown")
	}
	fmt.Println("shut down")
}

func readme() *herald.Server {
	ctx := context.Background()
	hello := func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "hello from the app") }
` + snippetMark + `	if err != nil {
		log.Fatalf("Publish: %v", err)
	}
	fmt.Println("published", off)

	srv := httptest.NewServer(mux)
	defer srv.Close()
	get(srv.URL+"/api/hello", "hello from the app")
	get(srv.URL+"/herald.js", "export class Herald")
	c, err := client.Dial(ctx, srv.URL, nil)
	if err != nil {
		log.Fatalf("dial /ws: %v", err)
	}
	defer c.Close()
	if _, err := c.Publish(ctx, "news", "anonymous", ""); err == nil || !strings.Contains(err.Error(), "sign in to publish") {
		log.Fatalf("an anonymous client's publish: %v, want the hook's refusal", err)
	}
	return rt
}

// get fails unless url answers 200 with a body that holds want.
func get(url, want string) {
	resp, err := http.Get(url)
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK || !strings.Contains(string(b), want) {
		log.Fatalf("GET %s: %s %q (%v), want 200 with %q", url, resp.Status, b, err, want)
	}
}
`,
			want: regexp.MustCompile(`^published [0-9]+-[0-9a-f]+\nshut down\n$`),
		},
		// From Go: compiled only. It dials https://herald.example.com,
		// the README's stand-in for a deployment, which cannot be reached
		// from here; the CLI lines (herald pub --token, herald sub) run
		// the same client package against the quick start's server.
		`c, err := client.Dial(ctx, "https://herald.example.com", &client.Options{Token: token})`: {
			source: `package main

import (
	"context"
	"log"

	"github.com/heraldhq/herald/client"
)

func main() {
	ctx := context.Background()
	token := "a client token"
` + snippetMark + `	_, _ = off, m
}
`,
		},
	}
}

// firstLine is a block's first line, the name goPrograms knows it by.
func firstLine(b block) string {
	l, _, _ := strings.Cut(b.text, "\n")
	return l
}

// goBlock compiles a go block in its program, in a module of its own that
// a workspace joins to the repository's, and runs it if it is to run.
func (h *harness) goBlock(t *testing.T, b block) {
	prog, ok := goPrograms()[firstLine(b)]
	if !ok {
		t.Fatalf("README.md:%d: a go block with no program in goPrograms", b.line)
	}
	dir := t.TempDir()
	src := strings.Replace(prog.source, snippetMark, b.text, 1)
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), "GOFLAGS=", "GOWORK=") // the go.work below, whatever the caller's
	for _, args := range [][]string{
		{"mod", "init", "readme.example/snippet"},
		{"work", "init", ".", h.root},
		{"build", "-o", "snippet", "."},
	} {
		cmd := exec.Command("go", args...)
		cmd.Dir, cmd.Env = dir, env
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("README.md:%d: go %s: %v\n%s\nthe program:\n%s", b.line, strings.Join(args, " "), err, out, src)
		}
	}
	if prog.want == nil {
		return
	}
	p := start(t, dir, os.Environ(), filepath.Join(dir, "snippet"))
	if err := p.wait(lineTimeout); err != nil {
		t.Fatalf("README.md:%d: the go block's program: %v", b.line, err)
	}
	if out := p.stdout.String(); !prog.want.MatchString(out) {
		t.Fatalf("README.md:%d: the go block's program printed %q, want %s%s", b.line, out, prog.want, p.output())
	}
}

// config writes the yaml block to a file and fails unless `herald config
// --config FILE` loads it and prints every value it sets.
func (h *harness) config(t *testing.T, b block) {
	file := filepath.Join(t.TempDir(), "herald.yaml")
	if err := os.WriteFile(file, []byte(b.text), 0o600); err != nil {
		t.Fatal(err)
	}
	p := start(t, h.root, h.env, filepath.Join(h.bin, "herald"), "config", "--config", file)
	if err := p.wait(lineTimeout); err != nil {
		t.Fatalf("README.md:%d: herald config --config FILE: %v", b.line, err)
	}
	var want, got map[string]any
	if err := yaml.Unmarshal([]byte(b.text), &want); err != nil {
		t.Fatalf("README.md:%d: %v", b.line, err)
	}
	if err := yaml.Unmarshal([]byte(p.stdout.String()), &got); err != nil {
		t.Fatalf("herald config printed no YAML: %v%s", err, p.output())
	}
	for _, d := range differences("", want, got) {
		t.Errorf("README.md:%d: herald config %s", b.line, d)
	}
	if t.Failed() {
		t.Logf("herald config printed:\n%s", p.stdout.String())
	}
}

// differences lists the values of want that got lacks or has otherwise,
// comparing scalars as text (herald config quotes some numbers).
func differences(path string, want, got any) []string {
	if w, ok := want.(map[string]any); ok {
		g, ok := got.(map[string]any)
		if !ok {
			return []string{fmt.Sprintf("prints %s as %v, want a map", path, got)}
		}
		var out []string
		for k, v := range w {
			out = append(out, differences(strings.TrimPrefix(path+"."+k, "."), v, g[k])...)
		}
		return out
	}
	if fmt.Sprint(want) != fmt.Sprint(got) {
		return []string{fmt.Sprintf("prints %s: %v, want %v", path, got, want)}
	}
	return nil
}

// browser runs e2e/readme.test.mjs, which runs the html and js blocks in
// headless Chromium against the quick start's server.
func (h *harness) browser(t *testing.T) {
	if _, err := os.Stat(filepath.Join(h.root, "e2e", "node_modules", "playwright-core")); err != nil {
		t.Fatalf("playwright-core is not installed: run `npm ci --prefix e2e` (make test does): %v", err)
	}
	if _, err := os.Stat("/usr/bin/chromium"); err != nil && os.Getenv("CHROMIUM") == "" {
		t.Fatalf("Chromium is not installed (Debian package chromium; .ci/run installs it): %v", err)
	}
	env := append(withoutHerald(os.Environ()), "HERALD_URL="+h.base, "HERALD_API_KEY="+h.apiKey, "HERALD_TOKEN="+h.token)
	p := start(t, h.root, env, "node", "--test", filepath.Join("e2e", "readme.test.mjs"))
	if err := p.wait(2 * time.Minute); err != nil {
		t.Fatalf("the README's html and js blocks in Chromium: %v", err)
	}
	t.Log(p.stdout.String())
}
