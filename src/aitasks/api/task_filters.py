"""The task list's filters (``GET /api/v1/tasks/`` and its export), parsed from the query: a bad value is
a 400 naming its field."""

from __future__ import annotations

from datetime import UTC, datetime

from aitasks.errors import FieldError, ValidationFailed
from aitasks.jobs.models import Status
from aitasks.store.records import Filters


def parse_filters(status: list[str] | None, task_type: str | None, created_after: str | None,
                  created_before: str | None, q: str | None) -> Filters:
    wanted: set[Status] | None = None
    if status:
        names = [s.strip().upper() for part in status for s in part.split(",") if s.strip()]
        try:
            wanted = {Status(n) for n in names}
        except ValueError:
            valid = ", ".join(s.value for s in Status)
            raise ValidationFailed(f"status must be one of {valid}",
                                   [FieldError("status", f"must be one of {valid}")]) from None
    return Filters(wanted, task_type, _time(created_after, "created_after"), _time(created_before, "created_before"),
                   q or None)


def _time(value: str | None, name: str) -> float | None:
    """A time filter as epoch seconds: ISO 8601 (no zone: UTC) or a number; else 400 naming ``name``."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        return float(text) if text.replace(".", "", 1).isdigit() else _iso(text)
    except (ValueError, OverflowError):
        raise ValidationFailed(f"{name} is not a time", [FieldError(
            name, "must be an ISO 8601 time (e.g. 2026-12-01T00:00:00Z) or epoch seconds")]) from None


def _iso(text: str) -> float:
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
