"""Structured logs: one JSON object a line, carrying job_id, task_type and tenant from a contextvar.

Python warnings become log lines too, and native libraries' chatter on file descriptor 2 (TFLite,
absl) can be routed into the debug log around the calls that print it (``native_stderr_to_log``).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import orjson

_context: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("aitasks_log_context", default={})
# The process name, outside the contextvar: threads start with an empty context and must carry it too.
_process: dict[str, str] = {}


@contextlib.contextmanager
def job_log_context(**fields: str) -> Iterator[None]:
    token = _context.set({**_context.get(), **fields})
    try:
        yield
    finally:
        _context.reset(token)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **_process,
            **_context.get(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def setup_logging(level: str = "INFO", process: str = "") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Warnings (a library's deprecation, Celery's superuser notice) as JSON lines, not raw stderr text.
    logging.captureWarnings(True)
    _process.clear()
    if process:
        _process["process"] = process


def process_name() -> str:
    """The name this process's log lines carry (``setup_logging``'s ``process``), or ""."""
    return _process.get("process", "")


# What native code prints on start-up that says nothing to an operator: TFLite's delegate notice and
# absl's info and warning lines (mediapipe's "W0000 ... inference_feedback_manager.cc:114] ..."); its
# error lines pass. Anchored at the line start, so a JSON log line quoting them never matches.
NATIVE_NOISE = re.compile(
    r"^(INFO: Created TensorFlow Lite .*delegate"
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|[IW]\d{4} [\d:.]+ +\d+ [\w./-]+:\d+\] )"
)


@contextlib.contextmanager
def native_stderr_to_log(logger: str, noise: re.Pattern[str] = NATIVE_NOISE) -> Iterator[None]:
    """While the block runs, filter file descriptor 2: lines matching ``noise`` go to ``logger`` at debug
    level, everything else (our own log lines from other threads included) passes through unchanged.

    Native libraries write to fd 2 directly, below sys.stderr, and read no setting that quiets them
    (mediapipe's absl and TFLite loggers ignore GLOG_minloglevel and TF_CPP_MIN_LOG_LEVEL). The filter
    covers only the block, so a crash later still reaches the real stderr."""
    sys.stderr.flush()
    saved = os.dup(2)
    read_fd, write_fd = os.pipe()
    noisy: list[str] = []

    def pump() -> None:
        # Only raw writes here: logging from this thread would write into the pipe it drains.
        pending = b""
        with os.fdopen(read_fd, "rb", buffering=0) as pipe:
            while chunk := pipe.read(65536):
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    forward(line + b"\n")
        if pending:
            forward(pending)

    def forward(line: bytes) -> None:
        text = line.decode(errors="replace").rstrip("\n")
        if noise.match(text):
            noisy.append(text)
            return
        while line:
            line = line[os.write(saved, line):]

    reader = threading.Thread(target=pump, name="native-stderr", daemon=True)
    reader.start()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # the pipe's last writer is gone: the reader sees its end
        reader.join(5)
        if not reader.is_alive():  # else a child forked meanwhile holds the pipe: leave the reader its fd
            os.close(saved)
        log = logging.getLogger(logger)
        for text in noisy:
            log.debug("%s", text)
