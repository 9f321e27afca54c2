"""The asyncio client: ``aitasks.AsyncClient``.

    from aitasks import AsyncClient

    async with AsyncClient("http://127.0.0.1:8000", api_key="ait_...") as c:
        job = await c.submit("background_removal", image=Path("photo.jpg"))
        result = await job.wait(timeout=120, on_progress=lambda s: print(s["progress"], s["message"]))
        await job.download("result.png", "cut-out.png")
"""

# sync.py (aitasks.Client) is generated from this module by scripts/unasync.py: edit here, then run it.
# Whatever differs by more than `async`/`await` goes in concurrency.py (pairs) or protocol.py (no I/O).

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from pathlib import Path
from typing import Any, BinaryIO

import httpx

from aitasks.client import concurrency, protocol, sse
from aitasks.client.errors import ConnectionFailed, WaitTimeout, raise_for

Progress = Callable[[dict[str, Any]], Any]


class AsyncClient:
    """One tenant's view of an aitasks service. Connection errors are retried with exponential backoff
    (``retries`` times); submits carry an Idempotency-Key, so a retried submit never creates two jobs."""

    def __init__(self, url: str | None = None, api_key: str | None = None, *, timeout: float = 30.0,
                 retries: int = 3, backoff_s: float = 0.5, transport: httpx.AsyncBaseTransport | None = None):
        self.url, self.api_key = protocol.resolve(url, api_key)
        self.retries = retries
        self.backoff_s = backoff_s
        self.http = httpx.AsyncClient(base_url=self.url, headers=protocol.headers(self.api_key), timeout=timeout,
                                      transport=transport)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.http.aclose()

    # --- plumbing --------------------------------------------------------------------------------

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The service's answer, whatever its status; connection errors are retried with backoff."""
        for attempt in range(self.retries + 1):
            try:
                return await self.http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                if attempt == self.retries:
                    raise ConnectionFailed(f"cannot reach {self.url}: {exc}") from exc
                await concurrency.async_sleep(protocol.backoff(self.backoff_s, attempt))
        raise AssertionError("unreachable")

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A request with retries on connection errors; an error answer raises its ApiError."""
        response = await self._send(method, path, **kwargs)
        raise_for(response)
        return response

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self.request(method, path, **kwargs)
        return response.json()

    # --- the API ---------------------------------------------------------------------------------

    async def submit(self, task_type: str, *, idempotency_key: str | None = None, **inputs: Any) -> AsyncJob:
        """Submit a job. Inputs are the seed's fields (``prompt=``, ``parameters=``, ``image=``...);
        a ``bytes``, ``Path`` or open file is uploaded, anything else sent as JSON."""
        req = protocol.submit_request(task_type, inputs, idempotency_key)
        body = await self._json("POST", "/api/v1/tasks/submit/", **req.kwargs)
        return AsyncJob(self, body["task_id"], body)

    async def run(self, task_type: str, *, timeout: float | None = None, on_progress: Progress | None = None,
                  **inputs: Any) -> dict[str, Any]:
        """Submit and wait: the result of a successful job (raises JobFailed, JobCancelled, WaitTimeout)."""
        job = await self.submit(task_type, **inputs)
        return await job.wait(timeout, on_progress)

    def job(self, task_id: str) -> AsyncJob:
        return AsyncJob(self, task_id)

    def jobs(self, status: str | None = None, task_type: str | None = None, page_size: int = 50,
             limit: int | None = None, *, created_after: str | None = None, created_before: str | None = None,
             q: str | None = None) -> AsyncIterator[dict[str, Any]]:
        """The tenant's jobs, newest first, following the cursor. Filters: statuses (comma-separated), a type,
        created times (ISO 8601 or epoch seconds), text in the message or error."""
        params = {"status": status, "task_type": task_type, "created_after": created_after,
                  "created_before": created_before, "q": q}
        return self._pages("/api/v1/tasks/", "tasks", params, page_size, limit)

    async def export(self, out: BinaryIO, format: str = "jsonl", *, status: str | None = None,
                     task_type: str | None = None, created_after: str | None = None,
                     created_before: str | None = None, q: str | None = None) -> int:
        """Stream the tenant's job history (``jsonl`` or ``csv``, with the list's filters) into ``out``, as
        it arrives; returns the bytes written."""
        params = {k: v for k, v in {"format": format, "status": status, "task_type": task_type,
                                    "created_after": created_after, "created_before": created_before,
                                    "q": q}.items() if v is not None}
        written = 0
        async with self.http.stream("GET", "/api/v1/tasks/export", params=params) as r:
            if r.status_code >= 400:
                await r.aread()
                raise_for(r)
            async for chunk in r.aiter_bytes():
                out.write(chunk)
                written += len(chunk)
        return written

    async def _pages(self, path: str, key: str, params: dict[str, Any], page_size: int,
                     limit: int | None) -> AsyncIterator[dict[str, Any]]:
        cursor: str | None = None
        seen = 0
        while True:
            query = {k: v for k, v in {**params, "limit": page_size, "cursor": cursor}.items() if v is not None}
            page = await self._json("GET", path, params=query)
            for item in page[key]:
                yield item
                seen += 1
                if limit is not None and seen >= limit:
                    return
            cursor = page.get("next_cursor")
            if not cursor:
                return

    async def task_types(self) -> list[dict[str, Any]]:
        return list(await self._json("GET", "/api/v1/task-types"))

    # --- documents (see docs/documents.md) ------------------------------------------------------

    async def upload_document(self, file: protocol.FileInput, *, document_id: str | None = None,
                              metadata: dict[str, Any] | None = None) -> dict[str, Any]:
        """Upload a document for ingestion (PDF, DOCX, text, HTML, scans); answers at once with its ids.
        Uploading the same ``document_id`` again replaces it."""
        req = protocol.upload_request(file, document_id, metadata)
        return dict(await self._json("POST", f"{protocol.DOCUMENTS}/", **req))

    async def document(self, document_id: str) -> dict[str, Any]:
        """The document's status: processing (with stage and progress), completed or failed."""
        return dict(await self._json("GET", f"{protocol.DOCUMENTS}/{document_id}/status"))

    async def wait_document(self, document_id: str, timeout: float | None = None,
                            poll_s: float = 0.5) -> dict[str, Any]:
        """Wait for the ingestion to end: its status when completed; raises DocumentFailed, WaitTimeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while (done := protocol.document_outcome(await self.document(document_id))) is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(f"document {document_id} still processing after {timeout:g}s")
            await concurrency.async_sleep(poll_s)
        return done

    async def ingest(self, file: protocol.FileInput, *, document_id: str | None = None,
                     metadata: dict[str, Any] | None = None, timeout: float | None = None) -> dict[str, Any]:
        """Upload and wait: the completed document's status (pages, chunks, ocr_pages)."""
        accepted = await self.upload_document(file, document_id=document_id, metadata=metadata)
        return await self.wait_document(accepted["document_id"], timeout)

    def documents(self, page_size: int = 50, limit: int | None = None) -> AsyncIterator[dict[str, Any]]:
        """The tenant's documents, most recently uploaded first."""
        return self._pages(f"{protocol.DOCUMENTS}/", "documents", {}, page_size, limit)

    async def delete_document(self, document_id: str) -> dict[str, Any]:
        """Remove the document and all its chunks from search."""
        return dict(await self._json("DELETE", f"{protocol.DOCUMENTS}/{document_id}"))

    async def search(self, query: str, *, top_k: int = 5, document_ids: list[str] | None = None,
                     filters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Passages of your documents that answer ``query``, best first (document_id, page, score, text)."""
        body = protocol.search_body(query, top_k, document_ids, filters)
        return list((await self._json("POST", "/api/v1/search", json=body))["results"])


class AsyncJob:
    """A handle on one job; ``last`` is the latest status document seen."""

    def __init__(self, client: AsyncClient, task_id: str, last: dict[str, Any] | None = None):
        self.client = client
        self.id = task_id
        self.last: dict[str, Any] = last or {"task_id": task_id}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.id!r}, status={self.last.get('status')!r})"

    async def status(self) -> dict[str, Any]:
        self.last = dict(await self.client._json("GET", f"/api/v1/tasks/{self.id}/status/"))
        return self.last

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """Every state and progress change as it happens (SSE), from the current state to the end.
        A dropped stream is reopened (the service answers a late subscriber with the current state);
        ConnectionFailed when it cannot be, after the retries."""
        async with aclosing(self._follow(protocol.Deadline(None), poll=False)) as updates:
            async for doc in updates:
                yield doc

    async def wait(self, timeout: float | None = None, on_progress: Progress | None = None) -> dict[str, Any]:
        """Until the job ends, following its event stream (polling its status where there is none): the
        result, or JobFailed / JobCancelled. ``on_progress`` gets each new status document as it arrives.
        WaitTimeout after ``timeout`` seconds (the job goes on)."""
        deadline = protocol.Deadline(timeout)
        return await concurrency.async_within(self._wait(deadline, on_progress), deadline,
                                              lambda: deadline.expired(self.id, self.last))

    async def _wait(self, deadline: protocol.Deadline, on_progress: Progress | None) -> dict[str, Any]:
        async with aclosing(self._follow(deadline, poll=True)) as updates:
            async for doc in updates:
                if on_progress:
                    await concurrency.async_notify(on_progress, doc)
                if doc.get("status") in protocol.TERMINAL:
                    if doc.get("status") == "SUCCESS" and "result" not in doc:
                        doc = await self._full()
                    return protocol.outcome(doc)
        raise AssertionError("the updates end with the job's end")

    async def _follow(self, deadline: protocol.Deadline, poll: bool) -> AsyncGenerator[dict[str, Any], None]:
        """Each new status document until the job ends, from its event stream. A dropped stream is
        reopened, with backoff, ``retries`` times in a row; past that, or when there is no stream
        (a proxy's error, a 503), ``poll`` polls the status instead, else ConnectionFailed / ApiError."""
        seen = protocol.Seen()
        failures = 0
        while True:
            try:
                async with aclosing(self._stream(deadline)) as stream:
                    async for doc in stream:
                        failures = 0
                        if seen.new(doc):
                            yield doc
                        if doc.get("status") in protocol.TERMINAL:
                            return
                problem = "it ended before the job did"
            except protocol.StreamUnavailable as exc:
                if not poll:
                    raise exc.error from None
                break
            except httpx.TransportError as exc:
                if deadline.passed():
                    raise deadline.expired(self.id, self.last) from None
                problem = str(exc) or type(exc).__name__
            failures += 1
            if failures > self.client.retries:
                if not poll:
                    raise ConnectionFailed(f"lost the event stream of job {self.id}: {problem}")
                break
            await concurrency.async_sleep(deadline.pause(protocol.backoff(self.client.backoff_s, failures - 1)))
        async with aclosing(self._polled(deadline)) as polled:
            async for doc in polled:
                if seen.new(doc):
                    yield doc

    async def _stream(self, deadline: protocol.Deadline) -> AsyncGenerator[dict[str, Any], None]:
        """One connection to the job's event stream: its status documents, until the ``end`` event."""
        timeout = protocol.stream_timeout(self.client.http.timeout, deadline)
        async with self.client.http.stream("GET", protocol.EVENTS.format(self.id), timeout=timeout) as r:
            if not protocol.is_event_stream(r):
                await r.aread()
                protocol.refuse(r)
            decoder = sse.Decoder()
            async for line in r.aiter_lines():
                message = decoder.feed(line)
                if message is not None:
                    if message.event == sse.END:
                        return
                    self.last = message.json()
                    yield self.last
                if deadline.passed():
                    raise deadline.expired(self.id, self.last)

    async def _polled(self, deadline: protocol.Deadline) -> AsyncGenerator[dict[str, Any], None]:
        """The job's status, polled until it ends."""
        while True:
            doc = await self.status()
            yield doc
            if doc.get("status") in protocol.TERMINAL:
                return
            if deadline.passed():
                raise deadline.expired(self.id, self.last)
            await concurrency.async_sleep(deadline.pause(protocol.POLL_S))

    async def _full(self) -> dict[str, Any]:
        """The result document, whatever the job's state (202 while it runs, 500/410 when it failed)."""
        r = await self.client._send("GET", f"/api/v1/tasks/{self.id}/result/")
        if r.status_code not in (200, 202, 410, 500):
            raise_for(r)
        self.last = r.json()
        return self.last

    async def result(self) -> dict[str, Any]:
        """The result if the job succeeded; JobFailed / JobCancelled if it ended otherwise; WaitTimeout
        if it is still running (use ``wait`` to block)."""
        doc = await self._full()
        if doc.get("status") not in protocol.TERMINAL:
            raise WaitTimeout(f"job {self.id} is still {doc.get('status')}")
        return protocol.outcome(doc)

    async def cancel(self) -> dict[str, Any]:
        return dict(await self.client._json("POST", f"/api/v1/tasks/{self.id}/cancel/"))

    async def download(self, artifact: str, path: str | Path) -> Path:
        """Save one of the job's files (an output, or an input it was given)."""
        target = Path(path)
        if target.is_dir():
            target = target / artifact
        r = await self.client.request("GET", f"/api/v1/tasks/{self.id}/artifacts/{artifact}")
        await concurrency.async_write_bytes(target, r.content)
        return target

    async def artifacts(self) -> list[str]:
        return list(protocol.artifact_names(await self._full()))
