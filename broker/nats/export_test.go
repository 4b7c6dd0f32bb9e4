package nats

// RequestsSent returns how many messages b's connection has sent since
// Start. Every stream read (a History step) is one request, so tests count
// a History call's reads with it.
func (b *Broker) RequestsSent() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.nc.Stats().OutMsgs
}
