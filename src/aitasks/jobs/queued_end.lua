-- UPDATE fragment (every change): the tenant's set of queued jobs (jobs/limits.py, max_queued). CREATE
-- adds a job; it leaves the set with the change that takes it out of PENDING (a worker starts it, it is
-- cancelled, or it fails before it started), and would come back with a change that made it PENDING again.
-- A set, not a counter: removing twice removes once, so no change can make the count drift.
-- Frame locals: status (before the change), f[1] (the job's id), f[2] (its status now), x.tenant.
if (status == 'PENDING') ~= (f[2] == 'PENDING') then
  local tenant = x.tenant
  if tenant then
    local queued = '@TENANT_PREFIX@' .. tenant .. ':queued'
    if f[2] == 'PENDING' then
      local t = redis.call('TIME')
      redis.call('ZADD', queued, tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), f[1])
    else
      redis.call('ZREM', queued, f[1])
    end
  end
end
