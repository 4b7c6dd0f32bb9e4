package brokertest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/heraldhq/herald/broker"
)

// RunRegistry runs the suite of broker.Registry against brokers from
// newBroker, which must implement it; shared as for RunQueue.
func RunRegistry(t *testing.T, newBroker func(t *testing.T) broker.Broker, shared bool) {
	t.Run("DeadNodeIsClaimedOnceWithItsEntries", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(context.Background(), 4*Timeout)
		t.Cleanup(cancel)
		start := func() broker.Registry { return startAbility[broker.Registry](ctx, t, newBroker) }
		a := start()
		b := a
		if shared {
			b = start() // another node's view of the same service
		}
		p := uniquePrefix(t)
		dying, living := p+"dying", p+"living"
		must := func(err error) {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
		}
		must(a.Beat(ctx, living, Timeout))
		must(a.Beat(ctx, dying, 300*time.Millisecond))
		must(a.Put(ctx, dying, "c1", []byte("one")))
		must(a.Put(ctx, dying, "c2", []byte("two")))
		must(a.Put(ctx, dying, "c2", []byte("two, changed")))
		must(a.Put(ctx, dying, "c3", []byte("three")))
		must(a.Delete(ctx, dying, "c3"))
		must(a.Put(ctx, living, "c9", []byte("alive")))

		// claims reports what ClaimDead gives of this subtest's nodes.
		claim := func(r broker.Registry, lease time.Duration) (string, map[string][]byte) {
			t.Helper()
			for {
				node, entries, err := r.ClaimDead(ctx, lease)
				must(err)
				if node == "" || node == dying || node == living {
					return node, entries
				}
				must(r.Forget(ctx, node)) // another subtest's or run's dead node
			}
		}
		var node string
		var entries map[string][]byte
		waitFor(t, func() error {
			if node, entries = claim(b, 400*time.Millisecond); node == "" {
				return errors.New("the dying node is not claimed once its beat expired")
			}
			return nil
		})
		if node != dying || len(entries) != 2 || string(entries["c1"]) != "one" || string(entries["c2"]) != "two, changed" {
			t.Fatalf("claimed %q with %q, want the dying node with c1 and the changed c2", node, entries)
		}
		// Claimed: nobody else gets it while the claim holds.
		if n, _ := claim(a, time.Second); n != "" {
			t.Fatalf("%q claimed twice while its claim held", n)
		}
		// The claimer dies too: once its claim ends, another claims it.
		waitFor(t, func() error {
			if n, _ := claim(a, time.Minute); n != dying {
				return fmt.Errorf("claimed %q after the first claim ended, want the dying node again", n)
			}
			return nil
		})
		must(a.Forget(ctx, dying))
		if n, _ := claim(b, time.Second); n != "" {
			t.Fatalf("%q claimed after it was forgotten", n)
		}
		must(a.Forget(ctx, living))
	})
	t.Run("NodeThatNeverBeatIsNotDead", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(context.Background(), Timeout)
		t.Cleanup(cancel)
		r := startAbility[broker.Registry](ctx, t, newBroker)
		// A node starting writes entries before its first beat, and one
		// thought dead and forgotten may still delete one: neither makes
		// it dead.
		quiet := uniquePrefix(t) + "quiet"
		if err := r.Put(ctx, quiet, "c1", []byte("one")); err != nil {
			t.Fatal(err)
		}
		if err := r.Delete(ctx, quiet, "c2"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = r.Forget(context.Background(), quiet) })
		// Other subtests' and runs' dead nodes are claimed too, for a
		// lease short enough not to hold them up: once one comes again,
		// every dead node was seen.
		seen := map[string]bool{}
		for {
			node, _, err := r.ClaimDead(ctx, time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			if node == quiet {
				t.Fatalf("%q claimed as dead before it ever beat", node)
			}
			if node == "" || seen[node] {
				return
			}
			seen[node] = true
		}
	})
}
