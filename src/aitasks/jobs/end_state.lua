-- The frame of the UPDATE script (assembled by jobs/atomic_end.py): one change to a job, atomically.
-- KEYS: job, events channel
-- ARGV: ttl ('' = keep), hash pairs..., and optionally a last pair '@fence', <fence>:
--   no fence: no check (the API's cancel, the monitor, the worker-lost hooks: they may end any run);
--   'run:<token>' : a run's own write, refused unless the record's run_token is still <token> (another
--                   run started, or the recovery took the job back: the writer is a stale original);
--   'claim:<generation>:<token>' : a delivery starting a run; refused unless the message's generation is
--                   the record's (the recovery bumps it when it queues a job again, so an older copy is
--                   stale; a parent's callback message, generation 0, may claim once its children exist);
--                   on success the record's run_token becomes <token>.
--   'gen:<generation>' : a write for a delivery whose run cannot carry its token (the worker's main
--                   process when the pool process died under it, or the hard time limit killed it);
--                   refused unless the message's generation is the record's, as for a claim: once the
--                   recovery queued the job again, a write about the old delivery would land on the new run.
-- Returns the new sequence number, 0 when the job does not exist, -1 when it already finished, -2 when
-- the fence refused the change (nothing written).
-- Other keys (metrics, a parent, a document record) are derived in the fragments, not passed in:
-- aitasks runs on one Redis, not a cluster.
--
-- Locals this frame gives the fragments (read them; do not assign them):
--   status  the job's status before this change
--   seq     the record's new sequence number
--   f       the record after the change, HMGET of: [1] id, [2] status, [3] progress, [4] message,
--           [5] attempts, [6] error_type, [7] error_message, [8] type, [9] cancel_requested_at,
--           [10] started_at, [11] finished_at
--   x       the record fields the fragments declared (jobs/atomic_end.py), by name (false when absent),
--           read after the change in the same HMGET as f
--   terminal  true when f[2] is SUCCESS, FAILURE or REVOKED (this change ended the job)
-- and, to terminal fragments only:
--   now     the server's time, epoch seconds (float)
local h = redis.call('HMGET', KEYS[1], 'status', 'run_token', 'generation', 'children_total')
local status = h[1]
if not status then return 0 end
if status == 'SUCCESS' or status == 'FAILURE' or status == 'REVOKED' then return -1 end
local last = #ARGV
local fence = ''
if last >= 3 and ARGV[last - 1] == '@fence' then fence = ARGV[last]; last = last - 2 end
local pairs_ = {unpack(ARGV, 2, last)}
if fence ~= '' then
  local token = string.match(fence, '^run:(.+)$')
  if token then
    if h[2] ~= token then return -2 end
  else
    local gen, claim = string.match(fence, '^claim:(%d+):(.+)$')
    if not gen then gen = string.match(fence, '^gen:(%d+)$') end
    if not gen then return redis.error_reply('bad fence ' .. fence) end
    local current = tonumber(h[3]) or 0
    if tonumber(gen) ~= current and not (tonumber(gen) == 0 and h[4]) then return -2 end
    if claim then pairs_[#pairs_ + 1] = 'run_token'; pairs_[#pairs_ + 1] = claim end
  end
end
redis.call('HSET', KEYS[1], unpack(pairs_))
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
if ARGV[1] ~= '' then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
-- The record after the change and every field a fragment declared, in one read.
local names = {@FIELDS@}
local f = redis.call('HMGET', KEYS[1], 'id', 'status', 'progress', 'message', 'attempts',
                     'error_type', 'error_message', 'type', 'cancel_requested_at', 'started_at', 'finished_at',
                     unpack(names))
local x = {}
for i, name in ipairs(names) do x[name] = f[11 + i] end
local terminal = f[2] == 'SUCCESS' or f[2] == 'FAILURE' or f[2] == 'REVOKED'
if terminal then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
  -- <terminal fragments>
end
-- <every-change fragments>
local ev = {task_id = f[1], seq = seq, status = f[2], progress = tonumber(f[3]), message = f[4],
            attempts = tonumber(f[5]), task_type = f[8]}
if f[6] and f[6] ~= '' then ev.error_type = f[6]; ev.error = f[7] end
if f[9] and f[9] ~= '' then ev.cancel_requested = true end
redis.call('PUBLISH', KEYS[2], cjson.encode(ev))
return seq
