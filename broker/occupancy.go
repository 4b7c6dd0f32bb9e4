package broker

import "context"

// Occupancy is an optional ability of a Broker: which nodes have
// subscribers of a channel, across the cluster, and whether the channel's
// being occupied (or vacant) was announced. herald's webhooks announce a
// channel's first subscriber (occupied) and its last leaving (vacated)
// with it: the two alternate per channel, whichever nodes the subscribers
// are on.
type Occupancy interface {
	// Occupy records that node has subscribers of channel. When the
	// channel was not announced occupied, it is now, and Occupy returns
	// the occupation's name — unique among the channel's occupations —
	// and true: the caller announces it.
	Occupy(ctx context.Context, channel, node string) (occupation string, announce bool, err error)
	// Vacate records that node has none left, and reports whether no
	// node has any.
	Vacate(ctx context.Context, channel, node string) (empty bool, err error)
	// AnnounceVacant marks channel vacant when no node has subscribers
	// and it was announced occupied, and then returns that occupation's
	// name and true: the caller announces the vacancy. A vacant channel's
	// record may then be dropped.
	AnnounceVacant(ctx context.Context, channel string) (occupation string, announce bool, err error)
}
