"""A job's file as a download: served from the folder store's file, or streamed from the S3 bucket a chunk
at a time (never whole in memory), with the same headers either way."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

from fastapi.responses import FileResponse, Response, StreamingResponse

from aitasks.jobs.artifacts import ArtifactBackend, ArtifactStream

# A download, never a page of this origin: saved (attachment), its type not sniffed, and sandboxed with no
# resources should a browser still render it (an SVG or HTML a job wrote).
ARTIFACT_HEADERS = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "default-src 'none'; sandbox"}


async def artifact_response(artifacts: ArtifactBackend, job_id: str, name: str, media_type: str) -> Response | None:
    """The response for one stored file (``name`` already checked: letters, digits, '.', '_', '-'), or
    None when the store has no such file."""
    found = await asyncio.to_thread(artifacts.download, job_id, name)
    if found is None:
        return None
    if isinstance(found, Path):
        return FileResponse(found, media_type=media_type, filename=name, content_disposition_type="attachment",
                            headers=ARTIFACT_HEADERS)
    headers = {**ARTIFACT_HEADERS, "Content-Length": str(found.size),
               "Content-Disposition": f'attachment; filename="{name}"'}  # as FileResponse words it
    return StreamingResponse(_chunks(found), media_type=media_type, headers=headers)


def _chunks(stream: ArtifactStream) -> Iterator[bytes]:
    # Iterated in a worker thread by Starlette; the connection to the bucket is freed however it ends.
    try:
        yield from stream.chunks
    finally:
        stream.close()
