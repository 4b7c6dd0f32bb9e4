package redis

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/broker"
)

var _ broker.Receipts = (*Broker)(nil)

// Key layout of receipts under prefix P. A channel C's are in its hash
// tag; O is an offset's wire form (Offset.String):
//
//	P{C}:rc:d:O    hash: the ID of a Delivered call (and of its check) →
//	               its clients, as netstring(client) + netstring(user)
//	               each. Expires after the longest keep of its calls.
//	P{C}:rc:ack    hash: record → the highest sequence acknowledged, in
//	               decimal. A record is "c" + netstring(epoch) + client,
//	               or "u" + netstring(epoch) + user for the acknowledgements
//	               of every connection of a user.
//	P{C}:rc:ackx   sorted set: record → when it expires (ms). Expired
//	               records count for nothing; each Acked drops some. Both
//	               keys expire after the longest keep of their records.
//
// The due checks of every channel are in one hash tag, {rc} (which a
// channel named rc shares, with other names); a check is named
// netstring(C) + netstring(O) + netstring(its ID):
//
//	P{rc}:due      sorted set: check → when it may be taken (ms): its due
//	               time, then the end of its lease
//	P{rc}:expiry   sorted set: check → when its keep ends (ms)
//	P{rc}:lease    hash: check → its lease, once taken
//
// Taking checks and finishing one are each one script, so two nodes never
// hold one check's lease at once. Checks past their keep are dropped by
// Delivered and TakeDue (a hundred at a time) and never taken. Times are
// the Redis server's (TIME): a due time is sent as its distance from the
// calling node's now, so nodes' clocks need not agree.
//
// Cost: Delivered is one round trip: its clients as one hash value (so a
// call for 1,000 clients costs Redis little more than one for ten), the
// key's expiry, and its check. Acked, Receipts and DoneDue are one script
// each; TakeDue is a script, then one script per check taken
// (pipelined), which reads the check's clients and their
// acknowledgements.

// luaReceipts holds the helpers the receipts scripts share.
const luaReceipts = luaNowMS + `
local function netstring(s)
  return string.len(s) .. ':' .. s
end

-- atLeast compares two sequences in decimal, exactly.
local function atLeast(a, b)
  if #a ~= #b then return #a > #b end
  return a >= b
end

-- covers reports whether record acknowledges seq and has not expired.
local function covers(ack, ackx, record, seq, now)
  local v = redis.call('HGET', ack, record)
  if not v or not atLeast(v, seq) then return false end
  local exp = redis.call('ZSCORE', ackx, record)
  return exp ~= false and tonumber(exp) > now
end

-- acked reports whether client (of user) acknowledged seq of epoch;
-- users caches what each user's record says.
local function acked(ack, ackx, epoch, seq, now, client, user, users)
  if covers(ack, ackx, 'c' .. netstring(epoch) .. client, seq, now) then return true end
  if user == '' then return false end
  if users[user] == nil then
    users[user] = covers(ack, ackx, 'u' .. netstring(epoch) .. user, seq, now)
  end
  return users[user]
end

-- netstrings reads the netstrings of s into a list.
local function netstrings(s)
  local out, i = {}, 1
  while i <= #s do
    local colon = string.find(s, ':', i, true)
    local n = tonumber(string.sub(s, i, colon - 1))
    out[#out + 1] = string.sub(s, colon + 1, colon + n)
    i = colon + n + 1
  end
  return out
end

-- forget forgets check.
local function forget(due, expiry, lease, check)
  redis.call('ZREM', due, check)
  redis.call('ZREM', expiry, check)
  redis.call('HDEL', lease, check)
end

-- dropExpired forgets up to a hundred checks whose keep ended.
local function dropExpired(due, expiry, lease, now)
  local old = redis.call('ZRANGEBYSCORE', expiry, '-inf', now, 'LIMIT', 0, 100)
  if #old > 0 then
    redis.call('ZREM', due, unpack(old))
    redis.call('ZREM', expiry, unpack(old))
    redis.call('HDEL', lease, unpack(old))
  end
end
`

// receiptsAddCheckScript: KEYS due, expiry, lease; ARGV check, due in ms
// from now, keep ms.
var receiptsAddCheckScript = goredis.NewScript(luaReceipts + `
local now = nowms()
dropExpired(KEYS[1], KEYS[2], KEYS[3], now)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
return 1
`)

// receiptsAckScript: KEYS ack, ackx; ARGV seq, keep ms, records.
var receiptsAckScript = goredis.NewScript(luaReceipts + `
local now = nowms()
local seq, keep = ARGV[1], tonumber(ARGV[2])
local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 100)
if #old > 0 then
  redis.call('HDEL', KEYS[1], unpack(old))
  redis.call('ZREM', KEYS[2], unpack(old))
end
local wrote = false
for i = 3, #ARGV do
  if not covers(KEYS[1], KEYS[2], ARGV[i], seq, now) then
    redis.call('HSET', KEYS[1], ARGV[i], seq)
    redis.call('ZADD', KEYS[2], now + keep, ARGV[i])
    wrote = true
  end
end
if wrote then
  for _, k in ipairs(KEYS) do
    local ttl = redis.call('PTTL', k)
    if ttl == -1 or ttl < keep then redis.call('PEXPIRE', k, keep) end
  end
end
return 1
`)

// receiptsReadScript: KEYS delivery, ack, ackx; ARGV epoch, seq. Returns
// {client, user, 1 when acknowledged else 0, …}, each client once; {}
// when no delivery is recorded.
var receiptsReadScript = goredis.NewScript(luaReceipts + `
local now = nowms()
local out, users, seen = {}, {}, {}
for _, blob in ipairs(redis.call('HVALS', KEYS[1])) do
  local cs = netstrings(blob)
  for i = 1, #cs, 2 do
    local client, user = cs[i], cs[i + 1]
    if not seen[client] then
      seen[client] = true
      out[#out + 1] = client
      out[#out + 1] = user
      out[#out + 1] = acked(KEYS[2], KEYS[3], ARGV[1], ARGV[2], now, client, user, users) and 1 or 0
    end
  end
end
return out
`)

// receiptsPendingScript: KEYS delivery, ack, ackx; ARGV epoch, seq, check
// ID. Returns {0} when no delivery is recorded, else {1, client, user, …}
// for the check's clients that did not acknowledge.
var receiptsPendingScript = goredis.NewScript(luaReceipts + `
local now = nowms()
local blob = redis.call('HGET', KEYS[1], ARGV[3])
if not blob then return {0} end
local out, users, cs = {1}, {}, netstrings(blob)
for i = 1, #cs, 2 do
  if not acked(KEYS[2], KEYS[3], ARGV[1], ARGV[2], now, cs[i], cs[i + 1], users) then
    out[#out + 1] = cs[i]
    out[#out + 1] = cs[i + 1]
  end
end
return out
`)

// receiptsTakeScript: KEYS due, expiry, lease; ARGV max, lease ms, lease
// prefix. Returns {check, lease, …}.
var receiptsTakeScript = goredis.NewScript(luaReceipts + `
local now = nowms()
dropExpired(KEYS[1], KEYS[2], KEYS[3], now)
local out = {}
local ready = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for i, check in ipairs(ready) do
  local exp = redis.call('ZSCORE', KEYS[2], check)
  if not exp or tonumber(exp) <= now then
    forget(KEYS[1], KEYS[2], KEYS[3], check)
  else
    local lease = ARGV[3] .. i
    redis.call('HSET', KEYS[3], check, lease)
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), check)
    out[#out + 1] = check
    out[#out + 1] = lease
  end
end
return out
`)

// receiptsDoneScript: KEYS due, expiry, lease; ARGV check, lease. Returns
// 1, or 0 when the check is not held under that lease.
var receiptsDoneScript = goredis.NewScript(luaReceipts + `
if redis.call('HGET', KEYS[3], ARGV[1]) ~= ARGV[2] then return 0 end
forget(KEYS[1], KEYS[2], KEYS[3], ARGV[1])
return 1
`)

func (b *Broker) deliveryKey(channel string, off broker.Offset) string {
	return b.key(channel, "rc:d:"+off.String())
}

// dueKeys are the keys of the due checks: due, expiry, lease.
func (b *Broker) dueKeys() []string {
	p := b.prefix + "{rc}:"
	return []string{p + "due", p + "expiry", p + "lease"}
}

// checkName names a check in the due keys.
func checkName(channel string, off broker.Offset, id string) string {
	return netstring(channel) + netstring(off.String()) + netstring(id)
}

// ackRecord names the acknowledgements, in epoch, of client ("c") or
// user ("u").
func ackRecord(kind, epoch, name string) string { return kind + netstring(epoch) + name }

// Delivered implements broker.Receipts.
func (b *Broker) Delivered(ctx context.Context, channel string, off broker.Offset, clients []broker.ClientInfo, due time.Time, keep time.Duration) error {
	if len(clients) == 0 {
		return nil
	}
	id := newID()
	keepMS := max(keep.Milliseconds(), 1)
	size := 0
	for _, c := range clients {
		size += len(c.Client) + len(c.User) + 8
	}
	var blob strings.Builder
	blob.Grow(size)
	for _, c := range clients {
		writeNetstring(&blob, c.Client)
		writeNetstring(&blob, c.User)
	}
	key := b.deliveryKey(channel, off)
	_, err := b.client.Pipelined(ctx, func(p goredis.Pipeliner) error {
		p.HSet(ctx, key, id, blob.String())
		p.Do(ctx, "PEXPIRE", key, keepMS, "NX") // a new key
		p.Do(ctx, "PEXPIRE", key, keepMS, "GT") // or a longer keep
		if !due.IsZero() {
			receiptsAddCheckScript.Eval(ctx, p, b.dueKeys(), checkName(channel, off, id), time.Until(due).Milliseconds(), keepMS)
		}
		return nil
	})
	return b.wrap(ctx, "receipts of "+channel+": delivered", err)
}

// Acked implements broker.Receipts.
func (b *Broker) Acked(ctx context.Context, channel string, c broker.ClientInfo, off broker.Offset, keep time.Duration) error {
	args := []any{strconv.FormatUint(off.Seq, 10), max(keep.Milliseconds(), 1), ackRecord("c", off.Epoch, c.Client)}
	if c.User != "" {
		args = append(args, ackRecord("u", off.Epoch, c.User))
	}
	err := receiptsAckScript.Run(ctx, b.client, []string{b.key(channel, "rc:ack"), b.key(channel, "rc:ackx")}, args...).Err()
	return b.wrap(ctx, "receipts of "+channel+": acked", err)
}

// Receipts implements broker.Receipts.
func (b *Broker) Receipts(ctx context.Context, channel string, off broker.Offset) (broker.ReceiptState, bool, error) {
	res, err := receiptsReadScript.Run(ctx, b.client,
		[]string{b.deliveryKey(channel, off), b.key(channel, "rc:ack"), b.key(channel, "rc:ackx")},
		off.Epoch, strconv.FormatUint(off.Seq, 10),
	).Slice()
	if err != nil {
		return broker.ReceiptState{}, false, b.wrap(ctx, "receipts of "+channel, err)
	}
	var st broker.ReceiptState
	for i := 0; i+2 < len(res); i += 3 {
		client, _ := res[i].(string)
		user, _ := res[i+1].(string)
		acked, _ := res[i+2].(int64)
		c := broker.ClientInfo{Client: client, User: user}
		if acked == 1 {
			st.Acked = append(st.Acked, c)
		} else {
			st.Pending = append(st.Pending, c)
		}
	}
	sortClients(st.Acked)
	sortClients(st.Pending)
	return st, len(res) > 0, nil
}

// TakeDue implements broker.Receipts. A check whose delivery expired
// (past its keep) is dropped, not returned.
func (b *Broker) TakeDue(ctx context.Context, limit int, lease time.Duration) ([]broker.DueCheck, error) {
	if limit <= 0 {
		return nil, nil
	}
	taken, err := receiptsTakeScript.Run(ctx, b.client, b.dueKeys(), limit, max(lease.Milliseconds(), 1), newID()+"-").StringSlice()
	if err != nil {
		return nil, b.wrap(ctx, "receipts: take due", err)
	}
	checks := make([]broker.DueCheck, 0, len(taken)/2)
	for i := 0; i+1 < len(taken); i += 2 {
		parts, err := splitNetstrings(taken[i])
		var off broker.Offset
		if err == nil && len(parts) == 3 {
			off, err = broker.ParseOffset(parts[1])
		}
		if err != nil || len(parts) != 3 {
			return nil, fmt.Errorf("redis broker: receipts: malformed check %q", taken[i])
		}
		checks = append(checks, broker.DueCheck{Channel: parts[0], Offset: off, ID: parts[2], Lease: taken[i+1]})
	}
	cmds, err := b.client.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for _, d := range checks {
			receiptsPendingScript.Eval(ctx, p,
				[]string{b.deliveryKey(d.Channel, d.Offset), b.key(d.Channel, "rc:ack"), b.key(d.Channel, "rc:ackx")},
				d.Offset.Epoch, strconv.FormatUint(d.Offset.Seq, 10), d.ID)
		}
		return nil
	})
	if err != nil {
		return nil, b.wrap(ctx, "receipts: take due", err) // the leases end; the checks are taken again
	}
	out := checks[:0]
	for i, d := range checks {
		res, err := cmds[i].(*goredis.Cmd).Slice()
		if err != nil || len(res) == 0 {
			return nil, fmt.Errorf("redis broker: receipts: pending of a due check: %v %w", res, err)
		}
		if found, _ := res[0].(int64); found == 0 {
			if err := b.DoneDue(ctx, d); err != nil && !errors.Is(err, broker.ErrLeaseLost) {
				return nil, err
			}
			continue // its delivery expired: nothing left to check
		}
		for j := 1; j+1 < len(res); j += 2 {
			client, _ := res[j].(string)
			user, _ := res[j+1].(string)
			d.Pending = append(d.Pending, broker.ClientInfo{Client: client, User: user})
		}
		sortClients(d.Pending)
		out = append(out, d)
	}
	return out, nil
}

// DoneDue implements broker.Receipts.
func (b *Broker) DoneDue(ctx context.Context, d broker.DueCheck) error {
	n, err := receiptsDoneScript.Run(ctx, b.client, b.dueKeys(), checkName(d.Channel, d.Offset, d.ID), d.Lease).Int()
	if err != nil {
		return b.wrap(ctx, "receipts: done due", err)
	}
	if n == 0 {
		return broker.ErrLeaseLost
	}
	return nil
}

// writeNetstring writes s to w as a netstring.
func writeNetstring(w *strings.Builder, s string) {
	var n [20]byte
	w.Write(strconv.AppendInt(n[:0], int64(len(s)), 10))
	w.WriteByte(':')
	w.WriteString(s)
}

func sortClients(cs []broker.ClientInfo) {
	slices.SortFunc(cs, func(x, y broker.ClientInfo) int { return cmp.Compare(x.Client, y.Client) })
}

func newID() string {
	var id [8]byte
	_, _ = rand.Read(id[:])
	return hex.EncodeToString(id[:])
}
