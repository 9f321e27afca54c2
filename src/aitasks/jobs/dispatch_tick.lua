-- TICK (worker/dispatcher.py): the dispatcher's periodic step for one queue, atomically: its capacity
-- (the live workers' slots plus the buffer) and the deployment's defaults written, slots held by jobs that
-- ended or vanished without the UPDATE script (a record expired, Redis lost a write) given back, then the
-- free slots filled in fair order (jobs/dispatch_lib.lua). Any worker may run it; one does, by a lock.
-- ARGV: queue, capacity, the default max_running, the default weight
-- Returns {jobs handed over, slots given back}.
@DISPATCH_LIB@

local queue = ARGV[1]
redis.call('SET', dispatch_key(queue, 'capacity'), ARGV[2])
redis.call('HSET', '@DISPATCH_DEFAULTS@', 'max_running', ARGV[3], 'weight', ARGV[4])
local inflight = dispatch_key(queue, 'inflight')
local freed = 0
for _, id in ipairs(redis.call('ZRANGE', inflight, 0, 999)) do
  local h = redis.call('HMGET', '@JOB_PREFIX@' .. id, 'status', 'tenant')
  if not h[1] or h[1] == 'SUCCESS' or h[1] == 'FAILURE' or h[1] == 'REVOKED' then
    redis.call('ZREM', inflight, id)
    if h[2] then dispatch_release(queue, h[2], id) end
    freed = freed + 1
  end
end
return {dispatch_run(queue, 0), freed}
