-- The fair dispatcher (jobs/dispatch.py), as Lua functions spliced into the scripts that queue a job
-- (CREATE, FAN_OUT), end one (the UPDATE script's dispatch fragment) and the dispatcher's tick, so a job
-- moves from its tenant's line to its Celery queue in the same atomic step as the change that frees a
-- slot or brings the job: nothing is moved twice or lost, whoever runs it and wherever it is killed.
--
-- A queue keeps only as many jobs handed to Celery and not ended ('inflight') as its workers have slots
-- ('capacity', written by the tick from the workers' heartbeats); the others wait in per-tenant lists, one
-- per priority. Slots go to the waiting tenants by weighted fair queueing (stride scheduling): each tenant
-- has a virtual start time ('pass'); the one with the lowest goes next and its pass grows by 1 / weight.
-- A tenant that starts waiting joins at the queue's virtual time (the pass of the last job handed over),
-- so it goes ahead of a backlog that was already served, and one that leaves keeps its pass: it cannot
-- jump the line by coming and going. Within a tenant: high before normal before low, FIFO in each.
-- Without a capacity (no dispatcher tick yet, or for longer than its TTL), jobs are handed over as they
-- come (at most `budget` a call), as a plain FIFO would: a queue never waits on a missing dispatcher.

local DISPATCH_PRIORITIES = {'high', 'normal', 'low'}

local function dispatch_key(queue, name)
  return '@DISPATCH_PREFIX@' .. queue .. ':' .. name
end

local function dispatch_pending(queue, tenant, priority)
  return '@DISPATCH_PREFIX@' .. queue .. ':pending:' .. tenant .. ':' .. priority
end

-- A job starts waiting: its id at the end of its tenant's line of its priority, its message aside.
local function dispatch_wait(queue, tenant, priority, id, target, message)
  redis.call('RPUSH', dispatch_pending(queue, tenant, priority), id)
  redis.call('HSET', dispatch_key(queue, 'messages'), id, target .. '\n' .. message)
  local tenants = dispatch_key(queue, 'tenants')
  if not redis.call('ZSCORE', tenants, tenant) then
    local vtime = tonumber(redis.call('GET', dispatch_key(queue, 'vtime')) or '0')
    local last = tonumber(redis.call('HGET', dispatch_key(queue, 'passes'), tenant) or '0')
    redis.call('ZADD', tenants, math.max(vtime, last), tenant)
  end
end

-- A job stops holding a slot (it ended, or it waits for its children): its queue's and its tenant's.
local function dispatch_release(queue, tenant, id)
  redis.call('ZREM', dispatch_key(queue, 'inflight'), id)
  if redis.call('ZREM', '@TENANT_PREFIX@' .. tenant .. ':running', id) == 1 then
    if tonumber(redis.call('ZINCRBY', '@DISPATCH_BUSY@', -1, tenant)) <= 0 then
      redis.call('ZREM', '@DISPATCH_BUSY@', tenant)
    end
  end
end

-- A job takes a slot: it counts in its queue's flight and as its tenant's running job (dispatch_run hands
-- it over; a retried run that lent its slot through the countdown takes one back, jobs/start.lua).
local function dispatch_take(queue, tenant, id, now)
  redis.call('ZADD', dispatch_key(queue, 'inflight'), now, id)
  if redis.call('ZADD', '@TENANT_PREFIX@' .. tenant .. ':running', now, id) == 1 then
    redis.call('ZINCRBY', '@DISPATCH_BUSY@', 1, tenant)
  end
end

-- A job that ends while it waits (cancelled, or past its pending limit) leaves its line.
local function dispatch_forget(queue, tenant, priority, id)
  if redis.call('HDEL', dispatch_key(queue, 'messages'), id) == 1 then
    redis.call('LREM', dispatch_pending(queue, tenant, priority or 'normal'), 1, id)
  end
end

-- Hand waiting jobs of `queue` to Celery while it has free slots (at most `budget` without a capacity).
-- Returns how many were handed over.
local function dispatch_run(queue, budget)
  local tenants = dispatch_key(queue, 'tenants')
  if redis.call('ZCARD', tenants) == 0 then return 0 end
  local inflight = dispatch_key(queue, 'inflight')
  local capacity = redis.call('GET', dispatch_key(queue, 'capacity'))
  local free = budget
  if capacity then free = tonumber(capacity) - redis.call('ZCARD', inflight) end
  if free <= 0 then return 0 end
  local defaults = redis.call('HMGET', '@DISPATCH_DEFAULTS@', 'max_running', 'weight')
  local messages = dispatch_key(queue, 'messages')
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local moved = 0
  local steps = 0
  while free > 0 and steps < free + 1000 do  -- a bound on the jobs dropped (ended while waiting) a call
    steps = steps + 1
    local round = redis.call('ZRANGE', tenants, 0, 31, 'WITHSCORES')
    if #round == 0 then break end
    local tenant, pass, weight = nil, 0, 1
    for i = 1, #round, 2 do
      local l = redis.call('HMGET', '@TENANT_PREFIX@' .. round[i] .. ':limits', 'max_running', 'weight')
      local max_running = tonumber(l[1] or defaults[1] or '0') or 0
      if max_running <= 0 or redis.call('ZCARD', '@TENANT_PREFIX@' .. round[i] .. ':running') < max_running then
        tenant, pass = round[i], tonumber(round[i + 1])
        weight = tonumber(l[2] or defaults[2] or '1') or 1
        break
      end
    end
    if not tenant then break end  -- every tenant at the front is at its max_running: their ends dispatch
    local id = nil
    for _, priority in ipairs(DISPATCH_PRIORITIES) do
      id = redis.call('LPOP', dispatch_pending(queue, tenant, priority))
      if id then break end
    end
    -- Any job left in its lines (an emptied list is no key: one EXISTS counts the three).
    local left = redis.call('EXISTS', dispatch_pending(queue, tenant, 'high'),
                            dispatch_pending(queue, tenant, 'normal'), dispatch_pending(queue, tenant, 'low'))
    local next_pass = pass
    if id then
      local entry = redis.call('HGET', messages, id)
      local status = redis.call('HGET', '@JOB_PREFIX@' .. id, 'status')
      if entry then redis.call('HDEL', messages, id) end
      -- (a parent's callback waits as its parent, PROCESSING until it ends: worker/chord_end.lua)
      if entry and (status == 'PENDING' or status == 'RETRY' or (status == 'PROCESSING'
          and redis.call('HEXISTS', '@JOB_PREFIX@' .. id, 'callback_fair') == 1)) then
        local cut = string.find(entry, '\n', 1, true)
        redis.call('LPUSH', string.sub(entry, 1, cut - 1), string.sub(entry, cut + 1))
        dispatch_take(queue, tenant, id, now)
        if weight <= 0 then weight = 1 end
        next_pass = pass + 1 / weight
        local vtime = tonumber(redis.call('GET', dispatch_key(queue, 'vtime')) or '0')
        if pass > vtime then redis.call('SET', dispatch_key(queue, 'vtime'), tostring(pass)) end
        free = free - 1
        moved = moved + 1
      end  -- else it ended (or vanished) while waiting: dropped, nothing charged
    end
    if left == 0 then
      redis.call('ZREM', tenants, tenant)
      redis.call('HSET', dispatch_key(queue, 'passes'), tenant, tostring(next_pass))
    else
      redis.call('ZADD', tenants, next_pass, tenant)
    end
  end
  return moved
end
