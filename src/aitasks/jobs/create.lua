-- CREATE (jobs/store.py): accept a job in one step, so it is either fully accepted or not at all.
-- KEYS: job, tenant index, queue list, idempotency key ('' = none), submitted counter, the tenant's queued set
--       and its limits hash (jobs/limits.py)
-- ARGV: pending ttl, created ms, job id, celery message, idempotency ttl, type, oldest ms,
--       the record's hash pairs as one JSON list of strings (one argument packs far faster than 30),
--       claim ('1': take over an idempotency key whose job is in neither Redis nor the store of record),
--       the deployment's max_queued ('' = no check: a submit the outbox accepted while Redis was away),
--       fair dispatch ('1': the job waits in its tenant's line, jobs/dispatch_lib.lua; '0': straight onto
--       the queue list), the job's queue, tenant and priority
-- Returns {1, id} when created, {0, the first job's id} on a repeated idempotency key, {0, id} when the job
-- already exists (a create resent after its reply was lost, or forwarded from the API's outbox: never twice),
-- {-1, max_queued} when the tenant already has max_queued jobs queued (nothing written). The job joins its
-- tenant's queued set here; the UPDATE script's queued fragment takes it out when it leaves PENDING.
-- A key's first job may have left Redis once recorded (store/recorder.py): the key still names it, and
-- only a caller that found it in no store (api/submission.py) claims the key, with claim '1'.
@DISPATCH_LIB@

if redis.call('EXISTS', KEYS[1]) == 1 then
  return {0, ARGV[3]}
end
if KEYS[4] ~= '' then
  local existing = redis.call('GET', KEYS[4])
  if existing and (ARGV[9] ~= '1' or redis.call('EXISTS', '@JOB_PREFIX@' .. existing) == 1) then
    return {0, existing}
  end
end
if ARGV[10] and ARGV[10] ~= '' then
  local maxq = tonumber(redis.call('HGET', KEYS[7], 'max_queued') or ARGV[10])
  if maxq > 0 then
    -- Counted without a write (TAKE prunes the expired): Redis checks maxmemory only until a script's first
    -- write, so a write here, even one that frees, would let this job's writes past a full Redis.
    if redis.call('ZCOUNT', KEYS[6], ARGV[7], '+inf') >= maxq then return {-1, tostring(maxq)} end
  end
end
if KEYS[4] ~= '' then
  redis.call('SET', KEYS[4], ARGV[3], 'EX', ARGV[5])
end
redis.call('HSET', KEYS[1], unpack(cjson.decode(ARGV[8])))
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
redis.call('ZADD', '@JOBS_LIVE@', ARGV[2], ARGV[3])  -- the sweep's index of unfinished jobs
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[7])
redis.call('ZADD', KEYS[6], ARGV[2], ARGV[3])
redis.call('HINCRBY', KEYS[5], ARGV[6], 1)
if ARGV[11] == '1' then
  dispatch_wait(ARGV[12], ARGV[13], ARGV[14], ARGV[3], KEYS[3], ARGV[4])
  dispatch_run(ARGV[12], 2)
else
  redis.call('LPUSH', KEYS[3], ARGV[4])
end
return {1, ARGV[3]}
