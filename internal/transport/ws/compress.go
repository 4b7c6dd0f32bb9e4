package ws

// permessage-deflate (RFC 7692) as herald speaks it. herald accepts the
// first offer RFC 7692 lets it accept and answers:
//
//   - server_no_context_takeover, always (7.1.1.1 lets a server add it
//     unasked): a message herald sends is compressed on its own, so a
//     broadcast is compressed once for every connection that compresses,
//     and no connection keeps a compression window for what it sends;
//   - client_no_context_takeover when the client offered it; otherwise the
//     client may keep its context between messages, and the connection
//     keeps the end of what the client's compressed messages inflated to —
//     at most the client's window — for the next one to refer back to;
//   - server_max_window_bits=N when offered (7.1.2.1 requires it): with
//     N < 15 herald compresses only messages of at most 2^N bytes, which
//     cannot refer back further than that, and sends larger ones as they
//     are, which 6 allows message by message;
//   - client_max_window_bits=N when offered with a value (the client's own
//     bound, which then bounds the window kept for it), nothing when it was
//     offered bare (the client may then use up to 15 bits) or not at all.

import (
	"bytes"
	"compress/flate"
	"errors"
	"io"
	"slices"
	"strconv"
	"sync"

	"github.com/gobwas/httphead"
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

// decompress inflates one message of at most limit bytes, which may refer
// back into hist, what the sender's earlier messages inflated to.
func decompress(p, hist []byte, limit int) ([]byte, error) {
	r := flateReaders.Get().(io.ReadCloser)
	defer flateReaders.Put(r)
	_ = r.(flate.Resetter).Reset(io.MultiReader(bytes.NewReader(p), bytes.NewReader(deflateTail)), hist)
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

// deflate is what a connection negotiated of permessage-deflate; the zero
// value is none.
type deflate struct {
	on bool
	// zipBits is server_max_window_bits when it is below 15, else 0:
	// herald then compresses only messages of at most 2^zipBits bytes.
	zipBits uint8
	// window is the client's window when it keeps its context between
	// messages (client context takeover), else 0.
	window int
}

// history is the client's sliding window, for a client that keeps its
// compression context between messages: the end of what its compressed
// messages inflated to, at most max bytes, for the next one to refer back
// to. Messages the client sent uncompressed are not in it (RFC 7692 6).
type history struct {
	max int
	b   []byte
}

// add appends msg, keeping the last h.max bytes. The buffer grows with
// what the client has sent, up to h.max, and is then reused.
func (h *history) add(msg []byte) {
	if len(msg) >= h.max {
		msg = msg[len(msg)-h.max:]
	}
	keep := min(len(h.b), h.max-len(msg))
	if need := keep + len(msg); need > cap(h.b) {
		b := make([]byte, 0, min(h.max, max(need, 2*cap(h.b))))
		h.b = append(b, h.b[len(h.b)-keep:]...)
	} else {
		h.b = h.b[:copy(h.b, h.b[len(h.b)-keep:])]
	}
	h.b = append(h.b, msg...)
}

// negotiation picks the first permessage-deflate offer herald can accept
// among an upgrade request's (RFC 7692 5.1) and answers it.
type negotiation struct {
	got deflate
}

// Parameter names of RFC 7692 7.1.
const (
	serverNoContextTakeover = "server_no_context_takeover"
	clientNoContextTakeover = "client_no_context_takeover"
	serverMaxWindowBits     = "server_max_window_bits"
	clientMaxWindowBits     = "client_max_window_bits"
)

// negotiate is the upgrader's Negotiate: it is called with each offered
// extension in order, and returns the answer to the first acceptable
// permessage-deflate offer, a zero option for every other.
func (n *negotiation) negotiate(opt httphead.Option) (httphead.Option, error) {
	if n.got.on || string(opt.Name) != "permessage-deflate" {
		return httphead.Option{}, nil
	}
	o, ok := parseOffer(opt.Parameters)
	if !ok {
		return httphead.Option{}, nil // declined (7.1): maybe a later offer will do
	}
	answer := httphead.Option{Name: opt.Name}
	answer.Parameters.Set([]byte(serverNoContextTakeover), nil)
	n.got.on = true
	if o.clientNoTakeover {
		answer.Parameters.Set([]byte(clientNoContextTakeover), nil)
	} else {
		n.got.window = 1 << 15
	}
	if o.serverBits > 0 {
		answer.Parameters.Set([]byte(serverMaxWindowBits), []byte(strconv.Itoa(o.serverBits)))
		if o.serverBits < 15 {
			n.got.zipBits = uint8(o.serverBits)
		}
	}
	if o.clientBits > 0 {
		answer.Parameters.Set([]byte(clientMaxWindowBits), []byte(strconv.Itoa(o.clientBits)))
		if !o.clientNoTakeover {
			n.got.window = 1 << o.clientBits
		}
	}
	return answer, nil
}

// offer is a permessage-deflate offer's parameters.
type offer struct {
	serverNoTakeover, clientNoTakeover bool
	serverBits                         int // 0 when not offered
	clientBits                         int // 0 when not offered or offered without a value
}

// parseOffer reads an offer's parameters, reporting false for one RFC
// 7692 7.1 says to decline: an unknown parameter, a parameter named twice,
// or a value other than the one the parameter takes. (httphead has
// unquoted a quoted value already.)
func parseOffer(params httphead.Parameters) (offer, bool) {
	var o offer
	seen := map[string]bool{}
	ok := true
	params.ForEach(func(k, v []byte) bool {
		name := string(k)
		if seen[name] {
			ok = false
			return false
		}
		seen[name] = true
		switch name {
		case serverNoContextTakeover:
			o.serverNoTakeover, ok = true, len(v) == 0
		case clientNoContextTakeover:
			o.clientNoTakeover, ok = true, len(v) == 0
		case serverMaxWindowBits:
			o.serverBits, ok = windowBits(v)
		case clientMaxWindowBits:
			if len(v) > 0 {
				o.clientBits, ok = windowBits(v)
			}
		default:
			ok = false
		}
		return ok
	})
	return o, ok
}

// windowBits reads a window-bits value: a decimal from 8 to 15 without
// leading zeroes (7.1.2.1, 7.1.2.2).
func windowBits(v []byte) (int, bool) {
	switch s := string(v); {
	case len(s) == 1 && (s[0] == '8' || s[0] == '9'):
		return int(s[0] - '0'), true
	case len(s) == 2 && s[0] == '1' && '0' <= s[1] && s[1] <= '5':
		return 10 + int(s[1]-'0'), true
	}
	return 0, false
}
