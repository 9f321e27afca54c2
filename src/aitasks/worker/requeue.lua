-- REQUEUE (worker/lease.py, through JobStore.requeue): queue a job again, fenced, with its state, in one step.
-- Run after the UPDATE script as the Lua function ``update(KEYS, ARGV)`` (jobs/run_scripts.py): the state
-- written here goes through the one UPDATE and its fragments (event, webhook, queued set) as any change does.
-- KEYS: job, events channel (the UPDATE script's), queue list (or the broker outbox, RabbitMQ's),
--       kombu's unacked hash, kombu's unacked index
-- ARGV: the record's generation as read (a compare-and-set), the message to push ('' when the job ended),
--       the delivery tag in the unacked hash ('' for an orphan with no delivery), the new run token,
--       the record's new message (why it was queued again)
-- Returns 1 when queued; 0 when the record moved on (gone, ended, requeued by someone else) or the
-- delivery was taken meanwhile (acked, or restored by kombu): nothing is pushed or written then.
local h = redis.call('HMGET', KEYS[1], 'status', 'generation')
if not h[1] or h[1] == 'SUCCESS' or h[1] == 'FAILURE' or h[1] == 'REVOKED' or ARGV[2] == '' then
  -- A finished job's leftover delivery: dropped, so kombu never restores it after its visibility timeout.
  if ARGV[3] ~= '' then
    redis.call('HDEL', KEYS[4], ARGV[3])
    redis.call('ZREM', KEYS[5], ARGV[3])
  end
  return 0
end
if (tonumber(h[2]) or 0) ~= tonumber(ARGV[1]) then return 0 end
if ARGV[3] ~= '' then
  if redis.call('HDEL', KEYS[4], ARGV[3]) == 0 then return 0 end
  redis.call('ZREM', KEYS[5], ARGV[3])
end
-- The old run's token is gone (its writes are refused) and only a message of this generation may claim.
redis.call('HSET', KEYS[1], 'generation', tonumber(ARGV[1]) + 1, 'run_token', ARGV[4])
-- Its state, before its message can be taken: a job that had started waits to run again (RETRY, as after
-- a lost worker); one that had not stays PENDING. So the new run's claim always comes after this change.
local args = {'', 'message', ARGV[5]}
if h[1] ~= 'PENDING' then
  args[#args + 1] = 'status'
  args[#args + 1] = 'RETRY'
end
local seq = update({KEYS[1], KEYS[2]}, args)
if type(seq) == 'table' then return seq end  -- an error reply
-- The consuming end of the list (kombu pops from the right): a job taken back runs next.
redis.call('RPUSH', KEYS[3], ARGV[2])
return 1
