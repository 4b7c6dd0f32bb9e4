package memory

import (
	"context"
	"maps"
	"sync"
	"time"

	"github.com/heraldhq/herald/broker"
)

var _ broker.Registry = (*Broker)(nil)

// registry is the broker's broker.Registry, in the process: its nodes
// die with it, so it serves the nodes of one process (and tests).
type registry struct {
	mu    sync.Mutex
	nodes map[string]*regNode
}

type regNode struct {
	alive   time.Time // beat expiry; zero before the first beat: not dead
	claimed time.Time // claim expiry; zero when unclaimed
	entries map[string][]byte
}

func (r *registry) node(name string) *regNode {
	if r.nodes == nil {
		r.nodes = make(map[string]*regNode)
	}
	n := r.nodes[name]
	if n == nil {
		n = &regNode{entries: map[string][]byte{}}
		r.nodes[name] = n
	}
	return n
}

// Beat implements broker.Registry.
func (b *Broker) Beat(_ context.Context, node string, ttl time.Duration) error {
	b.registry.mu.Lock()
	defer b.registry.mu.Unlock()
	b.registry.node(node).alive = b.now().Add(ttl)
	return nil
}

// Put implements broker.Registry.
func (b *Broker) Put(_ context.Context, node, key string, value []byte) error {
	b.registry.mu.Lock()
	defer b.registry.mu.Unlock()
	b.registry.node(node).entries[key] = append([]byte(nil), value...)
	return nil
}

// Delete implements broker.Registry.
func (b *Broker) Delete(_ context.Context, node, key string) error {
	b.registry.mu.Lock()
	defer b.registry.mu.Unlock()
	if n := b.registry.nodes[node]; n != nil { // a forgotten node stays forgotten
		delete(n.entries, key)
	}
	return nil
}

// ClaimDead implements broker.Registry.
func (b *Broker) ClaimDead(_ context.Context, lease time.Duration) (string, map[string][]byte, error) {
	b.registry.mu.Lock()
	defer b.registry.mu.Unlock()
	now := b.now()
	for name, n := range b.registry.nodes {
		if n.alive.IsZero() || n.alive.After(now) || n.claimed.After(now) {
			continue
		}
		n.claimed = now.Add(lease)
		return name, maps.Clone(n.entries), nil
	}
	return "", nil, nil
}

// Forget implements broker.Registry.
func (b *Broker) Forget(_ context.Context, node string) error {
	b.registry.mu.Lock()
	defer b.registry.mu.Unlock()
	delete(b.registry.nodes, node)
	return nil
}
