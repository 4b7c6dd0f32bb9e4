package herald

import (
	"context"
	"encoding/json"
	"net/http"

	"github.com/heraldhq/herald/broker"
)

// Client is one connection as hooks see it.
type Client struct {
	// ID is the server's id for the connection, unique across the cluster.
	ID string
	// User is the user id the connection authenticated as, "" for
	// anonymous clients.
	User string
}

// Publication is a message on its way in; AuthorizePublish may rewrite it.
type Publication struct {
	// Data is the message's JSON value (raw bytes when Binary is set).
	Data   json.RawMessage
	Binary bool
	// Event is the optional event name.
	Event string
}

// Hooks let an application decide who may do what and see clients come and
// go. Every field is optional; a nil hook allows. A hook that returns an
// *Error refuses with that error's code; any other error refuses as Error
// says (mostly "internal"). Hooks run on the connection's goroutine: a slow hook delays
// only that connection.
type Hooks struct {
	// Connect runs before a WebSocket upgrade or an SSE stream starts, and
	// may name the user (the returned string, "" for anonymous). Refusing
	// answers the HTTP request with the error's status.
	Connect func(r *http.Request) (user string, err error)
	// Connected and Disconnected observe connections after they open and
	// after they close.
	Connected    func(c Client)
	Disconnected func(c Client)
	// AuthorizeSubscribe runs for subscribe, history and presence.
	AuthorizeSubscribe func(ctx context.Context, c Client, channel string) error
	// AuthorizePublish runs for every client publish and may change p.
	AuthorizePublish func(ctx context.Context, c Client, channel string, p *Publication) error
}

// hookPolicy runs the authorization hooks; a connection's access runs it
// after the namespace and token checks.
type hookPolicy struct{ h *Hooks }

func (p hookPolicy) AuthorizeSubscribe(ctx context.Context, c broker.ClientInfo, channel string) error {
	if p.h.AuthorizeSubscribe == nil {
		return nil
	}
	return p.h.AuthorizeSubscribe(ctx, Client{ID: c.Client, User: c.User}, channel)
}

func (p hookPolicy) AuthorizePublish(ctx context.Context, c broker.ClientInfo, channel string, bp *broker.Publication) error {
	if p.h.AuthorizePublish == nil {
		return nil
	}
	pub := Publication{Data: bp.Data, Binary: bp.Binary, Event: bp.Event}
	if err := p.h.AuthorizePublish(ctx, Client{ID: c.Client, User: c.User}, channel, &pub); err != nil {
		return err
	}
	if !pub.Binary && !json.Valid(pub.Data) {
		return Errorf(CodeInternal, "a hook made the data invalid JSON")
	}
	bp.Data, bp.Binary, bp.Event = pub.Data, pub.Binary, pub.Event
	return nil
}
