"""scripts/audit.py (``make lint``, ``make audit``) reads pip-audit's report right: a known vulnerability
fails both, and an audit that audited nothing is never taken for a clean one.

pip-audit's vulnerability services (PyPI's per-version JSON API, OSV) are cloud APIs this machine cannot
reach, so pip-audit is replaced here by a stub printing a report in pip-audit's JSON format; the real
pip-audit runs in ``make lint`` and ``make audit``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "audit.py"
EDITABLE = {"name": "aitasks", "skip_reason": "distribution marked as editable"}


def audit(tmp_path: Path, deps: list[dict[str, Any]], *args: str) -> subprocess.CompletedProcess[str]:
    stub = tmp_path / "pip-audit"
    stub.write_text(f"#!{sys.executable}\nprint({json.dumps(json.dumps({'dependencies': deps, 'fixes': []}))})\n")
    stub.chmod(0o755)
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PIP_AUDIT": str(stub)})


@pytest.mark.parametrize("mode", [[], ["--lint"]])
def test_a_known_vulnerability_fails_both_modes(tmp_path: Path, mode: list[str]) -> None:
    deps = [EDITABLE, {"name": "jinja2", "version": "3.1.2", "vulns": [
        {"id": "GHSA-h5c8-rqwp-cp95", "fix_versions": ["3.1.3"], "aliases": [], "description": ""}]},
        {"name": "httpx", "version": "0.28.1", "vulns": []}]
    r = audit(tmp_path, deps, *mode)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "VULNERABLE jinja2 3.1.2: GHSA-h5c8-rqwp-cp95 (fixed in 3.1.3)" in r.stdout
    assert "2 of 2 dependencies audited, 1 with known vulnerabilities" in r.stdout


def test_nothing_audited_is_an_error_for_make_audit_and_a_loud_warning_for_lint(tmp_path: Path) -> None:
    unreachable = [EDITABLE, *({"name": n, "version": "1.0", "skip_reason":
                                f"Dependency not found on PyPI and could not be audited: {n} (1.0)"}
                               for n in ("httpx", "redis"))]
    strict = audit(tmp_path, unreachable)
    assert strict.returncode == 2 and "NOTHING WAS AUDITED" in strict.stderr
    lint = audit(tmp_path, unreachable, "--lint")
    assert lint.returncode == 0 and "WARNING" in lint.stderr and "NOTHING WAS AUDITED" in lint.stderr
    assert "0 of 2 dependencies audited" in lint.stdout


def test_a_clean_full_audit_passes(tmp_path: Path) -> None:
    r = audit(tmp_path, [EDITABLE, {"name": "httpx", "version": "0.28.1", "vulns": []}])
    assert r.returncode == 0 and "1 of 1 dependencies audited, 0 with known vulnerabilities" in r.stdout
