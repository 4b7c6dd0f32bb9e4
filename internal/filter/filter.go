// Package filter is the delivery options' tag grammar: a subscription's
// filter (Parse), which the hub matches against each message's tags once
// per distinct filter (Key) and message, and the limits a publish's tags
// and key must meet (ValidateTags, ValidateKey). It is pure: no I/O, no
// state; a parsed Filter is immutable and safe for concurrent use.
//
// The grammar (the contract's "Delivery options (v1.1)"):
//
//	{"tag":K,"eq":V}            tag K is present and equals V
//	{"tag":K,"in":[V…]}         tag K is present and equals one of the Vs
//	{"tag":K,"exists":B}        tag K is present (B true) or absent (B false)
//	{"all":[F…]}                every F matches
//	{"any":[F…]}                some F matches
//	{"not":F}                   F does not match
package filter

import (
	"encoding/json"
	"slices"
	"strconv"
)

// The grammar's limits.
const (
	// MaxLen is the most bytes of a tag key or value — a filter's or a
	// message's — and of a message's key.
	MaxLen = 128
	// MaxTags is the most tags one message carries.
	MaxTags = 16
	// MaxDepth is the most filters on the way from a filter's root to
	// any of its leaves, both included: {"not":{"tag":…}} is two deep.
	MaxDepth = 8
	// MaxNodes is the most filters — combinations and leaves — in one.
	MaxNodes = 64
)

// Filter is a parsed subscription filter.
type Filter struct {
	root node
	key  string
}

// node is one filter of the tree: a leaf (eq, in, exists) on tag, or a
// combination of children (all, any, not: one child).
type node struct {
	op       field // one of operators or combinations
	tag      string
	value    string   // eq
	values   []string // in: sorted, without repeats
	exists   bool     // exists
	children []node   // all, any, not
}

// Match reports whether tags (nil for none) satisfy f. It allocates
// nothing.
func (f *Filter) Match(tags map[string]string) bool { return f.root.match(tags) }

func (n *node) match(tags map[string]string) bool {
	switch n.op {
	case fieldEq:
		v, ok := tags[n.tag]
		return ok && v == n.value
	case fieldIn:
		v, ok := tags[n.tag]
		if !ok {
			return false
		}
		_, found := slices.BinarySearch(n.values, v)
		return found
	case fieldExists:
		_, ok := tags[n.tag]
		return ok == n.exists
	case fieldAll:
		for i := range n.children {
			if !n.children[i].match(tags) {
				return false
			}
		}
		return true
	case fieldAny:
		for i := range n.children {
			if n.children[i].match(tags) {
				return true
			}
		}
		return false
	case fieldNot:
		return !n.children[0].match(tags)
	}
	return false
}

// Key returns f in canonical JSON: compact, each object's fields in the
// grammar's order ("tag" first), "in" values sorted and without repeats,
// strings escaped one way. Filters that differ only in white space,
// field order, escapes or the order and repeats of "in" values share
// it, so the hub evaluates one filter per distinct Key per message.
// Other filters that happen to mean the same ({"not":{"not":F}} and F)
// do not. Parse(Key()) gives a filter with the same Key.
func (f *Filter) Key() string { return f.key }

// appendJSON appends n's canonical JSON to b.
func (n *node) appendJSON(b []byte) []byte {
	switch n.op {
	case fieldAll, fieldAny:
		b = append(b, `{"`...)
		b = append(b, n.op.name()...)
		b = append(b, `":[`...)
		for i := range n.children {
			if i > 0 {
				b = append(b, ',')
			}
			b = n.children[i].appendJSON(b)
		}
		return append(b, "]}"...)
	case fieldNot:
		b = append(b, `{"not":`...)
		return append(n.children[0].appendJSON(b), '}')
	}
	b = append(b, `{"tag":`...)
	b = appendString(b, n.tag)
	b = append(b, `,"`...)
	b = append(b, n.op.name()...)
	b = append(b, `":`...)
	switch n.op {
	case fieldEq:
		b = appendString(b, n.value)
	case fieldIn:
		b = append(b, '[')
		for i, v := range n.values {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, v)
		}
		b = append(b, ']')
	case fieldExists:
		b = strconv.AppendBool(b, n.exists)
	}
	return append(b, '}')
}

// appendString appends s as a JSON string, escaped as encoding/json does.
func appendString(b []byte, s string) []byte {
	enc, _ := json.Marshal(s) // a string always encodes
	return append(b, enc...)
}
