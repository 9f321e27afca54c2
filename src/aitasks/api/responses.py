"""JSON responses rendered with orjson: result bodies carry inlined base64 images of hundreds of KB,
which the standard library encoder scans character by character."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.responses import JSONResponse


class FastJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)
