"""The chaos run's verdict: every job id the API gave is read back as a user reads it (GET its status), and
compared with what was asked, the webhooks received and the ledger the diagnostic jobs wrote outside Redis."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bench.chaos_faults import Recovery
from bench.chaos_stack import Hook, LedgerLine

TERMINAL = {"SUCCESS", "FAILURE", "REVOKED"}
EXPECTED = {"ok": "SUCCESS", "transient": "SUCCESS", "permanent": "FAILURE", "cancel": "REVOKED"}


@dataclass
class Planned:
    """One job the clients submit: what kind, its parameters, and what became of the submit."""

    n: int
    kind: str  # ok | transient | permanent | cancel
    parameters: dict[str, Any]
    task_id: str | None = None
    refused_at: list[float] = field(default_factory=list)  # time.time() of each 5xx answer to its submit
    unreachable_at: list[float] = field(default_factory=list)  # ... of each submit that found no API

    @property
    def refused(self) -> int:
        return len(self.refused_at)

    @property
    def unreachable(self) -> int:
        return len(self.unreachable_at)
    cancel_answer: str = ""  # the last answer to its cancel request


@dataclass
class Verdict:
    planned: Planned
    record: dict[str, Any] | None  # the status document; None: 404 (or never readable: see ``unreadable``)
    unreadable: bool
    completed_hooks: list[Hook]
    ledger: list[LedgerLine]
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        p = self.planned
        return {"task_id": p.task_id, "kind": p.kind, "parameters": p.parameters, "problems": self.problems,
                "record": self.record, "cancel_answer": p.cancel_answer,
                "completed_webhooks": [h.__dict__ for h in self.completed_hooks],
                "ledger": [ln.__dict__ for ln in self.ledger]}


def judge(p: Planned, record: dict[str, Any] | None, unreadable: bool, hooks: list[Hook],
          ledger: list[LedgerLine]) -> Verdict:
    """What is wrong with one accepted job (empty ``problems``: nothing)."""
    v = Verdict(p, record, unreadable, hooks, ledger)
    if unreadable:
        v.problems.append("unreadable")
        return v
    if record is None:
        v.problems.append("lost")  # the API gave this id and now answers 404 for it
        return v
    status = record["status"]
    if status not in TERMINAL:
        v.problems.append("stuck")
    elif status != EXPECTED[p.kind]:
        v.problems.append("wrong_end")
    done = {(ln.pid, ln.delivery) for ln in ledger if ln.event == "done"}
    ids = {h.webhook_id for h in hooks}
    if len(done) > 1 or len(ids) > 1:
        v.problems.append("doubled")
    if status in TERMINAL and not hooks:
        v.problems.append("webhook_missing")
    if status == "SUCCESS" and not record.get("result_available"):
        v.problems.append("no_result")
    return v


@dataclass
class Report:
    config: dict[str, Any]
    started_at: str
    submitted: int
    accepted: int
    refused: int  # submit attempts answered 5xx
    unreachable: int  # submit attempts that found no API
    never_accepted: int  # jobs whose submit was still refused when the client gave up
    counts: dict[str, int]  # problem -> jobs
    by_status: dict[str, int]
    finished_metric: int | None  # aitasks_jobs_finished_total of diagnostic jobs (terminal writes counted)
    webhook_redeliveries: int  # the same webhook-id received again (allowed: receivers deduplicate by id)
    recoveries: list[Recovery]
    bad: list[Verdict]
    duration_s: float
    fault_window: tuple[float, float] = (0.0, 0.0)

    @property
    def failed(self) -> bool:
        return any(self.counts.get(k, 0) for k in ("lost", "stuck", "doubled", "wrong_end", "webhook_missing",
                                                    "no_result", "unreadable")) or self.never_accepted > 0

    def as_dict(self) -> dict[str, Any]:
        return {"config": self.config, "started_at": self.started_at, "duration_s": round(self.duration_s, 1),
                "submitted": self.submitted, "accepted": self.accepted, "submits_refused": self.refused,
                "submits_unreachable": self.unreachable, "never_accepted": self.never_accepted,
                "counts": self.counts, "by_status": self.by_status, "finished_metric": self.finished_metric,
                "webhook_redeliveries": self.webhook_redeliveries, "failed": self.failed,
                "recoveries": [r.as_dict() for r in self.recoveries], "bad_jobs": [v.as_dict() for v in self.bad]}


def build_report(config: dict[str, Any], started_at: str, duration_s: float, plans: list[Planned],
                 verdicts: list[Verdict], finished_metric: int | None, redeliveries: int,
                 recoveries: list[Recovery]) -> Report:
    counts: Counter[str] = Counter()
    for v in verdicts:
        counts.update(set(v.problems))
    statuses = Counter((v.record or {}).get("status", "404" if not v.unreadable else "?") for v in verdicts)
    return Report(config, started_at, len(plans), sum(1 for p in plans if p.task_id),
                  sum(p.refused for p in plans), sum(p.unreachable for p in plans),
                  sum(1 for p in plans if not p.task_id),
                  {k: counts.get(k, 0) for k in ("lost", "stuck", "doubled", "wrong_end", "webhook_missing",
                                                 "no_result", "unreadable")},
                  dict(statuses), finished_metric, redeliveries, recoveries, [v for v in verdicts if v.problems],
                  duration_s)


def _s(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def table(r: Report) -> str:
    rows = [
        ("jobs submitted", r.submitted), ("accepted (202)", r.accepted),
        ("lost (404 for an accepted id)", r.counts["lost"]),
        ("stuck (not terminal 60 s after the last fault and the last job end)", r.counts["stuck"]),
        ("doubled (ran to completion twice, or two completed webhooks)", r.counts["doubled"]),
        ("wrong end (terminal, not the state asked for)", r.counts["wrong_end"]),
        ("completed webhook missing", r.counts["webhook_missing"]),
        ("SUCCESS without a result", r.counts["no_result"]),
        ("status never readable", r.counts["unreadable"]),
        ("submits refused (5xx answers)", r.refused), ("submits that found no API", r.unreachable),
        ("jobs never accepted (client gave up)", r.never_accepted),
    ]
    width = max(len(k) for k, _ in rows)
    out = [f"{k:<{width}}  {v:>6}" for k, v in rows]
    out.append(f"{'final states':<{width}}  {', '.join(f'{k} {v}' for k, v in sorted(r.by_status.items()))}")
    out.append(f"{'terminal writes counted (metric)':<{width}}  {r.finished_metric}")
    out.append(f"{'same webhook re-sent (deduplicated by id)':<{width}}  {r.webhook_redeliveries:>6}")
    out.append("")
    out.append(f"{'fault':<12} {'lasted s':>8} {'1st start s':>11} {'1st done s':>10} {'victims':>7} "
               f"{'victims rerun s':>15} {'refused':>7} {'no API':>6}  detail")
    for rec in r.recoveries:
        rerun = _s(rec.victims_rerun_s) if not rec.victims_not_rerun else f"{len(rec.victims_not_rerun)} not rerun"
        out.append(f"{rec.kind:<12} {rec.duration_s:>8.1f} {_s(rec.first_start_s):>11} {_s(rec.first_done_s):>10} "
                   f"{rec.victims:>7} {rerun:>15} {rec.refused:>7} {rec.unreachable:>6}  {rec.detail}")
    out.append("(seconds from the end of the fault; victims: jobs running in a killed process; refused / no API: "
               "submits from the fault's start to 5 s after its end)")
    out.append("")
    out.append(f"verdict: {'FAILED' if r.failed else 'ok'} ({r.duration_s:.0f} s)")
    return "\n".join(out)


def bad_jobs(r: Report, limit: int = 20) -> str:
    """The jobs that went wrong, with their final record and what the ledger and receiver saw."""
    out = []
    for v in r.bad[:limit]:
        rec = v.record or {}
        keep = {k: rec.get(k) for k in ("status", "attempts", "message", "error", "error_type", "worker",
                                        "created_at", "started_at", "finished_at") if k in rec}
        ledger = ", ".join(f"{ln.event}@{ln.t:.1f}(pid {ln.pid}, try {ln.attempt}, delivery {ln.delivery})"
                           for ln in v.ledger)
        out.append(f"{v.planned.task_id} [{v.planned.kind}] {'/'.join(v.problems)}: {keep}; "
                   f"cancel: {v.planned.cancel_answer or '-'}; ledger: {ledger or '-'}; "
                   f"completed webhooks: {len(v.completed_hooks)}")
    if len(r.bad) > limit:
        out.append(f"... and {len(r.bad) - limit} more (all in the JSON)")
    return "\n".join(out)
