-- FAN_OUT: a parent job's children, created and queued in one step (worker/children.py). The UPDATE
-- script's chord fragment (worker/chord_end.lua) counts their ends on the parent and queues the
-- parent's callback message after the last one.
-- KEYS: parent job, parent events channel, tenant index, submitted counter
-- ARGV: callback message, created ms, pending ttl, children as JSON [{id, type, queue, message, hash}]
--       (queue: the list the child's message goes onto: its queue, or the broker outbox with RabbitMQ),
--       the parent's message while it waits, the list its callback message will go onto
-- Returns 1 when created now, 0 when they exist already (a redelivered parent: nothing is duplicated),
-- -1 when the parent is gone or finished, -2 when its cancellation was requested.
local p = redis.call('HMGET', KEYS[1], 'status', 'children_total', 'cancel_requested_at', 'progress',
                     'attempts', 'type', 'id')
if not p[1] or p[1] == 'SUCCESS' or p[1] == 'FAILURE' or p[1] == 'REVOKED' then return -1 end
if p[2] then return 0 end
if p[3] and p[3] ~= '' then return -2 end
local ids = {}
for i, c in ipairs(cjson.decode(ARGV[4])) do
  local key = '@JOB_PREFIX@' .. c.id
  redis.call('HSET', key, unpack(c.hash))
  redis.call('EXPIRE', key, ARGV[3])
  redis.call('ZADD', KEYS[3], ARGV[2], c.id)
  redis.call('LPUSH', c.queue, c.message)
  redis.call('HINCRBY', KEYS[4], c.type, 1)
  ids[i] = c.id
end
redis.call('HSET', KEYS[1], 'children', cjson.encode(ids), 'children_total', #ids, 'children_done', 0,
           'callback', ARGV[1], 'callback_list', ARGV[6], 'message', ARGV[5])
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('PUBLISH', KEYS[2], cjson.encode({task_id = p[7], seq = seq, status = p[1], progress = tonumber(p[4]),
                                             message = ARGV[5], attempts = tonumber(p[5]), task_type = p[6]}))
return 1
