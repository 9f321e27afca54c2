"""Job type declarations: one decorator per type, checked when the module is imported.

A job type is one module under ``aitasks.processors`` that declares itself with ``@job_type``.
The API's validation, the catalog, the routing and the docs all come from the declaration, so adding
a type touches no other module.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from aitasks.jobs.files import FileKind, file_fields
from aitasks.jobs.keys import QUEUES

if TYPE_CHECKING:
    from aitasks.settings import Settings

# (validated input, worker.context.JobContext) -> the result dict (a worker.children.Deferred from
# ctx.fan_out() while the job waits for child jobs). The context is not named here: the worker imports
# this registry, so naming the worker's class would tie the two into an import loop.
JobFunction = Callable[[Any, Any], dict[str, Any]]


@dataclass(frozen=True)
class JobType:
    name: str
    input_model: type[BaseModel]
    func: JobFunction
    queue: str = "cpu"
    description: str = ""
    soft_time_limit_s: float = 240.0
    time_limit_s: float = 300.0
    max_retries: int = 3
    retry_backoff_s: float = 1.0
    retry_backoff_max_s: float = 60.0
    retention_s: int | None = None
    route: Callable[[Any], str] | None = None  # picks the queue from the validated input
    files: dict[str, FileKind] = field(default_factory=dict)
    examples: tuple[dict[str, Any], ...] = ()
    # Loads the type's models in the worker process (AITASKS_PRELOAD); otherwise they load on first use.
    preload: Callable[[], Any] | None = None
    # Says why the type cannot run in this deployment (a model not configured), or None: submit answers 503.
    unavailable: Callable[[Settings], str | None] | None = None
    # Says why only admin keys may submit the type in this deployment (it can harm the workers), or None:
    # other keys get 403 at submit, and the catalog lists the type as unavailable with this reason.
    # Keys have no scopes yet, so today the setting alone decides (see processors/diagnostic.py).
    restricted: Callable[[Settings], str | None] | None = None
    # Checks the decoded input files against the validated input (e.g. a mask not empty): raises ValidationFailed.
    check_files: Callable[[Any, dict[str, bytes]], None] | None = None
    # Checks the validated input against the caller's tenant at submit, in the API (e.g. the job ids it
    # names are the tenant's own): an async function (data, tenant, AsyncJobStore) that raises ValidationFailed.
    check_access: Callable[[Any, str, Any], Awaitable[None]] | None = None
    # Extra catalog facts (e.g. the style presets).
    catalog: dict[str, Any] = field(default_factory=dict)
    # Set when the type is submitted only through its own path (e.g. document uploads, which keep a
    # document record): the generic submit paths refuse it with a 400 that names this path.
    submit_path: str | None = None

    def queue_for(self, data: BaseModel) -> str:
        queue = self.route(data) if self.route else self.queue
        if queue not in QUEUES:
            raise ValueError(f"job type {self.name} routed to unknown queue {queue!r}")
        return queue

    def limits(self, settings: Settings) -> dict[str, Any]:
        """The effective limits after the deployment's overrides."""
        o = settings.type_overrides.get(self.name)
        return {
            "soft_time_limit_s": (o and o.soft_time_limit_s) or self.soft_time_limit_s,
            "time_limit_s": (o and o.time_limit_s) or self.time_limit_s,
            "max_retries": o.max_retries if o and o.max_retries is not None else self.max_retries,
            "retention_s": (o and o.retention_s) or self.retention_s or settings.retention_s,
        }

    def unavailable_reason(self, settings: Settings) -> str | None:
        """Why the type cannot run here: not configured, or restricted (the catalog and child-job checks)."""
        reason = self.unavailable(settings) if self.unavailable else None
        return reason or self.restricted_reason(settings)

    def restricted_reason(self, settings: Settings) -> str | None:
        return self.restricted(settings) if self.restricted else None

    def input_schema(self) -> dict[str, Any]:
        return self.input_model.model_json_schema()


class Registry:
    def __init__(self) -> None:
        self._types: dict[str, JobType] = {}

    def add(self, jt: JobType) -> None:
        if jt.name in self._types:
            raise ValueError(f"job type {jt.name!r} declared twice")
        if jt.queue not in QUEUES:
            raise ValueError(f"job type {jt.name!r}: queue must be one of {QUEUES}, not {jt.queue!r}")
        if not 0 < jt.soft_time_limit_s <= jt.time_limit_s:
            raise ValueError(f"job type {jt.name!r}: need 0 < soft_time_limit_s <= time_limit_s")
        try:
            jt.input_schema()
        except Exception as exc:
            raise ValueError(f"job type {jt.name!r}: input model has no JSON Schema: {exc}") from exc
        self._types[jt.name] = jt

    def get(self, name: str) -> JobType | None:
        return self._types.get(name)

    def names(self) -> list[str]:
        return sorted(self._types)

    def all(self) -> list[JobType]:
        return [self._types[n] for n in self.names()]

    def longest_time_limit_s(self, settings: Settings) -> float:
        """The longest hard time limit of any type after the deployment's overrides (0 with no types)."""
        return max((float(jt.limits(settings)["time_limit_s"]) for jt in self.all()), default=0.0)


REGISTRY = Registry()
_loaded = False


def job_type(
    name: str, *, input: type[BaseModel], queue: str = "cpu", **options: Any
) -> Callable[[JobFunction], JobFunction]:
    """Declare a job type. Unknown options fail at import time, not at the first job."""
    allowed = set(JobType.__dataclass_fields__) - {"name", "input_model", "func", "queue", "files"}
    unknown = set(options) - allowed
    if unknown:
        raise TypeError(f"job type {name!r}: unknown options {sorted(unknown)}")

    def decorate(func: JobFunction) -> JobFunction:
        REGISTRY.add(JobType(name=name, input_model=input, func=func, queue=queue,
                             files=file_fields(input), **options))
        return func

    return decorate


def load_all() -> Registry:
    """Import every module under aitasks.processors once, so each type registers itself."""
    global _loaded
    if not _loaded:
        import aitasks.processors as package

        for mod in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if not mod.name.endswith(".registry"):
                importlib.import_module(mod.name)
        _loaded = True
    return REGISTRY
