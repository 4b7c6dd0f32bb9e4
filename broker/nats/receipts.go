package nats

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/broker"
)

var _ broker.Receipts = (*Broker)(nil)

// Layout of receipts under prefix P, in one stream, made on first use,
// that keeps the last message of each subject for at most
// Config.ReceiptTTL (its MaxAge). A channel C, an epoch E, a client and a
// user are the subject tokens c<base64url(C)>, e<base64url(E)>,
// c<base64url(client)> and u<base64url(user)>; S is an offset's sequence
// and I a Delivered call's random ID, which names its check.
//
//	stream P-receipts
//	  P.rc.d.C.E.S.I.N    part N (from 0) of the clients of Delivered call
//	                      I (rcDelivery, JSON): a call's clients are split
//	                      in parts of at most 256 KiB; part 0 says how
//	                      many there are.
//	  P.rc.a.C.E.K        the highest sequence of epoch E that client or
//	                      user K acknowledged (rcAck, JSON).
//	  P.rc.due.T.C.E.S.I  the check of call I, due at T (Unix ms): the
//	                      lease it is held under, as a duration from the
//	                      message's timestamp ("0s" until taken).
//	  P.rc.clock          written by TakeDue to read the server's time.
//
// Keep: every record carries when it expires (Unix ms, by the clock of
// the node that wrote it), and counts for nothing after that; the
// stream's MaxAge removes it for good, so keep is capped to ReceiptTTL.
// Due times are the calling node's too (Delivered is given one);
// leases end by the server's clock, as the work queues' do (queue.go).
//
// Leases: TakeDue lists the due subjects (one stream-info request), and,
// earliest first, for each whose time came reads its lease and writes a
// new one with the expected-last-subject-sequence check set to the one it
// read: of two nodes taking one check at once, one wins and the other
// passes it over. The new lease message's sequence is the DueCheck's
// Lease; DoneDue deletes exactly that message, which fails once the check
// was taken again (a newer lease replaced it): ErrLeaseLost. Acked writes
// with the same check, so a lower acknowledgement never overwrites a
// higher one written at once.
//
// Cost: Delivered publishes its parts and its check at once, one round
// trip. Acked reads and writes one record, two with a user. Receipts reads
// the offset's parts and the channel epoch's acknowledgements, each with
// one short-lived consumer. TakeDue is the listing, two requests for the
// server's time, and for each check it takes: its lease read and
// written, its part 0 read, and one consumer per channel and epoch for
// the acknowledgements.

// rcDelivery is a part of one Delivered call's clients.
type rcDelivery struct {
	Expires int64    `json:"exp"`             // Unix ms
	Parts   int      `json:"parts,omitempty"` // in part 0: how many parts there are
	Clients []string `json:"clients"`         // client, user, client, user, …
}

// rcAck is the highest sequence of an epoch acknowledged by a client, or
// by a user's connections.
type rcAck struct {
	Seq     uint64 `json:"seq"`
	Expires int64  `json:"exp"` // Unix ms
}

// maxPartBytes bounds a part of a Delivered call's clients, well under
// NATS' default max payload (1 MiB).
const maxPartBytes = 256 << 10

// ReceiptsStreamName returns the name of the receipts' stream, for
// operators and tests.
func (b *Broker) ReceiptsStreamName() string { return b.cfg.Prefix + "-receipts" }

// receipts returns the JetStream handle and the receipts' stream, making
// the stream on first use.
func (b *Broker) receipts(ctx context.Context) (jetstream.JetStream, jetstream.Stream, error) {
	return b.lazyStream(ctx, &b.rcstream, jetstream.StreamConfig{
		Name:              b.ReceiptsStreamName(),
		Subjects:          []string{b.cfg.Prefix + ".rc.>"},
		Storage:           jetstream.FileStorage,
		MaxMsgsPerSubject: 1,
		MaxAge:            b.cfg.ReceiptTTL,
		MaxBytes:          b.cfg.MaxBytes,
	})
}

// rcSubject joins tokens under P.rc.
func (b *Broker) rcSubject(tokens ...string) string {
	return b.cfg.Prefix + ".rc." + strings.Join(tokens, ".")
}

// offsetTokens are the channel, epoch and sequence tokens of off in
// channel.
func offsetTokens(channel string, off broker.Offset) (ch, epoch, seq string) {
	return "c" + token(channel), "e" + token(off.Epoch), strconv.FormatUint(off.Seq, 10)
}

// Delivered implements broker.Receipts; keep is capped to
// Config.ReceiptTTL.
func (b *Broker) Delivered(ctx context.Context, channel string, off broker.Offset, clients []broker.ClientInfo, due time.Time, keep time.Duration) error {
	if len(clients) == 0 {
		return nil
	}
	js, _, err := b.receipts(ctx)
	if err != nil {
		return err
	}
	ch, epoch, seq := offsetTokens(channel, off)
	id := newLease()
	expires := time.Now().Add(min(keep, b.cfg.ReceiptTTL)).UnixMilli()
	parts := splitClients(clients, maxPartBytes)
	var msgs []*natsgo.Msg
	for i, part := range parts {
		rec := rcDelivery{Expires: expires, Clients: part}
		if i == 0 {
			rec.Parts = len(parts)
		}
		data, err := json.Marshal(rec)
		if err != nil {
			return fmt.Errorf("nats broker: receipts of %s: %w", channel, err)
		}
		msgs = append(msgs, &natsgo.Msg{Subject: b.rcSubject("d", ch, epoch, seq, id, strconv.Itoa(i)), Data: data})
	}
	if !due.IsZero() {
		subj := b.rcSubject("due", strconv.FormatInt(due.UnixMilli(), 10), ch, epoch, seq, id)
		msgs = append(msgs, &natsgo.Msg{Subject: subj, Data: []byte("0s")})
	}
	if err := publishAll(ctx, js, msgs); err != nil {
		return b.wrap("receipts of "+channel+": delivered", err)
	}
	return nil
}

// splitClients flattens clients to client, user pairs, in parts of about
// maxBytes at most.
func splitClients(clients []broker.ClientInfo, maxBytes int) [][]string {
	var parts [][]string
	var part []string
	size := 0
	for _, c := range clients {
		n := len(c.Client) + len(c.User) + 6 // quotes and commas
		if len(part) > 0 && size+n > maxBytes {
			parts, part, size = append(parts, part), nil, 0
		}
		part = append(part, c.Client, c.User)
		size += n
	}
	return append(parts, part)
}

// publishAll publishes msgs at once and waits until the stream stored
// each.
func publishAll(ctx context.Context, js jetstream.JetStream, msgs []*natsgo.Msg) error {
	acks := make([]jetstream.PubAckFuture, 0, len(msgs))
	for _, m := range msgs {
		f, err := js.PublishMsgAsync(m)
		if err != nil {
			return err
		}
		acks = append(acks, f)
	}
	for _, f := range acks {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// Acked implements broker.Receipts; keep is capped to Config.ReceiptTTL.
func (b *Broker) Acked(ctx context.Context, channel string, c broker.ClientInfo, off broker.Offset, keep time.Duration) error {
	js, rs, err := b.receipts(ctx)
	if err != nil {
		return err
	}
	ch, epoch, _ := offsetTokens(channel, off)
	records := []string{"c" + token(c.Client)}
	if c.User != "" {
		records = append(records, "u"+token(c.User))
	}
	keep = min(keep, b.cfg.ReceiptTTL)
	for _, rec := range records {
		if err := b.raiseAck(ctx, js, rs, b.rcSubject("a", ch, epoch, rec), off.Seq, keep); err != nil {
			return b.wrap("receipts of "+channel+": acked", err)
		}
	}
	return nil
}

// raiseAck records seq on subj unless a higher one is recorded, and
// not expired.
func (b *Broker) raiseAck(ctx context.Context, js jetstream.JetStream, rs jetstream.Stream, subj string, seq uint64, keep time.Duration) error {
	for range maxPublishAttempts {
		var cur rcAck
		m, err := readState(ctx, rs, subj, &cur)
		if err != nil {
			return err
		}
		now := time.Now()
		if m != nil && cur.covers(seq, now) {
			return nil
		}
		var last uint64
		if m != nil {
			last = m.Sequence
		}
		_, err = b.writeState(ctx, js, subj, rcAck{Seq: seq, Expires: now.Add(keep).UnixMilli()}, last)
		if !errors.Is(err, errStateChanged) {
			return err
		}
	}
	return fmt.Errorf("%d state conflicts in a row", maxPublishAttempts)
}

// covers reports whether a, not expired at now, acknowledges seq.
func (a rcAck) covers(seq uint64, now time.Time) bool {
	return a.Seq >= seq && a.Expires > now.UnixMilli()
}

// Receipts implements broker.Receipts.
func (b *Broker) Receipts(ctx context.Context, channel string, off broker.Offset) (broker.ReceiptState, bool, error) {
	_, rs, err := b.receipts(ctx)
	if err != nil {
		return broker.ReceiptState{}, false, err
	}
	ch, epoch, seq := offsetTokens(channel, off)
	parts, err := readLast(ctx, rs, b.rcSubject("d", ch, epoch, seq, "*", "*"))
	if err != nil {
		return broker.ReceiptState{}, false, b.wrap("receipts of "+channel, err)
	}
	now := time.Now()
	users := map[string]string{} // client → user
	for _, m := range parts {
		var d rcDelivery
		if err := json.Unmarshal(m.Data, &d); err != nil {
			return broker.ReceiptState{}, false, fmt.Errorf("nats broker: receipts of %s: %s: %w", channel, m.Subject, err)
		}
		if d.Expires <= now.UnixMilli() {
			continue
		}
		for i := 0; i+1 < len(d.Clients); i += 2 {
			users[d.Clients[i]] = d.Clients[i+1]
		}
	}
	if len(users) == 0 {
		return broker.ReceiptState{}, false, nil
	}
	acks, err := b.readAcks(ctx, rs, ch, epoch)
	if err != nil {
		return broker.ReceiptState{}, false, b.wrap("receipts of "+channel, err)
	}
	var st broker.ReceiptState
	for _, client := range slices.Sorted(maps.Keys(users)) {
		c := broker.ClientInfo{Client: client, User: users[client]}
		if acks.acked(c, off.Seq, now) {
			st.Acked = append(st.Acked, c)
		} else {
			st.Pending = append(st.Pending, c)
		}
	}
	return st, true, nil
}

// ackRecords are a channel epoch's acknowledgements, by subject token
// (c<client> or u<user>).
type ackRecords map[string]rcAck

// acked reports whether c acknowledged seq, itself or through its user.
func (a ackRecords) acked(c broker.ClientInfo, seq uint64, now time.Time) bool {
	return a["c"+token(c.Client)].covers(seq, now) || c.User != "" && a["u"+token(c.User)].covers(seq, now)
}

// readAcks reads the acknowledgements of channel token ch in epoch token
// epoch.
func (b *Broker) readAcks(ctx context.Context, rs jetstream.Stream, ch, epoch string) (ackRecords, error) {
	msgs, err := readLast(ctx, rs, b.rcSubject("a", ch, epoch, "*"))
	if err != nil {
		return nil, err
	}
	acks := make(ackRecords, len(msgs))
	for _, m := range msgs {
		var a rcAck
		if err := json.Unmarshal(m.Data, &a); err != nil {
			return nil, fmt.Errorf("%s: %w", m.Subject, err)
		}
		acks[m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]] = a
	}
	return acks, nil
}

// readLast reads the last message of every subject of stream that
// matches filter, with a consumer of its own.
func readLast(ctx context.Context, stream jetstream.Stream, filter string) ([]jetstream.RawStreamMsg, error) {
	cons, err := stream.CreateConsumer(ctx, jetstream.ConsumerConfig{
		FilterSubject:     filter,
		DeliverPolicy:     jetstream.DeliverLastPerSubjectPolicy,
		AckPolicy:         jetstream.AckNonePolicy,
		InactiveThreshold: time.Minute, // should the deletion below fail
		MemoryStorage:     true,
	})
	if err != nil {
		return nil, err
	}
	info := cons.CachedInfo()
	defer func() { _ = stream.DeleteConsumer(context.WithoutCancel(ctx), info.Name) }()
	return fetchPending(ctx, cons, filter, info.NumPending)
}

// fetchPending reads what consumer cons (of filter) has to deliver, of
// which it counted pending when it was made.
func fetchPending(ctx context.Context, cons jetstream.Consumer, filter string, pending uint64) ([]jetstream.RawStreamMsg, error) {
	var out []jetstream.RawStreamMsg
	for pending > 0 {
		wait := 5 * time.Second
		if deadline, ok := ctx.Deadline(); ok {
			wait = min(wait, time.Until(deadline))
		}
		batch, err := cons.Fetch(int(min(pending, 1000)), jetstream.FetchMaxWait(max(wait, time.Millisecond)))
		if err != nil {
			return nil, err
		}
		got := 0
		for m := range batch.Messages() {
			md, err := m.Metadata()
			if err != nil {
				return nil, err
			}
			out = append(out, jetstream.RawStreamMsg{Subject: m.Subject(), Sequence: md.Sequence.Stream, Data: m.Data(), Time: md.Timestamp})
			pending = md.NumPending
			got++
		}
		if err := batch.Error(); err != nil {
			return nil, err
		}
		if got == 0 {
			// A message that expired (the stream's MaxAge) or was deleted
			// after the consumer counted it is never delivered: what is
			// left is what the consumer counts now.
			ci, err := cons.Info(ctx)
			if err != nil {
				return nil, fmt.Errorf("reading %s: %w", filter, err)
			}
			if ci.NumPending > 0 {
				return nil, fmt.Errorf("reading %s: %d messages pending, none delivered", filter, ci.NumPending)
			}
			pending = 0
		}
	}
	return out, nil
}

// dueEntry is a check listed by TakeDue.
type dueEntry struct {
	subject string
	due     int64 // Unix ms
	tokens  []string
}

// TakeDue implements broker.Receipts. A check whose delivery expired is
// dropped, not returned.
func (b *Broker) TakeDue(ctx context.Context, limit int, lease time.Duration) ([]broker.DueCheck, error) {
	if limit <= 0 {
		return nil, nil
	}
	js, rs, err := b.receipts(ctx)
	if err != nil {
		return nil, err
	}
	ready, err := b.dueEntries(ctx, rs, time.Now())
	if err != nil {
		return nil, b.wrap("receipts: take due", err)
	}
	t := &takingChecks{b: b, js: js, rs: rs, lease: lease, acks: map[string]ackRecords{}}
	var out []broker.DueCheck
	for _, e := range ready {
		if len(out) == limit {
			break
		}
		d, ok, err := t.take(ctx, e)
		if err != nil {
			return out, b.wrap("receipts: take due", err)
		}
		if ok {
			out = append(out, d)
		}
	}
	return out, nil
}

// dueEntries lists the checks whose due time is not after now, earliest
// first.
func (b *Broker) dueEntries(ctx context.Context, rs jetstream.Stream, now time.Time) ([]dueEntry, error) {
	info, err := rs.Info(ctx, jetstream.WithSubjectFilter(b.rcSubject("due", ">")))
	if err != nil {
		return nil, err
	}
	var ready []dueEntry
	for subj := range info.State.Subjects {
		tokens := strings.Split(subj, ".") // P.rc.due.T.C.E.S.I: no dot in P
		if len(tokens) != 8 {
			return nil, fmt.Errorf("malformed check subject %s", subj)
		}
		due, err := strconv.ParseInt(tokens[3], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("check subject %s: %w", subj, err)
		}
		if due <= now.UnixMilli() {
			ready = append(ready, dueEntry{subject: subj, due: due, tokens: tokens[4:]})
		}
	}
	slices.SortFunc(ready, func(x, y dueEntry) int { return cmp.Or(cmp.Compare(x.due, y.due), cmp.Compare(x.subject, y.subject)) })
	return ready, nil
}

// takingChecks is one TakeDue call.
type takingChecks struct {
	b     *Broker
	js    jetstream.JetStream
	rs    jetstream.Stream
	lease time.Duration
	now   time.Time             // the server's, read when first needed
	acks  map[string]ackRecords // by channel and epoch tokens
}

// take leases the check of e unless its lease holds or another taker
// comes first, and returns it with its pending clients.
func (t *takingChecks) take(ctx context.Context, e dueEntry) (broker.DueCheck, bool, error) {
	ch, epoch, seq, id := e.tokens[0], e.tokens[1], e.tokens[2], e.tokens[3]
	channel, ok1 := fromToken(ch, "c")
	epochName, ok2 := fromToken(epoch, "e")
	n, err := strconv.ParseUint(seq, 10, 64)
	if !ok1 || !ok2 || err != nil {
		return broker.DueCheck{}, false, fmt.Errorf("malformed check subject %s", e.subject)
	}
	held, err := readExpiry(ctx, t.rs, e.subject)
	if err != nil || held.seq == 0 {
		return broker.DueCheck{}, false, err // done meanwhile, or failed
	}
	if t.now.IsZero() {
		if t.now, err = t.b.serverNow(ctx, t.js, t.rs, t.b.rcSubject("clock")); err != nil {
			return broker.DueCheck{}, false, err
		}
	}
	if held.end.After(t.now) {
		return broker.DueCheck{}, false, nil // leased
	}
	ack, err := t.js.Publish(ctx, e.subject, []byte(t.lease.String()), jetstream.WithExpectLastSequencePerSubject(held.seq))
	if isSequenceConflict(err) {
		return broker.DueCheck{}, false, nil // another taker came first
	}
	if err != nil {
		return broker.DueCheck{}, false, err
	}
	d := broker.DueCheck{Channel: channel, Offset: broker.Offset{Epoch: epochName, Seq: n}, ID: id, Lease: strconv.FormatUint(ack.Sequence, 10)}
	clients, err := t.b.checkClients(ctx, t.rs, ch, epoch, seq, id)
	if err != nil {
		return broker.DueCheck{}, false, err
	}
	if clients == nil {
		// Its delivery expired: nothing left to check.
		if err := t.b.DoneDue(ctx, d); err != nil && !errors.Is(err, broker.ErrLeaseLost) {
			return broker.DueCheck{}, false, err
		}
		return broker.DueCheck{}, false, nil
	}
	acks, ok := t.acks[ch+"."+epoch]
	if !ok {
		if acks, err = t.b.readAcks(ctx, t.rs, ch, epoch); err != nil {
			return broker.DueCheck{}, false, err
		}
		t.acks[ch+"."+epoch] = acks
	}
	now := time.Now()
	for i := 0; i+1 < len(clients); i += 2 {
		c := broker.ClientInfo{Client: clients[i], User: clients[i+1]}
		if !acks.acked(c, n, now) {
			d.Pending = append(d.Pending, c)
		}
	}
	slices.SortFunc(d.Pending, func(x, y broker.ClientInfo) int { return cmp.Compare(x.Client, y.Client) })
	return d, true, nil
}

// checkClients reads the clients of Delivered call id, as client, user
// pairs; nil when its delivery expired.
func (b *Broker) checkClients(ctx context.Context, rs jetstream.Stream, ch, epoch, seq, id string) ([]string, error) {
	var clients []string
	for i, parts := 0, 1; i < parts; i++ {
		var d rcDelivery
		m, err := readState(ctx, rs, b.rcSubject("d", ch, epoch, seq, id, strconv.Itoa(i)), &d)
		if err != nil {
			return nil, err
		}
		if m == nil || d.Expires <= time.Now().UnixMilli() {
			return nil, nil
		}
		if i == 0 {
			parts = max(d.Parts, 1)
		}
		clients = append(clients, d.Clients...)
	}
	return clients, nil
}

// DoneDue implements broker.Receipts.
func (b *Broker) DoneDue(ctx context.Context, d broker.DueCheck) error {
	seq, err := strconv.ParseUint(d.Lease, 10, 64)
	if err != nil {
		return broker.ErrLeaseLost // not a lease TakeDue gave
	}
	_, rs, err := b.receipts(ctx)
	if err != nil {
		return err
	}
	err = rs.DeleteMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgDeleteUnsuccessful) || errors.Is(err, jetstream.ErrMsgNotFound) {
		return broker.ErrLeaseLost // taken again: a newer lease replaced it
	}
	if err != nil {
		return b.wrap("receipts: done due", err)
	}
	return nil
}
