package memory

// Channels returns how many channels the broker holds state for, and the
// peak its map grew to since it was last rebuilt.
func (b *Broker) Channels() (n, peak int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.channels), b.peak
}

// Sweep runs the sweeper's work once.
func (b *Broker) Sweep() { b.sweepOnce() }
