package herald

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/heraldhq/herald/broker"
)

// The transports a Client may be connected by (Client.Transport,
// ConnectRequest.Transport).
const (
	// TransportWebSocket is the JSON protocol on /ws.
	TransportWebSocket = "websocket"
	// TransportRaw is raw mode on /ws/{channel}.
	TransportRaw = "raw"
	// TransportSSE is a Server-Sent Events stream on /sse.
	TransportSSE = "sse"
)

// Client is one connection as hooks see it.
type Client struct {
	// ID is the server's id for the connection, unique across the cluster.
	ID string
	// User is the user id the connection authenticated as, "" for
	// anonymous clients.
	User string
	// Transport is TransportWebSocket, TransportRaw or TransportSSE.
	Transport string
	// Header holds the headers named by Hooks.Headers of the client's
	// HTTP request (the WebSocket upgrade or the SSE request), kept for
	// the connection's life; nil when Hooks.Headers names none. Read it,
	// never change it.
	Header http.Header
}

// Publication is a message on its way in; AuthorizePublish may rewrite it.
type Publication struct {
	// Data is the message's JSON value (raw bytes when Binary is set).
	Data   json.RawMessage
	Binary bool
	// Event is the optional event name.
	Event string
}

// ConnectRequest is a connection without a token asking to be let in.
type ConnectRequest struct {
	// Request is the client's HTTP request: the WebSocket upgrade or the
	// SSE request. Read its URL, headers and cookies, not its body.
	Request *http.Request
	// Client is the id the connection gets if it is let in.
	Client string
	// Transport is TransportWebSocket, TransportRaw or TransportSSE.
	Transport string
}

// ConnectResult is what the Connect hook says of a connection it lets in.
// The zero ConnectResult lets it in anonymously, for good, with no
// server-side subscriptions.
type ConnectResult struct {
	// User names the connection's user, as a token's sub would: in the
	// welcome, in presence, on what it publishes, and for namespace rules
	// on anonymous clients. "": anonymous.
	User string
	// ExpireAt, when set, is when the connection ends, as a token's exp:
	// it is closed with 1008 "token expired" (an SSE stream ends), unless
	// the Refresh hook moves ExpireAt first. Zero: never.
	ExpireAt time.Time
	// Channels are subscribed at once, on the server's say rather than
	// the client's: no namespace rule, AuthorizeSubscribe or
	// MaxSubscriptions applies to them (they are not permissions). A JSON
	// client gets {"op":"subscribed","channel","offset","recovered"} for
	// each, then its messages; it resumes them with /ws?since={"<channel>":
	// "<offset>",…}. An SSE stream carries them beside the channels it
	// asked for. Raw connections ignore them. A name that is not a valid
	// channel, or in herald's own namespace, refuses the connection as
	// unavailable (the application answered something unusable).
	Channels []string
	// Info is any JSON value, shown with the connection in presence
	// ("info"); nil for none. Not valid JSON refuses the connection as
	// unavailable.
	Info json.RawMessage
}

// RefreshResult is the Refresh hook's answer.
type RefreshResult struct {
	// ExpireAt is the connection's new expiry; zero: it no longer
	// expires.
	ExpireAt time.Time
	// Expired ends the connection now: it is closed with 1008 "token
	// expired" (an SSE stream ends).
	Expired bool
}

// Hooks let an application decide who may do what, answer its clients'
// calls and see clients come and go: herald asks them where it would
// otherwise decide alone. Every field is optional; a nil hook allows (RPC
// excepted: without it the rpc command is a bad_request). A hook that
// returns an *Error refuses with that error's code and message; any other
// error refuses as Error says (mostly "internal", its text logged, never
// shown). Hooks run on the connection's own goroutine (Refresh on a timer
// of its own): a slow hook delays only that connection.
//
// herald serve's --proxy-* flags implement these hooks with HTTP calls to
// the application: both ways of asking go through the same code.
type Hooks struct {
	// Connect runs for every client connection that has no token (a
	// connection with one is verified with the token key and never runs
	// it), before the WebSocket upgrade or the SSE stream starts, and
	// whatever Config.AllowAnonymous says: with a Connect hook, it decides
	// who comes in without a token. Its result names the connection's user
	// and more (ConnectResult). Refusing answers the HTTP request with the
	// error's status and the contract's error body.
	Connect func(ctx context.Context, req ConnectRequest) (ConnectResult, error)
	// Connected and Disconnected observe connections after they open and
	// after they close.
	Connected    func(c Client)
	Disconnected func(c Client)
	// AuthorizeSubscribe runs for subscribe, history and presence (which
	// read a channel as a subscription does), for raw mode's channel and
	// for each channel of an SSE stream, after the token's channels and
	// the namespace rules allowed it. Refusing a JSON command is an error
	// reply; a raw connection is closed (1008 for a refusal, 1011 for a
	// failure); an SSE request is answered with the error's status.
	AuthorizeSubscribe func(ctx context.Context, c Client, channel string) error
	// AuthorizePublish runs for every client publish (JSON publish, raw
	// mode's frames) after the token and namespace checks, and may change
	// p: what it leaves there is published. Refusing a JSON publish is an
	// error reply; a raw connection is closed as for AuthorizeSubscribe.
	AuthorizePublish func(ctx context.Context, c Client, channel string, p *Publication) error
	// RPC answers a client's {"id","op":"rpc","method","data"}: the data
	// it returns (nil: null) is the reply's data; refusing is an error
	// reply. nil: rpc is a bad_request.
	RPC func(ctx context.Context, c Client, method string, data json.RawMessage) (json.RawMessage, error)
	// Refresh runs for a connection Connect let in with an ExpireAt, 30 s
	// before it (or when a quarter of the time left remains, if that is
	// sooner), and decides whether it goes on (RefreshResult). A refusal
	// closes the connection with the error's close code and message. A
	// failure (unavailable, internal or any other error) is tried again
	// while time is left; the connection ends at ExpireAt if no answer
	// came. nil: connections end at their ExpireAt.
	Refresh func(ctx context.Context, c Client) (RefreshResult, error)
	// Headers names the request headers (the WebSocket upgrade's, the SSE
	// request's) kept with each connection for the hooks, in Client.Header.
	// nil keeps none, and costs nothing.
	Headers []string
}

// hookPolicy runs the authorization hooks for one connection; a
// connection's access runs it after the namespace and token checks.
type hookPolicy struct {
	h      *Hooks
	header http.Header // completes the Client the hooks see
}

// client is the Client the hooks see for c.
func (p hookPolicy) client(c broker.ClientInfo) Client {
	return hookClient(c, p.header)
}

// hookClient is the Client the hooks see for c, with header.
func hookClient(c broker.ClientInfo, header http.Header) Client {
	transport := c.Transport
	if transport == "ws" { // presence's (and the metrics') name for it
		transport = TransportWebSocket
	}
	return Client{ID: c.Client, User: c.User, Transport: transport, Header: header}
}

func (p hookPolicy) AuthorizeSubscribe(ctx context.Context, c broker.ClientInfo, channel string) error {
	if p.h.AuthorizeSubscribe == nil {
		return nil
	}
	return p.h.AuthorizeSubscribe(ctx, p.client(c), channel)
}

func (p hookPolicy) AuthorizePublish(ctx context.Context, c broker.ClientInfo, channel string, bp *broker.Publication) error {
	if p.h.AuthorizePublish == nil {
		return nil
	}
	pub := Publication{Data: bp.Data, Binary: bp.Binary, Event: bp.Event}
	if err := p.h.AuthorizePublish(ctx, p.client(c), channel, &pub); err != nil {
		return err
	}
	if !pub.Binary && !json.Valid(pub.Data) {
		return Errorf(CodeInternal, "a hook made the data invalid JSON")
	}
	bp.Data, bp.Binary, bp.Event = pub.Data, pub.Binary, pub.Event
	return nil
}

// RPC asks the RPC hook; without one, rpc is a bad_request.
func (p hookPolicy) RPC(ctx context.Context, c broker.ClientInfo, method string, data json.RawMessage) (json.RawMessage, error) {
	if p.h.RPC == nil {
		return nil, Errorf(CodeBadRequest, "rpc is not enabled on this server: it has no RPC hook (herald serve: --proxy-rpc)")
	}
	out, err := p.h.RPC(ctx, p.client(c), method, data)
	if err != nil {
		return nil, err
	}
	if out == nil {
		return json.RawMessage("null"), nil
	}
	if !json.Valid(out) {
		return nil, Errorf(CodeInternal, "the RPC hook answered invalid JSON")
	}
	return out, nil
}

// keptHeaders copies the headers named in names from h; nil when none
// are named.
func keptHeaders(h http.Header, names []string) http.Header {
	if len(names) == 0 {
		return nil
	}
	out := make(http.Header, len(names))
	for _, n := range names {
		if v := h.Values(n); len(v) > 0 {
			out[http.CanonicalHeaderKey(n)] = v
		}
	}
	return out
}
