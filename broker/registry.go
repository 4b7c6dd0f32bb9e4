package broker

import (
	"context"
	"time"
)

// Registry is an optional ability of a Broker: what each node of a
// cluster holds, kept in the backing service, so that when a node dies
// without shutting down another can act for it. herald's webhooks keep
// each node's clients there, and a surviving node reports the clients of
// a dead one as disconnected (node_lost).
//
// A node beats (Beat) well within its ttl; one whose beat expired is dead.
// A survivor claims a dead node (ClaimDead) for a lease, reports what its
// entries say, then forgets it (Forget). A claimer that dies in turn
// loses its claim when the lease ends, and another node claims the dead
// node again: what it reports may be reported twice, never lost.
type Registry interface {
	// Beat records node as alive for ttl from now. Node names are not
	// empty: ClaimDead's "" means none.
	Beat(ctx context.Context, node string, ttl time.Duration) error
	// Put sets node's entry key to value; Delete removes it.
	Put(ctx context.Context, node, key string, value []byte) error
	Delete(ctx context.Context, node, key string) error
	// ClaimDead claims, for lease, one node whose beat expired (and that
	// no live claim holds), and returns it with its entries; "" when there
	// is none.
	ClaimDead(ctx context.Context, lease time.Duration) (node string, entries map[string][]byte, err error)
	// Forget removes node: its beat, its claim and its entries.
	Forget(ctx context.Context, node string) error
}
