package memory

import (
	"cmp"
	"context"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/heraldhq/herald/broker"
)

var _ broker.Receipts = (*Broker)(nil)

// receipts is the broker's broker.Receipts, in the process. Expired
// records are dropped when met and by the broker's sweep, which also
// rebuilds maps that shrank, so memory follows what is kept.
type receipts struct {
	mu       sync.Mutex
	channels sweptMap[string, *rcChannel]
	checks   sweptMap[string, *rcCheck] // by ID
	lastID   uint64
}

// rcChannel is one channel's deliveries and acknowledgements.
type rcChannel struct {
	deliveries sweptMap[broker.Offset, *rcDelivery]
	acks       sweptMap[ackKey, ackRecord]
}

// rcDelivery is who one offset was delivered to: client → user.
type rcDelivery struct {
	clients map[string]string
	expires time.Time
}

// ackKey names whose acknowledgements in an epoch a record holds: a
// client's, or (user set) every connection's of a user.
type ackKey struct {
	epoch string
	user  bool
	name  string
}

// ackRecord is the highest sequence acknowledged in the key's epoch.
type ackRecord struct {
	seq     uint64
	expires time.Time
}

// rcCheck is the check of one Delivered call.
type rcCheck struct {
	channel  string
	off      broker.Offset
	clients  []broker.ClientInfo // sorted by Client
	due      time.Time
	expires  time.Time
	lease    string    // "" until taken
	leaseEnd time.Time // when it may be taken again
}

// Delivered implements broker.Receipts.
func (b *Broker) Delivered(_ context.Context, channel string, off broker.Offset, clients []broker.ClientInfo, due time.Time, keep time.Duration) error {
	if len(clients) == 0 {
		return nil
	}
	rs := &b.receipts
	rs.mu.Lock()
	defer rs.mu.Unlock()
	now := b.now()
	expires := now.Add(keep)
	ch := rs.channelLocked(channel)
	d := ch.deliveries.m[off]
	if d == nil || !d.expires.After(now) {
		d = &rcDelivery{clients: make(map[string]string, len(clients))}
		ch.deliveries.set(off, d)
	}
	d.expires = later(d.expires, expires)
	for _, c := range clients {
		d.clients[c.Client] = c.User
	}
	if due.IsZero() {
		return nil
	}
	rs.lastID++
	rs.checks.set(strconv.FormatUint(rs.lastID, 10), &rcCheck{
		channel: channel, off: off, clients: sortedClients(clients), due: due, expires: expires,
	})
	return nil
}

// Acked implements broker.Receipts.
func (b *Broker) Acked(_ context.Context, channel string, c broker.ClientInfo, off broker.Offset, keep time.Duration) error {
	rs := &b.receipts
	rs.mu.Lock()
	defer rs.mu.Unlock()
	now := b.now()
	ch := rs.channelLocked(channel)
	keys := []ackKey{{epoch: off.Epoch, name: c.Client}}
	if c.User != "" {
		keys = append(keys, ackKey{epoch: off.Epoch, user: true, name: c.User})
	}
	for _, k := range keys {
		if ch.acks.m[k].covers(off.Seq, now) {
			continue // one as high is recorded
		}
		ch.acks.set(k, ackRecord{seq: off.Seq, expires: now.Add(keep)})
	}
	return nil
}

// Receipts implements broker.Receipts.
func (b *Broker) Receipts(_ context.Context, channel string, off broker.Offset) (broker.ReceiptState, bool, error) {
	rs := &b.receipts
	rs.mu.Lock()
	defer rs.mu.Unlock()
	now := b.now()
	ch := rs.channels.m[channel]
	if ch == nil {
		return broker.ReceiptState{}, false, nil
	}
	d := ch.deliveries.m[off]
	if d == nil || !d.expires.After(now) {
		return broker.ReceiptState{}, false, nil
	}
	var st broker.ReceiptState
	for _, id := range slices.Sorted(maps.Keys(d.clients)) {
		c := broker.ClientInfo{Client: id, User: d.clients[id]}
		if ch.acked(c, off, now) {
			st.Acked = append(st.Acked, c)
		} else {
			st.Pending = append(st.Pending, c)
		}
	}
	return st, true, nil
}

// TakeDue implements broker.Receipts. It takes the checks that came due
// first.
func (b *Broker) TakeDue(_ context.Context, limit int, lease time.Duration) ([]broker.DueCheck, error) {
	rs := &b.receipts
	rs.mu.Lock()
	defer rs.mu.Unlock()
	now := b.now()
	var ready []string
	for id, c := range rs.checks.m {
		switch {
		case !c.expires.After(now):
			delete(rs.checks.m, id)
		case !c.due.After(now) && !c.leaseEnd.After(now):
			ready = append(ready, id)
		}
	}
	slices.SortFunc(ready, func(x, y string) int {
		return cmp.Or(rs.checks.m[x].due.Compare(rs.checks.m[y].due), cmp.Compare(x, y))
	})
	var out []broker.DueCheck
	for _, id := range ready[:min(len(ready), max(limit, 0))] {
		c := rs.checks.m[id]
		c.lease, c.leaseEnd = newLease(), now.Add(lease)
		d := broker.DueCheck{Channel: c.channel, Offset: c.off, ID: id, Lease: c.lease}
		ch := rs.channels.m[c.channel]
		for _, cl := range c.clients {
			if ch == nil || !ch.acked(cl, c.off, now) {
				d.Pending = append(d.Pending, cl)
			}
		}
		out = append(out, d)
	}
	return out, nil
}

// DoneDue implements broker.Receipts.
func (b *Broker) DoneDue(_ context.Context, d broker.DueCheck) error {
	rs := &b.receipts
	rs.mu.Lock()
	defer rs.mu.Unlock()
	c := rs.checks.m[d.ID]
	if c == nil || c.lease == "" || c.lease != d.Lease {
		return broker.ErrLeaseLost
	}
	delete(rs.checks.m, d.ID)
	return nil
}

// acked reports whether c acknowledged off, itself or through its user.
func (ch *rcChannel) acked(c broker.ClientInfo, off broker.Offset, now time.Time) bool {
	return ch.acks.m[ackKey{epoch: off.Epoch, name: c.Client}].covers(off.Seq, now) ||
		c.User != "" && ch.acks.m[ackKey{epoch: off.Epoch, user: true, name: c.User}].covers(off.Seq, now)
}

// covers reports whether rec, not expired at now, acknowledges seq. The
// zero record (none) covers nothing.
func (rec ackRecord) covers(seq uint64, now time.Time) bool {
	return rec.expires.After(now) && rec.seq >= seq
}

// channelLocked returns channel's receipts, making them when needed; the
// caller holds rs.mu.
func (rs *receipts) channelLocked(channel string) *rcChannel {
	ch := rs.channels.m[channel]
	if ch == nil {
		ch = &rcChannel{}
		rs.channels.set(channel, ch)
	}
	return ch
}

// sweep drops every expired record and check, and channels left with
// none.
func (rs *receipts) sweep(now time.Time) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	for name, ch := range rs.channels.m {
		maps.DeleteFunc(ch.deliveries.m, func(_ broker.Offset, d *rcDelivery) bool { return !d.expires.After(now) })
		maps.DeleteFunc(ch.acks.m, func(_ ackKey, rec ackRecord) bool { return !rec.expires.After(now) })
		if len(ch.deliveries.m) == 0 && len(ch.acks.m) == 0 {
			delete(rs.channels.m, name)
			continue
		}
		ch.deliveries.shrink()
		ch.acks.shrink()
	}
	maps.DeleteFunc(rs.checks.m, func(_ string, c *rcCheck) bool { return !c.expires.After(now) })
	rs.channels.shrink()
	rs.checks.shrink()
}

// receiptsSize is what the receipts hold.
type receiptsSize struct {
	Channels, ChannelsPeak, Deliveries, Acks, Checks int
}

func (rs *receipts) size() receiptsSize {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	n := receiptsSize{Channels: len(rs.channels.m), ChannelsPeak: rs.channels.peak, Checks: len(rs.checks.m)}
	for _, ch := range rs.channels.m {
		n.Deliveries += len(ch.deliveries.m)
		n.Acks += len(ch.acks.m)
	}
	return n
}

// sortedClients returns clients' Client and User, sorted by Client.
func sortedClients(clients []broker.ClientInfo) []broker.ClientInfo {
	out := make([]broker.ClientInfo, len(clients))
	for i, c := range clients {
		out[i] = broker.ClientInfo{Client: c.Client, User: c.User}
	}
	slices.SortFunc(out, func(x, y broker.ClientInfo) int { return cmp.Compare(x.Client, y.Client) })
	return out
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// sweptMap is a map that its sweep rebuilds once it holds under a quarter
// of its peak: Go maps never give memory back, and a node that once held
// many entries must not keep their memory for good.
type sweptMap[K comparable, V any] struct {
	m    map[K]V
	peak int // most entries m held since it was made
}

// set sets m[k] to v, making m when needed.
func (s *sweptMap[K, V]) set(k K, v V) {
	if s.m == nil {
		s.m = make(map[K]V)
	}
	s.m[k] = v
	s.peak = max(s.peak, len(s.m))
}

// shrink rebuilds m when it shrank well below its peak.
func (s *sweptMap[K, V]) shrink() {
	const minRebuild = 64
	if s.peak < minRebuild || len(s.m) > s.peak/4 {
		return
	}
	m := make(map[K]V, len(s.m))
	maps.Copy(m, s.m) // not maps.Clone, which keeps the capacity
	s.m, s.peak = m, len(m)
}
