package redis

// SubscribedTopics returns how many topics the broker holds as subscribed,
// and the peak its map grew to since it was last rebuilt.
func (b *Broker) SubscribedTopics() (n, peak int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.wanted), b.wantedPeak
}

// SplitNetstrings and Netstring are the pub/sub payload's framing, for
// tests that read or forge payloads.
var (
	SplitNetstrings = splitNetstrings
	Netstring       = netstring
)
