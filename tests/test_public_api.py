"""What ``import aitasks`` offers: the pinned ``__all__``, every name importable, the client loaded lazily."""

from __future__ import annotations

import subprocess
import sys

import aitasks
import aitasks.client
from aitasks.client import errors
from stack import modules_the_api_imports

PUBLIC = [
    "ApiError", "AsyncClient", "AsyncJob", "Client", "ClientError", "ConnectionFailed", "DocumentFailed",
    "FieldProblem", "Job", "JobCancelled", "JobEnded", "JobFailed", "NotFound", "RateLimited", "ServiceUnavailable",
    "Unauthorized", "ValidationError", "WaitTimeout",
]


def test_all_is_pinned_and_each_name_imports_from_aitasks():
    assert aitasks.__all__ == PUBLIC
    for name in PUBLIC:
        namespace: dict[str, object] = {}
        exec(f"from aitasks import {name}", namespace)
        assert namespace[name] is getattr(aitasks.client, name)
    star: dict[str, object] = {}
    exec("from aitasks import *", star)
    assert set(PUBLIC) <= set(star) and set(PUBLIC) <= set(dir(aitasks))
    assert sorted(aitasks.client.__all__) == PUBLIC


def test_every_exception_the_client_exports_is_public():
    raised = {name for name, value in [*vars(aitasks.client).items(), *vars(errors).items()]
              if isinstance(value, type) and issubclass(value, BaseException) and not name.startswith("_")
              and value.__module__.startswith("aitasks.client")}
    assert {"DocumentFailed", "JobFailed", "WaitTimeout", "ClientError"} <= raised
    assert raised <= set(aitasks.__all__), raised - set(aitasks.__all__)


def test_the_client_is_loaded_on_first_use_only():
    code = ("import sys, aitasks; before = sorted(m for m in ('aitasks.client', 'httpx') if m in sys.modules); "
            "from aitasks import DocumentFailed, Client; print(before, 'aitasks.client' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["[]", "True"], out
    assert modules_the_api_imports(("aitasks.client", "httpx")) == []
