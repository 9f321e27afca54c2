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

# A Lua function: epoch seconds -> 'YYYY-MM-DD' in UTC (Redis' Lua has no os.date). Hinnant's civil_from_days.
UTC_DAY_LUA = """local function utc_day(ts)
    local z = math.floor(ts / 86400) + 719468
    local era = math.floor(z / 146097)
    local doe = z - era * 146097
    local yoe = doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)
    yoe = math.floor(yoe / 365)
    local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
    local mp = math.floor((5 * doy + 2) / 153)
    local d = doy - math.floor((153 * mp + 2) / 5) + 1
    local m = mp < 10 and mp + 3 or mp - 9
    if m <= 2 then yoe = yoe + 1 end
    return string.format('%04d-%02d-%02d', yoe + era * 400, m, d)
  end"""
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
  -- What the sections below need of the record, in one read.
  local x = redis.call('HMGET', KEYS[1], 'tenant', 'queue', 'children_total', 'parent', 'document', 'result')
  -- Metrics (/metrics): outcomes by type, the per-minute timeline, the duration histogram.
  redis.call('HINCRBY', '@JOBS@', f[8] .. '|' .. f[2], 1)
  local kind = 'finished'
  if f[2] ~= 'SUCCESS' then kind = string.lower(f[2]) end
  local timeline = '@TIMELINE@' .. kind
  redis.call('HINCRBY', timeline, tostring(math.floor(now / 60) * 60), 1)
  redis.call('EXPIRE', timeline, @KEEP@)
  local started = tonumber(f[10] or '')
  local fin = tonumber(f[11] or '') or now
  if started then
    local d = math.max(0, fin - started)
    local dkey = '@DURATION@' .. f[8]
    for _, b in ipairs(@BUCKETS@) do
      if d <= b[1] then redis.call('HINCRBY', dkey, b[2], 1) end
    end
    redis.call('HINCRBY', dkey, '+Inf', 1)
    redis.call('HINCRBYFLOAT', dkey, 'sum', tostring(d))
  end
  -- Usage (cost reports): the tenant's counters for the UTC day the job finished, by type and queue.
  -- Records expire after their retention; these hashes last @USAGE_TTL@ s. Compute seconds = finished -
  -- started; a parent (comparison) mostly waits for its children, which count their own: it counts none.
  local secs = 0
  if started and not x[3] then secs = math.max(0, fin - started) end
  @UTC_DAY@
  local ukey = '@USAGE@' .. (x[1] or '') .. ':' .. utc_day(fin)
  local pre = f[8] .. '|' .. (x[2] or '') .. '|'
  redis.call('HINCRBY', ukey, pre .. 'jobs', 1)
  redis.call('HINCRBYFLOAT', ukey, pre .. 'seconds', string.format('%.6f', secs))
  redis.call('HINCRBY', ukey, pre .. 'status:' .. f[2], 1)
  redis.call('EXPIRE', ukey, @USAGE_TTL@)
  -- Chord on the job store (worker/children.py): a child's end, whoever writes it, counts on its parent,
  -- whose progress is finished/total; the last one queues the parent's pre-built callback message.
  local parent = x[4]
  if parent and parent ~= '' then
    local pkey = 'aitasks:job:' .. parent
    local p = redis.call('HMGET', pkey, 'status', 'children_total', 'queue', 'callback', 'attempts', 'type',
                         'webhook', 'webhook_events')
    if p[1] and p[2] then
      local done = redis.call('HINCRBY', pkey, 'children_done', 1)
      local total = tonumber(p[2])
      if p[1] ~= 'SUCCESS' and p[1] ~= 'FAILURE' and p[1] ~= 'REVOKED' then
        local pprogress = math.min(99, math.floor(100 * done / total))
        local pmessage = done .. ' of ' .. total .. ' child jobs finished'
        redis.call('HSET', pkey, 'progress', pprogress, 'message', pmessage)
        local pseq = redis.call('HINCRBY', pkey, 'seq', 1)
        redis.call('PUBLISH', 'aitasks:events:' .. parent, cjson.encode({task_id = parent, seq = pseq,
          status = p[1], progress = pprogress, message = pmessage, attempts = tonumber(p[5]), task_type = p[6]}))
        -- The parent's progress is a change its webhook may have asked for, like any other.
        if p[7] and p[7] ~= '' and string.find(p[8] or '', ',progress,', 1, true) then
          redis.call('LPUSH', '@WEBHOOKS@', cjson.encode({task_id = parent, event = 'progress', seq = pseq,
            attempt = 1, status = p[1], progress = pprogress, message = pmessage}))
        end
        if done == total then redis.call('LPUSH', p[3], p[4]) end
      end
    end
  end
  -- Document records (api/routes/documents.py): a document_ingestion job names its record in 'document';
  -- its end, whoever writes it (the job, the worker-lost or hard-limit hooks, a cancel), marks the record
  -- in the same step: completed with the result's numbers, or failed with the reason. Only while the record
  -- still names this job: a re-upload's newer job owns it then. The record has no TTL (it outlives the job).
  local dkey = x[5]
  if dkey and dkey ~= '' and redis.call('HGET', dkey, 'task_id') == f[1] then
    local dnow = string.format('%.3f', now)
    if f[2] == 'SUCCESS' then
      local ok, r = pcall(cjson.decode, x[6] or '{}')
      if not ok or type(r) ~= 'table' then r = {} end
      local function num(v) if type(v) == 'number' then return string.format('%d', v) end return '0' end
      redis.call('HSET', dkey, 'status', 'completed', 'pages', num(r.pages), 'chunks', num(r.chunks),
                 'ocr_pages', num(r.ocr_pages), 'tokens', num(r.tokens), 'doc_type', tostring(r.doc_type or ''),
                 'error', '', 'error_type', '', 'finished_at', dnow, 'updated_at', dnow)
    else
      local err = f[7]
      local code = f[6] or ''
      if f[2] == 'REVOKED' then err = 'The ingestion was cancelled (' .. (f[4] or 'Cancelled') .. ').'; code = 'Cancelled'
      elseif not err or err == '' then err = f[4] or 'Task failed' end
      redis.call('HSET', dkey, 'status', 'failed', 'error', err, 'error_type', code, 'finished_at', dnow,
                 'updated_at', dnow)
    end
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
    .replace("@BUCKETS@", _BUCKETS_LUA).replace("@WEBHOOKS@", keys.WEBHOOKS_PENDING) \
    .replace("@UTC_DAY@", UTC_DAY_LUA).replace("@USAGE@", keys.usage("", "")[:-1]) \
    .replace("@USAGE_TTL@", str(keys.USAGE_TTL_S))

FAN_OUT = """
-- A parent job's children, created and queued in one step (worker/children.py). The UPDATE script
-- counts their ends on the parent and queues the parent's callback message after the last one.
-- KEYS: parent job, parent events channel, tenant index, submitted counter
-- ARGV: callback message, created ms, pending ttl, children as JSON [{id, type, queue, message, hash}],
--       the parent's message while it waits
-- Returns 1 when created now, 0 when they exist already (a redelivered parent: nothing is duplicated),
-- -1 when the parent is gone or finished, -2 when its cancellation was requested.
local p = redis.call('HMGET', KEYS[1], 'status', 'children_total', 'cancel_requested_at', 'progress',
                     'attempts', 'type', 'id')
if not p[1] or p[1] == 'SUCCESS' or p[1] == 'FAILURE' or p[1] == 'REVOKED' then return -1 end
if p[2] then return 0 end
if p[3] and p[3] ~= '' then return -2 end
local ids = {}
for i, c in ipairs(cjson.decode(ARGV[4])) do
  local key = 'aitasks:job:' .. c.id
  redis.call('HSET', key, unpack(c.hash))
  redis.call('EXPIRE', key, ARGV[3])
  redis.call('ZADD', KEYS[3], ARGV[2], c.id)
  redis.call('LPUSH', c.queue, c.message)
  redis.call('HINCRBY', KEYS[4], c.type, 1)
  ids[i] = c.id
end
redis.call('HSET', KEYS[1], 'children', cjson.encode(ids), 'children_total', #ids, 'children_done', 0,
           'callback', ARGV[1], 'message', ARGV[5])
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('PUBLISH', KEYS[2], cjson.encode({task_id = p[7], seq = seq, status = p[1], progress = tonumber(p[4]),
                                             message = ARGV[5], attempts = tonumber(p[5]), task_type = p[6]}))
return 1
"""
