package broker

import (
	"context"
	"errors"
	"time"
)

// Queue is an optional ability of a Broker: durable work queues shared by
// every node of a cluster. herald's webhooks use one: whichever node an
// event happens on, it is pushed here, and any live node delivers it; a
// node that dies while it holds items gives them back when their lease
// ends. With the memory broker the queue lives in the process.
//
// Items are grouped by key (a webhook's client). A key's items are taken
// one at a time, oldest first: the next is not given out until the one
// before is acknowledged, so an item that keeps failing holds back its
// key's later items, and only those. Delivery is at least once: an item
// whose lease ends before it is acknowledged is taken again (by this node
// or another), so a taker must tolerate doing an item twice.
type Queue interface {
	// Push appends data to key's items in queue; once it returns the item
	// survives the node that pushed it.
	Push(ctx context.Context, queue, key string, data []byte) error
	// Take leases up to max items of queue for lease: the oldest item of
	// each key that has none leased and whose retry time has come. Each
	// must be acknowledged (Ack) or given back (Retry) before the lease
	// ends, or it is taken again.
	Take(ctx context.Context, queue string, max int, lease time.Duration) ([]QueueItem, error)
	// Ack removes a taken item; its key's next item becomes ready. It
	// returns ErrLeaseLost when the item's lease ended and it was taken
	// again meanwhile: the item stays for its new taker.
	Ack(ctx context.Context, queue string, it QueueItem) error
	// Retry gives a taken item back, to be taken again no sooner than
	// after delay, still ahead of its key's later items. It returns
	// ErrLeaseLost as Ack does.
	Retry(ctx context.Context, queue string, it QueueItem, delay time.Duration) error
	// Len reports how many items queue holds, leased or not.
	Len(ctx context.Context, queue string) (int, error)
}

// QueueItem is an item Take leased.
type QueueItem struct {
	Key  string
	ID   string // unique in its queue; assigned by Push
	Data []byte
	// Attempts is how many times the item was taken before this time.
	Attempts int
	// Pushed is when the item was pushed.
	Pushed time.Time
	// Lease identifies this taking of the item; Ack and Retry need it.
	Lease string
}

// ErrLeaseLost is returned by Queue's Ack and Retry for an item whose
// lease ended and which was taken again since, and by Receipts' DoneDue
// for a check likewise.
var ErrLeaseLost = errors.New("broker: lease was lost")
