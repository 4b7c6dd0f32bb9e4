package nats

import (
	"context"

	"github.com/nats-io/nats.go/jetstream"
)

// FetchPending is fetchPending, for a consumer a test made.
func FetchPending(ctx context.Context, cons jetstream.Consumer, filter string, pending uint64) ([]jetstream.RawStreamMsg, error) {
	return fetchPending(ctx, cons, filter, pending)
}

// RequestsSent returns how many messages b's connection has sent since
// Start. Every stream read (a History step) is one request, so tests count
// a History call's reads with it.
func (b *Broker) RequestsSent() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.nc.Stats().OutMsgs
}
