package redisstore

import "github.com/redis/go-redis/v9"

// The Lua scripts, one atomic step per allot key. Every Redis key an allot
// key uses shares the hash tag {allot:<hex digest>}, so that in a Cluster
// they live in one slot, and a script only touches keys of one slot.
//
// A key's hash holds:
//
//	reg  the registration number (decimal), which requests must name
//	rec  the record as package persist encodes it (limits, registration)
//	ver  the version of rec: a reservation must name it (else: stale)
//	frz  while a change runs (Store.Change): until when (Redis TIME, ms)
//	rv   "1" once revoked
//	v<i> limit i's pool: Credits the units spent; a window the units used
//	     in window w<i> (its index mod 2^30, compared as the engine does);
//	     Rate the theoretical arrival time in µs since the epoch
//
// and its holders hash: every store that holds a reservation of it, one
// field per store and version of the hash its reservations were granted
// at, "<holder>:<ver>", whose value is when (Redis TIME, ms) the last was
// granted. A store lets go of all of its fields at once.
//
// Each store also holds a lease on everything it holds (Store.Renew), in
// a hash of its own, {allot:p:<holder>}: d, the lease's end (Redis TIME,
// ms). Beside it, {allot:p:<holder>}:in is its inbox: the digests (hex)
// of the keys a Quiesce waits for it to let go of, which its next renewal
// takes.
//
// Numbers are Lua doubles: exact below 2^53, which New checks every limit
// keeps to (Credits quotas are refused above it, Rate runs in µs).

// createScript registers a key: KEYS[1] its hash; ARGV reg, rec, revoked,
// then per limit its pool value and window index.
var createScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return 'exists' end
redis.call('HSET', KEYS[1], 'reg', ARGV[1], 'rec', ARGV[2], 'ver', '1')
if ARGV[3] == '1' then redis.call('HSET', KEYS[1], 'rv', '1') end
local n = (#ARGV - 3) / 2
for i = 0, n - 1 do
  redis.call('HSET', KEYS[1], 'v' .. i, ARGV[4 + 2 * i], 'w' .. i, ARGV[5 + 2 * i])
end
return 'ok'
`)

// reserveScript gives back and reserves (see engine.Reservation): KEYS[1]
// the hash of the key's pool (its own, or its chain's: rotate.go), KEYS[2]
// its holders; ARGV reg, holder, 0 (unused: a key's holders carry no
// lease, the store's is its own, renewScript), revoke, release, n, ver,
// the key's digest (hex), the engine's clock (ns, 19 digits), the pool's
// own digest, then 9 per limit: kind (c, w, r), quota, base tag, base value,
// from tag, from value, want, now (a window's index mod 2^30, Rate's µs),
// Rate's longest span (µs). It returns the outcome (ok, revoked, gone; or
// stale and the revoked flag) and per limit start, hard and window tag.
// A key rotated out is revoked if it or a key after it in the chain is
// (revoke of it revokes that link only), and stale once a grace on its way
// has passed (the engine reads it again and finds it ended).
var reserveScript = redis.NewScript(`
local h, hk = KEYS[1], KEYS[2]
if redis.call('HGET', h, 'reg') ~= ARGV[1] then return {'gone'} end
local key, clock = ARGV[8], ARGV[9]
local head = redis.call('HGET', h, 'head') or ARGV[10]
local revoked = redis.call('HGET', h, 'rv') == '1'
local expired = false
if key == head then
  if ARGV[4] == '1' and not revoked then
    redis.call('HSET', h, 'rv', '1')
    revoked = true
  end
else
  local l = redis.call('HGET', h, 'l:' .. key)
  if not l then return {'gone'} end
  if ARGV[4] == '1' and string.sub(l, -1) ~= '1' then
    -- Revoke of a link: every holder reads the chain again, and Quiesce
    -- waits for the reservations granted before (older versions).
    redis.call('HSET', h, 'l:' .. key, string.sub(l, 1, -2) .. '1')
    redis.call('HINCRBY', h, 'ver', 1)
  end
  local cur = key
  for _ = 1, 64 do
    if cur == head then break end
    l = redis.call('HGET', h, 'l:' .. cur)
    if not l then revoked = true; break end
    local nxt, dl, rv = string.match(l, '^(%x+),(%d+),([01])$')
    if rv == '1' then revoked = true end
    if clock >= dl then expired = true end
    cur = nxt
  end
  if cur ~= head then revoked = true end
end
local t = redis.call('TIME')
local nowms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if (expired and ARGV[5] ~= '1') or redis.call('HGET', h, 'ver') ~= ARGV[7] or tonumber(redis.call('HGET', h, 'frz') or '0') > nowms then
  return {'stale', revoked and '1' or '0'}
end
local M, HALF = 1073741824, 536870912
local release = ARGV[5] == '1'
local grant = not revoked and not release
local function s(x) return string.format('%.0f', x) end
local out = {revoked and 'revoked' or 'ok'}
for i = 0, tonumber(ARGV[6]) - 1 do
  local a = 11 + 9 * i
  local kind, q = ARGV[a], tonumber(ARGV[a + 1])
  local btag, bval = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local ftag, fval = tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5])
  local want, now, span = tonumber(ARGV[a + 6]), tonumber(ARGV[a + 7]), tonumber(ARGV[a + 8])
  local vf, wf = 'v' .. i, 'w' .. i
  local v = tonumber(redis.call('HGET', h, vf) or '0')
  local start, hard, tag = 0, 0, 0
  if kind == 'c' then
    if bval > fval then v = math.max(v - (bval - fval), 0) end
    start = v
    if grant then v = v + math.max(math.min(want, q - v), 0) end
    hard = v
  elseif kind == 'w' then
    tag = tonumber(redis.call('HGET', h, wf) or ARGV[a + 7])
    if tag == btag and ftag == btag and bval > fval then v = math.max(v - (bval - fval), 0) end
    local d = (now - tag) % M
    if d ~= 0 and d < HALF then tag, v = now, 0 end -- a newer window; an older one stays (a clock behind)
    start = v
    if grant then v = v + math.max(math.min(want, q - v), 0) end
    hard = v
    redis.call('HSET', h, wf, s(tag))
  else
    if v == bval and fval < bval then v = math.max(fval, now) end
    start = math.max(v, now)
    hard = start
    if grant then
      local g = math.min(want, now + span - start)
      if g > 0 then hard = start + g; v = hard end
    end
  end
  redis.call('HSET', h, vf, s(v))
  out[#out + 1] = s(start)
  out[#out + 1] = s(hard)
  out[#out + 1] = s(tag)
end
if release then
  local all = redis.call('HKEYS', hk)
  for _, f in ipairs(all) do
    if string.sub(f, 1, #ARGV[2] + 1) == ARGV[2] .. ':' then redis.call('HDEL', hk, f) end
  end
elseif grant then
  redis.call('HSET', hk, ARGV[2] .. ':' .. ARGV[7], s(nowms))
end
return out
`)

// freezeScript starts a change: KEYS[1] the key's hash; ARGV reg, how
// long (ms). It bumps the version, so that every reservation is stale,
// and freezes the key, so that none is granted until the change commits
// or the freeze ends. It returns {'ok', ver}, {'gone'} or {'busy'} (another
// change runs).
var freezeScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'reg') ~= ARGV[1] then return {'gone'} end
local t = redis.call('TIME')
local nowms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if tonumber(redis.call('HGET', KEYS[1], 'frz') or '0') > nowms then return {'busy'} end
local ver = redis.call('HINCRBY', KEYS[1], 'ver', 1)
redis.call('HSET', KEYS[1], 'frz', string.format('%.0f', nowms + tonumber(ARGV[2])))
return {'ok', tostring(ver)}
`)

// commitScript ends a change: KEYS[1] the key's hash, KEYS[2] its
// holders; ARGV ver (the freeze's), deleted, rec, then per limit its pool
// value and window tag. It fails ('lost') if the freeze has ended or is
// not this one's.
var commitScript = redis.NewScript(`
local t = redis.call('TIME')
local nowms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('HGET', KEYS[1], 'ver') ~= ARGV[1] or tonumber(redis.call('HGET', KEYS[1], 'frz') or '0') <= nowms then
  return 'lost'
end
if ARGV[2] == '1' then
  redis.call('DEL', KEYS[1], KEYS[2])
  return 'ok'
end
redis.call('HSET', KEYS[1], 'rec', ARGV[3])
local n = (#ARGV - 3) / 2
for i = 0, n - 1 do
  redis.call('HSET', KEYS[1], 'v' .. i, ARGV[4 + 2 * i], 'w' .. i, ARGV[5 + 2 * i])
end
for i = n, 7 do
  redis.call('HDEL', KEYS[1], 'v' .. i, 'w' .. i)
end
redis.call('HINCRBY', KEYS[1], 'ver', 1)
redis.call('HDEL', KEYS[1], 'frz')
return 'ok'
`)

// thawScript ends a change that failed: KEYS[1] the key's hash; ARGV the
// freeze's version.
var thawScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'ver') == ARGV[1] then redis.call('HDEL', KEYS[1], 'frz') end
return 'ok'
`)

// holdersScript returns Redis's clock (ms) and the holders of a key other
// than ARGV[1] that Quiesce waits for: KEYS[1] the holders hash, KEYS[2]
// the hash of the key's pool; ARGV the holder, the key's digest (hex), the
// pool's. For the head of a chain (a key never rotated is one) it counts
// every reservation; for a key rotated out only those granted at a
// version of the pool before its current one: a change of the chain's
// links bumps the version, and reservations granted since know of it, so
// that a Revoke of a link, or a Rotate, does not wait for engines that go
// on using the chain's head.
var holdersScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local below = math.huge
if (redis.call('HGET', KEYS[2], 'head') or ARGV[3]) ~= ARGV[2] then
  below = tonumber(redis.call('HGET', KEYS[2], 'ver') or '0')
end
local out, seen = {string.format('%.0f', now)}, {}
for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
  local who, ver = string.match(f, '^(.-):(%d+)$')
  if who and who ~= ARGV[1] and tonumber(ver) < below and not seen[who] then
    seen[who] = true
    out[#out + 1] = who
  end
end
return out
`)

// renewScript renews a store's lease: KEYS[1] its lease hash, KEYS[2] its
// inbox; ARGV the lease (ms), first (1: the store's first renewal). It
// returns lapsed (1 if the lease had ended before, by Redis's clock, or
// is gone) and the inbox, which it empties.
var renewScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[1])
local d = tonumber(redis.call('HGET', KEYS[1], 'd') or '0')
local out = {(ARGV[2] ~= '1' and d <= now) and '1' or '0'}
for _, k in ipairs(redis.call('SMEMBERS', KEYS[2])) do out[#out + 1] = k end
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[1], 'd', string.format('%.0f', now + lease))
redis.call('PEXPIRE', KEYS[1], 4 * lease)
return out
`)

// pokeScript puts a key's digest (ARGV[1]) into a store's inbox, for its
// next renewal, unless its lease has ended: KEYS[1] the store's lease
// hash, KEYS[2] its inbox; ARGV the digest, how long the inbox is kept
// (ms). It returns 1 if the lease is live by Redis's clock, else 0.
var pokeScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if tonumber(redis.call('HGET', KEYS[1], 'd') or '0') <= now then return 0 end
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[2]))
return 1
`)

// letGoScript deletes every field of holder ARGV[1] from the holders hash
// KEYS[1].
var letGoScript = redis.NewScript(`
local me = ARGV[1] .. ':'
for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
  if f == ARGV[1] or string.sub(f, 1, #me) == me then redis.call('HDEL', KEYS[1], f) end
end
return 'ok'
`)

// pointScript writes a key's pointer to its chain's pool (rotate.go):
// KEYS[1] the key's hash; ARGV the pool's digest (hex), the chain's
// registration. It returns 'ok', 'again' (the same pointer is there: a
// Rotate called again) or 'exists'.
var pointScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then
  if redis.call('HGET', KEYS[1], 'pool') == ARGV[1] and redis.call('HGET', KEYS[1], 'preg') == ARGV[2] then return 'again' end
  return 'exists'
end
redis.call('HSET', KEYS[1], 'pool', ARGV[1], 'preg', ARGV[2])
return 'ok'
`)

// unpointScript removes a key's pointer if it is the one given: KEYS[1]
// the key's hash; ARGV the pool's digest, the registration.
var unpointScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'pool') == ARGV[1] and redis.call('HGET', KEYS[1], 'preg') == ARGV[2] then
  redis.call('DEL', KEYS[1])
  return 'ok'
end
return 'kept'
`)

// rotateScript makes ARGV[3] the head of the chain of pool KEYS[1] in
// place of ARGV[2] (rotate.go): ARGV reg, old, new (hex), now, deadline
// (19 digits), grace (0 or 1), the longest chain, the pool's own digest.
// It returns 'ok'; 'done' if it was done already; 'gone', 'rotated',
// 'revoked', 'exists', 'chain' (nothing changed) or 'busy' (a change runs).
var rotateScript = redis.NewScript(`
local h = KEYS[1]
if redis.call('HGET', h, 'reg') ~= ARGV[1] then return 'gone' end
local old, new, now, dl = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local head = redis.call('HGET', h, 'head') or ARGV[8]
if head == new then
  local l = redis.call('HGET', h, 'l:' .. old)
  if l and string.sub(l, 1, #new + 1) == new .. ',' then return 'done' end
  return 'exists'
end
if head ~= old then
  if redis.call('HEXISTS', h, 'l:' .. old) == 1 then return 'rotated' end
  return 'gone'
end
if redis.call('HGET', h, 'rv') == '1' then return 'revoked' end
if new == ARGV[8] or redis.call('HEXISTS', h, 'l:' .. new) == 1 then return 'exists' end
local t = redis.call('TIME')
local nowms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if tonumber(redis.call('HGET', h, 'frz') or '0') > nowms then return 'busy' end
local zero = string.rep('0', 19)
local cd, cu = tonumber(redis.call('HGET', h, 'cd') or '0'), redis.call('HGET', h, 'cu') or zero
local depth = 0
if ARGV[6] == '1' then
  depth = 1
  if now < cu then depth = depth + cd end
  if depth > tonumber(ARGV[7]) then return 'chain' end
  if dl > cu then cu = dl end
else
  cu = zero
end
redis.call('HSET', h, 'head', new, 'l:' .. old, new .. ',' .. dl .. ',' .. (ARGV[6] == '1' and '0' or '1'), 'cd', tostring(depth), 'cu', cu)
redis.call('HINCRBY', h, 'ver', 1)
return 'ok'
`)
