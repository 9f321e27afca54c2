-- TAKE (jobs/limits.py): a tenant's submit limits checked, and its tokens taken, in one atomic step, on the
-- Redis server's clock (TIME), so any number of API processes share one bucket without a race.
-- KEYS: the tenant's limits hash (cached from the store of record), its token bucket, its queued set
-- ARGV: n (submits asked for; 0 only reads), the defaults of submits_per_s, burst and max_queued, the
--       oldest created ms a queued job may have (older ones expired with the pending TTL: they leave the set)
-- Returns {allowed 1/0, the refused limit ('' when allowed), submits_per_s, burst, tokens left, seconds until
--          the bucket is full, seconds until n tokens are there (-1: never, n > burst), queued, max_queued};
--          fractions as strings (a Lua number would come back truncated to an integer).
-- A limit of 0 is no limit. A refused submit takes nothing.
local l = redis.call('HMGET', KEYS[1], 'submits_per_s', 'burst', 'max_queued', 'max_streams', 'max_storage_mb')
local rate = tonumber(l[1]) or tonumber(ARGV[2])
local burst = tonumber(l[2]) or tonumber(ARGV[3])
local maxq = tonumber(l[3]) or tonumber(ARGV[4])
local maxs = tonumber(l[4]) or tonumber(ARGV[6])
local maxmb = tonumber(l[5]) or tonumber(ARGV[7])
local stored = tonumber(redis.call('GET', KEYS[5])) or 0
local n = tonumber(ARGV[1])
if burst <= 0 then burst = math.max(1, math.ceil(rate)) end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[5])
local queued = redis.call('ZCARD', KEYS[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local streams = redis.call('ZCOUNT', KEYS[4], '(' .. (tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)), '+inf')
local tokens = burst
if rate > 0 then
  local b = redis.call('HMGET', KEYS[2], 'tokens', 'at')
  if b[1] and b[2] then
    tokens = math.min(burst, tonumber(b[1]) + math.max(0, now - tonumber(b[2])) * rate)
  end
end
local refused = ''
local wait = 0
if n > 0 and rate > 0 and tokens < n then
  refused = 'submits_per_s'
  if n > burst then wait = -1 else wait = (n - tokens) / rate end
elseif n > 0 and maxq > 0 and queued + n > maxq then
  refused = 'max_queued'
elseif n > 0 and maxmb > 0 and stored >= maxmb * 1048576 then
  refused = 'max_storage_mb'
end
if refused == '' and n > 0 and rate > 0 then
  tokens = tokens - n
  redis.call('HSET', KEYS[2], 'tokens', string.format('%.6f', tokens), 'at', string.format('%.6f', now))
  redis.call('PEXPIRE', KEYS[2], math.ceil(burst / rate * 1000) + 1000)
end
local full = 0
if rate > 0 then full = (burst - tokens) / rate end
local allowed = 0
if refused == '' then allowed = 1 end
return {allowed, refused, tostring(rate), tostring(burst), string.format('%.6f', tokens),
        string.format('%.3f', full), string.format('%.3f', wait), queued, maxq, streams, maxs, stored, maxmb}
