package filter

import (
	"strconv"
	"unicode/utf8"

	"github.com/heraldhq/herald/internal/protocol"
)

// ValidateTags checks a publish's tags: at most MaxTags, each key
// non-empty, each key and value at most MaxLen bytes. It returns nil or a
// bad_request *protocol.Error naming the fault and its tag — of several
// faulty tags, the one whose key sorts first, so the answer does not
// vary with map order.
func ValidateTags(tags map[string]string) error {
	if len(tags) > MaxTags {
		return protocol.Errorf(protocol.CodeBadRequest,
			"too many tags: "+strconv.Itoa(len(tags))+", at most "+strconv.Itoa(MaxTags))
	}
	var worst, fault string
	for k, v := range tags {
		if f := tagFault(k, v); f != "" && (fault == "" || k < worst) {
			worst, fault = k, f
		}
	}
	if fault != "" {
		return protocol.Errorf(protocol.CodeBadRequest, fault)
	}
	return nil
}

// tagFault says what is wrong with one tag, or "" when nothing is.
func tagFault(k, v string) string {
	switch {
	case k == "":
		return "a tag key must not be empty"
	case len(k) > MaxLen:
		return "tag key " + strconv.Quote(clip(k)) + " is " + tooLong(k)
	case len(v) > MaxLen:
		return "tag " + strconv.Quote(k) + ": value is " + tooLong(v)
	}
	return ""
}

// ValidateKey checks a publish's conflation key ("" for none): at most
// MaxLen bytes. It returns nil or a bad_request *protocol.Error.
func ValidateKey(key string) error {
	if len(key) > MaxLen {
		return protocol.Errorf(protocol.CodeBadRequest, "key is "+tooLong(key))
	}
	return nil
}

// tooLong says how long s is and how long it may be.
func tooLong(s string) string {
	return strconv.Itoa(len(s)) + " bytes, at most " + strconv.Itoa(MaxLen)
}

// clip shortens a long key for an error message: its first 32 bytes
// (on a rune boundary) and an ellipsis.
func clip(s string) string {
	const shown = 32
	if len(s) <= shown {
		return s
	}
	n := shown
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
