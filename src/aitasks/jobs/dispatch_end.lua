-- UPDATE fragment (terminal changes only): fair dispatch (jobs/dispatch.py). The job gives its slot back
-- (or, ended while it waited: cancelled, past its pending limit, it leaves its line) and the next job in
-- fair order is handed to Celery in this same step, so a freed slot never waits for a dispatcher's tick.
-- Frame locals: f[1] (the job's id), status (before the change), x.tenant, x.queue, x.priority.
@DISPATCH_LIB@
if x.queue and x.tenant then
  dispatch_release(x.queue, x.tenant, f[1])
  if status == 'PENDING' then dispatch_forget(x.queue, x.tenant, x.priority, f[1]) end
  dispatch_run(x.queue, 1)
end
