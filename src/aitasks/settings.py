"""One settings object for every process (API, workers, CLI), read from ``AITASKS_*`` variables."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from aitasks.jobs.net_guard import Network


class TypeOverride(BaseModel):
    """Per-deployment overrides of one job type's declaration (``AITASKS_TYPE_OVERRIDES``)."""

    model_config = {"extra": "forbid"}

    soft_time_limit_s: float | None = Field(None, gt=0)
    time_limit_s: float | None = Field(None, gt=0)
    max_retries: int | None = Field(None, ge=0)
    retention_s: int | None = Field(None, gt=0)


class Price(BaseModel):
    """What one job type costs (``AITASKS_PRICES``, or a cost_infographic request's ``prices``)."""

    model_config = {"extra": "forbid"}

    per_second: float = Field(0.0, ge=0, description="Price per compute second (finished_at - started_at).")
    per_job: float = Field(0.0, ge=0, description="Price per finished job (any terminal status).")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AITASKS_", extra="ignore")

    # Where things live. With no redis_url, `aitasks run` starts a private Redis and records
    # its URL under data_dir/run/, where every other command finds it.
    redis_url: str | None = None
    broker_url: str | None = Field(
        None, description="amqp://user:password@host:5672/vhost: RabbitMQ carries the job queues (quorum queues, "
                          "publisher confirms; docs/deployment.md) while Redis keeps job state and events; "
                          "default (empty): the queues live in Redis (AITASKS_REDIS_URL).")
    broker_heartbeat_s: float = Field(
        10.0, ge=0, description="AMQP heartbeat with RabbitMQ (AITASKS_BROKER_URL): a worker cut off is taken for "
                                "dead, and its unacknowledged job given to another, within about twice this; 0: off.")
    data_dir: Path = Path("var")
    artifacts_dir: Path | None = None
    artifacts_url: str | None = Field(
        None, description="s3://bucket/prefix: job files in an S3-compatible bucket, seen by every host "
                          "(docs/operations.md); default the folder AITASKS_ARTIFACTS_DIR.")
    s3_endpoint_url: str | None = Field(
        None, description="The S3-compatible server (e.g. http://minio:9000; path-style addressing); default AWS.")
    s3_region: str | None = Field(None, description="The bucket's region; default AWS_DEFAULT_REGION, else us-east-1.")
    s3_access_key_id: SecretStr | None = Field(
        None, description="With AITASKS_S3_SECRET_ACCESS_KEY; default boto3's chain (AWS_ACCESS_KEY_ID, ...).")
    s3_secret_access_key: SecretStr | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str | None = Field(None, description="Base URL put in artifact links; default: the request's.")
    environment: Literal["development", "production"] = "development"
    redis_maxmemory_mb: int = Field(
        1024, ge=0, description="Memory cap of the private Redis `aitasks run` starts (noeviction: full is a 503); "
                                "0 for none. Not applied to AITASKS_REDIS_URL.")
    database_url: str | None = Field(
        None, description="The store of record (job history, docs/history.md): postgresql://... for several hosts; "
                          "default SQLite (WAL) at <data_dir>/aitasks.db.")
    history_enabled: bool = Field(
        True, description="Hand every ended job to the store of record (false: no job history in SQL; for "
                          "measuring its cost, bench/history_switch.py).")
    recorded_keep_s: int = Field(
        60, ge=0, description="Seconds Redis keeps a job's full record once it is in SQL (for the clients that "
                              "read it as it ends); then it answers from SQL. Jobs with a parent, a webhook or "
                              "a document keep theirs for AITASKS_RETENTION_S.")
    recorder_batch: int = Field(500, ge=1, le=10_000, description="Ended jobs the recorder writes to SQL a batch.")
    history_retention_days: int = Field(
        30, ge=0, description="Days the store of record keeps an ended job (0: for ever); a tenant's own value "
                              "(aitasks tenants retention) overrides it.")
    # Per-tenant flow control (store/tenant_limits.py); a tenant's own value (aitasks tenants set) overrides.
    default_max_queued: int = Field(
        100_000, ge=0, description="Jobs a tenant may have queued (PENDING, not started) before submits answer 429 "
                                   "(0: no limit).")
    default_submits_per_s: float = Field(
        0.0, ge=0, description="A tenant's sustained submit rate (token bucket) before 429 (0: no limit).")
    default_burst: int = Field(
        0, ge=0, description="Submits a tenant may make at once above its rate (the bucket's size); 0: one "
                             "second's worth of its rate (at least 1).")
    default_max_streams: int = Field(
        0, ge=0, description="Open SSE streams, WebSockets and waiting submits (Prefer: wait) a tenant may hold "
                             "at once, across all API processes, before 429 (0: no limit).")
    default_max_storage_mb: int = Field(
        0, ge=0, description="MB of files a tenant may store (job inputs and outputs, uploaded files, documents) "
                             "before uploads answer 413 and submits 507 (0: no limit).")
    stream_lease_s: float = Field(
        30.0, ge=1, description="Seconds an open stream counts after its API process last renewed it: the most a "
                                "killed API process's streams keep counting against max_streams.")
    default_max_running: int = Field(
        0, ge=0, description="Jobs of one tenant running at once across every worker, counted from the moment "
                             "a job is handed to its queue until it ends (0: no limit).")
    default_weight: float = Field(
        1.0, gt=0, description="A tenant's share of the worker slots against other waiting tenants (2: twice "
                               "the slots of a tenant of weight 1).")
    fair_dispatch: bool = Field(
        True, description="Jobs wait in per-tenant lines and are handed to their queue as worker slots free up, "
                          "round robin by weight (jobs/dispatch.py); false: straight onto the queue, FIFO.")
    dispatch_buffer: int = Field(
        0, ge=0, description="Jobs handed to a queue beyond its workers' free slots: more smooths throughput, "
                             "less lets a newly waiting tenant start sooner.")
    history_sweep_s: float = Field(600.0, gt=0, description="Seconds between the history retention sweeps.")
    recorder_claim_idle_s: float = Field(
        30.0, gt=0, description="Seconds before a recorder takes over the unrecorded batch of one that died.")
    secret_key: SecretStr | None = Field(
        None, description="Key the webhook signing secrets are derived from; default a 0600 file "
                          "<data_dir>/secret.key made on first use. Set it alike on every host of one Redis.")

    # Jobs.
    retention_s: int = Field(3600, gt=0, description="How long finished jobs and their files are kept.")
    pending_ttl_s: int = Field(86400, gt=0, description="How long a record lives while not yet finished.")
    type_overrides: dict[str, TypeOverride] = Field(default_factory=dict)
    prices: dict[str, Price] = Field(
        default_factory=dict, description="Per job type prices for cost reports; key '*' prices every other type.")
    currency: str = Field("USD", min_length=1, max_length=8, description="Currency label of the prices.")
    max_worker_losses: int = Field(2, ge=0, description="Worker deaths a job may cause before it ends FAILURE.")
    cancel_grace_s: float = Field(5.0, ge=0, description="Time a running job gets to stop before it is killed.")
    visibility_timeout_s: int | None = Field(
        None, description="Seconds before an unacknowledged job is redelivered; default: longest hard limit + 60."
    )
    worker_concurrency: int = Field(1, ge=1)
    worker_pool: Literal["prefork", "threads"] = Field(
        "prefork", description="prefork: one job per pool process, time limits and hard cancel kill it. threads: "
                               "`concurrency` jobs as threads of one process, sharing batchable model steps "
                               "(document embedding); time limits and the hard cancel are not enforced there.")
    worker_heartbeat_s: float = Field(2.0, gt=0)
    lease_s: float = Field(
        30.0, gt=0, description="A worker that has not heartbeaten for this long is taken for dead: a live worker "
                                "queues its running and reserved jobs again (fenced; docs/operations.md).")
    unacked_restore_interval_s: int = Field(10, ge=1)

    # Requests.
    max_upload_bytes: int = Field(25 * 1024 * 1024, gt=0)
    max_image_pixels: int = Field(16_000_000, gt=0, description="Largest image, in pixels; larger is refused (413).")
    max_wait_s: float = Field(60.0, gt=0)
    sync_wait_s: float = Field(30.0, gt=0, description="How long ?async_processing=false waits for the job.")
    redis_timeout_s: float = Field(1.5, gt=0, description="Socket timeout of the API's Redis calls.")
    auth_cache_s: float = Field(30.0, ge=0, description="How long the API trusts a checked key (revocation clears it).")
    outbox_max_mb: float = Field(
        64.0, ge=0, description="Most submits (MB) one API process keeps in its local outbox while Redis is "
                                "unreachable (docs/operations.md); beyond it a 503. 0: no outbox.")
    api_instance: str | None = Field(
        None, description="Names this API's outbox files (<data_dir>/outbox/outbox-<instance>-<slot>.sqlite3); "
                          "default port<AITASKS_PORT>.")
    log_level: str = "INFO"

    # Operations and diagnostics (docs/security.md).
    metrics_token: str | None = Field(
        None, description="When set, GET /metrics needs `Authorization: Bearer <token>` (else 401).")
    enable_diagnostic: bool = Field(
        False, description="Allow the `diagnostic` job type (it can kill worker processes); off: submits get 403.")
    task_events: bool = Field(
        False, description="Workers send Celery's task events (Flower's task list); off by default: three Redis "
                            "writes per job nothing of aitasks reads. `aitasks run --flower` turns them on.")
    flower_basic_auth: str | None = Field(
        None, description="`user:password` (comma list) Flower asks for; required when Flower binds beyond loopback.")

    # Models.
    image_model_dir: Path | None = Field(
        None, description="A diffusers text-to-image folder (e.g. Stable Diffusion 1.5) for image_generation.")
    preload: str = Field("", description="Job types whose models load when a worker starts: comma list or 'all'.")

    # Documents (docs/documents.md).
    vector_store: str | None = Field(
        None, description="Where document chunks and vectors live: a folder (embedded LanceDB) or a server URL; "
                          "default <data_dir>/vectors.")
    embedding_model_dir: Path | None = Field(
        None, description="A local sentence-transformers folder; default the packaged all-MiniLM-L6-v2.")
    max_document_pages: int = Field(2000, gt=0, description="Most pages a document may have; more is refused (413).")
    max_batch_files: int = Field(50, gt=0, description="Most files in one POST /api/v1/documents/batch.")
    embedding_max_batch: int = Field(16, ge=1, description="Most chunks in one call of the embedding model, "
                                                           "gathered from the jobs running in one process.")
    embedding_parallel_calls: int = Field(
        0, ge=0, description="In a --pool threads worker: embedding model calls running at once, each on its own "
                             "copy of the model with cores/N torch threads; 0: one per core (at most 4). A prefork "
                             "pool process makes one call at a time with torch's default threads.")

    # Webhooks (docs/security.md).
    webhook_allow_private: str = Field(
        "", description="CIDR networks webhooks may reach though private or loopback, comma separated "
                        "(e.g. 127.0.0.0/8,::1); cloud metadata addresses stay refused.")
    webhook_senders: int = Field(8, ge=1, description="Webhook delivery threads per worker.")
    webhook_per_receiver: int = Field(
        2, ge=1, description="Deliveries one worker sends at once to one receiver (scheme, host, port).")

    @field_validator("type_overrides", "prices", mode="before")
    @classmethod
    def _parse_overrides(cls, value: Any) -> Any:
        if isinstance(value, str):
            import json

            return json.loads(value) if value.strip() else {}
        return value

    @field_validator("artifacts_url")
    @classmethod
    def _check_artifacts_url(cls, value: str | None) -> str | None:
        if value and not re.fullmatch(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[A-Za-z0-9._/-]*)?", value):
            raise ValueError("must be s3://<bucket>[/<prefix>] (a folder is AITASKS_ARTIFACTS_DIR)")
        return value or None

    @field_validator("broker_url")
    @classmethod
    def _check_broker_url(cls, value: str | None) -> str | None:
        if value and not re.match(r"amqps?://", value):
            raise ValueError("must be amqp://... or amqps://... (RabbitMQ); leave it empty for Redis as the broker")
        return value or None

    @field_validator("webhook_allow_private")
    @classmethod
    def _check_networks(cls, value: str) -> str:
        from aitasks.jobs.net_guard import parse_networks

        parse_networks(value)  # a typo fails at start, naming the entry
        return value

    @property
    def webhook_allow_networks(self) -> tuple[Network, ...]:
        from aitasks.jobs.net_guard import parse_networks

        return parse_networks(self.webhook_allow_private)

    def preload_types(self, known: list[str]) -> list[str]:
        """The job types named by AITASKS_PRELOAD that exist; 'all' means every one."""
        wanted = [t.strip() for t in self.preload.split(",") if t.strip()]
        if "all" in wanted:
            return list(known)
        return [t for t in wanted if t in known]

    @property
    def vector_store_location(self) -> str:
        return self.vector_store or str((self.data_dir / "vectors").resolve())

    @property
    def artifacts_path(self) -> Path:
        return (self.artifacts_dir or self.data_dir / "artifacts").resolve()

    @property
    def run_dir(self) -> Path:
        return (self.data_dir / "run").resolve()

    @property
    def resolved_database_url(self) -> str:
        """AITASKS_DATABASE_URL, else the embedded SQLite file under the data directory."""
        return self.database_url or f"sqlite:///{(self.data_dir / 'aitasks.db').resolve()}"

    @property
    def secret_key_file(self) -> Path:
        return (self.data_dir / "secret.key").resolve()

    @property
    def embedded_redis_url_file(self) -> Path:
        return self.run_dir / "redis.url"

    def resolved_redis_url(self) -> str:
        """The Redis to use: AITASKS_REDIS_URL, else the private one `aitasks run` started."""
        if self.redis_url:
            return self.redis_url
        try:
            return self.embedded_redis_url_file.read_text().strip()
        except FileNotFoundError:
            from aitasks.errors import ConfigurationError

            raise ConfigurationError(
                "No Redis configured: set AITASKS_REDIS_URL, or start the service with `make run` "
                f"(it records its private Redis in {self.embedded_redis_url_file})."
            ) from None

    @property
    def amqp_broker(self) -> bool:
        """RabbitMQ carries the queues (AITASKS_BROKER_URL): job messages go through the Redis outbox."""
        return bool(self.broker_url)

    def resolved_broker_url(self) -> str:
        """Celery's broker: AITASKS_BROKER_URL, else the Redis of the job records."""
        return self.broker_url or self.resolved_redis_url()

    def check_production(self) -> None:
        """Refuse defaults that are unsafe outside one developer's machine."""
        if self.environment != "production":
            return
        from aitasks.errors import ConfigurationError

        if not self.redis_url:
            raise ConfigurationError("AITASKS_REDIS_URL must be set in production (no private Redis).")
        if not self.public_url:
            raise ConfigurationError("AITASKS_PUBLIC_URL must be set in production (artifact links).")


@functools.cache
def get_settings() -> Settings:
    return Settings()
