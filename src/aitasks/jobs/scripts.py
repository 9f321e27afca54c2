"""Lua scripts that make each change to a job atomic: one round trip, no half-written state.

``CREATE`` writes the record, indexes it for its tenant, claims the idempotency key and pushes the
Celery message in one step, so a job is either fully accepted or not at all. ``UPDATE`` applies a
change only while the job is not finished (a late progress report cannot undo a cancel), bumps the
record's sequence number, counts a job that just finished for /metrics and publishes the new state on
the job's channel: a client that sees a terminal state also sees it counted.
"""

from __future__ import annotations

from aitasks.jobs import keys
from aitasks.jobs.metrics import DURATION_BUCKETS, TIMELINE_KEEP_S, bucket_label

_BUCKETS_LUA = "{" + ", ".join(f"{{{b!r}, '{bucket_label(b)}'}}" for b in DURATION_BUCKETS) + "}"

CREATE = """
-- KEYS: job, tenant index, queue list, idempotency key ('' = none), submitted counter
-- ARGV: pending ttl, created ms, job id, celery message, idempotency ttl, type, oldest ms,
--       the record's hash pairs as one JSON list of strings (one argument packs far faster than 30)
if KEYS[4] ~= '' then
  local existing = redis.call('GET', KEYS[4])
  if existing and redis.call('EXISTS', 'aitasks:job:' .. existing) == 1 then
    return {0, existing}
  end
  redis.call('SET', KEYS[4], ARGV[3], 'EX', ARGV[5])
end
redis.call('HSET', KEYS[1], unpack(cjson.decode(ARGV[8])))
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[7])
redis.call('LPUSH', KEYS[3], ARGV[4])
redis.call('HINCRBY', KEYS[5], ARGV[6], 1)
return {1, ARGV[3]}
"""

UPDATE = """
-- KEYS: job, events channel
-- ARGV: ttl ('' = keep), hash pairs...
-- Returns the new sequence number, 0 when the job does not exist, -1 when it already finished.
-- The metrics keys are derived here, not passed in: aitasks runs on one Redis, not a cluster.
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 0 end
if status == 'SUCCESS' or status == 'FAILURE' or status == 'REVOKED' then return -1 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
if ARGV[1] ~= '' then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
local f = redis.call('HMGET', KEYS[1], 'id', 'status', 'progress', 'message', 'attempts',
                     'error_type', 'error_message', 'type', 'cancel_requested_at', 'started_at', 'finished_at')
if f[2] == 'SUCCESS' or f[2] == 'FAILURE' or f[2] == 'REVOKED' then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
  redis.call('HINCRBY', '@JOBS@', f[8] .. '|' .. f[2], 1)
  local kind = 'finished'
  if f[2] ~= 'SUCCESS' then kind = string.lower(f[2]) end
  local timeline = '@TIMELINE@' .. kind
  redis.call('HINCRBY', timeline, tostring(math.floor(now / 60) * 60), 1)
  redis.call('EXPIRE', timeline, @KEEP@)
  local started = tonumber(f[10] or '')
  if started then
    local d = (tonumber(f[11] or '') or now) - started
    if d < 0 then d = 0 end
    local dkey = '@DURATION@' .. f[8]
    for _, b in ipairs(@BUCKETS@) do
      if d <= b[1] then redis.call('HINCRBY', dkey, b[2], 1) end
    end
    redis.call('HINCRBY', dkey, '+Inf', 1)
    redis.call('HINCRBYFLOAT', dkey, 'sum', tostring(d))
  end
end
-- A webhook subscribed to this kind of change gets a delivery queued, in the same step: a state the
-- client sees is a state its webhook will be told about, whoever wrote it (worker, API, monitor).
local hook = redis.call('HMGET', KEYS[1], 'webhook', 'webhook_events')
if hook[1] and hook[1] ~= '' then
  local kind = nil
  if f[2] == 'SUCCESS' or f[2] == 'FAILURE' or f[2] == 'REVOKED' then kind = 'completed'
  elseif f[2] == 'PROCESSING' and status ~= 'PROCESSING' then kind = 'start'
  elseif f[2] == 'PROCESSING' then kind = 'progress' end
  if kind and string.find(hook[2] or '', ',' .. kind .. ',', 1, true) then
    redis.call('LPUSH', '@WEBHOOKS@', cjson.encode({task_id = f[1], event = kind, seq = seq, attempt = 1,
                                                   status = f[2], progress = tonumber(f[3]), message = f[4]}))
  end
end
local ev = {task_id = f[1], seq = seq, status = f[2], progress = tonumber(f[3]), message = f[4],
            attempts = tonumber(f[5]), task_type = f[8]}
if f[6] and f[6] ~= '' then ev.error_type = f[6]; ev.error = f[7] end
if f[9] and f[9] ~= '' then ev.cancel_requested = true end
redis.call('PUBLISH', KEYS[2], cjson.encode(ev))
return seq
""".replace("@JOBS@", keys.METRICS_JOBS).replace("@TIMELINE@", keys.metrics_timeline("")) \
    .replace("@DURATION@", keys.metrics_duration("")).replace("@KEEP@", str(TIMELINE_KEEP_S)) \
    .replace("@BUCKETS@", _BUCKETS_LUA).replace("@WEBHOOKS@", keys.WEBHOOKS_PENDING)
