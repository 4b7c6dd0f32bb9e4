package brokertest

import (
	"encoding/json"
	"maps"
	"strings"
	"testing"

	"github.com/heraldhq/herald/broker"
)

// maxTagBytes is the protocol's bound on a tag key, a tag value and a
// conflation key.
const maxTagBytes = 128

// fill repeats unit up to exactly n bytes, cutting only at a rune's start
// and padding with 'x'.
func fill(unit string, n int) string {
	s := strings.Repeat(unit, n/len(unit))
	return s + strings.Repeat("x", n-len(s))
}

// testTagsAndKey publishes messages with several tags, with none, and with
// keys and values made of what encodings trip on, and checks that the
// Handler and History give back each one's Tags and Key unchanged.
func testTagsAndKey(t *testing.T, e *env) {
	ch := e.channel("tags")
	e.subscribe(ch)
	awkward := map[string]string{
		"a=b":                          "c=d&e=f",
		"k:v":                          "1:2:3",
		"line\nbreak":                  "crlf\r\nvalue\n",
		`"quoted"`:                     `say "hi" 'there'`,
		"ünïcode ключ 鍵":               "värde 値 🙂",
		"%41;,+ ?#/\\\t":               "%zz %41 +;,&",
		"empty value":                  "",
		"":                             "empty key",
		fill("é=\n", maxTagBytes):      fill("\"ü:", maxTagBytes),
		fill("z", maxTagBytes):         fill("日\n", maxTagBytes),
		"trailing space ":              " leading space",
		"nul\x00byte":                  "nul\x00byte",
		"json-looking {\"a\":1}":       `{"b":[2]}`,
		"netstring-looking 3:abc,":     "5:hello",
		"header-looking Herald-Key: x": "Traceparent: 00-",
		"invalid utf-8 \xff\xfe":       "\xc3(",
	}
	trace := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	pubs := []broker.Publication{
		{Data: json.RawMessage(`1`), Tags: map[string]string{"room": "lobby", "lang": "en", "prio": "high"}, Key: "user:42"},
		{Data: json.RawMessage(`2`)},
		{Data: json.RawMessage(`3`), Tags: awkward, Key: fill("k=\n\"ü:", maxTagBytes)},
		{Data: json.RawMessage(`4`), Tags: map[string]string{"only": "tags"}},
		{Data: json.RawMessage(`5`), Key: "only a key"},
		{Data: json.RawMessage(`6`), Tags: map[string]string{}, Event: "empty-map"},
		{Data: json.RawMessage(`7`), Tags: map[string]string{"with": "trace"}, Key: "k", Trace: trace, Event: "ev", User: "u", Client: "c"},
		{Data: json.RawMessage(`8`), Trace: trace},
		{Data: []byte{0, '\n', 0xff}, Binary: true, Tags: map[string]string{"binary": "yes"}, Key: "bin"},
	}
	offs := e.publishAll(ch, pubs)
	// check compares ms with the publications from the first'th on.
	check := func(where string, ms []broker.Message, first int) {
		t.Helper()
		if len(ms) != len(pubs)-first {
			t.Fatalf("%s: %d messages, want %d", where, len(ms), len(pubs)-first)
		}
		for j, m := range ms {
			i := first + j
			p := pubs[i]
			if m.Offset != offs[i] || string(m.Data) != string(p.Data) || m.Binary != p.Binary ||
				m.Event != p.Event || m.User != p.User || m.Client != p.Client || m.Trace != p.Trace {
				t.Errorf("%s: message %d = %+v, published %+v at %v", where, i, m, p, offs[i])
			}
			if !maps.Equal(m.Tags, p.Tags) {
				t.Errorf("%s: message %d has tags %q, published %q", where, i, m.Tags, p.Tags)
			}
			if m.Key != p.Key {
				t.Errorf("%s: message %d has key %q, published %q", where, i, m.Key, p.Key)
			}
		}
	}
	check("Handler", e.waitMessages(ch, len(pubs)), 0)
	check("History", e.history(ch, broker.HistoryQuery{Limit: -1}).Messages, 0)
	// Some brokers read history after a cursor another way than the
	// newest messages.
	check("History since the first", e.history(ch, broker.HistoryQuery{Since: offs[0], Limit: -1}).Messages, 1)
}
