"""The baseline for submit: a bare FastAPI endpoint on the same path, doing nothing but HTTP and JSON.

It parses the same JSON body and answers a small JSON object with 202, under the same uvicorn settings
as `aitasks api` (one process, uvloop, httptools, no access log).
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import FastAPI

app = FastAPI(title="bench-bare")


@app.post("/api/v1/tasks/submit/", status_code=202)
async def submit(body: dict[str, Any]) -> dict[str, str]:
    return {"task_id": str(uuid.uuid4()), "status": "PENDING", "message": "Task submitted successfully"}


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}
