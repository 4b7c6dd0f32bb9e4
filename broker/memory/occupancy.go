package memory

import (
	"context"
	"sync"

	"github.com/heraldhq/herald/broker"
)

var _ broker.Occupancy = (*Broker)(nil)

// occupancy is the broker's broker.Occupancy, in the process.
type occupancy struct {
	mu       sync.Mutex
	channels map[string]*occupied
}

type occupied struct {
	nodes      map[string]struct{}
	occupation string // the latest announced occupation; "" when vacant
}

func (o *occupancy) get(channel string) *occupied {
	if o.channels == nil {
		o.channels = make(map[string]*occupied)
	}
	c := o.channels[channel]
	if c == nil {
		c = &occupied{nodes: map[string]struct{}{}}
		o.channels[channel] = c
	}
	return c
}

// Occupy implements broker.Occupancy.
func (b *Broker) Occupy(_ context.Context, channel, node string) (string, bool, error) {
	b.occupancy.mu.Lock()
	defer b.occupancy.mu.Unlock()
	c := b.occupancy.get(channel)
	c.nodes[node] = struct{}{}
	if c.occupation != "" {
		return c.occupation, false, nil
	}
	c.occupation = newLease() // random: unique among the channel's occupations
	return c.occupation, true, nil
}

// Vacate implements broker.Occupancy.
func (b *Broker) Vacate(_ context.Context, channel, node string) (bool, error) {
	b.occupancy.mu.Lock()
	defer b.occupancy.mu.Unlock()
	c := b.occupancy.channels[channel]
	if c == nil {
		return true, nil
	}
	delete(c.nodes, node)
	return len(c.nodes) == 0, nil
}

// AnnounceVacant implements broker.Occupancy.
func (b *Broker) AnnounceVacant(_ context.Context, channel string) (string, bool, error) {
	b.occupancy.mu.Lock()
	defer b.occupancy.mu.Unlock()
	c := b.occupancy.channels[channel]
	if c == nil || len(c.nodes) > 0 || c.occupation == "" {
		return "", false, nil
	}
	delete(b.occupancy.channels, channel) // vacant and announced: nothing to keep
	return c.occupation, true, nil
}
