package brokertest

import (
	"context"
	"testing"

	"github.com/heraldhq/herald/broker"
)

// RunOccupancy runs the suite of broker.Occupancy against brokers from
// newBroker, which must implement it; shared as for RunQueue.
func RunOccupancy(t *testing.T, newBroker func(t *testing.T) broker.Broker, shared bool) {
	t.Run("OccupiedAndVacatedAlternate", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(context.Background(), 2*Timeout)
		t.Cleanup(cancel)
		start := func() broker.Occupancy { return startAbility[broker.Occupancy](ctx, t, newBroker) }
		x := start()
		y := x
		if shared {
			y = start()
		}
		ch := uniquePrefix(t) + "room"
		// occupy returns the occupation it announced, or "".
		occupy := func(o broker.Occupancy, node string, wantAnnounce bool) string {
			t.Helper()
			occ, announce, err := o.Occupy(ctx, ch, node)
			if err != nil || announce != wantAnnounce || (announce && occ == "") {
				t.Fatalf("Occupy by %s: %q %v %v, want announce %v", node, occ, announce, err, wantAnnounce)
			}
			if !announce {
				return ""
			}
			return occ
		}
		vacate := func(o broker.Occupancy, node string, wantEmpty bool) {
			t.Helper()
			if empty, err := o.Vacate(ctx, ch, node); err != nil || empty != wantEmpty {
				t.Fatalf("Vacate by %s: %v %v, want empty %v", node, empty, err, wantEmpty)
			}
		}
		announce := func(o broker.Occupancy, wantOcc string, want bool) {
			t.Helper()
			occ, ok, err := o.AnnounceVacant(ctx, ch)
			if err != nil || ok != want || (want && occ != wantOcc) {
				t.Fatalf("AnnounceVacant: %q %v %v, want %q %v", occ, ok, err, wantOcc, want)
			}
		}
		announce(x, "", false) // never occupied
		first := occupy(x, "n1", true)
		occupy(y, "n2", false) // occupied already
		occupy(x, "n1", false) // again: changes nothing
		vacate(x, "n1", false) // n2 still has some
		announce(y, "", false)
		vacate(y, "n2", true)
		// Occupied again before the vacancy was announced: no new
		// occupation, and no vacancy to announce.
		occupy(y, "n2", false)
		announce(x, "", false)
		vacate(y, "n2", true)
		announce(x, first, true)
		announce(y, "", false) // once
		second := occupy(y, "n3", true)
		if second == first {
			t.Fatalf("two occupations named %q", first)
		}
		vacate(x, "n3", true)
		announce(y, second, true)
	})
}
