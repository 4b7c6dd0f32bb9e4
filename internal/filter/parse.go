package filter

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math/bits"
	"slices"
	"strconv"

	"github.com/heraldhq/herald/internal/protocol"
)

// Parse parses a subscription's filter. It is strict: a field outside
// the grammar, a repeated field, a leaf with two operators or none, a
// combination mixed with other fields, a value of the wrong type, an
// empty "all", "any" or "in", an empty tag key, a tag key or value over
// MaxLen bytes, more than MaxDepth levels or more than MaxNodes filters are
// refused with a bad_request *protocol.Error that names the reason and
// where: `filter: "in" needs at least one value (at all[1])`.
//
// Parse reads its input as a stream and stops at the first fault, so
// hostile input (deep nesting, huge arrays) costs no more than reading
// it once.
func Parse(raw json.RawMessage) (*Filter, error) {
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil, refuse("", "want an object, got nothing")
	}
	p := parser{dec: json.NewDecoder(bytes.NewReader(raw))}
	p.dec.UseNumber() // a number is only ever refused: never fail to convert it
	root, err := p.node("", 1)
	if err != nil {
		return nil, err
	}
	if _, err := p.dec.Token(); err != io.EOF {
		return nil, protocol.Errorf(protocol.CodeBadRequest, "filter: unexpected data after the filter")
	}
	return &Filter{root: root, key: string(root.appendJSON(nil))}, nil
}

// parser reads one filter from dec, counting its nodes.
type parser struct {
	dec   *json.Decoder
	nodes int
}

// field is one of a filter object's fields, as a bit of a set; a node's
// op is the field that says what it tests.
type field uint8

const (
	fieldTag field = 1 << iota
	fieldEq
	fieldIn
	fieldExists
	fieldAll
	fieldAny
	fieldNot

	operators    = fieldEq | fieldIn | fieldExists
	combinations = fieldAll | fieldAny | fieldNot
)

// fieldNamed returns the field of name, and false when the grammar has
// none.
func fieldNamed(name string) (field, bool) {
	for f := fieldTag; f <= fieldNot; f <<= 1 {
		if f.name() == name {
			return f, true
		}
	}
	return 0, false
}

// name returns the name of the lowest field of the set f.
func (f field) name() string {
	names := [...]string{"tag", "eq", "in", "exists", "all", "any", "not"} // in the order of the bits
	if i := bits.TrailingZeros8(uint8(f)); i < len(names) {
		return names[i]
	}
	return ""
}

// String returns the name of the lowest field of the set f, quoted.
func (f field) String() string { return strconv.Quote(f.name()) }

// node reads the filter object at path, depth levels from the root.
func (p *parser) node(path string, depth int) (node, *protocol.Error) {
	var n node
	if depth > MaxDepth {
		return n, refuse(path, "nested deeper than "+strconv.Itoa(MaxDepth)+" levels")
	}
	if p.nodes++; p.nodes > MaxNodes {
		return n, refuse(path, "more than "+strconv.Itoa(MaxNodes)+" nodes")
	}
	tok, err := p.token(path)
	if err != nil {
		return n, err
	}
	if tok != json.Delim('{') {
		return n, refuse(path, "want an object, got "+kind(tok))
	}
	var seen, first field
	for p.dec.More() {
		tok, err := p.token(path)
		if err != nil {
			return n, err
		}
		name, _ := tok.(string) // the decoder checks that a key is a string
		f, ok := fieldNamed(name)
		if !ok {
			return n, refuse(path, "unknown field "+strconv.Quote(clip(name)))
		}
		if err := checkField(seen, first, f, path); err != nil {
			return n, err
		}
		if seen == 0 {
			first = f
		}
		seen |= f
		if err := p.value(&n, f, path, depth); err != nil {
			return n, err
		}
	}
	if _, err := p.token(path); err != nil { // the closing brace
		return n, err
	}
	switch {
	case seen == 0:
		return n, refuse(path, `want one of "tag", "all", "any", "not"`)
	case seen&combinations != 0:
	case seen&operators == 0:
		return n, refuse(path, `"tag" needs one of "eq", "in", "exists"`)
	case seen&fieldTag == 0:
		return n, refuse(path, (seen&operators).String()+` needs "tag"`)
	}
	return n, nil
}

// checkField refuses field f in an object that has the fields seen, the
// first of them first.
func checkField(seen, first, f field, path string) *protocol.Error {
	switch {
	case seen&f != 0:
		return refuse(path, "duplicate field "+f.String())
	case f&combinations != 0 && seen != 0:
		return refuse(path, first.String()+" and "+f.String()+" cannot be combined")
	case seen&combinations != 0:
		return refuse(path, (seen&combinations).String()+" and "+f.String()+" cannot be combined")
	case f&operators != 0 && seen&operators != 0:
		return refuse(path, "a leaf takes one operator, got "+(seen&operators).String()+" and "+f.String())
	}
	return nil
}

// value reads field f's value into n.
func (p *parser) value(n *node, f field, path string, depth int) *protocol.Error {
	var err *protocol.Error
	switch f {
	case fieldTag:
		n.tag, err = p.text(f.String(), path)
		if err == nil && n.tag == "" {
			err = refuse(path, `"tag" must not be empty`)
		}
	case fieldEq:
		n.op = fieldEq
		n.value, err = p.text(f.String(), path)
	case fieldIn:
		n.op = fieldIn
		n.values, err = p.texts(path)
	case fieldExists:
		n.op = fieldExists
		var tok json.Token
		if tok, err = p.token(path); err == nil {
			var ok bool
			if n.exists, ok = tok.(bool); !ok {
				err = refuse(path, `"exists" must be true or false, got `+kind(tok))
			}
		}
	case fieldAll, fieldAny:
		n.op = f
		n.children, err = p.list(f.name(), path, depth)
	case fieldNot:
		n.op = fieldNot
		var child node
		child, err = p.node(join(path, "not"), depth+1)
		n.children = []node{child}
	}
	return err
}

// text reads a string of at most MaxLen bytes: the value of the field
// named name (quoted, or with an index: `"in"[2]`).
func (p *parser) text(name, path string) (string, *protocol.Error) {
	tok, err := p.token(path)
	if err != nil {
		return "", err
	}
	s, ok := tok.(string)
	if !ok {
		return "", refuse(path, name+" must be a string, got "+kind(tok))
	}
	if len(s) > MaxLen {
		return "", refuse(path, name+" is "+strconv.Itoa(len(s))+" bytes, at most "+strconv.Itoa(MaxLen))
	}
	return s, nil
}

// texts reads the values of "in": sorted, without repeats.
func (p *parser) texts(path string) ([]string, *protocol.Error) {
	var values []string
	err := p.array(path, `"in" must be an array of strings`, func(i int) *protocol.Error {
		v, err := p.text(`"in"[`+strconv.Itoa(i)+`]`, path)
		values = append(values, v)
		return err
	})
	if err != nil {
		return nil, err
	}
	if len(values) == 0 {
		return nil, refuse(path, `"in" needs at least one value`)
	}
	slices.Sort(values)
	return slices.Compact(values), nil
}

// list reads the filters of "all" or "any" (name).
func (p *parser) list(name, path string, depth int) ([]node, *protocol.Error) {
	var children []node
	err := p.array(path, strconv.Quote(name)+" must be an array of filters", func(i int) *protocol.Error {
		child, err := p.node(join(path, name+"["+strconv.Itoa(i)+"]"), depth+1)
		children = append(children, child)
		return err
	})
	if err != nil {
		return nil, err
	}
	if len(children) == 0 {
		return nil, refuse(path, strconv.Quote(name)+" needs at least one filter")
	}
	return children, nil
}

// array reads a JSON array, calling each with the index of every element
// (which each reads), and stops at the first error. Anything but an
// array is refused with notArray and what it is.
func (p *parser) array(path, notArray string, each func(i int) *protocol.Error) *protocol.Error {
	tok, err := p.token(path)
	if err != nil {
		return err
	}
	if tok != json.Delim('[') {
		return refuse(path, notArray+", got "+kind(tok))
	}
	for i := 0; p.dec.More(); i++ {
		if err := each(i); err != nil {
			return err
		}
	}
	_, err = p.token(path) // the closing bracket
	return err
}

// token reads the next token, refusing malformed JSON.
func (p *parser) token(path string) (json.Token, *protocol.Error) {
	tok, err := p.dec.Token()
	if err == nil {
		return tok, nil
	}
	var syntax *json.SyntaxError
	switch {
	case errors.As(err, &syntax):
		return nil, refuse(path, "malformed JSON at byte "+strconv.FormatInt(syntax.Offset, 10))
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return nil, refuse(path, "malformed JSON: unexpected end")
	default:
		return nil, refuse(path, "malformed JSON")
	}
}

// kind names the JSON value that tok starts.
func kind(tok json.Token) string {
	switch tok.(type) {
	case string:
		return "string"
	case json.Number:
		return "number"
	case bool:
		return "boolean"
	case nil:
		return "null"
	}
	if tok == json.Delim('[') {
		return "array"
	}
	return "object"
}

// join appends one step to a path: all[1], then all[1].not.
func join(path, step string) string {
	if path == "" {
		return step
	}
	return path + "." + step
}

// refuse returns the bad_request error for reason at path ("" is the
// root).
func refuse(path, reason string) *protocol.Error {
	if path == "" {
		path = "the root"
	}
	return protocol.Errorf(protocol.CodeBadRequest, "filter: "+reason+" (at "+path+")")
}
