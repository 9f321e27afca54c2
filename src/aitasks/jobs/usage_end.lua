-- UPDATE fragment (terminal changes only): the tenant's usage counters for cost reports (jobs/usage.py).
-- Frame locals: f (f[2] status, f[8] type, f[10] started_at, f[11] finished_at), now,
--               x.tenant, x.queue, x.children_total.
-- Writes the hash of the UTC day the job finished: 'type|queue|jobs', 'type|queue|seconds' and
-- 'type|queue|status:<STATUS>'. Records expire after their retention; these hashes last @USAGE_TTL_S@ s from
-- the day's first job of each type and queue (set then, not by every end: at most a day shorter).
-- Compute seconds = finished - started; a parent (comparison) mostly waits for its children, which
-- count their own: it counts none.

-- Epoch seconds -> 'YYYY-MM-DD' in UTC (Redis' Lua has no os.date). Hinnant's civil_from_days.
local function utc_day(ts)
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
end

local started = tonumber(f[10] or '')
local fin = tonumber(f[11] or '') or now
local secs = 0
if started and not x.children_total then secs = math.max(0, fin - started) end
local ukey = '@USAGE_PREFIX@' .. (x.tenant or '') .. ':' .. utc_day(fin)
local pre = f[8] .. '|' .. (x.queue or '') .. '|'
local first = redis.call('HINCRBY', ukey, pre .. 'jobs', 1) == 1
redis.call('HINCRBYFLOAT', ukey, pre .. 'seconds', string.format('%.6f', secs))
redis.call('HINCRBY', ukey, pre .. 'status:' .. f[2], 1)
if first then redis.call('EXPIRE', ukey, @USAGE_TTL_S@) end  -- (set by the day's first job of each type and queue)
