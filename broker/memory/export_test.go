package memory

import "time"

// Channels returns how many channels the broker holds state for, and the
// peak its map grew to since it was last rebuilt.
func (b *Broker) Channels() (n, peak int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.channels), b.peak
}

// Sweep runs the sweeper's work once.
func (b *Broker) Sweep() { b.sweepOnce() }

// ReceiptsCount is what the broker's receipts hold: how many channels
// (and the peak of their map), deliveries, acknowledgement records and
// checks.
type ReceiptsCount = receiptsSize

// ReceiptsSize returns what the broker's receipts hold.
func (b *Broker) ReceiptsSize() ReceiptsCount { return b.receipts.size() }

// SetClock makes the broker read the time from now, which must be safe
// for concurrent use; call it before Start.
func (b *Broker) SetClock(now func() time.Time) { b.now = now }
