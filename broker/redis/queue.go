package redis

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/broker"
)

var _ broker.Queue = (*Broker)(nil)

// Key layout of work queue Q under prefix P (the {q:Q} hash tag keeps one
// queue's keys in one cluster slot):
//
//	P{q:Q}:ready     sorted set: item key → when it may next be taken (ms
//	                 since epoch, the Redis server's clock): now, the end
//	                 of its lease, or its retry time
//	P{q:Q}:items:K   list: key K's items, oldest first, each "ID PUSHED DATA"
//	P{q:Q}:lease     hash: item key → lease of its oldest item, while taken
//	P{q:Q}:attempts  hash: item key → times its oldest item was taken before
//	P{q:Q}:seq       counter: the last item ID
//	P{q:Q}:len       counter: items queued
//
// Every operation is one script, so nodes taking from one queue at once
// never lease one key's item twice.

const luaNowMS = `
local function nowms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
`

// queuePushScript: KEYS ready, items list, seq, len; ARGV key, data.
var queuePushScript = goredis.NewScript(luaNowMS + `
local now = nowms()
local id = redis.call('INCR', KEYS[3])
redis.call('RPUSH', KEYS[2], id .. ' ' .. now .. ' ' .. ARGV[2])
redis.call('INCR', KEYS[4])
redis.call('ZADD', KEYS[1], 'NX', now, ARGV[1])
return id
`)

// queueTakeScript: KEYS ready, lease, attempts; ARGV max, lease ms, items
// key prefix, lease prefix. Returns key, item, lease, attempts for each.
var queueTakeScript = goredis.NewScript(luaNowMS + `
local now = nowms()
local keys = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local out = {}
for i, k in ipairs(keys) do
  local head = redis.call('LINDEX', ARGV[3] .. k, 0)
  if not head then
    redis.call('ZREM', KEYS[1], k)
    redis.call('HDEL', KEYS[2], k)
    redis.call('HDEL', KEYS[3], k)
  else
    local attempts
    if redis.call('HEXISTS', KEYS[2], k) == 1 then
      attempts = redis.call('HINCRBY', KEYS[3], k, 1) -- its lease ended unacknowledged
    else
      attempts = tonumber(redis.call('HGET', KEYS[3], k) or '0')
    end
    local lease = ARGV[4] .. i
    redis.call('HSET', KEYS[2], k, lease)
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), k)
    out[#out + 1] = k
    out[#out + 1] = head
    out[#out + 1] = lease
    out[#out + 1] = attempts
  end
end
return out
`)

// luaLeased checks that key ARGV[1]'s oldest item is ARGV[2] under lease
// ARGV[3].
const luaLeased = `
local function leased(leaseKey, items)
  if redis.call('HGET', leaseKey, ARGV[1]) ~= ARGV[3] then return false end
  local head = redis.call('LINDEX', items, 0)
  return head and string.sub(head, 1, #ARGV[2] + 1) == ARGV[2] .. ' '
end
`

// queueAckScript: KEYS ready, lease, attempts, items list, len; ARGV key,
// id, lease. Returns 1, or 0 when the lease was lost.
var queueAckScript = goredis.NewScript(luaNowMS + luaLeased + `
if not leased(KEYS[2], KEYS[4]) then return 0 end
redis.call('LPOP', KEYS[4])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('DECR', KEYS[5])
if redis.call('LLEN', KEYS[4]) > 0 then
  redis.call('ZADD', KEYS[1], nowms(), ARGV[1])
else
  redis.call('ZREM', KEYS[1], ARGV[1])
end
return 1
`)

// queueRetryScript: KEYS ready, lease, attempts, items list; ARGV key, id,
// lease, delay ms. Returns 1, or 0 when the lease was lost.
var queueRetryScript = goredis.NewScript(luaNowMS + luaLeased + `
if not leased(KEYS[2], KEYS[4]) then return 0 end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HINCRBY', KEYS[3], ARGV[1], 1)
redis.call('ZADD', KEYS[1], nowms() + tonumber(ARGV[4]), ARGV[1])
return 1
`)

func (b *Broker) queueKey(queue, kind string) string {
	return b.prefix + "{q:" + queue + "}:" + kind
}

// Push implements broker.Queue.
func (b *Broker) Push(ctx context.Context, queue, key string, data []byte) error {
	err := queuePushScript.Run(ctx, b.publisher,
		[]string{b.queueKey(queue, "ready"), b.queueKey(queue, "items:"+key), b.queueKey(queue, "seq"), b.queueKey(queue, "len")},
		key, data,
	).Err()
	return b.wrap(ctx, "queue "+queue+": push", err)
}

// Take implements broker.Queue.
func (b *Broker) Take(ctx context.Context, queue string, limit int, lease time.Duration) ([]broker.QueueItem, error) {
	res, err := queueTakeScript.Run(ctx, b.publisher,
		[]string{b.queueKey(queue, "ready"), b.queueKey(queue, "lease"), b.queueKey(queue, "attempts")},
		limit, max(lease.Milliseconds(), 1), b.queueKey(queue, "items:"), newID()+"-",
	).Slice()
	if err != nil {
		return nil, b.wrap(ctx, "queue "+queue+": take", err)
	}
	items := make([]broker.QueueItem, 0, len(res)/4)
	for i := 0; i+3 < len(res); i += 4 {
		key, _ := res[i].(string)
		raw, _ := res[i+1].(string)
		leaseID, _ := res[i+2].(string)
		attempts, _ := res[i+3].(int64)
		id, rest, ok1 := strings.Cut(raw, " ")
		pushed, data, ok2 := strings.Cut(rest, " ")
		ms, err := strconv.ParseInt(pushed, 10, 64)
		if !ok1 || !ok2 || err != nil {
			return items, fmt.Errorf("redis broker: queue %s: malformed item of key %q", queue, key)
		}
		items = append(items, broker.QueueItem{
			Key: key, ID: id, Data: []byte(data), Attempts: int(attempts),
			Pushed: time.UnixMilli(ms), Lease: leaseID,
		})
	}
	return items, nil
}

// Ack implements broker.Queue.
func (b *Broker) Ack(ctx context.Context, queue string, it broker.QueueItem) error {
	n, err := queueAckScript.Run(ctx, b.publisher,
		[]string{b.queueKey(queue, "ready"), b.queueKey(queue, "lease"), b.queueKey(queue, "attempts"), b.queueKey(queue, "items:"+it.Key), b.queueKey(queue, "len")},
		it.Key, it.ID, it.Lease,
	).Int()
	if err != nil {
		return b.wrap(ctx, "queue "+queue+": ack", err)
	}
	if n == 0 {
		return broker.ErrLeaseLost
	}
	return nil
}

// Retry implements broker.Queue.
func (b *Broker) Retry(ctx context.Context, queue string, it broker.QueueItem, delay time.Duration) error {
	n, err := queueRetryScript.Run(ctx, b.publisher,
		[]string{b.queueKey(queue, "ready"), b.queueKey(queue, "lease"), b.queueKey(queue, "attempts"), b.queueKey(queue, "items:"+it.Key)},
		it.Key, it.ID, it.Lease, max(delay.Milliseconds(), 0),
	).Int()
	if err != nil {
		return b.wrap(ctx, "queue "+queue+": retry", err)
	}
	if n == 0 {
		return broker.ErrLeaseLost
	}
	return nil
}

// Len implements broker.Queue.
func (b *Broker) Len(ctx context.Context, queue string) (int, error) {
	n, err := b.client.Get(ctx, b.queueKey(queue, "len")).Int()
	if err == goredis.Nil {
		return 0, nil
	}
	if err != nil {
		return 0, b.wrap(ctx, "queue "+queue+": len", err)
	}
	return n, nil
}
