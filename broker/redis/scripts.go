package redis

import goredis "github.com/redis/go-redis/v9"

// Key layout, per channel C under prefix P (the {C} hash tag keeps one
// channel's keys in one cluster slot):
//
//	P{C}:meta      hash: seq (last sequence), epoch, ttl (ms, from the latest Publish),
//	               trimmed (µs since epoch: when a Publish last trimmed the stream)
//	P{C}:stream    stream: one entry per kept message, ID "<seq>-0",
//	               fields data, binary, event, user, client, time (µs since epoch),
//	               and trace, tags (netstrings: key, value, …) and key when set
//	P{C}:presence  sorted set: client id → expiry (ms since epoch)
//	P{C}:users     hash: client id → user and transport, as netstrings
//	Pch:C          pub/sub topic carrying messages, joins and leaves
//
// Times come from the Redis server's clock (TIME), so every node agrees.

// luaTrim drops the stream entries older than the cutoff (µs). Entries are
// in time order, so it stops at the first one still fresh. It reads the
// oldest entry alone first: that one is fresh on nearly every call, and
// reading it costs Redis a fraction of reading a batch (a history read
// runs trim every time its channel has a TTL, a publish once a second).
const luaTrim = `
local function field(kv, name)
  for i = 1, #kv, 2 do
    if kv[i] == name then return kv[i + 1] end
  end
  return nil
end

local function trim(key, cutoff)
  local oldest = redis.call('XRANGE', key, '-', '+', 'COUNT', 1)
  if #oldest > 0 and tonumber(field(oldest[1][2], 'time')) >= cutoff then
    return
  end
  local start = '-'
  while true do
    local batch = redis.call('XRANGE', key, start, '+', 'COUNT', 16)
    if #batch == 0 then
      redis.call('XTRIM', key, 'MAXLEN', 0)
      return
    end
    for _, e in ipairs(batch) do
      if tonumber(field(e[2], 'time')) >= cutoff then
        redis.call('XTRIM', key, 'MINID', e[1])
        return
      end
    end
    start = '(' .. batch[#batch][1]
  end
end

local function now()
  local t = redis.call('TIME')
  return t[1] .. string.format('%06d', tonumber(t[2]))
end

local function netstring(s)
  return string.len(s) .. ':' .. s
end
`

// publishScript assigns the next offset, stores the message and publishes
// it on the channel's topic, all in one atomic step.
//
// A new epoch starts, at sequence 1 with an empty stream, for a new channel
// and for one whose stored state is behind what the publishing node saw
// (seen epoch and seq): Redis came back with an older state (a failover to
// a replica that lagged, a restored snapshot), and the offsets after the
// stored sequence were acknowledged for messages that are gone. Deciding
// this in the script makes it atomic: of several nodes that saw the lost
// offsets, the first to publish starts the new epoch and the others carry
// on in it.
//
// Each redis.call costs Redis about as much again as the command it runs,
// so the script makes few: the meta hash is read in one call and written
// in one, and the stream's expired entries are trimmed at most once a
// second (meta's trimmed field, µs) — a read of the history trims first,
// so what a trim has not dropped yet is never read, and the history size
// bounds the stream meanwhile.
//
// KEYS: meta, stream. ARGV: new epoch, size, ttl ms, meta grace ms, topic,
// data, binary, event, user, client, seen epoch ("" for none), seen seq,
// traceparent, tags, key ("" for none). Returns {seq, epoch}. Each of the
// last three is kept as the entry's field of its name (trace, tags, key)
// only when set. The pub/sub payload sends them as its 9th, 10th and 11th
// fields, and as its 12th the offset the publishing node had seen when a
// new epoch starts after it (Message.Ended), up to the last one set: a
// message with none of them is sent, and stored, as before they existed,
// so nodes that do not know them still read it.
var publishScript = goredis.NewScript(luaTrim + `
local meta, stream = KEYS[1], KEYS[2]
local size, ttl, grace = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local m = redis.call('HMGET', meta, 'seq', 'epoch', 'trimmed')
local seq, epoch = (tonumber(m[1]) or 0) + 1, m[2]
local ended = ''
if seq == 1 or not epoch or (epoch == ARGV[11] and seq <= tonumber(ARGV[12])) then
  epoch, seq = ARGV[1], 1
  redis.call('DEL', stream)
  if ARGV[11] ~= '' then
    ended = ARGV[12] .. '-' .. ARGV[11]
  end
end
local t = now()
local id = string.format('%d', seq)
local optional = {{'trace', ARGV[13]}, {'tags', ARGV[14]}, {'key', ARGV[15]}}
if size > 0 then
  local entry = {'data', ARGV[6], 'binary', ARGV[7], 'event', ARGV[8],
    'user', ARGV[9], 'client', ARGV[10], 'time', t}
  for _, f in ipairs(optional) do
    if f[2] ~= '' then
      entry[#entry + 1], entry[#entry + 2] = f[1], f[2]
    end
  end
  redis.call('XADD', stream, 'MAXLEN', size, id .. '-0', unpack(entry))
end
local state = {'seq', seq, 'epoch', epoch, 'ttl', ARGV[3]}
local trimmed = tonumber(m[3])
if ttl > 0 and (not trimmed or tonumber(t) - trimmed >= 1000000 or tonumber(t) < trimmed) then
  trim(stream, tonumber(t) - ttl * 1000)
  state[#state + 1], state[#state + 2] = 'trimmed', t
end
redis.call('HSET', meta, unpack(state))
if ttl > 0 then
  redis.call('PEXPIRE', stream, ttl)
  redis.call('PEXPIRE', meta, ttl + grace)
else
  redis.call('PERSIST', stream)
  redis.call('PERSIST', meta)
end
optional[#optional + 1] = {'ended', ended}
local last = #optional
while last > 0 and optional[last][2] == '' do
  last = last - 1
end
local tail = ''
for i = 1, last do
  tail = tail .. netstring(optional[i][2])
end
redis.call('PUBLISH', ARGV[5], 'm' .. netstring(id) .. netstring(epoch) .. netstring(t) ..
  netstring(ARGV[7]) .. netstring(ARGV[8]) .. netstring(ARGV[9]) .. netstring(ARGV[10]) ..
  netstring(ARGV[6]) .. tail)
return {seq, epoch}
`)

// historyScript drops expired entries and reads the channel's history.
//
// KEYS: meta, stream. ARGV: since epoch, since seq, limit (negative: all).
// Returns {} for a channel without meta, else {seq, epoch, first, mode,
// entries}: first is the seq of the oldest entry kept (seq+1 when none),
// mode is "zero" (no cursor: entries are newest first), "since" (a cursor in
// this epoch) or "gone" (a cursor from another epoch or ahead of seq).
var historyScript = goredis.NewScript(luaTrim + `
local meta, stream = KEYS[1], KEYS[2]
local m = redis.call('HMGET', meta, 'seq', 'epoch', 'ttl')
if not m[1] or not m[2] then return {} end
local seq, epoch, ttl = tonumber(m[1]), m[2], tonumber(m[3] or '0')
if ttl > 0 then
  trim(stream, tonumber(now()) - ttl * 1000)
end
local first = seq + 1
local head = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)
if #head > 0 then
  first = tonumber(string.match(head[1][1], '^(%d+)'))
end
local sinceEpoch, sinceSeq, limit = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local mode, entries = 'since', {}
if sinceEpoch == '' and sinceSeq == 0 then
  mode = 'zero'
  if limit < 0 then
    entries = redis.call('XREVRANGE', stream, '+', '-')
  elseif limit > 0 then
    entries = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', limit)
  end
else
  local start = '-'
  if sinceEpoch == epoch and sinceSeq <= seq then
    start = string.format('%d', sinceSeq + 1)
  else
    mode = 'gone'
  end
  if limit < 0 then
    entries = redis.call('XRANGE', stream, start, '+')
  elseif limit > 0 then
    entries = redis.call('XRANGE', stream, start, '+', 'COUNT', limit)
  end
end
return {seq, epoch, first, mode, entries}
`)

// presenceAddScript records a client with an expiry.
//
// KEYS: presence, users. ARGV: client, user and transport, ttl ms.
var presenceAddScript = goredis.NewScript(`
local t = redis.call('TIME')
local ttl = tonumber(ARGV[3])
local expiry = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + ttl
redis.call('ZADD', KEYS[1], expiry, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
return 1
`)

// presenceRemoveScript forgets a client.
//
// KEYS: presence, users. ARGV: client.
var presenceRemoveScript = goredis.NewScript(`
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
`)

// presenceListScript drops expired clients and lists the others as a flat
// {client, user and transport, ...} array.
//
// KEYS: presence, users.
var presenceListScript = goredis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
if #gone > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  for _, c in ipairs(gone) do redis.call('HDEL', KEYS[2], c) end
end
local out = {}
for _, c in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  out[#out + 1] = c
  out[#out + 1] = redis.call('HGET', KEYS[2], c) or ''
end
return out
`)
