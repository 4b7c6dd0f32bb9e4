package nats_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/broker/brokertest"
)

// TestRegistryTwoNodesClaimAtOnce has two nodes claim dead nodes with
// several claimers each, all at once: every dead node is claimed once,
// with its entries, whatever characters its name and keys hold; the live
// node is never claimed; Forget leaves nothing of a node behind.
func TestRegistryTwoNodesClaimAtOnce(t *testing.T) {
	prefix := newPrefix(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*brokertest.Timeout)
	defer cancel()
	nodes, _ := twoNodes(ctx, t, prefix, "")
	// No node "": ClaimDead returns "" for none.
	dead := []string{"a.b", "*", ">", "a b", "ü", "a/b", "$x", "x\x00y"}
	for i := range 11 {
		dead = append(dead, fmt.Sprintf("n%d", i))
	}
	const living = "living"
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	// A ttl of 0: dead as soon as it beat.
	for _, n := range dead {
		must(nodes[0].Beat(ctx, n, 0))
		must(nodes[0].Put(ctx, n, "c.*>", []byte("entry of "+n)))
		must(nodes[0].Put(ctx, n, "", []byte("empty key of "+n)))
	}
	must(nodes[1].Beat(ctx, living, brokertest.Timeout))
	must(nodes[1].Put(ctx, living, "c", []byte("alive")))

	var (
		mu      sync.Mutex
		claimed = map[string]int{}
		wg      sync.WaitGroup
		start   = make(chan struct{})
	)
	for i := range 8 {
		r := nodes[i%2]
		wg.Go(func() {
			<-start
			for {
				node, entries, err := r.ClaimDead(ctx, brokertest.Timeout)
				if err != nil {
					t.Errorf("ClaimDead: %v", err)
					return
				}
				if node == "" {
					return
				}
				if len(entries) != 2 || string(entries["c.*>"]) != "entry of "+node || string(entries[""]) != "empty key of "+node {
					t.Errorf("node %q was claimed with %q", node, entries)
				}
				mu.Lock()
				claimed[node]++
				mu.Unlock()
			}
		})
	}
	close(start)
	wg.Wait()
	for _, n := range dead {
		if claimed[n] != 1 {
			t.Errorf("node %q claimed %d times, want once", n, claimed[n])
		}
	}
	if len(claimed) != len(dead) {
		t.Errorf("claimed %d nodes, want %d: %v", len(claimed), len(dead), claimed)
	}

	for _, n := range append(dead, living) {
		must(nodes[1].Forget(ctx, n))
	}
	s, err := jetStream(t).Stream(ctx, prefix+"-registry")
	must(err)
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(prefix+".reg.*.>"))
	must(err)
	if len(info.State.Subjects) != 0 {
		t.Errorf("left after Forget: %v", info.State.Subjects)
	}
}
