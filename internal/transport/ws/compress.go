package ws

// permessage-deflate (RFC 7692) as herald speaks it: no context takeover
// either way, so a message is compressed on its own — a broadcast once for
// every compressing connection — and each connection keeps no window.

import (
	"bytes"
	"compress/flate"
	"errors"
	"io"
	"slices"
	"sync"
)

// minCompress: smaller messages go out uncompressed, which RFC 7692
// allows per message; deflate would not shrink them.
const minCompress = 64

var (
	flateWriters = sync.Pool{New: func() any { w, _ := flate.NewWriter(nil, flate.BestSpeed); return w }}
	flateReaders = sync.Pool{New: func() any { return flate.NewReader(nil) }}
	errTooBig    = errors.New("ws: message too big")
	// deflateTail ends a message's deflate stream (RFC 7692 7.2.2).
	deflateTail = []byte{0x00, 0x00, 0xff, 0xff}
)

// compress deflates one message on its own (no context takeover).
func compress(p []byte) []byte {
	var b bytes.Buffer
	w := flateWriters.Get().(*flate.Writer)
	w.Reset(&b)
	_, _ = w.Write(p)
	_ = w.Flush()
	flateWriters.Put(w)
	return bytes.TrimSuffix(b.Bytes(), deflateTail)
}

// decompress inflates one message of at most limit bytes.
func decompress(p []byte, limit int) ([]byte, error) {
	r := flateReaders.Get().(io.ReadCloser)
	defer flateReaders.Put(r)
	_ = r.(flate.Resetter).Reset(io.MultiReader(bytes.NewReader(p), bytes.NewReader(deflateTail)), nil)
	out, err := io.ReadAll(io.LimitReader(r, int64(limit)+1))
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return nil, err
	}
	if len(out) > limit {
		return nil, errTooBig
	}
	return out, nil
}

var (
	newline = []byte{'\n'}
	// zippedNewline goes between compressed pieces: the empty stored
	// block the piece before it was trimmed of, a compressed newline, and
	// its own empty stored block.
	zippedNewline = slices.Concat(deflateTail, compress(newline), deflateTail)
)
