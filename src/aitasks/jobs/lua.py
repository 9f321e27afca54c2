"""The Lua scripts' source files, read from the package and completed with the key names of keys.py.

A ``.lua`` file never spells a key: it writes a placeholder such as ``'@JOB_PREFIX@'`` and ``render``
substitutes it here, so keys.py stays the one place key names are made. A placeholder left over (a typo,
or one this table lacks) fails loudly at import instead of writing to a key nobody reads.
"""

from __future__ import annotations

import re
from importlib import resources

from aitasks.jobs import keys
from aitasks.jobs.metrics import DURATION_BUCKETS, TIMELINE_KEEP_S, bucket_label

PLACEHOLDER = re.compile(r"@[A-Z][A-Z0-9_]*@")


def _buckets() -> str:
    """The duration histogram's bounds as a Lua list of {upper bound, label} pairs."""
    return "{" + ", ".join(f"{{{b!r}, '{bucket_label(b)}'}}" for b in DURATION_BUCKETS) + "}"


# Key names (keys.py) and the few numbers the scripts need from their features' modules.
VALUES: dict[str, str] = {
    "@JOB_PREFIX@": keys.JOB_PREFIX,
    "@EVENTS_PREFIX@": keys.EVENTS_PREFIX,
    "@METRICS_JOBS@": keys.METRICS_JOBS,
    "@METRICS_TIMELINE_PREFIX@": keys.METRICS_TIMELINE_PREFIX,
    "@METRICS_DURATION_PREFIX@": keys.METRICS_DURATION_PREFIX,
    "@TIMELINE_KEEP_S@": str(TIMELINE_KEEP_S),
    "@DURATION_BUCKETS@": _buckets(),
    "@USAGE_PREFIX@": keys.USAGE_PREFIX,
    "@USAGE_TTL_S@": str(keys.USAGE_TTL_S),
    "@WEBHOOKS_PENDING@": keys.WEBHOOKS_PENDING,
    "@JOBS_LIVE@": keys.JOBS_LIVE,
    "@TENANT_PREFIX@": keys.TENANT_PREFIX,
    "@HISTORY_STREAM@": keys.HISTORY_STREAM,
    "@HISTORY_STREAM_MAX@": str(keys.HISTORY_STREAM_MAX),
    "@DISPATCH_PREFIX@": keys.DISPATCH_PREFIX,
    "@DISPATCH_DEFAULTS@": keys.DISPATCH_DEFAULTS,
    "@DISPATCH_BUSY@": keys.DISPATCH_BUSY,
}


def source(package: str, name: str) -> str:
    """A ``.lua`` file shipped in ``package`` (pyproject's package-data includes ``**/*.lua``), as written."""
    return resources.files(package).joinpath(name).read_text(encoding="utf-8")


def render(text: str, extra: dict[str, str] | None = None) -> str:
    """``text`` with every placeholder substituted; raises ValueError naming any left over."""
    values = VALUES | (extra or {})
    out = PLACEHOLDER.sub(lambda m: values.get(m.group(0), m.group(0)), text)
    left = sorted(set(PLACEHOLDER.findall(out)))
    if left:
        raise ValueError(f"Lua placeholders without a value: {', '.join(left)}")
    return out


def load(package: str, name: str) -> str:
    return render(source(package, name))


# The fair dispatcher's Lua functions (jobs/dispatch_lib.lua), spliced where a script writes
# ``@DISPATCH_LIB@`` on a line of its own: every script that queues or ends a job dispatches in its own step.
VALUES["@DISPATCH_LIB@"] = load("aitasks.jobs", "dispatch_lib.lua")
