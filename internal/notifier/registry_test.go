package notifier_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/memory"
	"github.com/heraldhq/herald/internal/notifier"
	"github.com/heraldhq/herald/webhook"
)

// slowQueue is a queue whose pushes take a while, like a broker far away.
type slowQueue struct {
	broker.Queue
	delay time.Duration
}

func (q slowQueue) Push(ctx context.Context, queue, key string, data []byte) error {
	select {
	case <-time.After(q.delay):
	case <-ctx.Done():
		return ctx.Err()
	}
	return q.Queue.Push(ctx, queue, key, data)
}

// beatLog is a registry that records when each node beats.
type beatLog struct {
	*memory.Broker
	mu    sync.Mutex
	beats map[string][]time.Time
}

func (r *beatLog) Beat(ctx context.Context, node string, ttl time.Duration) error {
	r.mu.Lock()
	r.beats[node] = append(r.beats[node], time.Now())
	r.mu.Unlock()
	return r.Broker.Beat(ctx, node, ttl)
}

// longestSilence is the longest time node went without a beat, up to now.
func (r *beatLog) longestSilence(node string) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	var longest time.Duration
	beats := append(r.beats[node], time.Now())
	for i := 1; i < len(beats); i++ {
		longest = max(longest, beats[i].Sub(beats[i-1]))
	}
	return longest
}

// A node reporting a large dead node keeps beating meanwhile: were it to
// fall silent for NodeTTL, the others would take it for dead too and
// report its live clients as lost.
func TestBeatsWhileReportingADeadNode(t *testing.T) {
	const clients, ttl = 20, 300 * time.Millisecond
	a, url := newApp(t)
	mem := startedMemory(t)
	reg := &beatLog{Broker: mem, beats: map[string][]time.Time{}}
	ctx := context.Background()
	if err := reg.Beat(ctx, "dead", time.Millisecond); err != nil {
		t.Fatal(err)
	}
	for i := range clients {
		b, _ := json.Marshal(map[string]any{"user": "u", "subs": map[string]int{"a": 1}})
		if err := reg.Put(ctx, "dead", fmt.Sprintf("c%d", i), b); err != nil {
			t.Fatal(err)
		}
	}
	// Each of the 2×clients pushes takes 30 ms: the report lasts 1.2 s,
	// four times NodeTTL.
	n := newNotifier(t, slowQueue{Queue: mem, delay: 30 * time.Millisecond}, url, nil, func(c *notifier.Config) {
		c.Registry, c.NodeTTL = reg, ttl
	})
	n.Start()
	t.Cleanup(func() { _ = n.Stop(context.Background()) })
	deadline := time.Now().Add(10 * time.Second)
	for lost := 0; lost < clients; {
		lost = 0
		a.mu.Lock()
		for _, e := range a.events {
			if e.Type == webhook.Disconnect && e.Reason == webhook.ReasonNodeLost {
				lost++
			}
		}
		a.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d lost clients reported", lost, clients)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if d := reg.longestSilence("n1"); d >= ttl {
		t.Fatalf("the reporting node went %v without a beat; NodeTTL is %v", d, ttl)
	}
}
