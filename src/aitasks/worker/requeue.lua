-- REQUEUE (worker/lease.py): queue a job again, fenced, in one step.
-- KEYS: job, queue list (or the broker outbox, RabbitMQ's), kombu's unacked hash, kombu's unacked index
-- ARGV: the record's generation as read (a compare-and-set), the message to push ('' when the job ended),
--       the delivery tag in the unacked hash ('' for an orphan with no delivery), the new run token
-- Returns 1 when queued; 0 when the record moved on (gone, ended, requeued by someone else) or the
-- delivery was taken meanwhile (acked, or restored by kombu): nothing is pushed then.
local h = redis.call('HMGET', KEYS[1], 'status', 'generation')
if not h[1] or h[1] == 'SUCCESS' or h[1] == 'FAILURE' or h[1] == 'REVOKED' or ARGV[2] == '' then
  -- A finished job's leftover delivery: dropped, so kombu never restores it after its visibility timeout.
  if ARGV[3] ~= '' then
    redis.call('HDEL', KEYS[3], ARGV[3])
    redis.call('ZREM', KEYS[4], ARGV[3])
  end
  return 0
end
if (tonumber(h[2]) or 0) ~= tonumber(ARGV[1]) then return 0 end
if ARGV[3] ~= '' then
  if redis.call('HDEL', KEYS[3], ARGV[3]) == 0 then return 0 end
  redis.call('ZREM', KEYS[4], ARGV[3])
end
-- The old run's token is gone (its writes are refused) and only a message of this generation may claim.
redis.call('HSET', KEYS[1], 'generation', tonumber(ARGV[1]) + 1, 'run_token', ARGV[4])
-- The consuming end of the list (kombu pops from the right): a job taken back runs next.
redis.call('RPUSH', KEYS[2], ARGV[2])
return 1
