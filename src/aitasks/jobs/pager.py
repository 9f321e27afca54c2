"""Cursor pages over a sorted-set index of records, newest first: the jobs and the documents listings.

An index (``keys.tenant_index``, ``keys.tenant_documents``) holds ids scored by time in ms; the records
live under their own keys. A cursor names the last id a page looked at, ``base64("<score>:<id>")``, so
the next page starts right after it even when ids share a score (ties go by id, descending). An id
whose record is gone (expired) is dropped from the index on the way.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import redis.asyncio as aredis

T = TypeVar("T")

# Reads the records of a batch of ids, in order: None for an id whose record is gone.
Load = Callable[[list[str]], Awaitable[list[T | None]]]


def encode_cursor(score: float, member: str) -> str:
    return base64.urlsafe_b64encode(f"{score:.0f}:{member}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    """Raises ValueError (UnicodeDecodeError among them) for a cursor this API did not give."""
    padded = cursor + "=" * (-len(cursor) % 4)
    score, _, member = base64.urlsafe_b64decode(padded.encode()).decode().partition(":")
    return float(score), member


@dataclass
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def read_page(
    r: aredis.Redis, index: str, cursor: str | None, limit: int, load: Load[T],
    keep: Callable[[T], bool] | None = None, batch: int | None = None, scan_limit: int = 2000,
) -> Page[T]:
    """Up to ``limit`` records of ``index`` after ``cursor`` that ``keep`` accepts, newest first.

    Ids are read ``batch`` at a time (default ``max(limit, 50)``: a filter may skip many) and at most
    ``scan_limit`` per call (checked between batches), so a filtered page may hold fewer than ``limit``
    records and still carry a ``next_cursor`` to go on from. ``next_cursor`` is None once the index has
    nothing after the page.
    """
    after = decode_cursor(cursor) if cursor else None
    max_score = f"{after[0]:.0f}" if after else "+inf"
    size = batch or max(limit, 50)
    found: list[T] = []
    position: tuple[float, str] | None = None
    offset = scanned = 0
    more = False
    while len(found) < limit and scanned < scan_limit:
        rows = await r.zrevrangebyscore(index, max_score, "-inf", start=offset, num=size, withscores=True)
        if not rows:
            break
        offset += len(rows)
        members = [(_text(row[0]), float(row[1])) for row in rows]
        if after:  # ids sharing the cursor's score come after it only when they sort below its id
            members = [(m, s) for m, s in members if s < after[0] or m < after[1]]
        records = await load([m for m, _ in members]) if members else []
        gone: list[str] = []
        for i, ((member, score), record) in enumerate(zip(members, records, strict=True)):
            scanned += 1
            position = (score, member)
            if record is None:
                gone.append(member)
            elif keep is None or keep(record):
                found.append(record)
            if len(found) >= limit:
                # More after the page: the batch goes on, or (a full batch) the index does. The ids gone
                # from this batch are still in the index here, so ``offset`` still points past the batch.
                more = i < len(members) - 1 or (len(rows) == size and bool(
                    await r.zrevrangebyscore(index, max_score, "-inf", start=offset, num=1)))
                break
        if gone:
            await r.zrem(index, *gone)
            offset -= len(gone)  # the ids after them moved up
        if len(rows) < size:
            break
    else:
        if len(found) < limit:  # stopped by scan_limit, not by a full page: the rest is still to scan
            more = True
    return Page(found, encode_cursor(*position) if position and more else None)
