"""pip-audit over the installed dependencies (pyproject.toml pins every one with ==, so the venv is the lock).

    .venv/bin/python scripts/audit.py            # `make audit`: fails unless every dependency was audited
    .venv/bin/python scripts/audit.py --lint     # `make lint`: fails on a known vulnerability; says loudly,
                                                 # without failing, when the vulnerability service cannot
                                                 # be reached from this machine and nothing was audited

pip-audit itself answers "No known vulnerabilities found" and exit 0 when it could audit nothing (every
dependency skipped because PyPI's per-version JSON API or OSV is unreachable); this script counts what
was really audited, so that is never mistaken for a clean audit.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lint", action="store_true", help="an unreachable service is a warning, not a failure")
    args = p.parse_args(argv)
    exe = Path(os.environ.get("PIP_AUDIT", Path(sys.executable).with_name("pip-audit")))
    run = subprocess.run([str(exe), "--local", "--skip-editable", "--format", "json", "--progress-spinner", "off"],
                         capture_output=True, text=True, timeout=900)
    try:
        report = json.loads(run.stdout)
    except ValueError:
        print(f"pip-audit failed (exit {run.returncode}):\n{run.stderr[-2000:]}", file=sys.stderr)
        return 2
    deps = [d for d in report.get("dependencies", []) if "editable" not in str(d.get("skip_reason", ""))]
    vulnerable = [d for d in deps if d.get("vulns")]
    skipped = [d for d in deps if d.get("skip_reason")]
    audited = len(deps) - len(skipped)
    for d in vulnerable:
        for v in d["vulns"]:
            fixed = ", ".join(v.get("fix_versions") or []) or "no fixed release"
            print(f"VULNERABLE {d['name']} {d['version']}: {v['id']} (fixed in {fixed})")
    print(f"pip-audit: {audited} of {len(deps)} dependencies audited, {len(vulnerable)} with known "
          f"vulnerabilities, {len(skipped)} not audited")
    if vulnerable:
        return 1
    if skipped:
        reasons = sorted({str(d["skip_reason"]).split(":")[0] for d in skipped})
        message = (f"pip-audit could not audit {len(skipped)} dependencies ({'; '.join(reasons)}): the "
                   "vulnerability service (PyPI's JSON API per version, or OSV) cannot be reached from here")
        if audited == 0:
            message += ". NOTHING WAS AUDITED"
        if args.lint:
            print(f"WARNING: {message}; run `make audit` where it can be reached", file=sys.stderr)
            return 0
        print(f"error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
