package nats_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/broker/brokertest"
	"github.com/heraldhq/herald/broker/nats"
)

// TestOccupancyTwoNodesAtOnce has several nodes on two connections occupy
// and vacate one channel at once, announcing what the calls tell them to:
// first in lock step (all occupy, then all vacate: one occupation a
// round), then freely. Every occupation is announced occupied once and
// vacated once, and the channel's record is gone at the end.
func TestOccupancyTwoNodesAtOnce(t *testing.T) {
	prefix := newPrefix(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*brokertest.Timeout)
	defer cancel()
	conns, _ := twoNodes(ctx, t, prefix, "")
	const (
		channel = "room.*>"
		workers = 8
		rounds  = 10
	)
	var (
		mu       sync.Mutex
		occupied = map[string]int{}
		vacated  = map[string]int{}
	)
	// record counts an announcement of occ in m, if there was one.
	record := func(m map[string]int, occ string, announce bool) {
		if announce {
			mu.Lock()
			m[occ]++
			mu.Unlock()
		}
	}
	occupy := func(b *nats.Broker, node string) bool {
		occ, announce, err := b.Occupy(ctx, channel, node)
		if err != nil {
			t.Errorf("Occupy by %s: %v", node, err)
			return false
		}
		record(occupied, occ, announce)
		return true
	}
	vacate := func(b *nats.Broker, node string) bool {
		empty, err := b.Vacate(ctx, channel, node)
		if err != nil {
			t.Errorf("Vacate by %s: %v", node, err)
			return false
		}
		if !empty {
			return true
		}
		occ, announce, err := b.AnnounceVacant(ctx, channel)
		if err != nil {
			t.Errorf("AnnounceVacant by %s: %v", node, err)
			return false
		}
		record(vacated, occ, announce)
		return true
	}
	// all runs step on every worker's node at once, half of them on each
	// connection.
	all := func(step func(b *nats.Broker, node string)) {
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range workers {
			wg.Go(func() {
				<-start
				step(conns[i%2], fmt.Sprintf("node %d", i))
			})
		}
		close(start)
		wg.Wait()
	}
	check := func(wantOccupations int) {
		t.Helper()
		mu.Lock()
		defer mu.Unlock()
		if wantOccupations > 0 && len(occupied) != wantOccupations {
			t.Errorf("%d occupations announced, want %d", len(occupied), wantOccupations)
		}
		for occ, n := range occupied {
			if n != 1 || vacated[occ] != 1 {
				t.Errorf("occupation %q announced occupied %d times and vacated %d times, want once each", occ, n, vacated[occ])
			}
		}
		for occ, n := range vacated {
			if occupied[occ] == 0 {
				t.Errorf("occupation %q announced vacated %d times, never occupied", occ, n)
			}
		}
	}

	for range rounds {
		all(func(b *nats.Broker, node string) { occupy(b, node) })
		all(func(b *nats.Broker, node string) { vacate(b, node) })
	}
	check(rounds)
	if t.Failed() {
		return
	}
	all(func(b *nats.Broker, node string) {
		for range rounds {
			if !occupy(b, node) || !vacate(b, node) {
				return
			}
		}
	})
	check(0)
	t.Logf("%d occupations", len(occupied))

	s, err := jetStream(t).Stream(ctx, prefix+"-registry")
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(prefix+".reg.occ.>"))
	if err != nil {
		t.Fatal(err)
	}
	if len(info.State.Subjects) != 0 {
		t.Errorf("left of a vacant channel: %v", info.State.Subjects)
	}
}
