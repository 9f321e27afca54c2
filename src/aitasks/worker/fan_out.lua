-- FAN_OUT: a parent job's children, created and queued in one step (worker/children.py). The UPDATE
-- script's chord fragment (worker/chord_end.lua) counts their ends on the parent and queues the
-- parent's callback message after the last one.
-- KEYS: parent job, parent events channel, tenant index, submitted counter
-- ARGV: callback message, created ms, pending ttl, children as JSON [{id, type, queue, list, message, hash}]
--       (list: the one the child's message goes onto: its queue, or the broker outbox with RabbitMQ),
--       the parent's message while it waits, the list its callback message will go onto, fair dispatch
--       ('1': the children wait in the tenant's line at the parent's priority, and the parent gives its
--       slot back while it waits for them: jobs/dispatch_lib.lua)
-- Returns 1 when created now, 0 when they exist already (a redelivered parent: nothing is duplicated),
-- -1 when the parent is gone or finished, -2 when its cancellation was requested.
@DISPATCH_LIB@

local p = redis.call('HMGET', KEYS[1], 'status', 'children_total', 'cancel_requested_at', 'progress',
                     'attempts', 'type', 'id', 'tenant', 'queue', 'priority')
if not p[1] or p[1] == 'SUCCESS' or p[1] == 'FAILURE' or p[1] == 'REVOKED' then return -1 end
if p[2] then return 0 end
if p[3] and p[3] ~= '' then return -2 end
local ids = {}
local fair = ARGV[7] == '1' and p[8] and p[9]  -- (a parent always names both; a bare test record may not)
local queues = {}
for i, c in ipairs(cjson.decode(ARGV[4])) do
  local key = '@JOB_PREFIX@' .. c.id
  redis.call('HSET', key, unpack(c.hash))
  redis.call('EXPIRE', key, ARGV[3])
  redis.call('ZADD', KEYS[3], ARGV[2], c.id)
  if fair then
    dispatch_wait(c.queue, p[8], p[10] or 'normal', c.id, c.list, c.message)
    queues[c.queue] = true
  else
    redis.call('LPUSH', c.list, c.message)
  end
  redis.call('HINCRBY', KEYS[4], c.type, 1)
  ids[i] = c.id
end
if fair then
  -- The parent holds no slot while it waits: its children need them (else parents could fill every slot).
  dispatch_release(p[9], p[8], p[7])
  for queue in pairs(queues) do dispatch_run(queue, #ids) end
end
redis.call('HSET', KEYS[1], 'children', cjson.encode(ids), 'children_total', #ids, 'children_done', 0,
           'callback', ARGV[1], 'callback_list', ARGV[6], 'message', ARGV[5])
-- Its callback will wait in the tenant's line too (worker/chord_end.lua) and take a slot to run.
if fair then redis.call('HSET', KEYS[1], 'callback_fair', '1') end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('PUBLISH', KEYS[2], cjson.encode({task_id = p[7], seq = seq, status = p[1], progress = tonumber(p[4]),
                                             message = ARGV[5], attempts = tonumber(p[5]), task_type = p[6]}))
return 1
