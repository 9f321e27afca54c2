-- UPDATE fragment (terminal changes only): count the job for /metrics (jobs/metrics.py).
-- Frame locals: f (f[2] status, f[8] type, f[10] started_at, f[11] finished_at), now.
-- Writes: outcomes by 'type|status', the per-minute timeline of its kind (finished, failure,
-- revoked), and the duration histogram of its type (its own bucket's count, and the sum).
redis.call('HINCRBY', '@METRICS_JOBS@', f[8] .. '|' .. f[2], 1)
local kind = 'finished'
if f[2] ~= 'SUCCESS' then kind = string.lower(f[2]) end
local timeline = '@METRICS_TIMELINE_PREFIX@' .. kind
-- Its lifetime set by each minute's first job, not by every job: the same 2 hours from the last minute.
if redis.call('HINCRBY', timeline, tostring(math.floor(now / 60) * 60), 1) == 1 then
  redis.call('EXPIRE', timeline, @TIMELINE_KEEP_S@)
end
local started = tonumber(f[10] or '')
if started then
  local d = math.max(0, (tonumber(f[11] or '') or now) - started)
  local dkey = '@METRICS_DURATION_PREFIX@' .. f[8]
  -- One write: the job's own bucket (the smallest bound it is under). /metrics sums them into Prometheus'
  -- cumulative buckets (jobs/metrics.py), so an end costs one command here, not one per bucket.
  local bucket = '+Inf'
  for _, b in ipairs(@DURATION_BUCKETS@) do
    if d <= b[1] then bucket = b[2]; break end
  end
  redis.call('HINCRBY', dkey, bucket, 1)
  redis.call('HINCRBYFLOAT', dkey, 'sum', tostring(d))
end
