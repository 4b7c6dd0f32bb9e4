package broker

import (
	"context"
	"time"
)

// Receipts is an optional ability of a Broker: to which clients a
// message was delivered live, which of them acknowledged it, and the
// checks that come due when a namespace's receipt timeout passes. State
// is kept in the backing service, shared by every node, and expires
// (keep) so that it cannot grow without bound. With the memory broker it
// lives in the process.
//
// Acknowledgements are cumulative within an epoch: acknowledging an
// offset acknowledges every earlier offset of the channel in that
// epoch, for the client, and, when the client has a user, for every
// connection of that user.
type Receipts interface {
	// Delivered records that off was delivered live to clients on this
	// node, and schedules a check of those clients at due; a zero due
	// schedules none. Only each client's Client and User are kept. Both
	// are kept for keep: a check not done by then is dropped, so keep
	// should outlast due. Empty clients record nothing. A node calls it
	// once per message it fans out.
	Delivered(ctx context.Context, channel string, off Offset, clients []ClientInfo, due time.Time, keep time.Duration) error
	// Acked records that c acknowledged off and every earlier offset of
	// channel in off's epoch (none of another epoch); it is kept for
	// keep. A client with a User acknowledges for every connection of
	// that user; an anonymous one (User "") only for itself. An
	// acknowledgement below one already recorded changes nothing.
	//
	// (It is not named Ack: Queue has an Ack, and one broker has both.)
	Acked(ctx context.Context, channel string, c ClientInfo, off Offset, keep time.Duration) error
	// Receipts returns the clients off was delivered to, on every node,
	// split by whether they acknowledged it (each ClientInfo with Client
	// and User only, sorted by Client); found is false when no delivery
	// of off is recorded (never made, or expired).
	Receipts(ctx context.Context, channel string, off Offset) (r ReceiptState, found bool, err error)
	// TakeDue leases up to max checks whose due time passed, each with
	// the clients of its Delivered call that have not acknowledged its
	// offset now (Client and User only, sorted by Client). A check whose
	// every client acknowledged comes too, with no Pending: the caller
	// finishes it all the same. A check that is not done (DoneDue) before
	// its lease ends is taken again, by this node or another.
	TakeDue(ctx context.Context, max int, lease time.Duration) ([]DueCheck, error)
	// DoneDue removes a check TakeDue leased, also once its lease ended
	// if nobody took it again. A check that was taken again meanwhile is
	// left to its new taker, and ErrLeaseLost is returned; so it is for a
	// check that is gone (done already, or dropped after keep).
	DoneDue(ctx context.Context, d DueCheck) error
}

// ReceiptState is who a message was delivered to, split by whether they
// acknowledged it.
type ReceiptState struct {
	Acked   []ClientInfo
	Pending []ClientInfo
}

// DueCheck is a check of one Delivered call whose due time passed.
type DueCheck struct {
	Channel string
	Offset  Offset
	// Pending are the clients of the Delivered call that had not
	// acknowledged Offset when the check was taken.
	Pending []ClientInfo
	// ID names the check; Lease this taking of it (DoneDue needs both).
	ID    string
	Lease string
}
