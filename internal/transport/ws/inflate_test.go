package ws

// A DEFLATE decoder (RFC 1951) for the tests' client, written out in full
// because neither compress/flate nor any other Go inflater can be told the
// size of its window: this one refuses a back-reference that reaches
// further than the window a permessage-deflate peer promised (RFC 7692
// server_max_window_bits), as zlib does when a client inflates with that
// window. It is slow and simple: symbol by symbol, bit by bit.

import (
	"bytes"
	"compress/flate"
	"errors"
	"fmt"
	"slices"
	"testing"
)

// inflateWindow inflates one permessage-deflate message — its payload
// with the 00 00 ff ff tail appended, as RFC 7692 7.2.2 says — after hist,
// what earlier messages inflated to (nil without context takeover), and
// returns the message alone. A back-reference further than window bytes,
// or further than hist and the message reach, is an error.
func inflateWindow(payload, hist []byte, window int) ([]byte, error) {
	in := &bitReader{b: append(append([]byte(nil), payload...), deflateTail...)}
	out := append([]byte(nil), hist...)
	for {
		final := in.bits(1)
		switch in.bits(2) {
		case 0:
			in.align()
			n := in.bits(16)
			if in.bits(16) != ^n&0xffff {
				return nil, errors.New("stored block: length and its complement disagree")
			}
			for range n {
				out = append(out, byte(in.bits(8)))
			}
		case 1:
			var err error
			if out, err = in.codes(out, &fixedLit, &fixedDist, window, len(hist)); err != nil {
				return nil, err
			}
		case 2:
			lit, dist, err := in.dynamicTables()
			if err != nil {
				return nil, err
			}
			if out, err = in.codes(out, lit, dist, window, len(hist)); err != nil {
				return nil, err
			}
		default:
			return nil, errors.New("block type 3")
		}
		if in.err != nil {
			return nil, in.err
		}
		if final == 1 || in.done() {
			return out[len(hist):], nil
		}
	}
}

// bitReader reads a DEFLATE stream's bits, least significant first.
type bitReader struct {
	b   []byte
	pos int  // next byte
	bit uint // next bit of b[pos]
	err error
}

func (r *bitReader) bits(n int) int {
	v := 0
	for i := range n {
		if r.pos >= len(r.b) {
			r.err = errors.New("stream ends inside a block")
			return 0
		}
		v |= int(r.b[r.pos]>>r.bit&1) << i
		if r.bit++; r.bit == 8 {
			r.bit, r.pos = 0, r.pos+1
		}
	}
	return v
}

func (r *bitReader) align() {
	if r.bit != 0 {
		r.bit, r.pos = 0, r.pos+1
	}
}

// done reports whether the stream has ended at the end of a block: no
// whole byte is left after the bits read.
func (r *bitReader) done() bool { return r.pos >= len(r.b) || r.pos == len(r.b)-1 && r.bit > 0 }

// huffman is a canonical Huffman code: how many codes have each length,
// and the symbols in code order.
type huffman struct {
	count  [16]int
	symbol []int
}

func newHuffman(lengths []int) (*huffman, error) {
	h := &huffman{symbol: make([]int, 0, len(lengths))}
	for _, l := range lengths {
		h.count[l]++
	}
	h.count[0] = 0
	left := 1
	for l := 1; l < 16; l++ {
		if left = left<<1 - h.count[l]; left < 0 {
			return nil, errors.New("over-subscribed code")
		}
	}
	for l := 1; l < 16; l++ {
		for s, sl := range lengths {
			if sl == l {
				h.symbol = append(h.symbol, s)
			}
		}
	}
	return h, nil
}

// decode reads one symbol of h.
func (r *bitReader) decode(h *huffman) int {
	code, first, index := 0, 0, 0
	for l := 1; l < 16; l++ {
		code |= r.bits(1)
		if n := h.count[l]; code-n < first {
			return h.symbol[index+code-first]
		} else {
			index += n
			first = (first + n) << 1
		}
		code <<= 1
	}
	r.err = errors.New("no such code")
	return 0
}

var (
	lengthBase  = [29]int{3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258}
	lengthExtra = [29]int{0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0}
	distBase    = [30]int{1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577}
	distExtra   = [30]int{0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13}

	fixedLit, fixedDist = func() (huffman, huffman) {
		l := make([]int, 288)
		for i := range l {
			l[i] = [4]int{8, 9, 7, 8}[min(i/144, 1)+min(i/256, 1)+min(i/280, 1)]
		}
		d := make([]int, 30)
		for i := range d {
			d[i] = 5
		}
		lit, _ := newHuffman(l)
		dist, _ := newHuffman(d)
		return *lit, *dist
	}()
)

// codes inflates one compressed block onto out. window bounds every
// back-reference; base is where the block's own message starts in out.
func (r *bitReader) codes(out []byte, lit, dist *huffman, window, base int) ([]byte, error) {
	for r.err == nil {
		sym := r.decode(lit)
		switch {
		case sym < 256:
			out = append(out, byte(sym))
			continue
		case sym == 256:
			return out, nil
		case sym > 285:
			return nil, fmt.Errorf("length symbol %d", sym)
		}
		sym -= 257
		n := lengthBase[sym] + r.bits(lengthExtra[sym])
		ds := r.decode(dist)
		if ds > 29 {
			return nil, fmt.Errorf("distance symbol %d", ds)
		}
		d := distBase[ds] + r.bits(distExtra[ds])
		if d > window {
			return nil, fmt.Errorf("a back-reference of %d bytes, past the %d-byte window", d, window)
		}
		if d > len(out) {
			return nil, fmt.Errorf("a back-reference of %d bytes, before the stream began (%d bytes of history)", d, base)
		}
		for range n {
			out = append(out, out[len(out)-d])
		}
	}
	return nil, r.err
}

// dynamicTables reads a dynamic block's code lengths.
func (r *bitReader) dynamicTables() (*huffman, *huffman, error) {
	nlen, ndist, ncode := r.bits(5)+257, r.bits(5)+1, r.bits(4)+4
	order := [19]int{16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15}
	cl := make([]int, 19)
	for i := range ncode {
		cl[order[i]] = r.bits(3)
	}
	clh, err := newHuffman(cl)
	if err != nil {
		return nil, nil, err
	}
	lengths := make([]int, 0, nlen+ndist)
	for len(lengths) < nlen+ndist && r.err == nil {
		sym := r.decode(clh)
		switch {
		case sym < 16:
			lengths = append(lengths, sym)
		case sym == 16:
			if len(lengths) == 0 {
				return nil, nil, errors.New("repeat with no length before it")
			}
			prev := lengths[len(lengths)-1]
			for range 3 + r.bits(2) {
				lengths = append(lengths, prev)
			}
		case sym == 17:
			lengths = append(lengths, make([]int, 3+r.bits(3))...)
		default:
			lengths = append(lengths, make([]int, 11+r.bits(7))...)
		}
	}
	if r.err != nil || len(lengths) != nlen+ndist {
		return nil, nil, errors.New("bad code lengths")
	}
	lit, err := newHuffman(lengths[:nlen])
	if err != nil {
		return nil, nil, err
	}
	dist, err := newHuffman(lengths[nlen:])
	if err != nil {
		return nil, nil, err
	}
	return lit, dist, nil
}

// The tests' inflater agrees with compress/flate on what it compresses —
// stored, fixed and dynamic blocks, with and without history — and
// refuses a back-reference past the window it is given.
func TestInflateWindow(t *testing.T) {
	text := randomText(5000)
	for _, level := range []int{flate.NoCompression, flate.HuffmanOnly, flate.BestSpeed, flate.BestCompression} {
		var b bytes.Buffer
		w, _ := flate.NewWriter(&b, level)
		_, _ = w.Write(text[:10]) // a fixed block, most likely
		_ = w.Flush()
		_, _ = w.Write(text)
		_, _ = w.Write(text) // 5000 bytes back
		_ = w.Flush()
		payload := bytes.TrimSuffix(b.Bytes(), deflateTail)
		want := slices.Concat(text[:10], text, text)
		if got, err := inflateWindow(payload, nil, 1<<15); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("level %d: %d bytes, %v; want %d bytes", level, len(got), err, len(want))
		}
		if level > flate.NoCompression {
			if _, err := inflateWindow(payload, nil, 4096); err == nil {
				t.Fatalf("level %d: a 5000-byte back-reference passed a 4096-byte window", level)
			}
		}
	}
	var b bytes.Buffer
	w, _ := flate.NewWriterDict(&b, flate.DefaultCompression, text)
	_, _ = w.Write(text[100:200])
	_ = w.Flush()
	payload := bytes.TrimSuffix(b.Bytes(), deflateTail)
	if got, err := inflateWindow(payload, text, 1<<15); err != nil || !bytes.Equal(got, text[100:200]) {
		t.Fatalf("after history: %q, %v", got, err)
	}
	if _, err := inflateWindow(payload, nil, 1<<15); err == nil {
		t.Fatal("a back-reference into history passed without it")
	}
}
