package ws

// permessage-deflate negotiation and use, RFC 7692 section 7, Autobahn
// style (its cases 13.x): each offer is made in a real handshake over a
// real socket, the answer is checked against what the RFC allows, and
// messages go both ways compressed with the parameters negotiated — by a
// client that keeps its compression context between messages when it may,
// compresses within the window it was given, and inflates what the server
// sends within the window the server promised.

import (
	"bufio"
	"bytes"
	"compress/flate"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/heraldhq/herald/internal/protocol"
)

// deflateServer serves echo Handlers that send each message back twice —
// as a reply and as a push — speaking subprotocols, and hands each echo
// to the returned channel.
func deflateServer(t *testing.T, cfg Config, subprotocols ...string) (string, chan *echo) {
	t.Helper()
	echoes := make(chan *echo, 64)
	_, url := serveWith(t, cfg, nil, func(c *Conn) Handler {
		e := &echo{c: c, closed: make(chan struct{}), twice: true}
		echoes <- e
		return e
	}, subprotocols...)
	return url, echoes
}

// handshake opens a TCP connection to url and upgrades it with one
// Sec-WebSocket-Extensions header line for each offer given, and
// subprotocol when it is set.
func handshake(t *testing.T, url, subprotocol string, offers ...string) (net.Conn, *bufio.Reader, *http.Response) {
	t.Helper()
	host := strings.TrimPrefix(url, "ws://")
	nc, err := net.DialTimeout("tcp", host, waitTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	var req strings.Builder
	fmt.Fprintf(&req, "GET / HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n", host)
	if subprotocol != "" {
		fmt.Fprintf(&req, "Sec-WebSocket-Protocol: %s\r\n", subprotocol)
	}
	for _, o := range offers {
		fmt.Fprintf(&req, "Sec-WebSocket-Extensions: %s\r\n", o)
	}
	req.WriteString("\r\n")
	_ = nc.SetDeadline(time.Now().Add(waitTimeout))
	if _, err := nc.Write([]byte(req.String())); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("handshake response: %v", err)
	}
	_ = nc.SetDeadline(time.Time{})
	return nc, br, resp
}

// answer is a permessage-deflate response's parameters, value by name
// ("" for a parameter without one).
type answer map[string]string

// parseAnswer reads the response's Sec-WebSocket-Extensions; it reports
// false when the response has none. A second extension, or a parameter
// named twice, fails t.
func parseAnswer(t *testing.T, resp *http.Response) (answer, bool) {
	t.Helper()
	vals := resp.Header.Values("Sec-WebSocket-Extensions")
	if len(vals) == 0 {
		return nil, false
	}
	exts := strings.Split(strings.Join(vals, ","), ",")
	if len(exts) != 1 {
		t.Fatalf("response accepts %d extensions: %q", len(exts), vals)
	}
	parts := strings.Split(exts[0], ";")
	if name := strings.TrimSpace(parts[0]); name != "permessage-deflate" {
		t.Fatalf("response accepts %q", name)
	}
	a := answer{}
	for _, p := range parts[1:] {
		name, val, _ := strings.Cut(strings.TrimSpace(p), "=")
		if _, dup := a[name]; dup {
			t.Fatalf("response names %s twice: %q", name, vals)
		}
		a[name] = val
	}
	return a, true
}

// bits returns the window size a window-bits parameter of a names: 32 KiB
// when it is absent.
func (a answer) window(t *testing.T, name string) int {
	t.Helper()
	v, ok := a[name]
	if !ok {
		return 1 << 15
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 8 || n > 15 {
		t.Fatalf("response's %s=%q is no window size", name, v)
	}
	return 1 << n
}

// deflateClient is a client of a connection that negotiated
// permessage-deflate. It compresses with compress/flate; with context
// takeover each message is compressed after the last clientWindow bytes
// of those before it, as a dictionary, so that it may refer back to any of
// them — all that the server must keep for it.
type deflateClient struct {
	t  *testing.T
	nc net.Conn
	br *bufio.Reader
	// serverWindow bounds the server's back-references; clientWindow
	// what the client refers back to; takeover: the client keeps its
	// context between messages, hist what it compressed so far.
	serverWindow, clientWindow int
	takeover                   bool
	hist                       []byte
	zw                         *flate.Writer
	zbuf                       bytes.Buffer
}

func newDeflateClient(t *testing.T, nc net.Conn, br *bufio.Reader, a answer) *deflateClient {
	t.Helper()
	c := &deflateClient{t: t, nc: nc, br: br,
		serverWindow: a.window(t, "server_max_window_bits"),
		clientWindow: a.window(t, "client_max_window_bits"),
	}
	_, noTakeover := a["client_no_context_takeover"]
	c.takeover = !noTakeover
	c.zw, _ = flate.NewWriter(&c.zbuf, flate.DefaultCompression)
	return c
}

// send sends msg as a text message, compressed when zip is set, and
// returns the payload's length on the wire.
func (c *deflateClient) send(msg []byte, zip bool) int {
	c.t.Helper()
	payload := msg
	if zip {
		c.zbuf.Reset()
		c.zw.Reset(&c.zbuf)
		if c.takeover {
			_, _ = c.zw.Write(c.hist[max(0, len(c.hist)-c.clientWindow):])
			_ = c.zw.Flush()
			c.hist = append(c.hist, msg...)
		}
		start := c.zbuf.Len() // the dictionary's stream ends on a byte, with a sync flush
		_, _ = c.zw.Write(msg)
		_ = c.zw.Flush()
		payload = bytes.TrimSuffix(bytes.Clone(c.zbuf.Bytes()[start:]), deflateTail)
	}
	f := ws.NewTextFrame(payload)
	f.Header.Rsv = ws.Rsv(zip, false, false)
	sendFrame(c.t, c.nc, f)
	return len(payload)
}

// receive reads the next message, inflating it within the server's
// window and without context (herald answers server_no_context_takeover),
// and reports whether it came compressed.
func (c *deflateClient) receive() ([]byte, bool) {
	c.t.Helper()
	f := readFrame(c.t, c.nc, c.br)
	if f.Header.OpCode != ws.OpText || !f.Header.Fin {
		c.t.Fatalf("got a %v frame (fin %v), want a whole text message", f.Header.OpCode, f.Header.Fin)
	}
	if !f.Header.Rsv1() {
		return f.Payload, false
	}
	msg, err := inflateWindow(f.Payload, nil, c.serverWindow)
	if err != nil {
		c.t.Fatalf("inflating a %d-byte payload within a %d-byte window: %v", len(f.Payload), c.serverWindow, err)
	}
	return msg, true
}

// randomText returns n bytes of hex: compressible, but only by half, so
// that a message repeated from an earlier one compresses far better with
// context takeover than without.
func randomText(n int) []byte {
	b := make([]byte, (n+1)/2)
	_, _ = rand.Read(b)
	return []byte(hex.EncodeToString(b)[:n])
}

// exchange sends a sequence of messages that tells context takeover and
// window sizes apart, and checks every echo: that each arrives whole, that
// the server compressed what fits its window, and that the client's
// messages that refer back to earlier ones were understood.
func (c *deflateClient) exchange(jsonl bool) {
	c.t.Helper()
	long := randomText(3000)
	tail := long[len(long)-200:] // within even a 256-byte window of the end of long
	huge := randomText(40000)    // past the largest window
	steps := []struct {
		msg []byte
		zip bool
		// backref: with context takeover, the message refers back to
		// the one before it and compresses to a few bytes.
		backref bool
	}{
		{msg: long, zip: true},
		{msg: tail, zip: true, backref: true},
		{msg: []byte("sent plain between compressed messages: outside the window"), zip: false},
		{msg: tail, zip: true, backref: true},
		{msg: randomText(100), zip: true},
		{msg: huge, zip: true},
		{msg: huge[len(huge)-150:], zip: true, backref: true},
		{msg: []byte("short"), zip: true},
	}
	for i, s := range steps {
		n := c.send(s.msg, s.zip)
		if s.backref && c.takeover && n > 20 {
			c.t.Fatalf("step %d: %d bytes repeated from the message before took %d bytes compressed with context takeover", i, len(s.msg), n)
		}
		if s.backref && !c.takeover && n < len(s.msg)/3 {
			c.t.Fatalf("step %d: %d bytes took %d compressed without context takeover: the client kept its context", i, len(s.msg), n)
		}
		want := [][]byte{s.msg, s.msg}
		if jsonl {
			want = [][]byte{slicesJoin(s.msg, s.msg)}
		}
		for j, w := range want {
			got, zipped := c.receive()
			if !bytes.Equal(got, w) {
				c.t.Fatalf("step %d, echo %d: got %d bytes, want %d", i, j, len(got), len(w))
			}
			if len(s.msg) >= 2*minCompress && len(w) <= c.serverWindow && !zipped {
				c.t.Fatalf("step %d, echo %d: %d bytes, within the %d-byte window, came uncompressed", i, j, len(w), c.serverWindow)
			}
		}
	}
}

func slicesJoin(a, b []byte) []byte { return bytes.Join([][]byte{a, b}, []byte("\n")) }

// offerCase is one combination of RFC 7692's four parameters in an offer.
type offerCase struct {
	serverNoTakeover, clientNoTakeover bool
	serverBits                         string // "" for none
	clientBits                         string // "" for none, "-" for the parameter without a value
}

func (o offerCase) String() string {
	s := "permessage-deflate"
	if o.serverNoTakeover {
		s += "; server_no_context_takeover"
	}
	if o.clientNoTakeover {
		s += "; client_no_context_takeover"
	}
	if o.serverBits != "" {
		s += "; server_max_window_bits=" + o.serverBits
	}
	switch o.clientBits {
	case "":
	case "-":
		s += "; client_max_window_bits"
	default:
		s += "; client_max_window_bits=" + o.clientBits
	}
	return s
}

// checkAnswer checks a against what RFC 7692 7.1 lets a server answer to
// o, and against what herald chooses to: server_no_context_takeover
// always (allowed by 7.1.1.1 even unasked; it lets a broadcast be
// compressed once), client_no_context_takeover when the client offered it
// (7.1.1.2), server_max_window_bits echoed when offered (7.1.2.1 requires
// it, at most the offered value), client_max_window_bits only when offered
// with a value, echoing it (7.1.2.2 forbids it unoffered).
func checkAnswer(t *testing.T, o offerCase, a answer) {
	t.Helper()
	want := answer{"server_no_context_takeover": ""}
	if o.clientNoTakeover {
		want["client_no_context_takeover"] = ""
	}
	if o.serverBits != "" {
		want["server_max_window_bits"] = strings.Trim(o.serverBits, `"`)
	}
	if o.clientBits != "" && o.clientBits != "-" {
		want["client_max_window_bits"] = strings.Trim(o.clientBits, `"`)
	}
	if fmt.Sprint(a) != fmt.Sprint(want) {
		t.Fatalf("offer %q answered %v, want %v", o, a, want)
	}
}

// Every combination of RFC 7692's parameters (section 7.1): each offer is
// accepted, answered as the RFC allows, and messages go both ways with the
// parameters negotiated — in herald.v1 (a frame a message, replies and
// pushes) and herald.v1.jsonl (pieces compressed apart, joined in one
// frame). A connection without client context takeover keeps no window.
func TestDeflateEveryOffer(t *testing.T) {
	var cases []offerCase
	for _, snt := range []bool{false, true} {
		for _, cnt := range []bool{false, true} {
			for _, sb := range []string{"", "8", "10", "15"} {
				for _, cb := range []string{"", "-", "9", "15"} {
					cases = append(cases, offerCase{snt, cnt, sb, cb})
				}
			}
		}
	}
	// A quoted value is the same value (7.1: the ABNF applies after
	// unquoting).
	cases = append(cases, offerCase{false, false, `"9"`, `"12"`})
	for _, sub := range []string{"", protocol.SubprotocolJSONL} {
		url, echoes := deflateServer(t, Config{}, protocol.SubprotocolJSONL)
		for _, o := range cases {
			t.Run(fmt.Sprintf("%s/%s", strings.TrimPrefix(o.String(), "permessage-deflate"), map[string]string{"": "json", protocol.SubprotocolJSONL: "jsonl"}[sub]), func(t *testing.T) {
				nc, br, resp := handshake(t, url, sub, o.String())
				if resp.StatusCode != http.StatusSwitchingProtocols {
					t.Fatalf("status %d", resp.StatusCode)
				}
				a, ok := parseAnswer(t, resp)
				if !ok {
					t.Fatalf("offer %q declined", o)
				}
				checkAnswer(t, o, a)
				e := <-echoes
				c := newDeflateClient(t, nc, br, a)
				c.exchange(sub != "")
				e.c.rmu.Lock() // the reader's state
				kept, size, capacity := e.c.hist != nil, 0, 0
				if kept {
					size, capacity = len(e.c.hist.b), cap(e.c.hist.b)
				}
				e.c.rmu.Unlock()
				if !c.takeover && kept {
					t.Fatalf("a connection without client context takeover keeps a window of %d bytes", capacity)
				}
				if c.takeover && (!kept || size != c.clientWindow || capacity > c.clientWindow) {
					t.Fatalf("with client context takeover the connection keeps %d bytes (of %d), want the client's last %d", size, capacity, c.clientWindow)
				}
			})
		}
	}
}

// An offer RFC 7692 7.1 says to decline — a parameter it does not define,
// a value out of range or malformed, a parameter named twice — is
// declined, not failed: the connection opens without the extension, and
// messages go plain.
func TestDeflateDeclinesInvalidOffers(t *testing.T) {
	url, echoes := deflateServer(t, Config{})
	for _, offer := range []string{
		"permessage-deflate; server_max_window_bits", // needs a value
		"permessage-deflate; server_max_window_bits=7",
		"permessage-deflate; server_max_window_bits=16",
		"permessage-deflate; server_max_window_bits=010", // no leading zeroes
		"permessage-deflate; server_max_window_bits=1a",
		`permessage-deflate; server_max_window_bits="16"`,
		"permessage-deflate; client_max_window_bits=7",
		"permessage-deflate; client_max_window_bits=16",
		"permessage-deflate; client_max_window_bits=09",
		"permessage-deflate; server_no_context_takeover=1", // takes no value
		"permessage-deflate; client_no_context_takeover=true",
		"permessage-deflate; server_no_context_takeover; server_no_context_takeover",
		"permessage-deflate; client_no_context_takeover; client_no_context_takeover",
		"permessage-deflate; server_max_window_bits=10; server_max_window_bits=10",
		"permessage-deflate; client_max_window_bits; client_max_window_bits",
		"permessage-deflate; client_max_window_bits=10; client_max_window_bits",
		"permessage-deflate; mux",
		"permessage-deflate; Server_No_Context_Takeover",
		"x-webkit-deflate-frame",
	} {
		t.Run(offer, func(t *testing.T) {
			nc, br, resp := handshake(t, url, "", offer)
			if resp.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("status %d, want the connection opened without the extension", resp.StatusCode)
			}
			if a, ok := parseAnswer(t, resp); ok {
				t.Fatalf("offer %q accepted with %v", offer, a)
			}
			e := <-echoes
			if e.c.deflate {
				t.Fatal("the server's connection compresses")
			}
			msg := bytes.Repeat([]byte("plain "), 50)
			sendFrame(t, nc, ws.NewTextFrame(msg))
			for range 2 {
				if f := readFrame(t, nc, br); f.Header.Rsv != 0 || !bytes.Equal(f.Payload, msg) {
					t.Fatalf("echo with RSV %b, %d bytes; want plain, %d bytes", f.Header.Rsv, len(f.Payload), len(msg))
				}
			}
			// RSV1 without the extension is a protocol error.
			f := ws.NewTextFrame(msg)
			f.Header.Rsv = ws.Rsv(true, false, false)
			sendFrame(t, nc, f)
			expectClose(t, nc, br, ws.StatusProtocolError)
		})
	}
}

// Several offers, in one header line or several: the first one herald can
// accept is, with its own parameters, and it alone (RFC 7692 5.1, 7.1.3).
func TestDeflateFirstAcceptableOffer(t *testing.T) {
	url, echoes := deflateServer(t, Config{})
	for _, tc := range []struct {
		name   string
		offers []string
		want   answer
	}{
		{"first invalid", []string{"permessage-deflate; server_max_window_bits=7, permessage-deflate; client_no_context_takeover"},
			answer{"server_no_context_takeover": "", "client_no_context_takeover": ""}},
		{"RFC 7692 7.1.3 fallback", []string{"permessage-deflate; client_max_window_bits; server_max_window_bits=10, permessage-deflate; client_max_window_bits"},
			answer{"server_no_context_takeover": "", "server_max_window_bits": "10"}},
		{"first on its own line invalid", []string{"permessage-deflate; foo=1", "permessage-deflate; server_max_window_bits=9; client_max_window_bits=12"},
			answer{"server_no_context_takeover": "", "server_max_window_bits": "9", "client_max_window_bits": "12"}},
		{"first valid, second ignored", []string{"permessage-deflate; client_max_window_bits=11", "permessage-deflate; client_no_context_takeover"},
			answer{"server_no_context_takeover": "", "client_max_window_bits": "11"}},
		{"another extension first", []string{"x-webkit-deflate-frame, permessage-deflate; server_max_window_bits=8"},
			answer{"server_no_context_takeover": "", "server_max_window_bits": "8"}},
		{"Autobahn 13.7", []string{"permessage-deflate; client_no_context_takeover; client_max_window_bits; server_no_context_takeover; server_max_window_bits=9, " +
			"permessage-deflate; client_no_context_takeover; client_max_window_bits; server_no_context_takeover, " +
			"permessage-deflate; client_no_context_takeover; client_max_window_bits"},
			answer{"server_no_context_takeover": "", "client_no_context_takeover": "", "server_max_window_bits": "9"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nc, br, resp := handshake(t, url, "", tc.offers...)
			a, ok := parseAnswer(t, resp)
			if !ok || fmt.Sprint(a) != fmt.Sprint(tc.want) {
				t.Fatalf("offers %q answered %v (accepted %v), want %v", tc.offers, a, ok, tc.want)
			}
			<-echoes
			newDeflateClient(t, nc, br, a).exchange(false)
		})
	}
}
