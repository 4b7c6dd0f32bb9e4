package nats

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/broker"
)

var _ broker.Occupancy = (*Broker)(nil)

// Layout of the occupancy of a channel C under prefix P, in the
// registry's stream (which keeps each subject's last message); C is the
// subject token c<base64url(C)>:
//
//	P.reg.occ.C  C's state (occState, JSON): the nodes with subscribers
//	             of C, and the announced occupation ("" when vacant). A
//	             channel never occupied, or vacant and announced so, has
//	             no state.
//
// Every change is a publish with the expected-last-subject-sequence check
// set to the state message it was decided from; on a conflict the call
// reads the state again and decides anew. So of two nodes occupying a
// vacant channel at once, one announces and the other finds the
// occupation; of two announcing it vacant, one does. A call that would
// change nothing (a node occupying again, vacating a channel it is not
// in) writes nothing.
//
// Cost: a read and a write per call, more on conflicts; AnnounceVacant
// adds a third request that drops the state it leaves empty (only the
// message it wrote: a state written since is kept).

// occState is a channel's occupancy as its message says.
type occState struct {
	Nodes      []string `json:"nodes,omitempty"`
	Occupation string   `json:"occupation,omitempty"`
}

func (b *Broker) occSubject(channel string) string {
	return b.cfg.Prefix + ".reg.occ.c" + token(channel)
}

// Occupy implements broker.Occupancy.
func (b *Broker) Occupy(ctx context.Context, channel, node string) (string, bool, error) {
	var announce bool
	st, err := b.changeOccupancy(ctx, "occupy", channel, func(st *occState) bool {
		announce = st.Occupation == ""
		if announce {
			st.Occupation = newLease() // random: unique among the channel's occupations
		}
		if slices.Contains(st.Nodes, node) {
			return announce
		}
		st.Nodes = append(st.Nodes, node)
		return true
	})
	if err != nil {
		return "", false, err
	}
	return st.Occupation, announce, nil
}

// Vacate implements broker.Occupancy.
func (b *Broker) Vacate(ctx context.Context, channel, node string) (bool, error) {
	st, err := b.changeOccupancy(ctx, "vacate", channel, func(st *occState) bool {
		i := slices.Index(st.Nodes, node)
		if i < 0 {
			return false
		}
		st.Nodes = slices.Delete(st.Nodes, i, i+1)
		return true
	})
	if err != nil {
		return false, err
	}
	return len(st.Nodes) == 0, nil
}

// AnnounceVacant implements broker.Occupancy.
func (b *Broker) AnnounceVacant(ctx context.Context, channel string) (string, bool, error) {
	var occ string
	_, err := b.changeOccupancy(ctx, "announce vacant", channel, func(st *occState) bool {
		occ = ""
		if len(st.Nodes) > 0 || st.Occupation == "" {
			return false
		}
		occ, st.Occupation = st.Occupation, ""
		return true
	})
	if err != nil {
		return "", false, err
	}
	return occ, occ != "", nil
}

// changeOccupancy applies change to channel's state and writes the result
// when change reports it changed it, reading the state again and calling
// change anew while another write came between; it returns the state as
// written (or as read, when unchanged). A state left empty is dropped.
func (b *Broker) changeOccupancy(ctx context.Context, op, channel string, change func(st *occState) bool) (occState, error) {
	js, rs, err := b.registry(ctx)
	if err != nil {
		return occState{}, err
	}
	subj := b.occSubject(channel)
	for range maxPublishAttempts {
		var st occState
		m, err := readState(ctx, rs, subj, &st)
		if err != nil {
			return occState{}, b.wrap(op+" "+channel, err)
		}
		if !change(&st) {
			return st, nil
		}
		var last uint64
		if m != nil {
			last = m.Sequence
		}
		seq, err := b.writeState(ctx, js, subj, st, last)
		if errors.Is(err, errStateChanged) {
			continue
		}
		if err != nil {
			return occState{}, b.wrap(op+" "+channel, err)
		}
		if len(st.Nodes) == 0 && st.Occupation == "" {
			// Only the message written here: a newer state stays.
			if err := rs.DeleteMsg(ctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgDeleteUnsuccessful) {
				b.log.Warn("nats broker: drop a vacant channel's occupancy", "channel", channel, "err", err)
			}
		}
		return st, nil
	}
	return occState{}, fmt.Errorf("nats broker: %s %s: %d state conflicts in a row", op, channel, maxPublishAttempts)
}
