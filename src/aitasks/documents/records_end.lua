-- UPDATE fragment (terminal changes only): the document record of a document_ingestion job.
-- Frame locals: f (f[1] id, f[2] status, f[4] message, f[6] error_type, f[7] error_message), now,
--               x.document (the record's key), x.result (the job's result, JSON).
-- The job's end, whoever writes it (the job, the worker-lost or hard-limit hooks, a cancel), marks the
-- record in the same step: completed with the result's numbers, or failed with the reason. Only while
-- the record still names this job: a re-upload's newer job owns it then. The record has no TTL (it
-- outlives the job).
local dkey = x.document
if dkey and dkey ~= '' and redis.call('HGET', dkey, 'task_id') == f[1] then
  local dnow = string.format('%.3f', now)
  if f[2] == 'SUCCESS' then
    local ok, r = pcall(cjson.decode, x.result or '{}')
    if not ok or type(r) ~= 'table' then r = {} end
    local function num(v) if type(v) == 'number' then return string.format('%d', v) end return '0' end
    redis.call('HSET', dkey, 'status', 'completed', 'pages', num(r.pages), 'chunks', num(r.chunks),
               'ocr_pages', num(r.ocr_pages), 'tokens', num(r.tokens), 'doc_type', tostring(r.doc_type or ''),
               'error', '', 'error_type', '', 'finished_at', dnow, 'updated_at', dnow)
  else
    local err = f[7]
    local code = f[6] or ''
    if f[2] == 'REVOKED' then err = 'The ingestion was cancelled (' .. (f[4] or 'Cancelled') .. ').'; code = 'Cancelled'
    elseif not err or err == '' then err = f[4] or 'Task failed' end
    redis.call('HSET', dkey, 'status', 'failed', 'error', err, 'error_type', code, 'finished_at', dnow,
               'updated_at', dnow)
  end
end
