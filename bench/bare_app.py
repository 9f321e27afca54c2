"""The baseline for submit: a bare FastAPI endpoint on the same path, doing nothing but HTTP and JSON.

It parses the same JSON body and answers a small JSON object with 202, under the same uvicorn settings
as `aitasks api` (one process, uvloop, httptools, no access log). It also gets the same garbage-collector
setting as `aitasks api` (startup objects frozen, see api/app.py), so the p99 ratio compares request
handling, not one side's collector pauses.
"""

from __future__ import annotations

import gc
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    gc.collect()
    gc.freeze()
    yield


app = FastAPI(title="bench-bare", lifespan=lifespan)


@app.post("/api/v1/tasks/submit/", status_code=202)
async def submit(body: dict[str, Any]) -> dict[str, str]:
    return {"task_id": str(uuid.uuid4()), "status": "PENDING", "message": "Task submitted successfully"}


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}
