-- RUN_UPDATE (jobs/run_scripts.py): a run's own change to its job (progress, retry, end) through the
-- UPDATE script, with what the run needs back, in one step.
-- KEYS: job, events channel (the UPDATE script's)
-- ARGV: [1] '1' when this write also ends the delivery (finished_deliveries + 1, see start.lua), else '0';
--       [2] '1' when the job lends its slot until its next run (a retry waiting out its countdown), else '0';
--       [3..] the UPDATE script's ARGV (ttl, field pairs, '@fence', 'run:<token>')
-- Returns {the UPDATE script's answer (seq, 0, -1 or -2), the record's cancel_requested_at or false}.
@DISPATCH_LIB@

local args = {}
for i = 3, #ARGV do args[#args + 1] = ARGV[i] end
local seq = update(KEYS, args)
if type(seq) == 'table' then return seq end  -- an error reply
if seq ~= 0 and ARGV[1] == '1' then redis.call('HINCRBY', KEYS[1], 'finished_deliveries', 1) end
-- A retry waiting out its countdown holds no slot (the worker would sit idle through it while other jobs
-- wait): the slot is given back as an end gives it, the next waiting job handed over, and the record marked
-- so that the retried run's START takes a slot back. Only a slot it holds: with fair dispatch off, or when
-- the job was never handed over through a line, there is none.
if seq > 0 and ARGV[2] == '1' then
  local j = redis.call('HMGET', KEYS[1], 'id', 'queue', 'tenant')
  if j[2] and j[3] and redis.call('ZSCORE', dispatch_key(j[2], 'inflight'), j[1]) then
    dispatch_release(j[2], j[3], j[1])
    redis.call('HSET', KEYS[1], 'slot', 'lent')
    dispatch_run(j[2], 1)
  end
end
return {seq, redis.call('HGET', KEYS[1], 'cancel_requested_at')}
