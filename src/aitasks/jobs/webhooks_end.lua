-- UPDATE fragment (every change): queue a webhook delivery (jobs/webhooks.py, worker/webhooks.py).
-- Frame locals: status (before the change), seq, terminal,
--               f (f[1] id, f[2] status, f[3] progress, f[4] message), x.webhook, x.webhook_events.
-- A webhook subscribed to this kind of change gets a delivery queued, in the same step: a state the
-- client sees is a state its webhook will be told about, whoever wrote it (worker, API, monitor).
-- Kinds: 'completed' (a terminal change), 'start' (into PROCESSING), 'progress' (while PROCESSING).
if x.webhook and x.webhook ~= '' then
  local kind = nil
  if terminal then kind = 'completed'
  elseif f[2] == 'PROCESSING' and status ~= 'PROCESSING' then kind = 'start'
  elseif f[2] == 'PROCESSING' then kind = 'progress' end
  if kind and string.find(x.webhook_events or '', ',' .. kind .. ',', 1, true) then
    redis.call('LPUSH', '@WEBHOOKS_PENDING@', cjson.encode({task_id = f[1], event = kind, seq = seq, attempt = 1,
                                                          status = f[2], progress = tonumber(f[3]), message = f[4]}))
  end
end
