-- UPDATE fragment (terminal changes only): count the job for /metrics (jobs/metrics.py).
-- Frame locals: f (f[2] status, f[8] type, f[10] started_at, f[11] finished_at), now.
-- Writes: outcomes by 'type|status', the per-minute timeline of its kind (finished, failure,
-- revoked), and the duration histogram of its type (cumulative buckets, +Inf, sum).
redis.call('HINCRBY', '@METRICS_JOBS@', f[8] .. '|' .. f[2], 1)
local kind = 'finished'
if f[2] ~= 'SUCCESS' then kind = string.lower(f[2]) end
local timeline = '@METRICS_TIMELINE_PREFIX@' .. kind
redis.call('HINCRBY', timeline, tostring(math.floor(now / 60) * 60), 1)
redis.call('EXPIRE', timeline, @TIMELINE_KEEP_S@)
local started = tonumber(f[10] or '')
if started then
  local d = math.max(0, (tonumber(f[11] or '') or now) - started)
  local dkey = '@METRICS_DURATION_PREFIX@' .. f[8]
  for _, b in ipairs(@DURATION_BUCKETS@) do
    if d <= b[1] then redis.call('HINCRBY', dkey, b[2], 1) end
  end
  redis.call('HINCRBY', dkey, '+Inf', 1)
  redis.call('HINCRBYFLOAT', dkey, 'sum', tostring(d))
end
