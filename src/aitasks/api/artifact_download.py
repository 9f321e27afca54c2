"""A job's file as a download: served from the folder store's file (a small one read whole in one step),
or streamed from the S3 bucket a chunk at a time (never whole in memory), with the same headers either way."""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path

from fastapi.responses import FileResponse, Response, StreamingResponse

from aitasks.jobs.artifacts import ArtifactBackend, ArtifactStream

# A download, never a page of this origin: saved (attachment), its type not sniffed, and sandboxed with no
# resources should a browser still render it (an SVG or HTML a job wrote).
ARTIFACT_HEADERS = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "default-src 'none'; sandbox"}
# A file up to this size is read whole in the one worker-thread step that finds it; a larger one (or a
# range request) goes through Starlette's FileResponse. Measured on a 544 KB result PNG
# (bench/api_request_cost.py): 2.45 ms of the API's CPU through FileResponse's 64 KiB reads (a thread hop
# each, plus its own stat and open), more than inlining the same PNG as base64 (1.8 ms).
WHOLE_MAX_BYTES = 1024 * 1024


class ArtifactFileResponse(FileResponse):
    """FileResponse (ranges, ETag, HEAD) reading 1 MiB at a time instead of 64 KiB: fewer thread hops."""

    chunk_size = WHOLE_MAX_BYTES


def _stat_headers(st: os.stat_result) -> dict[str, str]:
    """Last-Modified and ETag as FileResponse makes them (the same file answers alike by either path), and
    the ranges it serves."""
    tag = hashlib.md5(f"{st.st_mtime}-{st.st_size}".encode(), usedforsecurity=False).hexdigest()
    return {"Last-Modified": formatdate(st.st_mtime, usegmt=True), "ETag": f'"{tag}"', "Accept-Ranges": "bytes"}


def _find(artifacts: ArtifactBackend, job_id: str, name: str) -> tuple[Path | ArtifactStream | None, bytes | None,
                                                                       os.stat_result | None]:
    """In a worker thread: the stored file and, when it is a small regular file, its bytes and stat."""
    found = artifacts.download(job_id, name)
    if not isinstance(found, Path):
        return found, None, None
    try:
        with open(found, "rb") as f:
            st = os.fstat(f.fileno())
            if stat.S_ISREG(st.st_mode) and st.st_size <= WHOLE_MAX_BYTES:
                return found, f.read(WHOLE_MAX_BYTES + 1), st
    except FileNotFoundError:  # removed since (retention): as if never there
        return None, None, None
    return found, None, None


async def artifact_response(artifacts: ArtifactBackend, job_id: str, name: str, media_type: str,
                            ranged: bool = False) -> Response | None:
    """The response for one stored file (``name`` already checked: letters, digits, '.', '_', '-'), or
    None when the store has no such file. ``ranged``: the request asks for a byte range (FileResponse)."""
    found, data, st = await asyncio.to_thread(_find, artifacts, job_id, name)
    if found is None:
        return None
    disposition = {"Content-Disposition": f'attachment; filename="{name}"'}  # as FileResponse words it
    if isinstance(found, Path):
        if data is not None and st is not None and len(data) == st.st_size and not ranged:
            return Response(data, media_type=media_type,
                            headers={**ARTIFACT_HEADERS, **disposition, **_stat_headers(st)})
        return ArtifactFileResponse(found, media_type=media_type, filename=name,
                                    content_disposition_type="attachment", headers=ARTIFACT_HEADERS)
    headers = {**ARTIFACT_HEADERS, "Content-Length": str(found.size), **disposition}
    return StreamingResponse(_chunks(found), media_type=media_type, headers=headers)


def _chunks(stream: ArtifactStream) -> Iterator[bytes]:
    # Iterated in a worker thread by Starlette; the connection to the bucket is freed however it ends.
    try:
        yield from stream.chunks
    finally:
        stream.close()
