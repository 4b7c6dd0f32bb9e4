package filter_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/heraldhq/herald/internal/filter"
	"github.com/heraldhq/herald/internal/protocol"
)

// nest wraps leaf in levels-1 "not"s: a filter levels deep.
func nest(levels int, leaf string) string {
	return strings.Repeat(`{"not":`, levels-1) + leaf + strings.Repeat(`}`, levels-1)
}

// anyOf is an "any" of n leaves: n+1 nodes.
func anyOf(n int) string {
	leaves := make([]string, n)
	for i := range leaves {
		leaves[i] = `{"tag":"t","eq":"v"}`
	}
	return `{"any":[` + strings.Join(leaves, ",") + `]}`
}

var (
	long128 = strings.Repeat("k", 128)
	long129 = strings.Repeat("k", 129)
)

// Every form of the grammar matches the tags it names, and only those.
func TestParseAndMatch(t *testing.T) {
	t.Parallel()
	none := map[string]string(nil)
	red := map[string]string{"color": "red"}
	blue := map[string]string{"color": "blue"}
	redBig := map[string]string{"color": "red", "size": "big"}
	empty := map[string]string{"color": ""}
	cases := []struct {
		name   string
		filter string
		tags   map[string]string
		want   bool
	}{
		{"eq matches", `{"tag":"color","eq":"red"}`, red, true},
		{"eq other value", `{"tag":"color","eq":"red"}`, blue, false},
		{"eq missing tag", `{"tag":"color","eq":"red"}`, none, false},
		{"eq empty value", `{"tag":"color","eq":""}`, empty, true},
		{"eq empty value, tag missing", `{"tag":"color","eq":""}`, none, false},
		{"field order", `{"eq":"red","tag":"color"}`, red, true},
		{"in matches", `{"tag":"color","in":["blue","red"]}`, red, true},
		{"in matches unsorted", `{"tag":"color","in":["red","blue","green"]}`, blue, true},
		{"in other value", `{"tag":"color","in":["green","blue"]}`, red, false},
		{"in missing tag", `{"tag":"color","in":["red"]}`, none, false},
		{"in duplicates", `{"tag":"color","in":["red","red"]}`, red, true},
		{"exists true", `{"tag":"color","exists":true}`, empty, true},
		{"exists true, missing", `{"tag":"color","exists":true}`, none, false},
		{"exists false", `{"tag":"color","exists":false}`, none, true},
		{"exists false, present", `{"tag":"color","exists":false}`, red, false},
		{"all true", `{"all":[{"tag":"color","eq":"red"},{"tag":"size","exists":true}]}`, redBig, true},
		{"all one false", `{"all":[{"tag":"color","eq":"red"},{"tag":"size","exists":true}]}`, red, false},
		{"any one true", `{"any":[{"tag":"color","eq":"blue"},{"tag":"size","exists":true}]}`, redBig, true},
		{"any none true", `{"any":[{"tag":"color","eq":"blue"},{"tag":"size","exists":true}]}`, red, false},
		{"not", `{"not":{"tag":"color","eq":"red"}}`, blue, true},
		{"not, inner true", `{"not":{"tag":"color","eq":"red"}}`, red, false},
		{"not missing", `{"not":{"tag":"color","eq":"red"}}`, none, true},
		{"three levels", `{"all":[{"any":[{"tag":"color","eq":"blue"},{"tag":"size","eq":"big"}]},{"not":{"tag":"x","exists":true}}]}`, redBig, true},
		{"whitespace", " \n{ \"tag\" : \"color\" ,\t\"eq\" : \"red\" }\n", red, true},
		{"escaped strings", `{"tag":"c\u006flor","eq":"r\u0065d"}`, red, true},
		{"8 levels", nest(8, `{"tag":"color","exists":true}`), red, false},
		{"64 nodes", anyOf(63), map[string]string{"t": "v"}, true},
		{"128-byte key and value", `{"tag":"` + long128 + `","eq":"` + long128 + `"}`, map[string]string{long128: long128}, true},
		{"128-byte in value", `{"tag":"k","in":["` + long128 + `"]}`, map[string]string{"k": long128}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			f, err := filter.Parse(json.RawMessage(c.filter))
			if err != nil {
				t.Fatalf("Parse(%s): %v", c.filter, err)
			}
			if got := f.Match(c.tags); got != c.want {
				t.Errorf("Parse(%s).Match(%v) = %v, want %v", c.filter, c.tags, got, c.want)
			}
		})
	}
}

// Every malformed filter is a bad_request that says what is wrong and
// where.
func TestParseRefuses(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		filter string
		want   string
	}{
		{"empty input", ``, `filter: want an object, got nothing (at the root)`},
		{"null", `null`, `filter: want an object, got null (at the root)`},
		{"array", `[]`, `filter: want an object, got array (at the root)`},
		{"string", `"x"`, `filter: want an object, got string (at the root)`},
		{"number", `1`, `filter: want an object, got number (at the root)`},
		{"boolean", `true`, `filter: want an object, got boolean (at the root)`},
		{"malformed", `{"tag":"a","eq":}`, `filter: malformed JSON at byte 16 (at the root)`},
		{"truncated", `{"tag":"a"`, `filter: malformed JSON: unexpected end (at the root)`},
		{"trailing data", `{"tag":"a","eq":"b"} {}`, `filter: unexpected data after the filter`},
		{"trailing garbage", `{"tag":"a","eq":"b"}}`, `filter: unexpected data after the filter`},
		{"empty object", `{}`, `filter: want one of "tag", "all", "any", "not" (at the root)`},
		{"unknown field", `{"tag":"a","eq":"b","ne":"c"}`, `filter: unknown field "ne" (at the root)`},
		{"field case", `{"Tag":"a","eq":"b"}`, `filter: unknown field "Tag" (at the root)`},
		{"long unknown field", `{"` + long129 + `":1}`, `filter: unknown field "` + strings.Repeat("k", 32) + `…" (at the root)`},
		{"duplicate field", `{"tag":"a","eq":"b","eq":"c"}`, `filter: duplicate field "eq" (at the root)`},
		{"two operators", `{"tag":"a","eq":"b","in":["c"]}`, `filter: a leaf takes one operator, got "eq" and "in" (at the root)`},
		{"eq and exists", `{"tag":"a","exists":true,"eq":"b"}`, `filter: a leaf takes one operator, got "exists" and "eq" (at the root)`},
		{"no operator", `{"tag":"a"}`, `filter: "tag" needs one of "eq", "in", "exists" (at the root)`},
		{"operator without tag", `{"eq":"b"}`, `filter: "eq" needs "tag" (at the root)`},
		{"all and tag", `{"tag":"a","all":[{"tag":"a","eq":"b"}]}`, `filter: "tag" and "all" cannot be combined (at the root)`},
		{"not and eq", `{"not":{"tag":"a","eq":"b"},"eq":"b"}`, `filter: "not" and "eq" cannot be combined (at the root)`},
		{"all and any", `{"all":[{"tag":"a","eq":"b"}],"any":[{"tag":"a","eq":"b"}]}`, `filter: "all" and "any" cannot be combined (at the root)`},
		{"tag not a string", `{"tag":1,"eq":"b"}`, `filter: "tag" must be a string, got number (at the root)`},
		{"empty tag", `{"tag":"","eq":"b"}`, `filter: "tag" must not be empty (at the root)`},
		{"eq not a string", `{"tag":"a","eq":1}`, `filter: "eq" must be a string, got number (at the root)`},
		{"eq null", `{"tag":"a","eq":null}`, `filter: "eq" must be a string, got null (at the root)`},
		{"eq object", `{"tag":"a","eq":{"x":[[[[1]]]]}}`, `filter: "eq" must be a string, got object (at the root)`},
		{"in not an array", `{"tag":"a","in":"b"}`, `filter: "in" must be an array of strings, got string (at the root)`},
		{"in empty", `{"tag":"a","in":[]}`, `filter: "in" needs at least one value (at the root)`},
		{"in number", `{"tag":"a","in":["b",2]}`, `filter: "in"[1] must be a string, got number (at the root)`},
		{"in nested array", `{"tag":"a","in":[["b"]]}`, `filter: "in"[0] must be a string, got array (at the root)`},
		{"exists not a boolean", `{"tag":"a","exists":"true"}`, `filter: "exists" must be true or false, got string (at the root)`},
		{"all not an array", `{"all":{"tag":"a","eq":"b"}}`, `filter: "all" must be an array of filters, got object (at the root)`},
		{"all empty", `{"all":[]}`, `filter: "all" needs at least one filter (at the root)`},
		{"any empty", `{"any":[]}`, `filter: "any" needs at least one filter (at the root)`},
		{"all of a string", `{"all":["x"]}`, `filter: want an object, got string (at all[0])`},
		{"not of an array", `{"not":[]}`, `filter: want an object, got array (at not)`},
		{"not null", `{"not":null}`, `filter: want an object, got null (at not)`},
		{"nested in needs a value", `{"all":[{"tag":"a","eq":"b"},{"tag":"c","in":[]}]}`, `filter: "in" needs at least one value (at all[1])`},
		{"nested path", `{"any":[{"tag":"a","eq":"b"},{"not":{"all":[{"tag":"c","eq":"d"},{"tag":"e"}]}}]}`, `filter: "tag" needs one of "eq", "in", "exists" (at any[1].not.all[1])`},
		{"tag over 128 bytes", `{"tag":"` + long129 + `","eq":"b"}`, `filter: "tag" is 129 bytes, at most 128 (at the root)`},
		{"eq over 128 bytes", `{"tag":"a","eq":"` + long129 + `"}`, `filter: "eq" is 129 bytes, at most 128 (at the root)`},
		{"in value over 128 bytes", `{"tag":"a","in":["b","` + long129 + `"]}`, `filter: "in"[1] is 129 bytes, at most 128 (at the root)`},
		{"9 levels", nest(9, `{"tag":"a","eq":"b"}`), `filter: nested deeper than 8 levels (at not.not.not.not.not.not.not.not)`},
		{"deep garbage", nest(100000, `1`), `filter: nested deeper than 8 levels (at not.not.not.not.not.not.not.not)`},
		{"65 nodes", anyOf(64), `filter: more than 64 nodes (at any[63])`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			f, err := filter.Parse(json.RawMessage(c.filter))
			if f != nil || err == nil {
				t.Fatalf("Parse(%.80s) = %v, %v; want an error", c.filter, f, err)
			}
			var pe *protocol.Error
			if !errors.As(err, &pe) || pe.Code != protocol.CodeBadRequest {
				t.Fatalf("Parse(%.80s): %#v, want a bad_request *protocol.Error", c.filter, err)
			}
			if pe.Message != c.want {
				t.Errorf("Parse(%.80s):\n got %s\nwant %s", c.filter, pe.Message, c.want)
			}
		})
	}
}

// Filters that mean the same by construction share a Key; others do
// not; and a Key parses back to a filter with the same Key.
func TestKey(t *testing.T) {
	t.Parallel()
	same := [][]string{
		{
			`{"tag":"a","eq":"b"}`,
			`{"eq":"b","tag":"a"}`,
			" { \"tag\" :\n\"a\", \"eq\":\"\\u0062\" } ",
		},
		{
			`{"tag":"a","in":["x","y","z"]}`,
			`{"in":["z","x","y"],"tag":"a"}`,
			`{"tag":"a","in":["y","z","x","z"]}`,
		},
		{
			`{"all":[{"tag":"a","exists":true},{"not":{"tag":"b","in":["2","1"]}}]}`,
			`{"all":[{"exists":true,"tag":"a"},{"not":{"in":["1","2"],"tag":"b"}}]}`,
		},
	}
	different := []string{
		`{"tag":"a","eq":"b"}`,
		`{"tag":"a","eq":"c"}`,
		`{"tag":"b","eq":"b"}`,
		`{"tag":"a","in":["b"]}`,
		`{"tag":"a","exists":true}`,
		`{"tag":"a","exists":false}`,
		`{"not":{"tag":"a","exists":true}}`,
		`{"all":[{"tag":"a","eq":"b"}]}`,
		`{"any":[{"tag":"a","eq":"b"}]}`,
		`{"all":[{"tag":"a","eq":"b"},{"tag":"c","eq":"d"}]}`,
		`{"all":[{"tag":"c","eq":"d"},{"tag":"a","eq":"b"}]}`,
		`{"tag":"a\"","eq":"b"}`,
		`{"tag":"a","eq":"\"b"}`,
	}
	key := func(s string) string {
		t.Helper()
		f, err := filter.Parse(json.RawMessage(s))
		if err != nil {
			t.Fatalf("Parse(%s): %v", s, err)
		}
		k := f.Key()
		again, err := filter.Parse(json.RawMessage(k))
		if err != nil {
			t.Fatalf("the Key %s of %s does not parse: %v", k, s, err)
		}
		if again.Key() != k {
			t.Fatalf("the Key of %s is %s, and that parses to Key %s", s, k, again.Key())
		}
		return k
	}
	for _, group := range same {
		want := key(group[0])
		for _, s := range group[1:] {
			if got := key(s); got != want {
				t.Errorf("Key(%s) = %s, want %s as for %s", s, got, want, group[0])
			}
		}
	}
	seen := map[string]string{}
	for _, s := range different {
		k := key(s)
		if other, ok := seen[k]; ok {
			t.Errorf("%s and %s share the Key %s", s, other, k)
		}
		seen[k] = s
	}
	if got, want := key(`{"in":["b","a"], "tag":"t"}`), `{"tag":"t","in":["a","b"]}`; got != want {
		t.Errorf("Key = %s, want %s", got, want)
	}
}

// threeLevels is a filter three levels deep, matched by benchTags.
const threeLevels = `{"all":[
	{"any":[{"tag":"region","in":["eu-west","eu-north","us-east"]},{"tag":"vip","eq":"yes"}]},
	{"not":{"tag":"muted","exists":true}},
	{"tag":"kind","eq":"trade"}]}`

var benchTags = map[string]string{"region": "eu-north", "kind": "trade", "desk": "fx"}

// Match allocates nothing.
func TestMatchAllocatesNothing(t *testing.T) {
	f, err := filter.Parse(json.RawMessage(threeLevels))
	if err != nil {
		t.Fatal(err)
	}
	if !f.Match(benchTags) {
		t.Fatal("the benchmark's filter does not match its tags")
	}
	if n := testing.AllocsPerRun(1000, func() { f.Match(benchTags) }); n != 0 {
		t.Errorf("Match allocates %v times a call, want 0", n)
	}
}

func BenchmarkMatch(b *testing.B) {
	f, err := filter.Parse(json.RawMessage(threeLevels))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if !f.Match(benchTags) {
			b.Fatal("no match")
		}
	}
}

func TestValidateTags(t *testing.T) {
	t.Parallel()
	sixteen := map[string]string{}
	for i := range 16 {
		sixteen[string(rune('a'+i))] = "v"
	}
	seventeen := map[string]string{"q": "v"}
	for k, v := range sixteen {
		seventeen[k] = v
	}
	cases := []struct {
		name string
		tags map[string]string
		want string // "" for valid
	}{
		{"none", nil, ""},
		{"empty value", map[string]string{"a": ""}, ""},
		{"16 tags", sixteen, ""},
		{"128 bytes", map[string]string{long128: long128}, ""},
		{"17 tags", seventeen, "too many tags: 17, at most 16"},
		{"empty key", map[string]string{"": "v", "a": "b"}, "a tag key must not be empty"},
		{"long key", map[string]string{long129: "v"}, `tag key "` + strings.Repeat("k", 32) + `…" is 129 bytes, at most 128`},
		{"long value", map[string]string{"a": long129}, `tag "a": value is 129 bytes, at most 128`},
		{"first bad key named", map[string]string{"z": long129, "b": long129, "c": "ok"}, `tag "b": value is 129 bytes, at most 128`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			err := filter.ValidateTags(c.tags)
			checkValidation(t, err, c.want)
		})
	}
}

func TestValidateKey(t *testing.T) {
	t.Parallel()
	checkValidation(t, filter.ValidateKey(""), "")
	checkValidation(t, filter.ValidateKey(long128), "")
	checkValidation(t, filter.ValidateKey(long129), "key is 129 bytes, at most 128")
}

// checkValidation checks that err is nil when want is empty, else a
// bad_request *protocol.Error with the message want.
func checkValidation(t *testing.T, err error, want string) {
	t.Helper()
	if want == "" {
		if err != nil {
			t.Errorf("refused: %v", err)
		}
		return
	}
	var pe *protocol.Error
	if !errors.As(err, &pe) || pe.Code != protocol.CodeBadRequest || pe.Message != want {
		t.Errorf("got %#v, want bad_request %q", err, want)
	}
}
