package nats

import (
	"context"
	"errors"
	"fmt"
	mathrand "math/rand/v2"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/broker"
)

var _ broker.Registry = (*Broker)(nil)

// Layout of the registry under prefix P, in one stream, made on first
// use, that keeps the last message of each subject. A node N and an entry
// key K are the subject tokens n<base64url(N)> and k<base64url(K)>.
//
//	stream P-registry
//	  P.reg.N.beat   the node's last beat: it is alive until the
//	                 message's timestamp plus the duration it holds.
//	  P.reg.N.claim  the node's claim, if any: it holds until the
//	                 message's timestamp plus the lease it holds.
//	  P.reg.N.e.K    entry K: its value.
//	  P.reg.clock    written by ClaimDead to read the server's time.
//
// ClaimDead lists the beat subjects (one stream-info request) and visits
// the nodes in random order: for each it reads the claim, then the beat
// (so a node forgotten before its claim is read shows no beat), and claims a dead, unclaimed node by writing its claim with the
// expected-last-subject-sequence check set to the claim it read (or to
// none). Of two survivors claiming one node at once, one wins; the other
// passes it over. The winner then reads the node's entries, one request
// each. Forget purges P.reg.N.>: beat, claim and entries in one request.
// A claimer that read the beat just before a Forget may still claim the
// forgotten node; it finds no entries, and its own Forget removes the
// claim.
//
// Cost: Beat, Put, Delete and Forget are one request each. ClaimDead is
// the listing, two reads per node it visits (every node when none is
// dead), two requests to read the clock, and for a node it claims, the
// claim and one read per entry plus one.
//
// One clock, as for the work queues: beats and claims end by the
// timestamps of the server, compared with that of a message ClaimDead
// writes to P.reg.clock (once per call). Nodes' clocks play no part.

// RegistryStreamName returns the name of the registry's stream, for
// operators and tests.
func (b *Broker) RegistryStreamName() string { return b.cfg.Prefix + "-registry" }

func nodeToken(node string) string { return "n" + token(node) }

// regSubject returns the subject of what of the node whose token is
// nodeTok: "beat", "claim" or "e.K" (K a key token), or ">" for all of
// them.
func (b *Broker) regSubject(nodeTok, what string) string {
	return b.cfg.Prefix + ".reg." + nodeTok + "." + what
}

func (b *Broker) regClockSubject() string { return b.cfg.Prefix + ".reg.clock" }

// registry returns the JetStream handle and the registry's stream, making
// the stream on first use.
func (b *Broker) registry(ctx context.Context) (jetstream.JetStream, jetstream.Stream, error) {
	return b.lazyStream(ctx, &b.rstream, jetstream.StreamConfig{
		Name:              b.RegistryStreamName(),
		Subjects:          []string{b.cfg.Prefix + ".reg.>"},
		Storage:           jetstream.FileStorage,
		MaxMsgsPerSubject: 1,
	})
}

// lazyStream returns the JetStream handle and the stream *slot holds,
// making it from cfg first when *slot is nil (never made, or forgotten
// after a reconnection). b.mu guards *slot.
func (b *Broker) lazyStream(ctx context.Context, slot *jetstream.Stream, cfg jetstream.StreamConfig) (jetstream.JetStream, jetstream.Stream, error) {
	b.mu.Lock()
	js, stream, closed := b.js, *slot, b.closed
	b.mu.Unlock()
	if closed || js == nil {
		return nil, nil, fmt.Errorf("nats broker: %w: closed or not started", broker.ErrUnavailable)
	}
	if stream != nil {
		return js, stream, nil
	}
	stream, err := b.createStream(ctx, js, cfg)
	if err != nil {
		return nil, nil, err
	}
	b.mu.Lock()
	*slot = stream
	b.mu.Unlock()
	return js, stream, nil
}

// Beat implements broker.Registry.
func (b *Broker) Beat(ctx context.Context, node string, ttl time.Duration) error {
	return b.regPublish(ctx, "beat", b.regSubject(nodeToken(node), "beat"), []byte(ttl.String()))
}

// Put implements broker.Registry.
func (b *Broker) Put(ctx context.Context, node, key string, value []byte) error {
	return b.regPublish(ctx, "put", b.regSubject(nodeToken(node), "e."+keyToken(key)), value)
}

func (b *Broker) regPublish(ctx context.Context, op, subj string, data []byte) error {
	js, _, err := b.registry(ctx)
	if err != nil {
		return err
	}
	if _, err := js.Publish(ctx, subj, data); err != nil {
		return b.wrap("registry: "+op, err)
	}
	return nil
}

// Delete implements broker.Registry.
func (b *Broker) Delete(ctx context.Context, node, key string) error {
	return b.regPurge(ctx, "delete", b.regSubject(nodeToken(node), "e."+keyToken(key)))
}

// Forget implements broker.Registry.
func (b *Broker) Forget(ctx context.Context, node string) error {
	return b.regPurge(ctx, "forget", b.regSubject(nodeToken(node), ">"))
}

func (b *Broker) regPurge(ctx context.Context, op, subj string) error {
	_, rs, err := b.registry(ctx)
	if err != nil {
		return err
	}
	if err := rs.Purge(ctx, jetstream.WithPurgeSubject(subj)); err != nil {
		return b.wrap("registry: "+op, err)
	}
	return nil
}

// ClaimDead implements broker.Registry.
func (b *Broker) ClaimDead(ctx context.Context, lease time.Duration) (string, map[string][]byte, error) {
	js, rs, err := b.registry(ctx)
	if err != nil {
		return "", nil, err
	}
	node, entries, err := b.claimDead(ctx, js, rs, lease)
	if err != nil {
		return "", nil, b.wrap("registry: claim", err)
	}
	return node, entries, nil
}

func (b *Broker) claimDead(ctx context.Context, js jetstream.JetStream, rs jetstream.Stream, lease time.Duration) (string, map[string][]byte, error) {
	info, err := rs.Info(ctx, jetstream.WithSubjectFilter(b.regSubject("*", "beat")))
	if err != nil {
		return "", nil, err
	}
	var tokens []string
	for subj := range info.State.Subjects {
		tokens = append(tokens, strings.Split(subj, ".")[2]) // P.reg.N.beat: no dot in P
	}
	mathrand.Shuffle(len(tokens), func(i, j int) { tokens[i], tokens[j] = tokens[j], tokens[i] })
	var now time.Time
	for _, tok := range tokens {
		node, ok := fromToken(tok, "n")
		if !ok {
			return "", nil, fmt.Errorf("beat of %s names no node", tok)
		}
		claim, err := readExpiry(ctx, rs, b.regSubject(tok, "claim"))
		if err != nil {
			return "", nil, err
		}
		beat, err := readExpiry(ctx, rs, b.regSubject(tok, "beat"))
		if err != nil {
			return "", nil, err
		}
		if beat.seq == 0 {
			continue // forgotten meanwhile
		}
		if now.IsZero() {
			if now, err = b.serverNow(ctx, js, rs, b.regClockSubject()); err != nil {
				return "", nil, err
			}
		}
		if beat.end.After(now) || claim.end.After(now) {
			continue // alive, or claimed
		}
		_, err = js.Publish(ctx, b.regSubject(tok, "claim"), []byte(lease.String()),
			jetstream.WithExpectLastSequencePerSubject(claim.seq))
		if isSequenceConflict(err) {
			continue // another survivor came first
		}
		if err != nil {
			return "", nil, err
		}
		entries, err := b.regEntries(ctx, rs, tok)
		if err != nil {
			return "", nil, err
		}
		return node, entries, nil
	}
	return "", nil, nil
}

// expiry is a beat or a claim as read: its stream sequence (0 when there
// is none) and when it ends.
type expiry struct {
	seq uint64
	end time.Time
}

func readExpiry(ctx context.Context, rs jetstream.Stream, subj string) (expiry, error) {
	m, err := rs.GetLastMsgForSubject(ctx, subj)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return expiry{}, nil
	}
	if err != nil {
		return expiry{}, err
	}
	d, err := time.ParseDuration(string(m.Data))
	if err != nil {
		return expiry{}, fmt.Errorf("%s: %w", subj, err)
	}
	return expiry{seq: m.Sequence, end: m.Time.Add(d)}, nil
}

// regEntries reads the entries of the node whose token is nodeTok,
// walking its entry subjects in stream order.
func (b *Broker) regEntries(ctx context.Context, rs jetstream.Stream, nodeTok string) (map[string][]byte, error) {
	entries := map[string][]byte{}
	filter := b.regSubject(nodeTok, "e.*")
	for seq := uint64(1); ; {
		m, err := rs.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(filter))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return entries, nil
		}
		if err != nil {
			return nil, err
		}
		key, ok := fromToken(m.Subject[strings.LastIndexByte(m.Subject, '.')+1:], "k")
		if !ok {
			return nil, fmt.Errorf("entry subject %s names no key", m.Subject)
		}
		entries[key] = m.Data
		seq = m.Sequence + 1
	}
}
