package client

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/centrifugal/fdelta"
)

// updateVectors rewrites the Fossil delta vectors herald.js is tested with:
// go test -run TestFossilVectors -update ./client/
var updateVectors = flag.Bool("update", false, "rewrite "+vectorsFile+" from github.com/centrifugal/fdelta")

const vectorsFile = "../clients/js/test/testdata/fossil.json"

// fossilVector is one delta made by fdelta.Create: bytes are base64. UTF8
// tells whether the delta is valid UTF-8, so that it can travel as the
// JSON string of a delta push.
type fossilVector struct {
	Name  string `json:"name"`
	Old   string `json:"old"`
	New   string `json:"new"`
	Delta string `json:"delta"`
	UTF8  bool   `json:"utf8"`
}

// corruptVector is a delta fdelta.Apply rejects on old.
type corruptVector struct {
	Name  string `json:"name"`
	Old   string `json:"old"`
	Delta string `json:"delta"`
}

type fossilVectors struct {
	Note    string          `json:"note"`
	Good    []fossilVector  `json:"good"`
	Corrupt []corruptVector `json:"corrupt"`
}

// jsonDoc is about size bytes of compact JSON with numbered fields; change
// gives field n another value.
func jsonDoc(size, n int, change string) []byte {
	fields := map[string]any{}
	for i := 0; len(mustJSON(fields)) < size; i++ {
		v := fmt.Sprintf("value %d of the document, with some words to make it long", i)
		if i == n {
			v = change
		}
		fields[fmt.Sprintf("field%03d", i)] = map[string]any{"id": i, "text": v, "ok": i%3 == 0}
	}
	return mustJSON(fields)
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// binary is n bytes that look random, the same every time.
func binary(n int, seed uint32) []byte {
	b := make([]byte, n)
	x := seed
	for i := range b {
		x = x*1664525 + 1013904223
		b[i] = byte(x >> 24)
	}
	return b
}

func fossilCases() [][3]any {
	doc := jsonDoc(4096, -1, "")
	uni := []byte(`{"text":"héllo wörld — ✓ naïve café, 日本語のテキスト, emoji 🎉🚀 and more text to match on","n":1}`)
	uni2 := bytes.Replace(bytes.Replace(uni, []byte("é"), []byte("è"), 1), []byte("🎉"), []byte("🎊"), 1)
	bin := binary(3001, 7)
	bin2 := append(append(append([]byte{}, bin[:1500]...), 0xff, 0x00, 0x80), bin[1503:]...)
	return [][3]any{
		{"empty to empty", "", ""},
		{"empty to small", "", `{"a":1}`},
		{"small to empty", `{"a":1}`, ""},
		{"identical 4 KB", doc, doc},
		{"4 KB, first field changed", doc, jsonDoc(4096, 0, "changed")},
		{"4 KB, middle field changed", doc, jsonDoc(4096, 20, "a new value, longer than it was before")},
		{"4 KB, last field changed", doc, jsonDoc(4096, 30, "")},
		{"4 KB, unicode in a field", doc, jsonDoc(4096, 12, "ünïcödé ✓ 🎉")},
		{"unicode, characters changed", uni, uni2},
		{"unicode to ascii", uni, []byte(`{"text":"hello world","n":2}`)},
		{"number changed", `{"price":100.25,"symbol":"HRLD","volume":123456,"ts":"2026-01-01T00:00:00Z"}`, `{"price":100.5,"symbol":"HRLD","volume":123457,"ts":"2026-01-01T00:00:01Z"}`},
		{"unrelated", `{"a":[1,2,3]}`, `"something else entirely"`},
		{"binary, 3 bytes changed", bin, bin2},
		{"binary, lengths not a multiple of 4", bin[:1001], bin[2:1800]},
	}
}

func bytesOf(v any) []byte {
	if s, ok := v.(string); ok {
		return []byte(s)
	}
	return v.([]byte)
}

// fossilInt writes n in the Fossil delta format's base-64 digits.
func fossilInt(n uint32) string {
	const digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~"
	s := string(digits[n%64])
	for n /= 64; n > 0; n /= 64 {
		s = string(digits[n%64]) + s
	}
	return s
}

// fossilSum is the Fossil delta checksum of b: its big-endian 32-bit
// words, zero-padded, added up.
func fossilSum(b []byte) uint32 {
	var sum uint32
	for i := 0; i < len(b); i += 4 {
		var w [4]byte
		copy(w[:], b[i:])
		sum += uint32(w[0])<<24 | uint32(w[1])<<16 | uint32(w[2])<<8 | uint32(w[3])
	}
	return sum
}

// makeVectors makes the vectors and checks each with fdelta.Apply.
func makeVectors(t *testing.T) fossilVectors {
	t.Helper()
	b64 := base64.StdEncoding.EncodeToString
	v := fossilVectors{Note: "Fossil deltas made by github.com/centrifugal/fdelta v0.0.3 (fdelta.Create); bytes in base64. Made by go test -run TestFossilVectors -update ./client/"}
	var goodDelta []byte
	var goodOld []byte
	for _, c := range fossilCases() {
		name, old, new := c[0].(string), bytesOf(c[1]), bytesOf(c[2])
		delta := fdelta.Create(old, new)
		got, err := fdelta.Apply(old, delta)
		if err != nil || !bytes.Equal(got, new) {
			t.Fatalf("%s: fdelta does not apply its own delta: %v", name, err)
		}
		v.Good = append(v.Good, fossilVector{Name: name, Old: b64(old), New: b64(new), Delta: b64(delta), UTF8: utf8.Valid(delta)})
		if name == "4 KB, middle field changed" {
			goodOld, goodDelta = old, delta
		}
	}
	// Corruptions of a good delta, and deltas made by hand, each rejected.
	semi := bytes.LastIndexByte(goodDelta, ';')
	nl := bytes.IndexByte(goodDelta, '\n')
	badSum := append(append(append([]byte{}, goodDelta[:semi-1]...), goodDelta[semi-1]^1), goodDelta[semi:]...)
	longer := append([]byte(string(goodDelta[:nl])+"1"), goodDelta[nl:]...) // size*64 + 1
	corrupt := []struct {
		name       string
		old, delta []byte
	}{
		{"bad checksum", goodOld, badSum},
		{"truncated: no end", goodOld, goodDelta[:semi]},
		{"truncated: half", goodOld, goodDelta[:len(goodDelta)/2]},
		{"truncated: header only", goodOld, goodDelta[:nl+1]},
		{"declared length too long", goodOld, longer},
		{"wrong base", bytes.Replace(goodOld, []byte("value 1 "), []byte("VALUE 1 "), 1), goodDelta},
		{"copy out of range", []byte("abcd"), []byte("5\n5@0,0;")},
		// Right but for the range: the checksum is of what a copy that
		// stops at the end of the source, and zeros, would make.
		{"copy out of range, checksum matching", []byte("abcd"), []byte("5\n5@0," + fossilInt(fossilSum([]byte("abcd\x00"))) + ";")},
		{"copy offset out of range", []byte("abcd"), []byte("2\n2@3,0;")},
		{"insert past the end", []byte(""), []byte("5\n5:ab")},
		{"insert longer than declared", []byte(""), []byte("1\n2:ab0;")},
		{"length mismatch", []byte(""), []byte("3\n2:ab0;")},
		{"unknown command", []byte("abcd"), []byte("2\n2!ab0;")},
		{"no header newline", []byte("abcd"), []byte("2 2@0,0;")},
		{"empty delta", []byte("abcd"), []byte("")},
	}
	for _, c := range corrupt {
		if out, err := fdelta.Apply(c.old, c.delta); err == nil {
			t.Fatalf("corrupt vector %q: fdelta applies it, to %q", c.name, out)
		}
		v.Corrupt = append(v.Corrupt, corruptVector{Name: c.name, Old: b64(c.old), Delta: b64(c.delta)})
	}
	return v
}

// TestFossilVectors checks that the committed vectors are what fdelta makes
// (rewriting them with -update), and that the client's delta path turns
// each JSON one into the new data, byte for byte.
func TestFossilVectors(t *testing.T) {
	v := makeVectors(t)
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	b = append(b, '\n')
	if *updateVectors {
		if err := os.WriteFile(vectorsFile, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	committed, err := os.ReadFile(vectorsFile)
	if err != nil {
		t.Fatalf("%v (make it with -update)", err)
	}
	if !bytes.Equal(committed, b) {
		t.Fatalf("%s is not what fdelta makes now: run go test -run TestFossilVectors -update ./client/", vectorsFile)
	}
	tried := 0
	for _, g := range v.Good {
		old, _ := base64.StdEncoding.DecodeString(g.Old)
		new, _ := base64.StdEncoding.DecodeString(g.New)
		delta, _ := base64.StdEncoding.DecodeString(g.Delta)
		if !g.UTF8 || !json.Valid(old) || !json.Valid(new) {
			continue // not something a delta push carries
		}
		tried++
		got, err := applyDelta(old, mustJSON(string(delta)))
		if err != nil || !bytes.Equal(got, new) {
			t.Errorf("%s: applyDelta = %q, %v; want %q", g.Name, got, err, new)
		}
	}
	if tried < 5 {
		t.Fatalf("only %d vectors are JSON with a UTF-8 delta", tried)
	}
}

func TestApplyDeltaRejects(t *testing.T) {
	t.Parallel()
	v := makeVectors(t)
	for _, c := range v.Corrupt {
		old, _ := base64.StdEncoding.DecodeString(c.Old)
		delta, _ := base64.StdEncoding.DecodeString(c.Delta)
		if got, err := applyDelta(old, mustJSON(string(delta))); err == nil {
			t.Errorf("%s: applyDelta = %q, want an error", c.Name, got)
		}
	}
	if _, err := applyDelta(nil, json.RawMessage(`"1\n1:x0;"`)); !errors.Is(err, errNoBase) {
		t.Errorf("a delta without a base: %v, want errNoBase", err)
	}
	if _, err := applyDelta([]byte(`1`), json.RawMessage(`{"not":"a string"}`)); err == nil {
		t.Error("a delta that is no JSON string applied")
	}
	// A good delta whose result is not JSON: "{" from "{}".
	if _, err := applyDelta([]byte(`{}`), mustJSON(string(fdelta.Create([]byte(`{}`), []byte(`{`))))); err == nil {
		t.Error("a delta to data that is not JSON applied")
	}
}

// offlineSubscription is an established Subscription, with Delta or not,
// in a namespace that keeps receipts or not, of a Client that is not
// connected: what it sends waits in the Client's pending calls. It is not
// in the Client's subscriptions, so it does not resubscribe by itself (a
// test does, by hand).
func offlineSubscription(delta, receipts bool) *Subscription {
	c := &Client{subs: map[string]*Subscription{}, pending: map[uint64]*call{}, log: slog.New(slog.DiscardHandler)}
	s := newSubscription(c, "ch")
	s.delta, s.receipts = delta, receipts
	close(s.ready)
	return s
}

func queued(s *Subscription) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, m := range s.queue {
		out = append(out, m.Offset+"="+string(m.Data))
	}
	return out
}

// doc is data long enough for deltas to copy from: n, and text made of v.
func doc(n int, v string) string {
	return fmt.Sprintf(`{"n":%d, "text":"%s"}`, n, strings.Repeat(v, 64))
}

func TestDeltaPushes(t *testing.T) {
	t.Parallel()
	s := offlineSubscription(true, false)
	delta := func(old, new string) json.RawMessage {
		d := fdelta.Create([]byte(old), []byte(new))
		if len(d) >= len(new) {
			t.Fatalf("the delta from %s to %s copies nothing", old, new)
		}
		return mustJSON(string(d))
	}
	push := func(offset string, data json.RawMessage, isDelta bool) {
		s.push(Message{Offset: offset, Data: data}, isDelta)
	}
	// The base is the data as received, not as Go would write it: a space,
	// and an escape.
	push("1", json.RawMessage(doc(1, `\u00e9`)), false)
	push("2", delta(doc(1, `\u00e9`), doc(2, `\u00e9`)), true)
	push("3", delta(doc(2, `\u00e9`), doc(3, `\u00e9`)), true)
	push("4", json.RawMessage(doc(4, "ab")), false) // whole: the new base
	push("5", delta(doc(4, "ab"), doc(5, "ab")), true)
	want := []string{"1=" + doc(1, `\u00e9`), "2=" + doc(2, `\u00e9`), "3=" + doc(3, `\u00e9`), "4=" + doc(4, "ab"), "5=" + doc(5, "ab")}
	if got := queued(s); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("queued %q, want %q", got, want)
	}

	// A delta against other data breaks the subscription: nothing more is
	// queued until the resubscribe's reply, after which the first push is
	// whole.
	push("6", delta(doc(5, "xy"), doc(6, "xy")), true)
	push("7", json.RawMessage(doc(7, "xy")), false)
	push("8", delta(doc(7, "xy"), doc(8, "xy")), true)
	if got := queued(s); len(got) != len(want) || s.Offset() != "5" {
		t.Fatalf("after a bad delta: queued %q, offset %q; want nothing new, offset 5", got, s.Offset())
	}
	s.c.subscribeCmd(s) // the resubscribe: it forgets the base
	s.subscribed(json.RawMessage(`{"id":1,"ok":true,"offset":"8","recovered":true}`), nil)
	push("6", delta(doc(5, "ab"), doc(6, "ab")), true) // no base yet: broken again
	if got := queued(s); len(got) != len(want) {
		t.Fatalf("a delta as the first push after a resubscribe was queued: %q", got)
	}
	s.c.subscribeCmd(s)
	s.subscribed(json.RawMessage(`{"id":2,"ok":true,"offset":"8","recovered":true}`), nil)
	push("6", json.RawMessage(doc(6, "ab")), false)
	push("7", delta(doc(6, "ab"), doc(7, "ab")), true)
	want = append(want, "6="+doc(6, "ab"), "7="+doc(7, "ab"))
	if got := queued(s); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after the resubscribe: queued %q, want %q", got, want)
	}
}

func TestPushedLinesCarryTagsKeyAndDeltas(t *testing.T) {
	t.Parallel()
	s := offlineSubscription(true, false)
	s.c.subs["ch"] = s
	old, new := doc(1, "ab"), doc(2, "ab")
	s.c.handle([]byte(`{"op":"message","channel":"ch","offset":"1","data":` + old + `,"tags":{"team":"red"},"key":"k1"}`))
	s.c.handle([]byte(`{"op":"message","channel":"ch","offset":"2","delta":true,"data":` + string(mustJSON(string(fdelta.Create([]byte(old), []byte(new))))) + `}`))
	m1, err1 := s.Next(t.Context())
	m2, err2 := s.Next(t.Context())
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	if m1.Tags["team"] != "red" || len(m1.Tags) != 1 || m1.Key != "k1" || string(m1.Data) != old {
		t.Fatalf("first message %+v, want tags team=red, key k1 and its data", m1)
	}
	if string(m2.Data) != new || m2.Tags != nil || m2.Key != "" {
		t.Fatalf("second message %+v, want the whole data %s", m2, new)
	}
}
