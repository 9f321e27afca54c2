-- UPDATE fragment (terminal changes only): the chord on the job store (worker/children.py).
-- Frame locals: x.parent (the parent job's id, for a child).
-- A child's end, whoever writes it, counts on its parent, whose progress becomes finished/total (its
-- event published, its webhook told when it asked for progress); the last one queues the parent's
-- pre-built callback message on the parent's queue (or the broker outbox: the list fan_out.lua recorded);
-- with fair dispatch (fan_out.lua marked the parent) it waits in the tenant's line as any job does and takes a
-- slot to run, so max_running and the queue's slots hold for the callback too.
@DISPATCH_LIB@
local parent = x.parent
if parent and parent ~= '' then
  local pkey = '@JOB_PREFIX@' .. parent
  local p = redis.call('HMGET', pkey, 'status', 'children_total', 'queue', 'callback', 'attempts', 'type',
                       'webhook', 'webhook_events', 'callback_list', 'callback_fair', 'tenant', 'priority')
  if p[1] and p[2] then
    local done = redis.call('HINCRBY', pkey, 'children_done', 1)
    local total = tonumber(p[2])
    if p[1] ~= 'SUCCESS' and p[1] ~= 'FAILURE' and p[1] ~= 'REVOKED' then
      local pprogress = math.min(99, math.floor(100 * done / total))
      local pmessage = done .. ' of ' .. total .. ' child jobs finished'
      redis.call('HSET', pkey, 'progress', pprogress, 'message', pmessage)
      local pseq = redis.call('HINCRBY', pkey, 'seq', 1)
      redis.call('PUBLISH', '@EVENTS_PREFIX@' .. parent, cjson.encode({task_id = parent, seq = pseq,
        status = p[1], progress = pprogress, message = pmessage, attempts = tonumber(p[5]), task_type = p[6]}))
      -- The parent's progress is a change its webhook may have asked for, like any other.
      if p[7] and p[7] ~= '' and string.find(p[8] or '', ',progress,', 1, true) then
        redis.call('LPUSH', '@WEBHOOKS_PENDING@', cjson.encode({task_id = parent, event = 'progress', seq = pseq,
          attempt = 1, status = p[1], progress = pprogress, message = pmessage}))
      end
      if done == total then
        local list = p[3]
        if p[9] and p[9] ~= '' then list = p[9] end
        if p[10] == '1' and p[11] then
          dispatch_wait(p[3], p[11], p[12] or 'normal', parent, list, p[4])
          dispatch_run(p[3], 1)
        else
          redis.call('LPUSH', list, p[4])
        end
      end
    end
  end
end
