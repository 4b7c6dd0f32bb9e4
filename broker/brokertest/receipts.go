package brokertest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/broker"
)

// RunReceipts runs the suite of broker.Receipts against brokers from
// newBroker, which must implement it; shared as for RunQueue. TakeDue
// sees every check of the brokers' backing service, so with shared set
// the brokers of one subtest must share it with no other subtest (see
// OnePerSubtest).
func RunReceipts(t *testing.T, newBroker func(t *testing.T) broker.Broker, shared bool) {
	tests := []struct {
		name string
		fn   func(t *testing.T, e *receiptsEnv)
	}{
		{"DeliveredClientsArePendingUntilTheyAck", testReceiptsPending},
		{"AcksAreCumulativeWithinAnEpoch", testReceiptsCumulative},
		{"AckCountsForEveryConnectionOfItsUser", testReceiptsUsers},
		{"DeliveriesOfEveryNodeAreMerged", testReceiptsMerged},
		{"RecordsExpireAfterKeep", testReceiptsExpire},
		{"ChecksComeDueWithTheirPendingClients", testReceiptsDue},
		{"LeaseHoldsThenEndsAndDoneRemoves", testReceiptsLease},
		{"TakeDueRespectsMax", testReceiptsMax},
		{"ConcurrentTakersNeverShareALease", testReceiptsConcurrent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 4*Timeout)
			t.Cleanup(cancel)
			e := &receiptsEnv{t: t, ctx: ctx, ch: uniquePrefix(t) + "chat:room-1@a=b,c", epoch: broker.NewEpoch()}
			e.r = startAbility[broker.Receipts](ctx, t, newBroker)
			e.other = e.r
			if shared {
				e.other = startAbility[broker.Receipts](ctx, t, newBroker) // another node
			}
			tt.fn(t, e)
		})
	}
}

// startAbility starts a broker from newBroker, closed when the test ends,
// and returns it as the optional ability T it must have.
func startAbility[T any](ctx context.Context, t *testing.T, newBroker func(t *testing.T) broker.Broker) T {
	t.Helper()
	b := newBroker(t)
	if err := b.Start(ctx, newRecorder()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	a, ok := b.(T)
	if !ok {
		t.Fatalf("%T is no %v", b, reflect.TypeFor[T]())
	}
	return a
}

// receiptsEnv is one receipts subtest's brokers (other is a second node
// when shared, else r again), channel and epoch.
type receiptsEnv struct {
	t     *testing.T
	ctx   context.Context
	r     broker.Receipts
	other broker.Receipts
	ch    string
	epoch string
}

// long is a keep, lease or due time that outlasts every subtest.
const long = time.Hour

func (e *receiptsEnv) off(seq uint64) broker.Offset { return broker.Offset{Epoch: e.epoch, Seq: seq} }

// clients parses "c1/alice c2/" into clients, each with a transport and
// info the broker must not hand back.
func clients(s string) []broker.ClientInfo {
	var out []broker.ClientInfo
	for _, f := range strings.Fields(s) {
		id, user, _ := strings.Cut(f, "/")
		out = append(out, broker.ClientInfo{Client: id, User: user, Transport: "websocket", Info: []byte(`{"x":1}`)})
	}
	return out
}

// describe is the inverse of clients, for comparison; it also reports
// fields that should not be there.
func describe(cs []broker.ClientInfo) string {
	var b strings.Builder
	for i, c := range cs {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(c.Client + "/" + c.User)
		if c.Transport != "" || c.Info != nil {
			b.WriteString("(with transport or info)")
		}
	}
	return b.String()
}

func (e *receiptsEnv) delivered(r broker.Receipts, off broker.Offset, who string, due time.Time, keep time.Duration) {
	e.t.Helper()
	if err := r.Delivered(e.ctx, e.ch, off, clients(who), due, keep); err != nil {
		e.t.Fatalf("Delivered(%v, %s): %v", off, who, err)
	}
}

func (e *receiptsEnv) ack(r broker.Receipts, who string, off broker.Offset, keep time.Duration) {
	e.t.Helper()
	if err := r.Acked(e.ctx, e.ch, clients(who)[0], off, keep); err != nil {
		e.t.Fatalf("Acked(%s, %v): %v", who, off, err)
	}
}

// receipts returns off's receipts as "acked | pending", or "not found".
func (e *receiptsEnv) receipts(r broker.Receipts, off broker.Offset) string {
	e.t.Helper()
	return e.receiptsOf(r, e.ch, off)
}

func (e *receiptsEnv) receiptsOf(r broker.Receipts, ch string, off broker.Offset) string {
	e.t.Helper()
	st, found, err := r.Receipts(e.ctx, ch, off)
	if err != nil {
		e.t.Fatalf("Receipts(%v): %v", off, err)
	}
	if !found {
		if len(st.Acked)+len(st.Pending) > 0 {
			return "not found, yet with clients"
		}
		return "not found"
	}
	return describe(st.Acked) + " | " + describe(st.Pending)
}

func (e *receiptsEnv) want(r broker.Receipts, off broker.Offset, want string) {
	e.t.Helper()
	if got := e.receipts(r, off); got != want {
		e.t.Fatalf("Receipts(%v) = %q, want %q", off, got, want)
	}
}

func (e *receiptsEnv) take(r broker.Receipts, max int, lease time.Duration) []broker.DueCheck {
	e.t.Helper()
	ds, err := r.TakeDue(e.ctx, max, lease)
	if err != nil {
		e.t.Fatalf("TakeDue: %v", err)
	}
	return ds
}

func (e *receiptsEnv) done(r broker.Receipts, d broker.DueCheck) {
	e.t.Helper()
	if err := r.DoneDue(e.ctx, d); err != nil {
		e.t.Fatalf("DoneDue(%v %s): %v", d.Offset, d.ID, err)
	}
}

// checkString describes a check for comparison: offset and pending.
func checkString(d broker.DueCheck) string {
	return fmt.Sprintf("%d: %s", d.Offset.Seq, describe(d.Pending))
}

func checkStrings(ds []broker.DueCheck) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = checkString(d)
	}
	slices.Sort(out)
	return out
}

func testReceiptsPending(t *testing.T, e *receiptsEnv) {
	off := e.off(7)
	e.delivered(e.r, off, "c3/bob c1/alice c2/", time.Now().Add(long), long)
	e.want(e.r, off, " | c1/alice c2/ c3/bob")
	// Offsets, epochs and channels never delivered are not found.
	for _, other := range []broker.Offset{e.off(6), e.off(8), {Epoch: broker.NewEpoch(), Seq: 7}} {
		e.want(e.r, other, "not found")
	}
	if got := e.receiptsOf(e.r, e.ch+"x", off); got != "not found" {
		t.Fatalf("another channel's Receipts = %q", got)
	}
	e.ack(e.r, "c2/", off, long)
	e.want(e.r, off, "c2/ | c1/alice c3/bob")
	e.ack(e.other, "c3/bob", off, long) // from another node
	e.want(e.r, off, "c2/ c3/bob | c1/alice")
	e.want(e.other, off, "c2/ c3/bob | c1/alice")
}

func testReceiptsCumulative(t *testing.T, e *receiptsEnv) {
	far := time.Now().Add(long)
	o1, o2, o3 := e.off(3), e.off(5), e.off(9)
	p1 := broker.Offset{Epoch: broker.NewEpoch(), Seq: 1} // another epoch
	for _, o := range []broker.Offset{o1, o2, o3, p1} {
		e.delivered(e.r, o, "c1/ c2/", far, long)
	}
	e.ack(e.r, "c1/", o2, long)
	e.want(e.r, o1, "c1/ | c2/")
	e.want(e.r, o2, "c1/ | c2/")
	e.want(e.r, o3, " | c1/ c2/")
	e.want(e.r, p1, " | c1/ c2/")
	// A lower Ack changes nothing.
	e.ack(e.r, "c1/", o1, long)
	e.want(e.r, o2, "c1/ | c2/")
	// Another epoch's Ack counts in that epoch only.
	e.ack(e.other, "c1/", p1, long)
	e.want(e.r, p1, "c1/ | c2/")
	e.want(e.r, o2, "c1/ | c2/")
	e.want(e.r, o3, " | c1/ c2/")
	e.ack(e.r, "c1/", o3, long)
	e.want(e.r, o3, "c1/ | c2/")
	e.ack(e.r, "c2/", e.off(4), long) // between o1 and o2, never delivered
	e.want(e.r, o1, "c1/ c2/ | ")
	e.want(e.r, o2, "c1/ | c2/")
}

func testReceiptsUsers(t *testing.T, e *receiptsEnv) {
	off := e.off(2)
	e.delivered(e.r, off, "c1/alice c2/alice c3/ c4/ c5/bob", time.Now().Add(long), long)
	// A later connection of alice's acknowledges: it counts for all of
	// hers. It is not listed itself: off was not delivered to it.
	e.ack(e.other, "c9/alice", off, long)
	e.want(e.r, off, "c1/alice c2/alice | c3/ c4/ c5/bob")
	// Anonymous clients share no user.
	e.ack(e.r, "c3/", off, long)
	e.want(e.r, off, "c1/alice c2/alice c3/ | c4/ c5/bob")
	// A user's Ack of an earlier offset leaves later ones pending.
	later := e.off(3)
	e.delivered(e.r, later, "c1/alice c5/bob", time.Now().Add(long), long)
	e.ack(e.r, "c5/bob", off, long)
	e.want(e.r, off, "c1/alice c2/alice c3/ c5/bob | c4/")
	e.want(e.r, later, " | c1/alice c5/bob")
}

func testReceiptsMerged(t *testing.T, e *receiptsEnv) {
	off := e.off(4)
	far := time.Now().Add(long)
	e.delivered(e.r, off, "c2/ c1/alice", far, long)
	e.delivered(e.other, off, "c3/bob", far, long)
	e.want(e.r, off, " | c1/alice c2/ c3/bob")
	e.want(e.other, off, " | c1/alice c2/ c3/bob")
	e.ack(e.r, "c3/bob", off, long)
	e.want(e.other, off, "c3/bob | c1/alice c2/")
}

func testReceiptsExpire(t *testing.T, e *receiptsEnv) {
	const short = 800 * time.Millisecond
	start := time.Now()
	gone, kept, dropped := e.off(5), e.off(2), e.off(6)
	e.delivered(e.r, gone, "c1/", time.Now().Add(long), short)
	e.delivered(e.r, kept, "c1/ c2/", time.Now().Add(long), long)
	e.ack(e.r, "c1/", kept, short)
	e.ack(e.r, "c2/", kept, long)
	// A check comes due at once, but nobody takes it before its keep
	// ends: it is dropped with its delivery.
	e.delivered(e.r, dropped, "c3/", time.Now().Add(-time.Second), short)
	if time.Since(start) < short-100*time.Millisecond {
		e.want(e.r, gone, " | c1/")
		e.want(e.r, kept, "c1/ c2/ | ")
		e.want(e.r, dropped, " | c3/")
	}
	waitFor(t, func() error {
		if got := e.receipts(e.r, gone); got != "not found" {
			return fmt.Errorf("Receipts of a delivery past its keep = %q", got)
		}
		if got := e.receipts(e.r, dropped); got != "not found" {
			return fmt.Errorf("Receipts of a delivery past its keep = %q", got)
		}
		// c1's Ack expired: pending again.
		if got := e.receipts(e.other, kept); got != "c2/ | c1/" {
			return fmt.Errorf("Receipts after c1's Ack expired = %q", got)
		}
		return nil
	})
	if ds := e.take(e.other, 10, long); len(ds) != 0 {
		t.Fatalf("TakeDue gave checks past their keep: %v", checkStrings(ds))
	}
}

func testReceiptsDue(t *testing.T, e *receiptsEnv) {
	due := time.Now().Add(time.Second)
	first, second, third := e.off(1), e.off(2), e.off(3)
	e.delivered(e.r, first, "c3/ c1/alice c2/", due, long)
	e.delivered(e.other, first, "c4/", due, long) // another node's check of the same offset
	e.delivered(e.r, second, "c5/", due, long)
	e.delivered(e.r, third, "c6/", time.Time{}, long) // no check
	e.ack(e.r, "c2/", first, long)
	e.ack(e.other, "c5/", second, long)
	got := e.take(e.r, 10, long)
	if time.Now().Before(due) && len(got) != 0 {
		t.Fatalf("TakeDue before the due time gave %v", checkStrings(got))
	}
	var firstTaken time.Time
	if len(got) > 0 {
		firstTaken = time.Now()
	}
	waitFor(t, func() error {
		ds := e.take(e.other, 10, long)
		if len(ds) > 0 && firstTaken.IsZero() {
			firstTaken = time.Now()
		}
		if got = append(got, ds...); len(got) < 3 {
			return fmt.Errorf("%d checks taken, want 3", len(got))
		}
		return nil
	})
	if early := due.Sub(firstTaken); early > 50*time.Millisecond {
		t.Fatalf("a check came due %v before its due time", early)
	}
	// Each check has its own Delivered call's clients that are still
	// pending; the check whose every client acknowledged comes too.
	want := []string{"1: c1/alice c3/", "1: c4/", "2: "}
	if s := checkStrings(got); !slices.Equal(s, want) {
		t.Fatalf("due checks %q, want %q", s, want)
	}
	ids := map[string]bool{}
	for _, d := range got {
		if d.Channel != e.ch || d.Offset.Epoch != e.epoch || d.ID == "" || d.Lease == "" || ids[d.ID] {
			t.Fatalf("check %+v: want channel %q, epoch %q, an ID of its own and a lease", d, e.ch, e.epoch)
		}
		ids[d.ID] = true
	}
	for _, d := range got {
		e.done(e.r, d)
	}
	if ds := e.take(e.r, 10, time.Millisecond); len(ds) != 0 {
		t.Fatalf("after DoneDue of every check: %v", checkStrings(ds))
	}
}

func testReceiptsLease(t *testing.T, e *receiptsEnv) {
	off := e.off(1)
	e.delivered(e.r, off, "c1/ c2/", time.Now().Add(-time.Second), long)
	const lease = time.Second
	var first []broker.DueCheck
	takenAt := time.Now()
	first = e.take(e.r, 10, lease)
	if len(first) != 1 || checkString(first[0]) != "1: c1/ c2/" {
		t.Fatalf("TakeDue = %v, want the check of offset 1", checkStrings(first))
	}
	if ds := e.take(e.other, 10, long); time.Since(takenAt) < lease-100*time.Millisecond && len(ds) != 0 {
		t.Fatalf("taken again within its lease: %v", checkStrings(ds))
	}
	// Its taker dies: once the lease ends, another node takes it.
	e.ack(e.r, "c2/", off, long)
	var second []broker.DueCheck
	waitFor(t, func() error {
		if second = e.take(e.other, 10, long); len(second) == 0 {
			return errors.New("not taken again after its lease ended")
		}
		return nil
	})
	if time.Since(takenAt) < lease-50*time.Millisecond {
		t.Fatalf("taken again %v after a lease of %v", time.Since(takenAt), lease)
	}
	if len(second) != 1 || second[0].ID != first[0].ID || second[0].Lease == first[0].Lease || checkString(second[0]) != "1: c1/" {
		t.Fatalf("taken again as %+v, want the same check (%s), a new lease and c1 pending only", second, first[0].ID)
	}
	if err := e.r.DoneDue(e.ctx, first[0]); !errors.Is(err, broker.ErrLeaseLost) {
		t.Fatalf("DoneDue by the first taker: %v, want ErrLeaseLost", err)
	}
	e.done(e.other, second[0])
	if err := e.r.DoneDue(e.ctx, second[0]); !errors.Is(err, broker.ErrLeaseLost) {
		t.Fatalf("DoneDue of a check done already: %v, want ErrLeaseLost", err)
	}
	// A lease that ended, with nobody taking the check again, still
	// lets its taker finish it.
	e.delivered(e.r, e.off(2), "c3/", time.Now().Add(-time.Second), long)
	ds := e.take(e.r, 10, time.Millisecond)
	if len(ds) != 1 || checkString(ds[0]) != "2: c3/" {
		t.Fatalf("TakeDue = %v, want the check of offset 2", checkStrings(ds))
	}
	e.done(e.r, ds[0])
	if ds := e.take(e.other, 10, long); len(ds) != 0 {
		t.Fatalf("a check done after its lease ended is taken again: %v", checkStrings(ds))
	}
}

func testReceiptsMax(t *testing.T, e *receiptsEnv) {
	for i := range 5 {
		e.delivered(e.r, e.off(uint64(i+1)), "c1/", time.Now().Add(-time.Second), long)
	}
	if ds := e.take(e.r, 0, long); len(ds) != 0 {
		t.Fatalf("TakeDue(0) gave %d checks", len(ds))
	}
	if ds := e.take(e.r, 2, long); len(ds) != 2 {
		t.Fatalf("TakeDue(2) gave %d checks of 5", len(ds))
	}
	if ds := e.take(e.other, 10, long); len(ds) != 3 {
		t.Fatalf("then TakeDue(10) gave %d checks, want the 3 left", len(ds))
	}
	if ds := e.take(e.r, 10, long); len(ds) != 0 {
		t.Fatalf("then TakeDue gave %d checks, want none: all leased", len(ds))
	}
}

// Takers on both nodes at once: every check is taken once, as its
// lease outlasts the test.
func testReceiptsConcurrent(t *testing.T, e *receiptsEnv) {
	const checks, takers = 30, 4
	for i := range checks {
		e.delivered(e.r, e.off(uint64(i+1)), "c1/", time.Now().Add(-time.Second), long)
	}
	var (
		mu     sync.Mutex
		taken  = map[string]int{}
		failed error
		wg     sync.WaitGroup
	)
	deadline := time.Now().Add(2 * Timeout)
	for i := range takers {
		r := e.r
		if i%2 == 1 {
			r = e.other
		}
		wg.Go(func() {
			for time.Now().Before(deadline) {
				mu.Lock()
				n := len(taken)
				mu.Unlock()
				if n >= checks {
					return
				}
				ds, err := r.TakeDue(e.ctx, 3, long)
				mu.Lock()
				if err != nil {
					failed = err
				}
				for _, d := range ds {
					taken[d.ID]++
				}
				mu.Unlock()
				if err != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	if failed != nil {
		t.Fatal(failed)
	}
	if len(taken) != checks {
		t.Fatalf("%d checks taken, want %d", len(taken), checks)
	}
	for id, n := range taken {
		if n != 1 {
			t.Errorf("check %s taken %d times within its lease", id, n)
		}
	}
}
