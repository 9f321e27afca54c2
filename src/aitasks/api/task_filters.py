"""The task list's filters (``GET /api/v1/tasks/`` and its export), from the query: a bad value is a 400
naming its field. The OpenAPI schemas below say exactly what is taken."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime

from aitasks.errors import FieldError, ValidationFailed
from aitasks.jobs.models import Status
from aitasks.store.records import Filters

# A time filter: an RFC 3339 / ISO 8601 time (no zone is UTC), or epoch seconds from year 1 to year 9999.
EPOCH_MIN, EPOCH_MAX = -62135596800, 253402300799
TIME_SCHEMA = {"anyOf": [{"type": "string", "format": "date-time"},
                         {"type": "number", "minimum": EPOCH_MIN, "maximum": EPOCH_MAX}]}
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


def _any_case(word: str) -> str:
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in word)


_WORD = "(?:" + "|".join(_any_case(s.value) for s in Status) + ")"
# What ``status`` takes, said exactly: state names in any case, separated by commas (blanks and empty parts
# are ignored), or nothing.
STATUS_LIST_SCHEMA = {"type": "string", "pattern": rf"^[ \t,]*(?:{_WORD}(?:[ \t]*,[ \t,]*{_WORD})*)?[ \t,]*$"}


def parse_filters(status: list[str] | None, task_type: str | None, created_after: str | None,
                  created_before: str | None, q: str | None) -> Filters:
    wanted: set[Status] | None = None
    if status:
        names = [s.strip(" \t").upper() for part in status for s in part.split(",") if s.strip(" \t")]
        try:
            wanted = {Status(n) for n in names}
        except ValueError:
            valid = ", ".join(s.value for s in Status)
            raise ValidationFailed(f"status must be one of {valid}",
                                   [FieldError("status", f"must be one of {valid}")]) from None
    return Filters(wanted, task_type, _time(created_after, "created_after"), _time(created_before, "created_before"), q or None)


def _time(value: str | None, name: str) -> float | None:
    """Epoch seconds of a time filter; a 400 naming ``name`` for anything TIME_SCHEMA does not allow."""
    if value is None:
        return None
    text = value
    problem = FieldError(name, f"must be an ISO 8601 time (e.g. 2026-12-01T00:00:00Z) or epoch seconds between "
                               f"{EPOCH_MIN} and {EPOCH_MAX}")
    try:
        if _NUMBER.match(text):
            seconds = float(text)
            if not (math.isfinite(seconds) and EPOCH_MIN <= seconds <= EPOCH_MAX):
                raise ValueError(text)
            return seconds
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
    except (ValueError, OverflowError):
        raise ValidationFailed(f"{name} is not a time", [problem]) from None
