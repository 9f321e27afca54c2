"""Two revisions of aitasks measured in the same run, on the same machine: the working tree ("current")
and an earlier revision ("base"), for "within 5% of the previous code" claims.

    .venv/bin/python -m bench.compare_revisions --base 346e1e5                   # submit + e2e, 3 rounds
    .venv/bin/python -m bench.compare_revisions --base 346e1e5 --quick --rounds 1  # smoke run (~3 minutes)
    .venv/bin/python -m bench.compare_revisions --base 346e1e5 --parts submit     # (a) only
    .venv/bin/python -m bench.compare_revisions --base HEAD~3 --current HEAD   # two commits, not the tree

The base is checked out with `git worktree add --detach var/bench/rev-<sha> REV` (reused when present;
removed at the end if this run made it, unless --keep-worktrees). Each measurement is one
`python -m bench.run_all --only PART` subprocess run from that tree with PYTHONPATH=<tree>/src:<tree>, so it
and every process it starts (API, workers, baselines) import that tree's aitasks and bench ahead of the
editable install of /work/main. A probe (a sitecustomize on PYTHONPATH) records where each process imported
`aitasks` and `bench` from; a measurement that imported the other tree's code is an error.
Current and base alternate, A B A B ... for --rounds rounds (each part in turn), so machine noise hits both
alike. Prints per metric the medians of the two, current/base and a flag where current is more than 5%
worse; the bare endpoint and raw Celery figures are controls (a gap there is noise, not code). Writes
var/bench/compare.json; each run's own JSON and logs stay under var/bench/compare/.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]  # /work/main: the working tree and its git repository
PARTS = ("submit", "e2e")

# (key, label, unit, better: "higher"/"lower", kind: "code" (aitasks) / "ratio" (to its own baseline) /
#  "control" (the baseline itself: the same code on both sides) / "info", part, path in run_all's JSON)
METRICS: list[tuple[str, str, str, str, str, str, tuple[str, ...]]] = [
    ("submit_rps", "submit req/s", "req/s", "higher", "code", "submit", ("submit", "submit", "rps")),
    ("submit_p99_ms", "submit p99", "ms", "lower", "code", "submit", ("submit", "submit", "p99_ms")),
    ("bare_rps", "bare endpoint req/s", "req/s", "higher", "control", "submit", ("submit", "bare", "rps")),
    ("bare_p99_ms", "bare endpoint p99", "ms", "lower", "control", "submit", ("submit", "bare", "p99_ms")),
    ("submit_throughput_ratio", "submit req/s / bare", "x", "higher", "ratio", "submit",
     ("ratios", "submit_throughput_ratio")),
    ("submit_p99_ratio", "submit p99 / bare p99", "x", "lower", "ratio", "submit",
     ("ratios", "submit_p99_ratio")),
    ("e2e_p50_ms", "no-op e2e p50 (API+SSE)", "ms", "lower", "code", "e2e",
     ("e2e", "round_trip", "api_sse", "p50_ms")),
    ("raw_p50_ms", "raw Celery p50", "ms", "lower", "control", "e2e",
     ("e2e", "round_trip", "raw_celery", "p50_ms")),
    ("e2e_p50_overhead_ms", "e2e p50 minus raw Celery", "ms", "lower", "ratio", "e2e",
     ("ratios", "e2e_p50_overhead_ms")),
    ("sustained_jobs_per_s", "sustained jobs/s (API)", "jobs/s", "higher", "code", "e2e",
     ("e2e", "sustained", "api", "jobs_per_s")),
    ("raw_jobs_per_s", "raw Celery jobs/s", "jobs/s", "higher", "control", "e2e",
     ("e2e", "sustained", "raw", "jobs_per_s")),
    ("sustained_ratio", "sustained jobs/s / raw", "x", "higher", "ratio", "e2e",
     ("ratios", "sustained_ratio")),
    ("redis_bytes_per_job", "Redis bytes per finished job", "B", "lower", "info", "e2e",
     ("ratios", "redis_bytes_per_job")),
]
DERIVED = {"e2e_p50_ratio": ("no-op e2e p50 / raw p50", "x", "lower", "ratio", "e2e")}

PROBE_ENV = "BENCH_COMPARE_PROBE"  # file the probe appends to (not AITASKS_*: child_env keeps it)
TOKEN_ENV = "BENCH_COMPARE_RUN"  # marks every process of one measurement, to find leftovers

# The probe: before `aitasks` / `bench` is imported, note where sys.path resolves it (the same PathFinder
# lookup the import then makes), with this process's command line. Chains to any other sitecustomize.
SITECUSTOMIZE = '''\
import os, sys
_out = os.environ.get("BENCH_COMPARE_PROBE")
if _out:
    import importlib.machinery

    class _RevisionProbe:
        seen = set()

        def find_spec(self, name, path=None, target=None):
            if name in ("aitasks", "bench") and name not in self.seen:
                self.seen.add(name)
                spec = importlib.machinery.PathFinder.find_spec(name, path)
                try:
                    with open("/proc/self/cmdline", "rb") as f:
                        cmd = f.read().replace(b"\\0", b" ").decode(errors="replace").strip()
                except OSError:
                    cmd = " ".join(sys.argv)
                line = "%d\\t%s\\t%s\\t%s\\n" % (os.getpid(), name, spec.origin if spec else None, cmd)
                with open(_out, "a") as f:
                    f.write(line)
            return None

    sys.meta_path.insert(0, _RevisionProbe())

_here = os.path.dirname(os.path.abspath(__file__))
import importlib.machinery as _m, importlib.util as _u
_spec = _m.PathFinder.find_spec("sitecustomize", [p for p in sys.path if os.path.abspath(p or ".") != _here])
if _spec and _spec.loader:
    _mod = _u.module_from_spec(_spec)
    _spec.loader.exec_module(_mod)
'''


@dataclass
class Tree:
    side: str  # "current" / "base"
    rev: str  # what was asked for ("working tree" for the checkout itself)
    sha: str  # HEAD of the tree
    path: Path
    created: bool = False  # a worktree this run added (removed at the end)


def git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", "--no-optional-locks", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout.strip()


def resolve(rev: str) -> str:
    try:
        return git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    except subprocess.CalledProcessError:
        raise SystemExit(f"{rev!r} is not a commit of {ROOT}") from None


def worktree(side: str, rev: str, taken: set[Path]) -> Tree:
    """A detached worktree of ``rev`` under var/bench/, reused when one at that commit is there."""
    sha = resolve(rev)
    path = ROOT / "var" / "bench" / f"rev-{sha[:12]}"
    if path in taken:  # --current and --base the same commit: a second tree, so each side has its own
        path = path.with_name(path.name + "-" + side)
    taken.add(path)
    if path.exists():
        try:
            head = git("rev-parse", "HEAD", cwd=path)
        except subprocess.CalledProcessError:
            head = ""
        if head != sha or not (path / "src" / "aitasks").is_dir():
            raise SystemExit(f"{path} exists but is not a worktree at {sha[:12]} (HEAD {head[:12] or '?'}): "
                             f"remove it (git worktree remove --force {path})")
        print(f"{side}: reusing worktree {path.relative_to(ROOT)} ({rev} = {sha[:12]})", flush=True)
        return Tree(side, rev, sha, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "worktree", "add", "--detach", str(path), sha], cwd=ROOT, check=True,
                   capture_output=True, text=True)
    print(f"{side}: added worktree {path.relative_to(ROOT)} ({rev} = {sha[:12]})", flush=True)
    return Tree(side, rev, sha, path, created=True)


def fingerprint(tree: Tree) -> str:
    """HEAD plus the uncommitted changes of src/ and bench/ (to notice the tree edited between rounds)."""
    h = hashlib.sha256()
    h.update(git("rev-parse", "HEAD", cwd=tree.path).encode())
    h.update(subprocess.run(["git", "--no-optional-locks", "diff", "HEAD", "--binary", "--", "src", "bench"],
                            cwd=tree.path, capture_output=True).stdout)
    others = git("ls-files", "--others", "--exclude-standard", "-z", "--", "src", "bench", cwd=tree.path)
    for name in sorted(filter(None, others.split("\0"))):
        h.update(name.encode())
        try:
            h.update((tree.path / name).read_bytes())
        except OSError:
            pass
    return h.hexdigest()[:16]


def run_env(tree: Tree, site_dir: Path, probe: Path, token: str) -> dict[str, str]:
    """Our environment with PYTHONPATH replaced: the tree's src and root first (ahead of site-packages, where
    the editable install of /work/main sits), then the probe."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSAFEPATH")}
    env["PYTHONPATH"] = os.pathsep.join([str(tree.path / "src"), str(tree.path), str(site_dir)])
    env["PYTHONUNBUFFERED"] = "1"
    env[PROBE_ENV] = str(probe)
    env[TOKEN_ENV] = token
    return env


def processes_with(token: str) -> list[int]:
    """Pids of processes (ours: same user) whose environment carries ``token``."""
    pids = []
    needle = f"{TOKEN_ENV}={token}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def kill_leftovers(token: str, label: str) -> int:
    pids = processes_with(token)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if pids:
        print(f"  {label}: killed {len(pids)} leftover process(es): {pids}", file=sys.stderr, flush=True)
    return len(pids)


class Interrupted(Exception):
    pass


def run_part(tree: Tree, part: str, label: str, args: argparse.Namespace, out_dir: Path,
             site_dir: Path) -> dict[str, Any]:
    """One `bench.run_all --only part` from ``tree``: a record of it (with its JSON when it worked)."""
    out_json = out_dir / f"{label}.json"
    log_path = out_dir / f"{label}.log"
    probe = out_dir / f"{label}.probe"
    for p in (out_json, probe):
        p.unlink(missing_ok=True)
    token = uuid.uuid4().hex
    cmd = [sys.executable, "-m", "bench.run_all", "--only", part, "--out", str(out_json),
           "--generator", args.generator]
    if args.quick:
        cmd.append("--quick")
    if args.no_install:
        cmd.append("--no-install")
    record: dict[str, Any] = {"label": label, "side": tree.side, "part": part, "tree": str(tree.path),
                              "sha": tree.sha, "command": " ".join(cmd[1:]), "json": str(out_json),
                              "log": str(log_path)}
    if tree.side == "current" and tree.rev == "working tree":
        record["tree_fingerprint"] = fingerprint(tree)
    print(f"[{label}] {tree.side} ({tree.sha[:12]}{' + edits' if 'tree_fingerprint' in record else ''}) "
          f"from {tree.path}", flush=True)
    t0 = time.monotonic()
    timed_out = interrupted = False
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=tree.path, env=run_env(tree, site_dir, probe, token),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, text=True, bufsize=1)

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                print(f"  {label}| {line}", end="", flush=True)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            proc.wait(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        except KeyboardInterrupt:
            interrupted = True
        if proc.poll() is None:  # run_all stops its children on SIGTERM (as on Ctrl-C)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        reader.join(10)
    record["leftovers_killed"] = kill_leftovers(token, label)
    record["elapsed_s"] = round(time.monotonic() - t0, 1)
    record["returncode"] = proc.returncode
    record["isolation"] = check_isolation(tree, probe)
    # run_all removes its log folder at the next start: keep this run's
    logs = tree.path / "var" / "bench" / "logs"
    if logs.is_dir():
        shutil.copytree(logs, out_dir / f"{label}-logs", dirs_exist_ok=True)
    if interrupted:
        raise Interrupted
    if timed_out:
        record["error"] = f"timed out after {args.timeout:g} s"
    elif proc.returncode != 0 or not out_json.exists():
        record["error"] = f"run_all exited {proc.returncode} (log {log_path})"
    elif not record["isolation"]["ok"]:
        wrong = record["isolation"]["wrong"]
        record["error"] = "imported code from outside its tree: " + "; ".join(wrong[:3])
    else:
        record["result"] = json.loads(out_json.read_text())
    if "error" in record:
        print(f"  {label}: FAILED: {record['error']}", file=sys.stderr, flush=True)
    return record


def check_isolation(tree: Tree, probe: Path) -> dict[str, Any]:
    """Every process that imported aitasks or bench must have found them in ``tree``."""
    want = {"aitasks": tree.path / "src" / "aitasks", "bench": tree.path / "bench"}
    seen: list[dict[str, str]] = []
    wrong: list[str] = []
    lines = probe.read_text().splitlines() if probe.exists() else []
    for line in lines:
        pid, name, origin, cmd = (line.split("\t", 3) + ["", "", "", ""])[:4]
        seen.append({"pid": pid, "module": name, "origin": origin, "cmd": cmd[:200]})
        if origin == "None" or not Path(origin).resolve().is_relative_to(want[name].resolve()):
            wrong.append(f"{name} from {origin} in `{cmd[:120]}`")
    processes = sorted({s["cmd"] for s in seen if s["module"] == "aitasks"})
    return {"ok": bool(seen) and not wrong, "processes_importing_aitasks": len(processes),
            "commands": processes, "wrong": wrong or ([] if seen else ["the probe recorded nothing"])}


def dig(doc: dict[str, Any], path: tuple[str, ...]) -> float | None:
    cur: Any = doc
    for k in path:
        if not isinstance(cur, dict) or k not in cur:
            return None
        cur = cur[k]
    return float(cur) if isinstance(cur, int | float) else None


def values_of(result: dict[str, Any]) -> dict[str, float | None]:
    out = {key: dig(result, path) for key, *_, path in METRICS}
    api, raw = out["e2e_p50_ms"], out["raw_p50_ms"]
    out["e2e_p50_ratio"] = round(api / raw, 3) if api is not None and raw else None
    return out


def compare(runs: list[dict[str, Any]], parts: list[str], threshold: float) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    table = [(key, label, unit, better, kind, part) for key, label, unit, better, kind, part, _ in METRICS]
    table.insert(9, ("e2e_p50_ratio", *DERIVED["e2e_p50_ratio"]))
    for key, label, unit, better, kind, part in table:
        if part not in parts:
            continue
        per_side: dict[str, list[float]] = {"current": [], "base": []}
        for run in runs:
            if run["part"] == part and "result" in run:
                v = values_of(run["result"]).get(key)
                if v is not None:
                    per_side[run["side"]].append(v)
        cur = statistics.median(per_side["current"]) if per_side["current"] else None
        base = statistics.median(per_side["base"]) if per_side["base"] else None
        ratio = round(cur / base, 3) if cur is not None and base else None
        worse = None
        if ratio is not None:
            worse = ratio < 1 - threshold if better == "higher" else ratio > 1 + threshold
            if base is not None and cur is not None and base < 0 < cur:  # an overhead that turned positive
                worse = True
        spreads = [x for x in (spread_of(v) for v in per_side.values() if len(v) > 1) if x is not None]
        spread = max(spreads, default=None)
        # worse by more than the threshold, but by less than repeated runs of one side differ: not resolved
        within_noise = bool(worse) and ratio is not None and spread is not None and abs(ratio - 1) <= spread
        if ratio is None:
            flag = "n/a"
        elif kind == "control":
            flag = "noise?" if abs(ratio - 1) > threshold else ""
        elif worse:
            flag = "worse? (noise)" if within_noise else f"WORSE >{threshold:.0%}"
        else:
            flag = ""
        rows[key] = {"label": label, "unit": unit, "better": better, "kind": kind, "part": part,
                     "spread": spread,
                     "current": per_side["current"], "base": per_side["base"],
                     "current_median": cur, "base_median": base, "current_over_base": ratio,
                     "worse": worse if kind != "control" else None, "within_noise": within_noise,
                     "flag": flag}
    return rows


def spread_of(values: list[float]) -> float | None:
    """(max - min) / |median| of one side's rounds: how far apart repeated runs of the same code land."""
    mid = statistics.median(values)
    return round((max(values) - min(values)) / abs(mid), 3) if mid else None


def render(rows: dict[str, Any], threshold: float) -> str:
    def num(v: float | None, unit: str) -> str:
        if v is None:
            return "n/a"
        if unit == "x":
            return f"{v:.3f}x"
        return f"{v:.0f}" if abs(v) >= 100 else f"{v:.2f}"

    lines = [f"{'metric':<40}{'unit':>7}{'current':>10}{'base':>10}{'cur/base':>9}{'spread':>8}  {'':<16}"
             f"rounds: current | base"]
    for key, r in rows.items():
        kind = {"control": " (control)", "ratio": "", "code": "", "info": " (info)"}[r["kind"]]
        better = "higher better" if r["better"] == "higher" else "lower better"
        rounds = (", ".join(num(v, r["unit"]) for v in r["current"]) + " | "
                  + ", ".join(num(v, r["unit"]) for v in r["base"]))
        ratio = "n/a" if r["current_over_base"] is None else f"{r['current_over_base']:.3f}"
        spread = "" if r["spread"] is None else f"{r['spread']:.0%}"
        lines.append(f"{r['label'] + kind:<40}{r['unit']:>7}{num(r['current_median'], r['unit']):>10}"
                     f"{num(r['base_median'], r['unit']):>10}{ratio:>9}{spread:>8}  {r['flag'] or better:<16}"
                     f"{rounds}")
    worse = [r["label"] for r in rows.values() if r["worse"] and r["kind"] in ("code", "ratio")]
    noisy = [r["label"] for r in rows.values() if r["within_noise"] and r["kind"] in ("code", "ratio")]
    lines.append("spread: (max - min) / median of the rounds of one side, the larger of the two; a "
                 "current/base gap smaller than it is within the noise of this run ('worse? (noise)')")
    lines.append("")
    if worse:
        lines.append(f"current more than {threshold:.0%} worse than base on: {', '.join(worse)}")
        if noisy:
            lines.append(f"  of which within the spread of the rounds (not resolved; more rounds, a full run "
                         f"or a quieter machine): {', '.join(noisy)}")
    missing = [r["label"] for r in rows.values() if r["current_over_base"] is None]
    if missing:
        lines.append(f"incomplete: no current/base figure for {', '.join(missing)}")
    elif not worse:
        lines.append(f"current within {threshold:.0%} of base (or better) on every aitasks metric and ratio")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.compare_revisions", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", required=True, help="the revision to compare against (e.g. 346e1e5)")
    p.add_argument("--current", help="measure this revision (in its own worktree), not the working tree")
    p.add_argument("--parts", default="submit,e2e", help="comma-separated parts of run_all (submit,e2e)")
    p.add_argument("--rounds", type=int, default=3, help="rounds of current then base (default 3)")
    p.add_argument("--quick", action="store_true", help="run_all --quick: short measurements (smoke test)")
    p.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto",
                   help="HTTP load generator for submit, as run_all's option (same for both sides)")
    p.add_argument("--no-install", action="store_true", help="run_all --no-install: no apt-get of wrk")
    p.add_argument("--threshold", type=float, default=0.05, help="flag current worse by more than this")
    p.add_argument("--timeout", type=float, help="seconds per measurement before it is stopped "
                                                 "(default 300 quick, 900 full)")
    p.add_argument("--max-minutes", type=float, default=120, help="start no new measurement after this long")
    p.add_argument("--keep-worktrees", action="store_true", help="keep worktrees this run added, for reuse")
    p.add_argument("--out", type=Path, default=ROOT / "var" / "bench" / "compare.json", help="JSON results")
    args = p.parse_args(argv)
    args.parts = [x.strip() for x in args.parts.split(",") if x.strip()]
    bad = [x for x in args.parts if x not in PARTS]
    if bad or not args.parts:
        p.error(f"--parts: choose from {', '.join(PARTS)}")
    if not 1 <= args.rounds <= 20:
        p.error("--rounds: 1 to 20")
    if args.timeout is None:
        args.timeout = 300.0 if args.quick else 900.0
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    out_dir = ROOT / "var" / "bench" / "compare"
    shutil.rmtree(out_dir, ignore_errors=True)
    site_dir = out_dir / "site"
    site_dir.mkdir(parents=True)
    (site_dir / "sitecustomize.py").write_text(SITECUSTOMIZE)

    started = time.monotonic()
    started_at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    taken: set[Path] = set()
    trees: list[Tree] = []
    runs: list[dict[str, Any]] = []
    status = 0
    try:
        if args.current:
            current = worktree("current", args.current, taken)
        else:
            current = Tree("current", "working tree", git("rev-parse", "HEAD"), ROOT)
            taken.add(ROOT)
        trees.append(current)
        base = worktree("base", args.base, taken)
        trees.append(base)
        print(f"{args.rounds} round(s) of {' + '.join(args.parts)}: "
              f"current {current.rev} ({current.sha[:12]}) then base {base.rev} ({base.sha[:12]})"
              f"{', quick' if args.quick else ''}", flush=True)
        for i in range(1, args.rounds + 1):
            for part in args.parts:
                for tree in (current, base):
                    if time.monotonic() - started > args.max_minutes * 60:
                        raise TimeoutError(f"--max-minutes {args.max_minutes:g} reached")
                    runs.append(run_part(tree, part, f"r{i}-{part}-{tree.side}", args, out_dir, site_dir))
    except Interrupted:
        print("interrupted: stopped the running measurement", file=sys.stderr)
        status = 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        status = 1
    except TimeoutError as exc:
        print(f"stopping early: {exc}", file=sys.stderr)
        status = 1
    finally:
        for tree in trees:
            if tree.created and not args.keep_worktrees:
                subprocess.run(["git", "worktree", "remove", "--force", str(tree.path)], cwd=ROOT,
                               capture_output=True)
                print(f"removed worktree {tree.path.relative_to(ROOT)}", flush=True)

    failed = [r for r in runs if "error" in r]
    if failed:
        status = 1
    if not runs:
        return status or 1
    rows = compare(runs, args.parts, args.threshold)
    prints = sorted({r["tree_fingerprint"] for r in runs if "tree_fingerprint" in r})
    first: dict[str, Any] = next((r["result"] for r in runs if "result" in r), {})
    sides = {t.side: {"rev": t.rev, "sha": t.sha, "tree": str(t.path)} for t in trees}
    summary = {
        "command": "python -m bench.compare_revisions " + " ".join(sys.argv[1:] if argv is None else argv),
        "started_at": started_at, "elapsed_s": round(time.monotonic() - started, 1),
        "quick": args.quick, "rounds": args.rounds, "parts": args.parts, "threshold": args.threshold,
        "order": "A B A B: per round and part, current then base", "sides": sides,
        "working_tree_fingerprints": prints, "machine": first.get("machine"),
        "metrics": rows,
        "worse": [k for k, r in rows.items() if r["worse"] and r["kind"] in ("code", "ratio")],
        "runs": [{k: v for k, v in r.items() if k != "result"} for r in runs],
        "failed_runs": [f"{r['label']}: {r['error']}" for r in failed],
    }
    print("")
    print(f"aitasks revision comparison  {started_at}  ({'quick' if args.quick else 'full'}, "
          f"{args.rounds} round(s), {summary['elapsed_s']:.0f} s)")
    for side, t in sides.items():
        print(f"  {side:<8} {t['rev']} ({t['sha'][:12]})  {t['tree']}")
    isolated = [r for r in runs if r.get("isolation", {}).get("ok")]
    checked = sum(r["isolation"]["processes_importing_aitasks"] for r in isolated)
    print(f"  isolation: {len(isolated)}/{len(runs)} measurements imported aitasks and bench only from "
          f"their own tree ({checked} processes importing aitasks checked)")
    if len(prints) > 1:
        print(f"  WARNING: the working tree changed between rounds ({len(prints)} different states)")
    if failed:
        print("  FAILED measurements (left out of the medians): " + "; ".join(summary["failed_runs"]))
    print("")
    print(render(rows, args.threshold))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"results: {args.out}  (each run: {out_dir})")
    return status


if __name__ == "__main__":
    sys.exit(main())
