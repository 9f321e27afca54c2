"""Redis key names, in one place so the API, the workers and the CLI agree."""

from __future__ import annotations

PREFIX = "aitasks"


# Prefixes the Lua scripts complete themselves (jobs/lua.py substitutes them): keys built in one place.
JOB_PREFIX = f"{PREFIX}:job:"
EVENTS_PREFIX = f"{PREFIX}:events:"


def job(job_id: str) -> str:
    return JOB_PREFIX + job_id


def events(job_id: str) -> str:
    return EVENTS_PREFIX + job_id


EVENTS_PATTERN = f"{EVENTS_PREFIX}*"
CONTROL_CHANNEL = f"{PREFIX}:control"


def tenant_index(tenant: str) -> str:
    """Sorted set of a tenant's job ids, scored by creation time in ms."""
    return f"{PREFIX}:tenant:{tenant}:jobs"


# A tenant's flow control (jobs/limits.py): its limits as cached from the store of record (a hash of the
# values set for it), its submit token bucket (a hash: tokens, at), and its queued jobs (a sorted set of
# PENDING job ids scored by when they were queued, ms: CREATE adds, the UPDATE script's queued fragment removes).
TENANT_PREFIX = f"{PREFIX}:tenant:"


def tenant_limits(tenant: str) -> str:
    return f"{TENANT_PREFIX}{tenant}:limits"


def tenant_bucket(tenant: str) -> str:
    return f"{TENANT_PREFIX}{tenant}:bucket"


def tenant_queued(tenant: str) -> str:
    return f"{TENANT_PREFIX}{tenant}:queued"


def tenant_streams(tenant: str) -> str:
    """Sorted set of the tenant's open streams (api/stream_slots.py), scored by when their lease ends (ms)."""
    return f"{TENANT_PREFIX}{tenant}:streams"


def tenant_storage(tenant: str) -> str:
    """The tenant's stored bytes (jobs/storage_quota.py): an integer counter."""
    return f"{TENANT_PREFIX}{tenant}:storage"


# Set once every kept job's files are counted (worker/storage_recount.py): gone with Redis's data, which
# starts the recount again.
STORAGE_COUNTED = f"{PREFIX}:storage:counted"
STORAGE_RECOUNT_LOCK = f"{PREFIX}:storage:recount-lock"


def stored_object(kind: str, object_id: str) -> str:
    """Hash of one stored object's owner and bytes (kind: ``job`` folder or uploaded ``file``)."""
    return f"{PREFIX}:stored:{kind}:{object_id}"


def idempotency(tenant: str, key_digest: str) -> str:
    return f"{PREFIX}:idem:{tenant}:{key_digest}"


def api_key(key_digest: str) -> str:
    return f"{PREFIX}:apikey:{key_digest}"


API_KEYS_INDEX = f"{PREFIX}:apikeys"
# Set once Redis holds every key of the store of record; gone with a Redis that lost its data (refill then).
API_KEYS_LOADED = f"{PREFIX}:apikeys:loaded"


def worker(name: str) -> str:
    return f"{PREFIX}:worker:{name}"


WORKERS_PATTERN = f"{PREFIX}:worker:*"
# Sorted set of worker names scored by when their heartbeat key expires (unix time): probes read the live
# workers from it and their heartbeat keys by name, never with a keyspace-wide SCAN.
WORKERS = f"{PREFIX}:workers"


def lease(name: str) -> str:
    """A worker's lease (worker/lease.py): the job ids it holds (running, reserved, scheduled), as JSON,
    expiring AITASKS_LEASE_S after its last heartbeat; gone means the worker's jobs may be taken back."""
    return f"{PREFIX}:lease:{name}"


LEASES = f"{PREFIX}:leases"  # sorted set of worker names scored by when their lease expires (unix time)
SWEEPER = f"{PREFIX}:sweeper"  # the one worker running the recovery pass now (a short lock, worker/sweep.py)
# Sorted set of the ids of jobs not yet finished, scored by creation (ms): added by CREATE, removed by the
# UPDATE script's terminal fragment (jobs/live_end.lua); the sweep reads it instead of a keyspace SCAN.
JOBS_LIVE = f"{PREFIX}:jobs:live"
# Sorted set of the ids of ended jobs whose Redis record was let go once recorded (store/recorder.py) and
# that have files, scored by when their retention ends (unix time): the file sweep keeps their files till then.
JOBS_FILES_KEPT = f"{PREFIX}:jobs:files-kept"
# kombu's Redis transport keeps each delivered, not yet acknowledged message here (its defaults, kept).
UNACKED = "unacked"  # hash delivery tag -> JSON [message, exchange, routing key]
UNACKED_INDEX = "unacked_index"  # sorted set delivery tag -> delivery time


WEBHOOKS_PENDING = f"{PREFIX}:webhooks:pending"  # list of deliveries to make (JSON), pushed by UPDATE
WEBHOOKS_RETRY = f"{PREFIX}:webhooks:retry"  # sorted set of deliveries to retry, scored by due time
WEBHOOKS_OWNERS = f"{PREFIX}:webhooks:owners"  # set of worker names that may hold deliveries in flight
WEBHOOKS_INFLIGHT_PREFIX = f"{PREFIX}:webhooks:inflight:"


def webhooks_inflight(worker_name: str) -> str:
    """The deliveries a worker has taken and not finished (a list), put back if the worker dies."""
    return WEBHOOKS_INFLIGHT_PREFIX + worker_name


def prediction_logs(job_id: str) -> str:
    """A job submitted through /v1/predictions: its progress messages so far (the prediction's logs)."""
    return f"{PREFIX}:replicate:logs:{job_id}"


def replicate_file(file_id: str) -> str:
    """A file uploaded through POST /v1/files: its metadata (hash, expiring); the bytes are in the artifact
    store (jobs/artifacts.py ``file_path``), removed by the workers' sweep once this key is gone."""
    return f"{PREFIX}:replicate:file:{file_id}"


def replicate_files(tenant: str) -> str:
    """Sorted set of a tenant's uploaded file ids, scored by upload time (s)."""
    return f"{PREFIX}:replicate:files:{tenant}"


def webhook_log(job_id: str) -> str:
    """The job's delivery attempts and their outcomes (a list of JSON entries)."""
    return f"{PREFIX}:webhook-log:{job_id}"


def webhook_secret(tenant: str) -> str:
    return f"{PREFIX}:tenant:{tenant}:webhook-secret"


METRICS_JOBS = f"{PREFIX}:metrics:jobs"  # hash "type|status" -> count
METRICS_SUBMITTED = f"{PREFIX}:metrics:submitted"  # hash type -> count


METRICS_DURATION_PREFIX = f"{PREFIX}:metrics:durations:"
METRICS_TIMELINE_PREFIX = f"{PREFIX}:metrics:timeline:"


def metrics_duration(job_type: str) -> str:
    return METRICS_DURATION_PREFIX + job_type  # hash: each bucket's own count (not cumulative), '+Inf', 'sum'


def metrics_duration_cumulative(job_type: str) -> str:
    """Before 2026-12-08 the histogram was kept cumulative under this key; /metrics still adds what it holds."""
    return f"{PREFIX}:metrics:duration:{job_type}"


def metrics_timeline(kind: str) -> str:
    """Per-minute counters (hash minute-epoch -> count) for throughput and failure rate."""
    return METRICS_TIMELINE_PREFIX + kind


USAGE_TTL_S = 400 * 86400  # per-tenant usage counters outlive job records by far (cost reports)
USAGE_PREFIX = f"{PREFIX}:usage:"


def usage(tenant: str, day: str) -> str:
    """A tenant's usage on one UTC day (``YYYY-MM-DD``): hash ``type|queue|jobs``, ``type|queue|seconds``
    and ``type|queue|status:<STATUS>`` -> count, written by the UPDATE script when a job finishes."""
    return f"{USAGE_PREFIX}{tenant}:{day}"


def document(tenant: str, document_id: str) -> str:
    """A document's record (hash, no TTL: it outlives its ingestion job), kept current by the UPDATE script."""
    return f"{PREFIX}:document:{tenant}:{document_id}"


# Set once Redis holds every document the store of record has; gone with a Redis that lost its data.
DOCUMENTS_LOADED = f"{PREFIX}:documents:loaded"


def tenant_documents(tenant: str) -> str:
    """Sorted set of a tenant's document ids, scored by their last upload time in ms."""
    return f"{PREFIX}:tenant:{tenant}:documents"


DOCUMENT_BATCH_TTL_S = 30 * 86400  # a batch record lists its documents; their status is read from their records


def document_batch(tenant: str, batch_id: str) -> str:
    return f"{PREFIX}:document-batch:{tenant}:{batch_id}"


# The durable hand-off of ended jobs to the store of record (store/history_end.lua, store/recorder.py): a
# stream read by one consumer group; an entry is deleted once its job is in SQL. Capped (approximately) so a
# long SQL outage cannot fill Redis: past the cap the oldest unrecorded entries are dropped.
HISTORY_STREAM = f"{PREFIX}:history:ended"
HISTORY_GROUP = "recorders"
HISTORY_STREAM_MAX = 100_000


QUEUES = ("cpu", "gpu")

# RabbitMQ as the broker (AITASKS_BROKER_URL, worker/relay.py): the scripts that record a job put its
# message here instead of onto a queue list, in the same atomic step; the relays publish it to RabbitMQ
# and drop it once the broker confirmed it.
BROKER_OUTBOX = f"{PREFIX}:broker:outbox"
BROKER_RELAYS = f"{PREFIX}:broker:relays"  # set of worker names that may hold outbox entries in flight
BROKER_INFLIGHT_PREFIX = f"{PREFIX}:broker:inflight:"


def broker_inflight(worker_name: str) -> str:
    """The outbox entries a worker's relay has taken and not yet seen confirmed (a list)."""
    return BROKER_INFLIGHT_PREFIX + worker_name


def queue_list(queue: str, outbox: bool) -> str:
    """The Redis list a job message for ``queue`` is pushed onto: the queue itself (Redis is the broker),
    or the outbox (RabbitMQ is; the message names its queue in delivery_info.routing_key)."""
    return BROKER_OUTBOX if outbox else queue


# Fair dispatch (jobs/dispatch.py, jobs/dispatch_lib.lua): per queue, the tenants waiting (a sorted set
# scored by each one's virtual start time), a list of waiting job ids per tenant and priority, the
# waiting jobs' Celery messages (a hash id -> "<target list>\n<message>"), the jobs handed to Celery and not
# yet ended (a sorted set, scored by ms), its capacity (worker slots, written by the dispatcher's tick).
DISPATCH_PREFIX = f"{PREFIX}:dispatch:"
PRIORITIES = ("high", "normal", "low")  # the order a tenant's waiting jobs are taken in
DISPATCHER = f"{DISPATCH_PREFIX}lock"  # the one process running the dispatcher's tick (a short lock)
DISPATCH_DEFAULTS = f"{DISPATCH_PREFIX}defaults"  # hash: the deployment's max_running and weight
DISPATCH_BUSY = f"{DISPATCH_PREFIX}busy"  # sorted set tenant -> its jobs handed to Celery and not ended


def dispatch(queue: str, name: str) -> str:
    """One of a queue's dispatch keys: ``tenants``, ``passes``, ``vtime``, ``messages``, ``inflight``,
    ``capacity``."""
    return f"{DISPATCH_PREFIX}{queue}:{name}"


def pending(queue: str, tenant: str, priority: str) -> str:
    """A tenant's waiting job ids of one queue and priority, oldest first (a list)."""
    return f"{DISPATCH_PREFIX}{queue}:pending:{tenant}:{priority}"


def tenant_running(tenant: str) -> str:
    """A tenant's jobs handed to Celery and not yet ended, on every queue (sorted set, ms): max_running."""
    return f"{TENANT_PREFIX}{tenant}:running"
