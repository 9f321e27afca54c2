"""Milliseconds per stage of a job, reported in its result's metadata."""

from __future__ import annotations

import time


class Stopwatch:
    def __init__(self) -> None:
        self._start = self._last = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[f"{name}_ms"] = round((now - self._last) * 1000, 1)
        self._last = now

    def report(self) -> dict[str, float]:
        return {**self.laps, "total_ms": round((time.perf_counter() - self._start) * 1000, 1)}
