package nats

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	mathrand "math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/broker"
)

var _ broker.Queue = (*Broker)(nil)

// Layout of the work queues under prefix P. They are made on the first
// use of any queue (a node that uses none makes nothing). A queue Q and an
// item key K are the subject tokens q<base64url(Q)> and k<base64url(K)>.
//
//	stream P-queue-items  every item not yet acknowledged, one message on
//	                      P.qitem.Q.K: its stream sequence is the item's
//	                      ID, its timestamp when it was pushed. A key's
//	                      items are its subject's messages, oldest first.
//	                      No limits: only an Ack removes an item.
//	stream P-queue-keys   at most one message per subject:
//	  P.qkey.Q.K          key K's state (keyState, JSON): items before
//	                      sequence From are acknowledged; the lease on the
//	                      item at From, if taken, and how often it was
//	                      taken before; and Wait, after the message's
//	                      timestamp, before the key may be taken: the
//	                      end of a lease or a retry time. A key never
//	                      taken, or left without items, has no state.
//	  P.qkey.clock        written by Take to read the server's time.
//
// Several nodes at once: every change of a key's state is a publish with
// the expected-last-subject-sequence check set to the state message it
// was decided from. Of two nodes taking one key at once, or a late Ack and
// a new taker, one wins; the other sees a conflict (Take passes the key
// over; Ack and Retry read the state again and find the lease lost).
// Items are only appended (Push) and removed once the state has moved
// past them (Ack), so the state alone says which item is a key's head.
// Reads go to each stream's leader (no direct gets), so they see every
// acknowledged write.
//
// One clock: lease ends and retry times are a state message's timestamp
// plus its Wait, compared with the timestamp of a message Take writes to
// P.qkey.clock, all the server's (at most one such write per Take, and
// only when a key it looks at has a Wait). With a NATS cluster it is the
// clock of the server leading P-queue-keys: when another server takes
// over, lease ends and retry times move by the skew of the two clocks.
// Nodes' clocks play no part.
//
// Cost: Take lists the queue's keys that have items (one stream-info
// request that returns each subject's count, so it grows with the keys,
// not the items) and visits them in random order until it has max items:
// one read for a key passed over (leased, waiting), three for a key taken
// (its state, its head item, the claim). A webhook queue holds the keys of
// the clients with undelivered events. Len is the same listing, summed.
// Ack is four requests: the state, the new state, removing the item, and
// looking for the key's next item; and a fifth for a key left without
// items, deleting its state (only the message Ack wrote: one written since
// is kept). An Ack that fails after its new state leaves the item behind
// From: no Take gives it again, Len counts it until the key's next Ack
// removes it.

// queueStreams are the work queues' two streams.
type queueStreams struct {
	items jetstream.Stream
	keys  jetstream.Stream
}

// keyState is what a key's message in P-queue-keys says.
type keyState struct {
	From     uint64        `json:"from,omitempty"`
	Lease    string        `json:"lease,omitempty"`
	Attempts int           `json:"attempts,omitempty"`
	Wait     time.Duration `json:"wait,omitempty"`
}

// keyStateMsg is a key's state as read: its stream sequence (0 for a key
// without one) and the server's time it was written.
type keyStateMsg struct {
	keyState
	seq  uint64
	time time.Time
}

// ItemsStreamName and KeysStreamName return the names of the work queues'
// streams, for operators and tests.
func (b *Broker) ItemsStreamName() string { return b.cfg.Prefix + "-queue-items" }

// KeysStreamName: see ItemsStreamName.
func (b *Broker) KeysStreamName() string { return b.cfg.Prefix + "-queue-keys" }

// queueToken and keyToken are never empty, as subject tokens must not be.
func queueToken(queue string) string { return "q" + token(queue) }

func keyToken(key string) string { return "k" + token(key) }

func (b *Broker) itemSubject(queue, keyTok string) string {
	return b.cfg.Prefix + ".qitem." + queueToken(queue) + "." + keyTok
}

func (b *Broker) keySubject(queue, keyTok string) string {
	return b.cfg.Prefix + ".qkey." + queueToken(queue) + "." + keyTok
}

func (b *Broker) clockSubject() string { return b.cfg.Prefix + ".qkey.clock" }

// queues returns the JetStream handle and the queue streams, making the
// streams on first use.
func (b *Broker) queues(ctx context.Context) (jetstream.JetStream, *queueStreams, error) {
	b.mu.Lock()
	js, qs, closed := b.js, b.qstreams, b.closed
	b.mu.Unlock()
	if closed || js == nil {
		return nil, nil, fmt.Errorf("nats broker: %w: closed or not started", broker.ErrUnavailable)
	}
	if qs != nil {
		return js, qs, nil
	}
	b.queueMu.Lock()
	defer b.queueMu.Unlock()
	b.mu.Lock()
	qs = b.qstreams
	b.mu.Unlock()
	if qs != nil {
		return js, qs, nil
	}
	qs = &queueStreams{}
	p := b.cfg.Prefix
	for _, s := range []struct {
		stream *jetstream.Stream
		cfg    jetstream.StreamConfig
	}{
		{&qs.items, jetstream.StreamConfig{Name: b.ItemsStreamName(), Subjects: []string{p + ".qitem.*.*"}, Storage: jetstream.FileStorage}},
		{&qs.keys, jetstream.StreamConfig{Name: b.KeysStreamName(), Subjects: []string{p + ".qkey.*.*", b.clockSubject()},
			Storage: jetstream.FileStorage, MaxMsgsPerSubject: 1}},
	} {
		stream, err := b.createStream(ctx, js, s.cfg)
		if err != nil {
			return nil, nil, err
		}
		*s.stream = stream
	}
	b.mu.Lock()
	b.qstreams = qs
	b.mu.Unlock()
	return js, qs, nil
}

// Push implements broker.Queue: the item is stored once it returns.
func (b *Broker) Push(ctx context.Context, queue, key string, data []byte) error {
	js, _, err := b.queues(ctx)
	if err != nil {
		return err
	}
	if _, err := js.Publish(ctx, b.itemSubject(queue, keyToken(key)), data); err != nil {
		return b.wrap("queue "+queue+": push", err)
	}
	return nil
}

// Take implements broker.Queue. It visits the queue's keys that have
// items in random order, so no key waits behind others for long. On an
// error it returns the items it leased before it, with the error.
func (b *Broker) Take(ctx context.Context, queue string, limit int, lease time.Duration) ([]broker.QueueItem, error) {
	if limit <= 0 {
		return nil, nil
	}
	js, qs, err := b.queues(ctx)
	if err != nil {
		return nil, err
	}
	counts, err := b.queueSubjects(ctx, qs, queue)
	if err != nil {
		return nil, b.wrap("queue "+queue+": take", err)
	}
	subjects := slices.Collect(maps.Keys(counts))
	mathrand.Shuffle(len(subjects), func(i, j int) { subjects[i], subjects[j] = subjects[j], subjects[i] })
	t := &taking{b: b, js: js, qs: qs, queue: queue, lease: lease}
	var out []broker.QueueItem
	for _, subj := range subjects {
		if len(out) == limit {
			break
		}
		it, ok, err := t.key(ctx, subj)
		if err != nil {
			return out, b.wrap("queue "+queue+": take", err)
		}
		if ok {
			out = append(out, it)
		}
	}
	return out, nil
}

// queueSubjects returns the item subject of each key of queue that has
// items, and how many.
func (b *Broker) queueSubjects(ctx context.Context, qs *queueStreams, queue string) (map[string]uint64, error) {
	info, err := qs.items.Info(ctx, jetstream.WithSubjectFilter(b.itemSubject(queue, "*")))
	if err != nil {
		return nil, err
	}
	return info.State.Subjects, nil
}

// taking is one Take call.
type taking struct {
	b     *Broker
	js    jetstream.JetStream
	qs    *queueStreams
	queue string
	lease time.Duration
	now   time.Time // the server's, read when first needed
}

// key leases the head item of the key whose item subject is subj, when
// no lease or retry time holds it back and no other taker claims it first.
func (t *taking) key(ctx context.Context, subj string) (broker.QueueItem, bool, error) {
	keyTok := subj[strings.LastIndexByte(subj, '.')+1:]
	key, ok := fromToken(keyTok, "k")
	if !ok {
		return broker.QueueItem{}, false, fmt.Errorf("item subject %s names no key", subj)
	}
	stateSubj := t.b.keySubject(t.queue, keyTok)
	st, err := t.b.readKeyState(ctx, t.qs, stateSubj)
	if err != nil {
		return broker.QueueItem{}, false, err
	}
	if st.Wait > 0 {
		if t.now.IsZero() {
			if t.now, err = t.b.serverNow(ctx, t.js, t.qs.keys, t.b.clockSubject()); err != nil {
				return broker.QueueItem{}, false, err
			}
		}
		if st.time.Add(st.Wait).After(t.now) {
			return broker.QueueItem{}, false, nil // leased, or waiting to be retried
		}
	}
	head, err := t.qs.items.GetMsg(ctx, max(st.From, 1), jetstream.WithGetMsgSubject(subj))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return broker.QueueItem{}, false, nil // acknowledged meanwhile
	}
	if err != nil {
		return broker.QueueItem{}, false, err
	}
	attempts := 0
	if head.Sequence == st.From {
		attempts = st.Attempts
		if st.Lease != "" {
			attempts++ // its lease ended unacknowledged
		}
	}
	next := keyState{From: head.Sequence, Lease: newLease(), Attempts: attempts, Wait: t.lease}
	if _, err := t.b.writeState(ctx, t.js, stateSubj, next, st.seq); errors.Is(err, errStateChanged) {
		return broker.QueueItem{}, false, nil // another taker, or an Ack, came first
	} else if err != nil {
		return broker.QueueItem{}, false, err
	}
	return broker.QueueItem{
		Key: key, ID: strconv.FormatUint(head.Sequence, 10), Data: head.Data,
		Attempts: attempts, Pushed: head.Time, Lease: next.Lease,
	}, true, nil
}

// Ack implements broker.Queue.
func (b *Broker) Ack(ctx context.Context, queue string, it broker.QueueItem) error {
	js, qs, err := b.queues(ctx)
	if err != nil {
		return err
	}
	keyTok := keyToken(it.Key)
	id, seq, err := b.settle(ctx, js, qs, queue, keyTok, it, func(id uint64, _ keyState) keyState {
		return keyState{From: id + 1}
	})
	if err != nil {
		return b.wrapQueue(queue, "ack", err)
	}
	// The item is acknowledged; what follows only tidies up.
	if err := b.tidyKey(ctx, qs, queue, keyTok, id+1, seq); err != nil {
		b.log.Warn("nats broker: queue: remove an acknowledged item", "queue", queue, "err", err)
	}
	return nil
}

// Retry implements broker.Queue.
func (b *Broker) Retry(ctx context.Context, queue string, it broker.QueueItem, delay time.Duration) error {
	js, qs, err := b.queues(ctx)
	if err != nil {
		return err
	}
	_, _, err = b.settle(ctx, js, qs, queue, keyToken(it.Key), it, func(id uint64, st keyState) keyState {
		return keyState{From: id, Attempts: st.Attempts + 1, Wait: max(delay, 0)}
	})
	return b.wrapQueue(queue, "retry", err)
}

// Len implements broker.Queue.
func (b *Broker) Len(ctx context.Context, queue string) (int, error) {
	_, qs, err := b.queues(ctx)
	if err != nil {
		return 0, err
	}
	subjects, err := b.queueSubjects(ctx, qs, queue)
	if err != nil {
		return 0, b.wrap("queue "+queue+": len", err)
	}
	n := 0
	for _, c := range subjects {
		n += int(c)
	}
	return n, nil
}

// settle replaces the state of it's key with next(ID, state) while it is
// still the key's leased item, and returns its ID and the new state's
// sequence. It fails with broker.ErrLeaseLost when it is not.
func (b *Broker) settle(ctx context.Context, js jetstream.JetStream, qs *queueStreams, queue, keyTok string, it broker.QueueItem,
	next func(id uint64, st keyState) keyState) (uint64, uint64, error) {
	id, err := strconv.ParseUint(it.ID, 10, 64)
	if err != nil || it.Lease == "" {
		return 0, 0, broker.ErrLeaseLost // not an item Take gave
	}
	subj := b.keySubject(queue, keyTok)
	for range maxPublishAttempts {
		st, err := b.readKeyState(ctx, qs, subj)
		if err != nil {
			return 0, 0, err
		}
		if st.Lease != it.Lease || st.From != id {
			return 0, 0, broker.ErrLeaseLost
		}
		seq, err := b.writeState(ctx, js, subj, next(id, st.keyState), st.seq)
		if errors.Is(err, errStateChanged) {
			continue // read it again: the lease is likely gone
		}
		return id, seq, err
	}
	return 0, 0, fmt.Errorf("%d state conflicts in a row", maxPublishAttempts)
}

// tidyKey removes the key's items before sequence from (acknowledged) and,
// when it has none left, its state message stateSeq: a state written
// since is kept, as is one of a key pushed to meanwhile, which then starts
// again from its first item, all after from.
func (b *Broker) tidyKey(ctx context.Context, qs *queueStreams, queue, keyTok string, from, stateSeq uint64) error {
	subj := b.itemSubject(queue, keyTok)
	if err := qs.items.Purge(ctx, jetstream.WithPurgeSubject(subj), jetstream.WithPurgeSequence(from)); err != nil {
		return err
	}
	_, err := qs.items.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(subj))
	if !errors.Is(err, jetstream.ErrMsgNotFound) {
		return err // nil when the key has items
	}
	if err := qs.keys.DeleteMsg(ctx, stateSeq); err != nil && !errors.Is(err, jetstream.ErrMsgDeleteUnsuccessful) {
		return err // unsuccessful: replaced by a newer state
	}
	return nil
}

// readKeyState reads the state on subject subj; a key without one has
// the zero state.
func (b *Broker) readKeyState(ctx context.Context, qs *queueStreams, subj string) (keyStateMsg, error) {
	var st keyStateMsg
	m, err := readState(ctx, qs.keys, subj, &st.keyState)
	if err != nil || m == nil {
		return keyStateMsg{}, err
	}
	st.seq, st.time = m.Sequence, m.Time
	return st, nil
}

// readState decodes the JSON state on subject subj of stream into st and
// returns its message; nil, leaving st as it is, when there is none.
func readState(ctx context.Context, stream jetstream.Stream, subj string, st any) (*jetstream.RawStreamMsg, error) {
	m, err := stream.GetLastMsgForSubject(ctx, subj)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(m.Data, st); err != nil {
		return nil, fmt.Errorf("state %s: %w", subj, err)
	}
	return m, nil
}

// errStateChanged reports that a state (a key's, a channel's occupancy)
// is no longer the one a change was decided from.
var errStateChanged = errors.New("state changed")

// writeState replaces the state on subject subj with st as JSON; the
// subject's last message must be stream sequence last (0: none), else it
// fails with errStateChanged. It returns the new message's sequence.
func (b *Broker) writeState(ctx context.Context, js jetstream.JetStream, subj string, st any, last uint64) (uint64, error) {
	data, err := json.Marshal(st)
	if err != nil {
		return 0, err
	}
	ack, err := js.Publish(ctx, subj, data, jetstream.WithExpectLastSequencePerSubject(last))
	if isSequenceConflict(err) {
		return 0, errStateChanged
	}
	if err != nil {
		return 0, err
	}
	return ack.Sequence, nil
}

// serverNow returns the NATS server's time: the timestamp of a message
// written now to subj, which stream keeps (only its last message).
func (b *Broker) serverNow(ctx context.Context, js jetstream.JetStream, stream jetstream.Stream, subj string) (time.Time, error) {
	if _, err := js.Publish(ctx, subj, nil); err != nil {
		return time.Time{}, err
	}
	// Another node's write may have replaced ours: it is newer still.
	m, err := stream.GetLastMsgForSubject(ctx, subj)
	if err != nil {
		return time.Time{}, err
	}
	return m.Time, nil
}

// wrapQueue wraps err of a queue operation, leaving broker.ErrLeaseLost
// as it is.
func (b *Broker) wrapQueue(queue, op string, err error) error {
	if err == nil || errors.Is(err, broker.ErrLeaseLost) {
		return err
	}
	return b.wrap("queue "+queue+": "+op, err)
}

func newLease() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
