-- UPDATE fragment (terminal changes only): the job leaves the index of unfinished jobs the sweep reads
-- (worker/sweep.py; CREATE adds it).
-- Frame locals: f[1] (the job's id).
redis.call('ZREM', '@JOBS_LIVE@', f[1])
