"""How the export report writes a job's values: timestamps, durations, sizes, inputs and compact JSON."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from aitasks.jobs.models import Job


def when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 60:
        return f"{value:.2f} s"
    minutes, secs = divmod(value, 60)
    return f"{int(minutes)} min {secs:04.1f} s"


def size(n: int) -> str:
    return f"{n} B" if n < 1024 else f"{n / 1024:.1f} KB" if n < 1024 * 1024 else f"{n / 1024 / 1024:.1f} MB"


def input_files(job: Job) -> list[tuple[str, dict[str, Any]]]:
    """The job's file inputs: (field, file reference) for each field that holds one."""
    return [(name, value) for name, value in job.input.items()
            if isinstance(value, dict) and isinstance(value.get("artifact"), str) and "media_type" in value]


def parameters_of(job: Job) -> dict[str, Any]:
    files = {name for name, _ in input_files(job)}
    return {k: v for k, v in job.input.items() if k not in files}


def clip_lines(text: str, max_lines: int, max_chars: int = 110) -> str:
    lines = []
    for line in text.splitlines():
        while len(line) > max_chars:
            lines.append(line[:max_chars])
            line = "  " + line[max_chars:]
        lines.append(line)
    if len(lines) > max_lines:
        lines = lines[:max_lines - 1] + [f"... ({len(lines) - max_lines + 1} more lines)"]
    return "\n".join(lines)


def compact_json(value: Any, indent: int = 0, width: int = 104) -> str:
    """JSON on few lines: a value that fits on its line stays on it; short members share lines."""
    flat = json.dumps(value, default=str, ensure_ascii=False)
    pad = "  " * indent
    if len(pad) + len(flat) <= width or not isinstance(value, (dict, list)) or not value:
        return pad + flat
    if isinstance(value, dict):
        items = [f"{json.dumps(str(k), ensure_ascii=False)}: " + compact_json(v, indent + 1, width).lstrip()
                 for k, v in value.items()]
        opening, closing = "{", "}"
    else:
        items = [compact_json(v, indent + 1, width).lstrip() for v in value]
        opening, closing = "[", "]"
    lines: list[str] = []
    for item in items:
        if lines and "\n" not in item and "\n" not in lines[-1] and len(lines[-1]) + len(item) + 2 <= width:
            lines[-1] += ", " + item
        else:
            if lines:
                lines[-1] += ","
            lines.append(pad + "  " + item)
    return pad + opening + "\n" + "\n".join(lines) + "\n" + pad + closing


def result_summary(job: Job) -> dict[str, Any]:
    """The job's result without inline data: metadata and the small fields."""
    out: dict[str, Any] = {}
    for k, v in (job.result or {}).items():
        if k in ("image_data", "artifacts"):
            continue
        text = json.dumps(v, default=str)
        out[k] = v if len(text) <= 2000 else f"<{len(text)} characters>"
    return out
