package redis

import (
	"context"
	"fmt"

	goredis "github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/broker"
)

var _ broker.Occupancy = (*Broker)(nil)

// Key layout of a channel C's occupancy under prefix P (in C's hash tag):
//
//	P{C}:occ:nodes  set: the nodes with subscribers of C
//	P{C}:occ        string: the announced occupation; absent when vacant
//
// Each operation is one script, so that two nodes never both announce.

// occupyScript: KEYS nodes, occ; ARGV node, new occupation. Returns
// {occupation, 1} when it announced one, {occupation, 0} otherwise.
var occupyScript = goredis.NewScript(`
redis.call('SADD', KEYS[1], ARGV[1])
local occ = redis.call('GET', KEYS[2])
if occ then return {occ, 0} end
redis.call('SET', KEYS[2], ARGV[2])
return {ARGV[2], 1}
`)

// vacateScript: KEYS nodes; ARGV node. Returns 1 when no node is left.
var vacateScript = goredis.NewScript(`
redis.call('SREM', KEYS[1], ARGV[1])
if redis.call('SCARD', KEYS[1]) == 0 then return 1 end
return 0
`)

// announceVacantScript: KEYS nodes, occ. Returns {occupation, 1} when it
// marked the channel vacant, {} otherwise.
var announceVacantScript = goredis.NewScript(`
if redis.call('SCARD', KEYS[1]) > 0 then return {} end
local occ = redis.call('GET', KEYS[2])
if not occ then return {} end
redis.call('DEL', KEYS[2])
return {occ, 1}
`)

// Occupy implements broker.Occupancy.
func (b *Broker) Occupy(ctx context.Context, channel, node string) (string, bool, error) {
	// On the publisher, which never sends a command twice: a retry of an
	// occupy whose reply was lost would find the occupation made and
	// never announce it.
	res, err := occupyScript.Run(ctx, b.publisher, []string{b.key(channel, "occ:nodes"), b.key(channel, "occ")}, node, newID()).Slice()
	if err != nil {
		return "", false, b.wrap(ctx, "occupy "+channel, err)
	}
	if len(res) != 2 {
		return "", false, fmt.Errorf("redis broker: occupy %q: unexpected reply %v", channel, res)
	}
	occ, _ := res[0].(string)
	announced, _ := res[1].(int64)
	return occ, announced == 1, nil
}

// Vacate implements broker.Occupancy.
func (b *Broker) Vacate(ctx context.Context, channel, node string) (bool, error) {
	n, err := vacateScript.Run(ctx, b.client, []string{b.key(channel, "occ:nodes")}, node).Int()
	if err != nil {
		return false, b.wrap(ctx, "vacate "+channel, err)
	}
	return n == 1, nil
}

// AnnounceVacant implements broker.Occupancy.
func (b *Broker) AnnounceVacant(ctx context.Context, channel string) (string, bool, error) {
	// Never twice, as Occupy: a retry would find nothing to announce.
	res, err := announceVacantScript.Run(ctx, b.publisher, []string{b.key(channel, "occ:nodes"), b.key(channel, "occ")}).Slice()
	if err != nil {
		return "", false, b.wrap(ctx, "announce "+channel+" vacant", err)
	}
	if len(res) != 2 {
		return "", false, nil
	}
	occ, _ := res[0].(string)
	return occ, true, nil
}
