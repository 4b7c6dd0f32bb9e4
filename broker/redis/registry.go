package redis

import (
	"context"
	"fmt"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/broker"
)

var _ broker.Registry = (*Broker)(nil)

// Key layout of the registry under prefix P (one {reg} hash tag):
//
//	P{reg}:beat      sorted set: node → when its beat expires (ms, the
//	                 Redis server's clock)
//	P{reg}:claim     sorted set: dead node → when its claim expires
//	P{reg}:e:NODE    hash: the node's entries
//
// ClaimDead is one script, so two survivors never claim one dead node at
// once.

// registryClaimScript: KEYS beat, claim; ARGV lease ms, entries key
// prefix. Returns {node, key, value, …}, or {} when no node is dead and
// unclaimed.
var registryClaimScript = goredis.NewScript(luaNowMS + `
local now = nowms()
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
for _, node in ipairs(dead) do
  local claim = tonumber(redis.call('ZSCORE', KEYS[2], node) or '0')
  if claim <= now then
    redis.call('ZADD', KEYS[2], now + tonumber(ARGV[1]), node)
    local out = {node}
    local kv = redis.call('HGETALL', ARGV[2] .. node)
    for i = 1, #kv do out[#out + 1] = kv[i] end
    return out
  end
end
return {}
`)

// registryBeatScript: KEYS beat; ARGV node, ttl ms.
var registryBeatScript = goredis.NewScript(luaNowMS + `
redis.call('ZADD', KEYS[1], nowms() + tonumber(ARGV[2]), ARGV[1])
return 1
`)

func (b *Broker) registryKey(kind string) string { return b.prefix + "{reg}:" + kind }

// Beat implements broker.Registry.
func (b *Broker) Beat(ctx context.Context, node string, ttl time.Duration) error {
	err := registryBeatScript.Run(ctx, b.client, []string{b.registryKey("beat")}, node, max(ttl.Milliseconds(), 1)).Err()
	return b.wrap(ctx, "registry: beat", err)
}

// Put implements broker.Registry.
func (b *Broker) Put(ctx context.Context, node, key string, value []byte) error {
	return b.wrap(ctx, "registry: put", b.client.HSet(ctx, b.registryKey("e:"+node), key, value).Err())
}

// Delete implements broker.Registry.
func (b *Broker) Delete(ctx context.Context, node, key string) error {
	return b.wrap(ctx, "registry: delete", b.client.HDel(ctx, b.registryKey("e:"+node), key).Err())
}

// ClaimDead implements broker.Registry.
func (b *Broker) ClaimDead(ctx context.Context, lease time.Duration) (string, map[string][]byte, error) {
	res, err := registryClaimScript.Run(ctx, b.client,
		[]string{b.registryKey("beat"), b.registryKey("claim")},
		max(lease.Milliseconds(), 1), b.registryKey("e:"),
	).StringSlice()
	if err != nil {
		return "", nil, b.wrap(ctx, "registry: claim", err)
	}
	if len(res) == 0 {
		return "", nil, nil
	}
	if len(res)%2 != 1 {
		return "", nil, fmt.Errorf("redis broker: registry: claim: unexpected reply of %d items", len(res))
	}
	entries := make(map[string][]byte, len(res)/2)
	for i := 1; i+1 < len(res); i += 2 {
		entries[res[i]] = []byte(res[i+1])
	}
	return res[0], entries, nil
}

// Forget implements broker.Registry.
func (b *Broker) Forget(ctx context.Context, node string) error {
	_, err := b.client.TxPipelined(ctx, func(p goredis.Pipeliner) error {
		p.Del(ctx, b.registryKey("e:"+node))
		p.ZRem(ctx, b.registryKey("beat"), node)
		p.ZRem(ctx, b.registryKey("claim"), node)
		return nil
	})
	return b.wrap(ctx, "registry: forget", err)
}
