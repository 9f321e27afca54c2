-- START (jobs/run_scripts.py): a delivery of a job's message begins its run, in one step: checks, the
-- delivery counted, the claim written through the UPDATE script, and the record read for the runner.
-- KEYS: job, events channel (the UPDATE script's)
-- A run of a job that lent its slot through a retry's countdown (run_update.lua) takes a slot back.
-- ARGV: [1] the message's generation, [2] the new run token, [3] the most worker losses allowed,
--       [4] now (started_at unless the record has one), [5..] the claim's field pairs (status, message...)
-- Returns {code, deliveries, record as HGETALL pairs}; code: the claim's new seq (> 0, the run holds the
-- job), 0 unknown or expired, -1 finished already, -2 a stale copy (generation) or the claim was refused,
-- -3 cancelled before this run (nothing written: the runner ends it), -4 its worker died more than
-- ARGV[3] times (the delivery counted, nothing else written: the runner ends it).
@DISPATCH_LIB@

local h = redis.call('HMGET', KEYS[1], 'status', 'generation', 'children_total', 'cancel_requested_at',
                     'started_at', 'finished_deliveries', 'slot')
if not h[1] then return {0, 0, {}} end
if h[1] == 'SUCCESS' or h[1] == 'FAILURE' or h[1] == 'REVOKED' then return {-1, 0, {}} end
local gen = tonumber(ARGV[1])
-- (a parent's callback message, generation 0, may run once its children exist)
if gen ~= (tonumber(h[2]) or 0) and not (gen == 0 and h[3]) then return {-2, 0, {}} end
if h[4] and h[4] ~= '' then return {-3, 0, redis.call('HGETALL', KEYS[1])} end
-- From here the delivery is counted: the run's end (or the hook that records its loss) counts it finished,
-- so deliveries - finished - 1 is how many runs before this one died without an end.
local deliveries = redis.call('HINCRBY', KEYS[1], 'deliveries', 1)
if deliveries - (tonumber(h[6]) or 0) - 1 > tonumber(ARGV[3]) then
  return {-4, deliveries, redis.call('HGETALL', KEYS[1])}
end
-- Still PROCESSING with an earlier delivery that never ended: its run was lost and nothing said so (the
-- broker gave the message again: RabbitMQ when the consumer's connection died, kombu's visibility timeout).
-- Say so before this run's claim, as the recovery's REQUEUE and the worker-lost hook do: clients see RETRY
-- between the two runs. (A RETRY already written by them, or a parent's callback run, is not PROCESSING
-- with a lost delivery.)
if h[1] == 'PROCESSING' and deliveries - (tonumber(h[6]) or 0) - 1 > 0 then
  local said = update(KEYS, {'', 'status', 'RETRY',
                             'message', 'The run before this one was lost; the broker delivered the job again'})
  if type(said) == 'table' then return said end  -- an error reply
end
local started = h[5]
if not started or started == '' then started = ARGV[4] end
local args = {''}
for i = 5, #ARGV do args[#args + 1] = ARGV[i] end
for _, v in ipairs({'started_at', started, '@fence', 'claim:' .. ARGV[1] .. ':' .. ARGV[2]}) do
  args[#args + 1] = v
end
local seq = update(KEYS, args)
if type(seq) == 'table' then return seq end  -- an error reply
if seq <= 0 then  -- (refused after all: this delivery ends here)
  redis.call('HINCRBY', KEYS[1], 'finished_deliveries', 1)
  return {seq, deliveries, {}}
end
-- Its queue may be full meanwhile: then it runs one over, as a worker's Celery already holds its message,
-- and the next end hands over no new job.
if h[7] == 'lent' then
  local j = redis.call('HMGET', KEYS[1], 'id', 'queue', 'tenant')
  local t = redis.call('TIME')
  dispatch_take(j[2], j[3], j[1], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
  redis.call('HDEL', KEYS[1], 'slot')
end
return {seq, deliveries, redis.call('HGETALL', KEYS[1])}
