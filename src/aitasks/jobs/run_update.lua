-- RUN_UPDATE (jobs/run_scripts.py): a run's own change to its job (progress, retry, end) through the
-- UPDATE script, with what the run needs back, in one step.
-- KEYS: job, events channel (the UPDATE script's)
-- ARGV: [1] '1' when this write also ends the delivery (finished_deliveries + 1, see start.lua), else '0';
--       [2..] the UPDATE script's ARGV (ttl, field pairs, '@fence', 'run:<token>')
-- Returns {the UPDATE script's answer (seq, 0, -1 or -2), the record's cancel_requested_at or false}.
local args = {}
for i = 2, #ARGV do args[#args + 1] = ARGV[i] end
local seq = update(KEYS, args)
if type(seq) == 'table' then return seq end  -- an error reply
if seq ~= 0 and ARGV[1] == '1' then redis.call('HINCRBY', KEYS[1], 'finished_deliveries', 1) end
return {seq, redis.call('HGET', KEYS[1], 'cancel_requested_at')}
