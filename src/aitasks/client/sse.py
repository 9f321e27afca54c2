"""Server-Sent Events, parsed in one place for both clients and the tests: lines in, messages out.

The rules are the WHATWG ones (``text/event-stream``): ``field: value`` lines, one optional space after
the colon, ``:`` comments (the service's keepalives), a blank line ends a message, a message without
``data`` is dropped. Lines come without their line ending, as ``httpx``'s ``iter_lines`` gives them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

END = "end"  # the event after a job's terminal state: the stream closes next
MEDIA_TYPE = "text/event-stream"


@dataclass(frozen=True)
class Message:
    data: str
    event: str = "message"
    id: str | None = None

    def json(self) -> Any:
        return json.loads(self.data)


class Decoder:
    """Fed one line at a time (so it serves sync and async streams alike); a Message comes out when
    the blank line that ends one arrives."""

    def __init__(self) -> None:
        self.event = ""
        self.data: list[str] = []
        self.last_id: str | None = None  # kept across messages, as the spec says
        self.retry_ms: int | None = None

    def feed(self, line: str) -> Message | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self.data.append(value)
        elif name == "event":
            self.event = value
        elif name == "id" and "\0" not in value:
            self.last_id = value
        elif name == "retry" and value.isdigit():
            self.retry_ms = int(value)
        return None

    def _dispatch(self) -> Message | None:
        data, event = self.data, self.event or "message"
        self.data, self.event = [], ""
        return Message("\n".join(data), event, self.last_id) if data else None


def messages(lines: Iterable[str]) -> Iterator[Message]:
    """Every complete message of a stream's lines (an unfinished last one is dropped)."""
    decoder = Decoder()
    for line in lines:
        if (message := decoder.feed(line)) is not None:
            yield message


def updates(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    """A job's event stream as its status documents, until the ``end`` event."""
    for message in messages(lines):
        if message.event == END:
            return
        yield message.json()
