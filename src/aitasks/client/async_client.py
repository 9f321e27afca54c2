"""The asyncio client: ``aitasks.AsyncClient``, the same calls as ``Client`` awaited.

    async with AsyncClient(url, api_key=key) as c:
        job = await c.submit("style_transfer", image=Path("photo.png"), parameters={"style": "oil"})
        async for status in job.events():
            print(status["progress"], status["message"])
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

from aitasks.client import protocol
from aitasks.client.errors import ConnectionFailed, WaitTimeout, raise_for

T = TypeVar("T")
Progress = Callable[[dict[str, Any]], Any]


class AsyncClient:
    """See ``Client``: the same behaviour (retries with backoff, idempotent submits), awaited."""

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

    async def _retrying(self, call: Callable[[], Awaitable[T]]) -> T:
        for attempt in range(self.retries + 1):
            try:
                return await call()
            except httpx.TransportError as exc:
                if attempt == self.retries:
                    raise ConnectionFailed(f"cannot reach {self.url}: {exc}") from exc
                await asyncio.sleep(self.backoff_s * 2 ** attempt)
        raise AssertionError("unreachable")

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = await self._retrying(lambda: self.http.request(method, path, **kwargs))
        raise_for(response)
        return response

    async def submit(self, task_type: str, *, idempotency_key: str | None = None, **inputs: Any) -> AsyncJob:
        req = protocol.submit_request(task_type, inputs, idempotency_key)
        body = (await self.request("POST", "/api/v1/tasks/submit/", **req.kwargs)).json()
        return AsyncJob(self, body["task_id"], body)

    async def run(self, task_type: str, *, timeout: float | None = None, on_progress: Progress | None = None,
                  **inputs: Any) -> dict[str, Any]:
        return await (await self.submit(task_type, **inputs)).wait(timeout, on_progress)

    def job(self, task_id: str) -> AsyncJob:
        return AsyncJob(self, task_id)

    def jobs(self, status: str | None = None, task_type: str | None = None, page_size: int = 50,
             limit: int | None = None) -> AsyncIterator[dict[str, Any]]:
        return self._pages("/api/v1/tasks/", "tasks", {"status": status, "task_type": task_type}, page_size, limit)

    async def _pages(self, path: str, key: str, params: dict[str, Any], page_size: int,
                     limit: int | None) -> AsyncIterator[dict[str, Any]]:
        cursor: str | None = None
        seen = 0
        while True:
            query = {k: v for k, v in {**params, "limit": page_size, "cursor": cursor}.items() if v is not None}
            page = (await self.request("GET", path, params=query)).json()
            for item in page[key]:
                yield item
                seen += 1
                if limit is not None and seen >= limit:
                    return
            cursor = page.get("next_cursor")
            if not cursor:
                return

    async def task_types(self) -> list[dict[str, Any]]:
        return list((await self.request("GET", "/api/v1/task-types")).json())

    # --- documents: as Client's ------------------------------------------------------------------

    async def upload_document(self, file: protocol.FileInput, *, document_id: str | None = None,
                              metadata: dict[str, Any] | None = None) -> dict[str, Any]:
        req = protocol.upload_request(file, document_id, metadata)
        return dict((await self.request("POST", f"{protocol.DOCUMENTS}/", **req)).json())

    async def document(self, document_id: str) -> dict[str, Any]:
        return dict((await self.request("GET", f"{protocol.DOCUMENTS}/{document_id}/status")).json())

    async def wait_document(self, document_id: str, timeout: float | None = None,
                            poll_s: float = 0.5) -> dict[str, Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (done := protocol.document_outcome(await self.document(document_id))) is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(f"document {document_id} still processing after {timeout:g}s")
            await asyncio.sleep(poll_s)
        return done

    async def ingest(self, file: protocol.FileInput, *, document_id: str | None = None,
                     metadata: dict[str, Any] | None = None, timeout: float | None = None) -> dict[str, Any]:
        accepted = await self.upload_document(file, document_id=document_id, metadata=metadata)
        return await self.wait_document(accepted["document_id"], timeout)

    def documents(self, page_size: int = 50, limit: int | None = None) -> AsyncIterator[dict[str, Any]]:
        return self._pages(f"{protocol.DOCUMENTS}/", "documents", {}, page_size, limit)

    async def delete_document(self, document_id: str) -> dict[str, Any]:
        return dict((await self.request("DELETE", f"{protocol.DOCUMENTS}/{document_id}")).json())

    async def search(self, query: str, *, top_k: int = 5, document_ids: list[str] | None = None,
                     filters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        body = protocol.search_body(query, top_k, document_ids, filters)
        return list((await self.request("POST", "/api/v1/search", json=body)).json()["results"])


class AsyncJob:
    def __init__(self, client: AsyncClient, task_id: str, last: dict[str, Any] | None = None):
        self.client = client
        self.id = task_id
        self.last: dict[str, Any] = last or {"task_id": task_id}

    def __repr__(self) -> str:
        return f"AsyncJob({self.id!r}, status={self.last.get('status')!r})"

    async def status(self) -> dict[str, Any]:
        self.last = (await self.client.request("GET", f"/api/v1/tasks/{self.id}/status/")).json()
        return self.last

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        for attempt in range(self.client.retries + 1):
            try:
                async with self.client.http.stream("GET", f"/api/v1/tasks/{self.id}/events", timeout=None) as r:
                    if r.status_code >= 400:
                        await r.aread()
                        raise_for(r)
                    parser = protocol.SseParser()
                    async for line in r.aiter_lines():
                        ended, doc = parser.feed(line)
                        if doc is not None:
                            self.last = doc
                            yield doc
                        if ended:
                            return
                if self.last.get("status") in protocol.TERMINAL:
                    return
            except httpx.TransportError as exc:
                if attempt == self.client.retries:
                    raise ConnectionFailed(f"lost the event stream of job {self.id}: {exc}") from exc
                await asyncio.sleep(self.client.backoff_s * 2 ** attempt)

    async def wait(self, timeout: float | None = None, on_progress: Progress | None = None) -> dict[str, Any]:
        """Until the job ends (asyncio's own timeout bounds the stream): its result, or JobFailed /
        JobCancelled; WaitTimeout after ``timeout`` seconds (the job goes on)."""
        started = time.monotonic()

        async def follow() -> dict[str, Any]:
            async for doc in self.events():
                if on_progress:
                    maybe = on_progress(doc)
                    if asyncio.iscoroutine(maybe):
                        await maybe
                if doc.get("status") in protocol.TERMINAL:
                    if doc.get("status") == "SUCCESS" and "result" not in doc:
                        doc = await self._full()
                    return protocol.outcome(doc)
            return protocol.outcome(await self._full())

        try:
            return await asyncio.wait_for(follow(), timeout)
        except asyncio.TimeoutError:
            raise WaitTimeout(f"job {self.id} still {self.last.get('status')} after "
                              f"{time.monotonic() - started:.0f} s") from None

    async def _full(self) -> dict[str, Any]:
        r = await self.client._retrying(lambda: self.client.http.get(f"/api/v1/tasks/{self.id}/result/"))
        if r.status_code not in (200, 202, 410, 500):
            raise_for(r)
        self.last = r.json()
        return self.last

    async def result(self) -> dict[str, Any]:
        doc = await self._full()
        if doc.get("status") not in protocol.TERMINAL:
            raise WaitTimeout(f"job {self.id} is still {doc.get('status')}")
        return protocol.outcome(doc)

    async def cancel(self) -> dict[str, Any]:
        return dict((await self.client.request("POST", f"/api/v1/tasks/{self.id}/cancel/")).json())

    async def download(self, artifact: str, path: str | Path) -> Path:
        target = Path(path)
        if target.is_dir():
            target = target / artifact
        r = await self.client.request("GET", f"/api/v1/tasks/{self.id}/artifacts/{artifact}")
        await asyncio.to_thread(target.write_bytes, r.content)
        return target

    async def artifacts(self) -> list[str]:
        return list(protocol.artifact_names(await self._full()))
