package filter_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/heraldhq/herald/internal/filter"
	"github.com/heraldhq/herald/internal/protocol"
)

// FuzzParse feeds Parse hostile input (its corpus is in
// testdata/fuzz/FuzzParse): it must never panic, refuse with a
// bad_request, or accept a filter whose Key parses back to the same Key
// and whose Match runs on any tags.
func FuzzParse(f *testing.F) {
	f.Add([]byte(threeLevels))
	f.Add([]byte(nest(9, `{"tag":"a","eq":"b"}`)))
	f.Add([]byte(anyOf(64)))
	f.Fuzz(func(t *testing.T, raw []byte) {
		flt, err := filter.Parse(raw)
		if err != nil {
			var pe *protocol.Error
			if flt != nil || !errors.As(err, &pe) || pe.Code != protocol.CodeBadRequest || !strings.HasPrefix(pe.Message, "filter: ") {
				t.Fatalf("Parse(%q) = %v, %#v; want nil and a bad_request filter error", raw, flt, err)
			}
			return
		}
		key := flt.Key()
		if !json.Valid([]byte(key)) {
			t.Fatalf("Parse(%q).Key() = %s, not JSON", raw, key)
		}
		again, err := filter.Parse(json.RawMessage(key))
		if err != nil {
			t.Fatalf("the Key %s of %q does not parse: %v", key, raw, err)
		}
		if again.Key() != key {
			t.Fatalf("the Key %s of %q parses to Key %s", key, raw, again.Key())
		}
		tags := map[string]string{"a": "b", "": "", string(raw[:min(len(raw), 8)]): "x"}
		if flt.Match(tags) != again.Match(tags) || flt.Match(nil) != again.Match(nil) {
			t.Fatalf("%q and its Key %s match differently", raw, key)
		}
	})
}
