package loadtest

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"strconv"
	"time"

	"github.com/centrifugal/fdelta"
)

// What fanout measures of herald's delivery options (protocol v1.1):
//
//   - -filters N: subscriber i subscribes with the filter
//     {"any":[{"tag":"g","eq":"<i mod N>"},{"tag":"all","exists":true}]},
//     so the channel has N distinct filters, and the publisher tags message
//     s with {"g":"<s mod N>","all":"1"}. Every message matches every
//     filter, which keeps the deliveries per message equal to the
//     subscribers: the run delivers exactly what one without filters does,
//     plus N filter evaluations per message, and its deliveries per second
//     compare with one without filters. (Filters that each pass 1/N of the
//     messages would deliver 1/N as much and measure something else.)
//   - -doc: the data is a document of docFields fields, one of which
//     changes with each message (see document).
//   - -delta: -doc, and the subscribers subscribe with "delta":"fossil" and
//     rebuild each delta push with fdelta before reading the bench fields,
//     so applying deltas costs the client what it costs any client, and a
//     rebuild that fails is an error, not a delivery.
//
// Every fan-out run reports the payload bytes of the message pushes the
// subscribers read (payload_bytes, and bytes_per_delivery), so runs with
// and without deltas compare.

// optionFlags are fanout's flags for herald's delivery options.
type optionFlags struct {
	filters int  // distinct filters over the subscribers; 0: none
	delta   bool // subscribe with Fossil deltas (implies doc)
	doc     bool // publish a document instead of padding
}

func (o *optionFlags) register(fs *flag.FlagSet) {
	fs.IntVar(&o.filters, "filters", 0, `subscribe with this many distinct tag filters (subscriber i takes group i mod N); messages are tagged so that every one matches every filter, so deliveries per message stay -subs (0: no filters)`)
	fs.BoolVar(&o.delta, "delta", false, `subscribe with "delta":"fossil" and rebuild every delta push (implies -doc)`)
	fs.BoolVar(&o.doc, "doc", false, fmt.Sprintf("publish a JSON document of %d fields, one of which changes per message, instead of padding (-size at least %d)", docFields, minDocSize))
}

// check validates the options of a fanout run in proto with data of size
// bytes, and makes -delta imply -doc.
func (o *optionFlags) check(proto string, size int) error {
	herald := proto == "json" || proto == "jsonl"
	switch {
	case o.filters < 0:
		return errors.New("bench fanout: -filters must not be negative")
	case o.filters > 0 && o.delta:
		return errors.New("bench fanout: -filters and -delta cannot go together (herald refuses a subscription with both)")
	case (o.filters > 0 || o.delta) && !herald:
		return fmt.Errorf("bench fanout: -filters and -delta need -proto json or jsonl, not %s", proto)
	}
	o.doc = o.doc || o.delta
	if o.doc && size < minDocSize {
		return fmt.Errorf("bench fanout: -doc and -delta need -size of at least %d", minDocSize)
	}
	return nil
}

// subscribeFields returns the members subscriber i adds to its subscribe
// command.
func (o *optionFlags) subscribeFields(i int) string {
	switch {
	case o.filters > 0:
		return `,"filter":{"any":[{"tag":"g","eq":"` + strconv.Itoa(i%o.filters) + `"},{"tag":"all","exists":true}]}`
	case o.delta:
		return `,"delta":"fossil"`
	}
	return ""
}

// writeTags writes the tags member of message seq's publish command, if
// the run has filters.
func (o *optionFlags) writeTags(b *bytes.Buffer, seq uint64) {
	if o.filters == 0 {
		return
	}
	b.WriteString(`,"tags":{"g":"`)
	b.WriteString(strconv.FormatUint(seq%uint64(o.filters), 10))
	b.WriteString(`","all":"1"}`)
}

// docFields is how many fields a document has besides the bench fields.
const docFields = 64

// minDocSize is the smallest -size a document is made for: a few bytes
// of value per field.
const minDocSize = 1024

// document is the data of -doc: exactly size bytes of compact JSON,
//
//	{"bench_ts":T,"bench_seq":S,"f00":"…",…,"f63":"…"}
//
// whose string fields have a fixed width (the last one takes up what is
// left), and message S gives field S mod docFields a new value. Two
// consecutive messages differ in the bench fields (a few dozen bytes) and
// one field, as a document whose one value changes at a time does. Not
// safe for concurrent use.
type document struct {
	size   int
	values [docFields][]byte
}

// newDocument returns a document of size bytes, which must be at least
// minDocSize.
func newDocument(size int) *document {
	d := &document{size: size}
	width := (size - d.fixedLen(12345678)) / docFields
	for i := range d.values {
		d.values[i] = make([]byte, width)
		fillValue(d.values[i], uint64(1)<<62+uint64(i))
	}
	return d
}

// fixedLen is how many of a document's bytes are not field values, for
// message seq.
func (d *document) fixedLen(seq uint64) int {
	const (
		ts    = 19 // digits of a UnixNano timestamp until 2286
		bench = len(`{"bench_ts":,"bench_seq":,`) + ts
		field = len(`"f00":""`) // and a comma between two fields
	)
	return bench + len(strconv.FormatUint(seq, 10)) + docFields*field + docFields - 1 + len(`}`)
}

// write writes the document of message seq sent at now to b: the bench
// fields, and field seq mod docFields with its new value.
func (d *document) write(b *bytes.Buffer, seq uint64, now time.Time) {
	fillValue(d.values[seq%docFields], seq)
	b.WriteString(`{"bench_ts":`)
	b.WriteString(strconv.FormatInt(now.UnixNano(), 10))
	b.WriteString(`,"bench_seq":`)
	b.WriteString(strconv.FormatUint(seq, 10))
	last := d.size - d.fixedLen(seq)
	for i, v := range d.values {
		b.WriteString(`,"f`)
		if i < 10 {
			b.WriteByte('0')
		}
		b.WriteString(strconv.Itoa(i))
		b.WriteString(`":"`)
		if i < docFields-1 {
			b.Write(v)
		} else {
			last -= (docFields - 1) * len(v)
			b.Write(v[:max(0, min(len(v), last))])
			for range last - len(v) {
				b.WriteByte('.')
			}
		}
		b.WriteByte('"')
	}
	b.WriteByte('}')
}

// fillValue fills v with letters and digits drawn from seed (splitmix64),
// which differ from one seed to the next all along.
func fillValue(v []byte, seed uint64) {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	x := seed
	for i := range v {
		x += 0x9E3779B97F4A7C15
		z := x
		z = (z ^ z>>30) * 0xBF58476D1CE4E5B9
		z = (z ^ z>>27) * 0x94D049BB133111EB
		z ^= z >> 31
		v[i] = alphabet[z%uint64(len(alphabet))]
	}
}

// deltaState is a delta subscriber's copy of the data of the channel's
// latest message, which the next delta push applies to. The reader's own.
type deltaState struct {
	base  []byte // the latest message's data; nil before the first whole push or after a failed rebuild
	spare []byte // the buffer the next rebuild goes into
}

// deltaPush is a message push of a subscription with deltas.
type deltaPush struct {
	Op    string          `json:"op"`
	Data  json.RawMessage `json:"data"`
	Delta bool            `json:"delta"`
}

// rebuild returns the data of the push msg: its data when it is whole, its
// delta applied to the data before when it is a delta. ok is false for
// what is no message push (replies, the welcome). The data is valid until
// the next call.
func (d *deltaState) rebuild(msg []byte) (data []byte, delta, ok bool, err error) {
	var p deltaPush
	if json.Unmarshal(msg, &p) != nil || p.Op != "message" {
		return nil, false, false, nil
	}
	if !p.Delta {
		d.base = append(d.base[:0], p.Data...)
		return d.base, false, true, nil
	}
	if d.base == nil {
		return nil, true, true, errors.New("delta push with no data to apply it to")
	}
	var encoded string
	if err := json.Unmarshal(p.Data, &encoded); err != nil {
		d.base = nil
		return nil, true, true, fmt.Errorf("delta push whose data is not a string: %w", err)
	}
	out, err := fdelta.AppendApply(d.spare[:0], d.base, []byte(encoded))
	if err != nil {
		d.base = nil
		return nil, true, true, fmt.Errorf("apply delta: %w", err)
	}
	d.base, d.spare = out, d.base
	return d.base, true, true, nil
}
