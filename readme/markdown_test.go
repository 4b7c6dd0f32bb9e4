//go:build unix

package readme_test

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"unicode"
)

// block is one fenced code block of a Markdown file.
type block struct {
	lang string // the word after the opening fence: sh, go, js, …
	line int    // the line of the opening fence, counted from 1
	text string // the lines between the fences, each ending in "\n"
}

// blocks returns the fenced code blocks of md in order. An unclosed fence
// is an error.
func blocks(md string) ([]block, error) {
	var (
		out  []block
		cur  *block
		body strings.Builder
	)
	for i, l := range strings.Split(md, "\n") {
		if !strings.HasPrefix(l, "```") {
			if cur != nil {
				body.WriteString(l + "\n")
			}
			continue
		}
		if cur == nil {
			cur = &block{lang: strings.TrimSpace(strings.TrimPrefix(l, "```")), line: i + 1}
			continue
		}
		cur.text = body.String()
		out = append(out, *cur)
		cur = nil
		body.Reset()
	}
	if cur != nil {
		return nil, fmt.Errorf("the code block opened on line %d is not closed", cur.line)
	}
	return out, nil
}

// command is one command line of an sh block.
type command struct {
	text   string   // as written, "\" continuations included: what bash runs
	line   int      // its first line in the Markdown file
	output []string // the comment lines right below it: what the README shows it prints
}

// key is the command without its continuations and its trailing comment:
// the name the test's tables know it by.
func (c command) key() string {
	return strings.TrimSpace(stripComment(strings.Join(strings.Fields(strings.ReplaceAll(c.text, "\\\n", " ")), " ")))
}

// commands splits an sh block into command lines: a line ending in "\"
// goes on with the next; a line that is only a comment is the output of
// the command above it (the README's `# {"offset":…}`), or is dropped
// when no command comes before it in the block.
func commands(b block) []command {
	var out []command
	lines := strings.Split(strings.TrimSuffix(b.text, "\n"), "\n")
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		switch t := strings.TrimSpace(l); {
		case t == "":
			continue
		case strings.HasPrefix(t, "#"):
			if len(out) > 0 {
				out[len(out)-1].output = append(out[len(out)-1].output, strings.TrimSpace(strings.TrimPrefix(t, "#")))
			}
			continue
		}
		c := command{text: l, line: b.line + 1 + i}
		for strings.HasSuffix(c.text, "\\") && i+1 < len(lines) {
			i++
			c.text += "\n" + lines[i]
		}
		out = append(out, c)
	}
	return out
}

// stripComment cuts a shell comment off a line: a "#" at the start of a
// word, outside quotes.
func stripComment(s string) string {
	var quote rune
	escaped := false
	prev := ' '
	for i, r := range s {
		switch {
		case escaped:
			escaped = false
		case r == '\\' && quote != '\'':
			escaped = true
		case quote != 0:
			if r == quote {
				quote = 0
			}
		case r == '\'' || r == '"':
			quote = r
		case r == '#' && unicode.IsSpace(prev):
			return s[:i]
		}
		prev = r
	}
	return s
}

// shape turns an example output into a pattern that matches any output of
// its shape: each word with a digit in it stands for any word of its kind
// (digits, lower-case hex, or letters and digits); everything else must be
// as shown.
func shape(example string) *regexp.Regexp {
	word := regexp.MustCompile(`[0-9A-Za-z]+`)
	var b strings.Builder
	last := 0
	for _, m := range word.FindAllStringIndex(example, -1) {
		b.WriteString(regexp.QuoteMeta(example[last:m[0]]))
		w := example[m[0]:m[1]]
		switch {
		case !strings.ContainsAny(w, "0123456789"):
			b.WriteString(regexp.QuoteMeta(w))
		case strings.Trim(w, "0123456789") == "":
			b.WriteString(`[0-9]+`)
		case strings.Trim(w, "0123456789abcdef") == "":
			b.WriteString(`[0-9a-f]+`)
		default:
			b.WriteString(`[0-9A-Za-z]+`)
		}
		last = m[1]
	}
	b.WriteString(regexp.QuoteMeta(example[last:]))
	return regexp.MustCompile(`^` + b.String() + `$`)
}

// TestCommands: blocks and commands split a README as the test needs:
// continuations joined, comments cut off outside quotes, output lines
// kept.
func TestCommands(t *testing.T) {
	t.Parallel()
	md := "text\n```sh\n" +
		"herald serve     # the server\n" +
		"\n" +
		"curl -X POST http://x/api \\\n" +
		"  -d '{\"a\":\"#1\"}'\n" +
		"# {\"offset\":\"1-a1b2\"}\n" +
		"herald pub \"a #b\" c#d   # says \"hi\"\n" +
		"```\n"
	bs, err := blocks(md)
	if err != nil {
		t.Fatal(err)
	}
	if len(bs) != 1 || bs[0].lang != "sh" || bs[0].line != 2 {
		t.Fatalf("blocks: %+v, want one sh block at line 2", bs)
	}
	got := commands(bs[0])
	want := []struct {
		key, output string
		line        int
	}{
		{"herald serve", "", 3},
		{`curl -X POST http://x/api -d '{"a":"#1"}'`, `{"offset":"1-a1b2"}`, 5},
		{`herald pub "a #b" c#d`, "", 8},
	}
	if len(got) != len(want) {
		t.Fatalf("commands: %+v, want %d", got, len(want))
	}
	for i, w := range want {
		if got[i].key() != w.key || strings.Join(got[i].output, "\n") != w.output || got[i].line != w.line {
			t.Errorf("command %d: key %q, output %q, line %d; want %q, %q, %d", i, got[i].key(), got[i].output, got[i].line, w.key, w.output, w.line)
		}
	}
	if _, err := blocks("```sh\nls\n"); err == nil {
		t.Error("an unclosed block is not an error")
	}
}

// TestShape: an example output matches outputs of its shape only.
func TestShape(t *testing.T) {
	t.Parallel()
	re := shape(`{"offset":"1-a1b2c3d4"}`)
	for s, want := range map[string]bool{
		`{"offset":"17-0f3c9a1be2d4"}`: true,
		`{"offset":"1-a1b2c3d4"}`:      true,
		`{"offset":"x-a1b2c3d4"}`:      false,
		`{"offset":"1-A1B2"}`:          false,
		`{"error":"1-a1b2c3d4"}`:       false,
		`{"offset":"1-a1b2c3d4"} `:     false,
	} {
		if got := re.MatchString(s); got != want {
			t.Errorf("%s matches %q: %v, want %v", re, s, got, want)
		}
	}
}
