"""``cost_infographic``: the tenant's usage and cost over a period, as a PNG and an SVG infographic.

Usage comes from the per-tenant daily counters (``aitasks.jobs.usage``), written atomically when each
job finishes and kept 400 days, not from job records (those expire after their retention). The period
is whole UTC days: the day of ``since`` to the day of ``until``, both included (default: the last 7
days, today included). A job counts on the day it finished, whatever its status; its compute seconds
are finished_at - started_at (0 if it never started).

Cost per type = jobs x per_job + compute seconds x per_second. Prices come from the request's
``prices`` when given (a type's own entry, else ``*``), otherwise from the deployment's
``AITASKS_PRICES`` (same rule); a type with no price costs 0 and is listed as unpriced.
"""

from __future__ import annotations

import io
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from aitasks.errors import JobError
from aitasks.jobs import usage
from aitasks.processors.registry import job_type
from aitasks.settings import Price, get_settings
from aitasks.worker.context import JobContext

PNG_NAME = "cost_infographic.png"
SVG_NAME = "cost_infographic.svg"
DEFAULT_DAYS = 7


def parse_day(value: str) -> date:
    """The UTC day of an ISO date (``2026-11-29``) or datetime (``2026-11-29T10:00:00Z``, offsets allowed)."""
    text = value.strip()
    if len(text) == 10:
        return date.fromisoformat(text)
    moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).date()


class CostParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    since: str | None = Field(None, description="First day of the period: an ISO date or datetime (UTC unless "
                                                "it has an offset); default: 6 days before until.")
    until: str | None = Field(None, description="Last day of the period (included), ISO date or datetime; "
                                                "default: today (UTC).")
    prices: dict[str, Price] | None = Field(
        None, description="Price per job type ({\"per_second\": x, \"per_job\": y}); key '*' prices every other "
                          "type. Default: the deployment's AITASKS_PRICES.")
    currency: str | None = Field(None, min_length=1, max_length=8,
                                 description="Currency label; default: the deployment's AITASKS_CURRENCY.")
    title: str = Field("Usage and cost", min_length=1, max_length=80, description="The infographic's title.")

    @field_validator("since", "until")
    @classmethod
    def _iso(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            parse_day(value)
        except ValueError:
            raise ValueError("must be an ISO date (2026-11-29) or datetime (2026-11-29T10:00:00Z)") from None
        return value

    @field_validator("until")
    @classmethod
    def _period(cls, value: str | None, info: ValidationInfo) -> str | None:
        since = info.data.get("since")
        if since is not None and value is not None:
            first, last = parse_day(since), parse_day(value)
            if last < first:
                raise ValueError("is before since")
            if (last - first).days + 1 > usage.MAX_DAYS:
                raise ValueError(f"the period is longer than {usage.MAX_DAYS} days (usage is kept that long)")
        return value

    @field_validator("prices")
    @classmethod
    def _price_keys(cls, value: dict[str, Price] | None) -> dict[str, Price] | None:
        for key in value or {}:
            if not key or len(key) > 64:
                raise ValueError(f"{key[:70]!r} is not a job type name or '*'")
        return value

    def period(self, today: date) -> tuple[date, date]:
        last = parse_day(self.until) if self.until else today
        first = parse_day(self.since) if self.since else last - timedelta(days=DEFAULT_DAYS - 1)
        return first, last


class CostInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    parameters: CostParameters = Field(default_factory=CostParameters)


def price_for(job_type_name: str, prices: dict[str, Price]) -> Price | None:
    return prices.get(job_type_name) or prices.get("*")


def compute(rows: list[usage.UsageRow], prices: dict[str, Price]) -> dict[str, Any]:
    """The numbers the infographic shows: per type, per queue, per day and in total, with costs."""
    by_type = []
    cost_of: dict[str, float] = {}
    unpriced = []
    for name, row in usage.totals(rows, "job_type").items():
        price = price_for(name, prices)
        if price is None:
            unpriced.append(name)
        cost = (row.jobs * price.per_job + row.seconds * price.per_second) if price else 0.0
        cost_of[name] = cost
        by_type.append({"task_type": name, "jobs": row.jobs, "seconds": round(row.seconds, 3),
                        "cost": round(cost, 6), "statuses": row.statuses,
                        "price": price.model_dump() if price else None})
    by_queue = [{"queue": q, "jobs": r.jobs, "seconds": round(r.seconds, 3), "statuses": r.statuses}
                for q, r in usage.totals(rows, "queue").items()]
    by_day: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = by_day.setdefault(row.day, {"day": row.day, "jobs": 0, "seconds": 0.0, "cost": 0.0})
        price = price_for(row.job_type, prices)
        entry["jobs"] += row.jobs
        entry["seconds"] += row.seconds
        entry["cost"] += (row.jobs * price.per_job + row.seconds * price.per_second) if price else 0.0
    total_jobs = sum(row.jobs for row in rows)
    total_seconds = sum(r.seconds for r in rows)
    return {
        "by_type": by_type,
        "by_queue": by_queue,
        "by_day": [{**d, "seconds": round(d["seconds"], 3), "cost": round(d["cost"], 6)} for d in by_day.values()],
        "totals": {"jobs": total_jobs, "seconds": round(total_seconds, 3), "cost": round(sum(cost_of.values()), 6)},
        "unpriced_types": unpriced,
    }


# --- drawing ---------------------------------------------------------------------------------------

COLOURS = ["#3b6fb6", "#e07b39", "#3a9d5d", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c"]


def _money(value: float, currency: str) -> str:
    if value >= 1 or value == 0:
        return f"{value:,.2f} {currency}"
    return f"{value:.4f}".rstrip("0").rstrip(".") + f" {currency}"  # small amounts keep their digits


def _secs(value: float) -> str:
    if value >= 3600:
        return f"{value / 3600:,.1f} h"
    if value >= 120:
        return f"{value / 60:,.1f} min"
    return f"{value:,.1f} s"


def _sec_label(value: float) -> str:
    return f"{value:,.2f} s" if value < 10 else f"{value:,.1f} s"


def _bars(ax: Any, labels: list[str], values: list[float], title: str, xlabel: str, fmt: Any,
          colours: list[str], integer: bool = False) -> None:
    ax.set_title(title, fontsize=13, fontweight="bold", loc="left", pad=10)
    if not labels:
        ax.text(0.5, 0.5, "No jobs in this period", ha="center", va="center", fontsize=12, color="#777777",
                transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_yticks([])
        return
    positions = list(range(len(labels)))
    bars = ax.barh(positions, values, color=colours[: len(labels)], height=0.6)
    ax.set_yticks(positions, labels=labels, fontsize=11)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel, fontsize=11)
    top = max(values) if values and max(values) > 0 else 1.0
    ax.set_xlim(0, top * 1.35)
    ax.bar_label(bars, labels=[fmt(v) for v in values], padding=4, fontsize=10.5)
    if integer:
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(axis="x", color="#e6e6e6")
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def draw(numbers: dict[str, Any], title: str, tenant: str, first: date, last: date,
         currency: str) -> tuple[bytes, bytes]:
    """The infographic as PNG and SVG bytes (text kept as text in the SVG)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    types = numbers["by_type"]
    type_names = [t["task_type"] for t in types]
    colour_of = {name: COLOURS[i % len(COLOURS)] for i, name in enumerate(type_names)}
    type_colours = [colour_of[n] for n in type_names]
    queues = numbers["by_queue"]
    totals = numbers["totals"]
    with matplotlib.rc_context({"svg.fonttype": "none", "font.family": "DejaVu Sans"}):
        fig = Figure(figsize=(16, 10.5), dpi=100, layout="constrained")
        fig.get_layout_engine().set(h_pad=0.12, w_pad=0.12)  # type: ignore[union-attr, call-arg]
        fig.suptitle(f"{title} · {tenant} · {first.isoformat()} to {last.isoformat()} (UTC)",
                     fontsize=18, fontweight="bold", x=0.01, ha="left")
        grid = fig.add_gridspec(3, 3, height_ratios=[0.32, 1, 1])
        head = fig.add_subfigure(grid[0, :])
        for i, (label, value) in enumerate((
                ("Jobs", f"{totals['jobs']:,}"), ("Compute time", _secs(totals["seconds"])),
                ("Total cost", _money(totals["cost"], currency)))):
            head.text(0.02 + i * 0.33, 0.62, value, fontsize=26, fontweight="bold", color="#1f2d3d")
            head.text(0.02 + i * 0.33, 0.22, label, fontsize=12, color="#555555")
        _bars(fig.add_subplot(grid[1, 0]), type_names, [t["jobs"] for t in types], "Jobs per job type",
              "jobs", lambda v: f"{int(v):,}", type_colours, integer=True)
        _bars(fig.add_subplot(grid[1, 1]), type_names, [t["seconds"] for t in types],
              "Compute seconds per job type", "compute seconds", _sec_label, type_colours)
        _bars(fig.add_subplot(grid[1, 2]), type_names, [t["cost"] for t in types],
              "Cost per job type", f"cost ({currency}) · total {_money(totals['cost'], currency)}",
              lambda v: _money(v, currency), type_colours)
        queue_names = [q["queue"] for q in queues]
        queue_colours = ["#5b7fa6", "#a65b7f", "#7fa65b", "#a6895b"] * 2
        _bars(fig.add_subplot(grid[2, 0]), queue_names, [q["jobs"] for q in queues], "Jobs per queue", "jobs",
              lambda v: f"{int(v):,}", queue_colours, integer=True)
        _bars(fig.add_subplot(grid[2, 1]), queue_names, [q["seconds"] for q in queues],
              "Compute seconds per queue", "compute seconds", _sec_label, queue_colours)
        ax = fig.add_subplot(grid[2, 2])
        span = usage.days(first, last)
        per_day = {d["day"]: d["jobs"] for d in numbers["by_day"]}
        ax.set_title("Jobs per day", fontsize=13, fontweight="bold", loc="left", pad=10)
        counts = [per_day.get(d.isoformat(), 0) for d in span]
        bars = ax.bar(range(len(span)), counts, color="#3b6fb6", width=0.7)
        step = max(1, len(span) // 8)
        ax.set_xticks(range(0, len(span), step), labels=[d.strftime("%b %d") for d in span][::step], fontsize=10,
                      rotation=30, ha="right", rotation_mode="anchor")
        from matplotlib.ticker import MaxNLocator

        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("jobs", fontsize=11)
        ax.set_xlabel("day (UTC)", fontsize=11)
        ax.set_ylim(0, max(counts + [1]) * 1.25)
        if len(span) <= 31:
            ax.bar_label(bars, labels=[str(c) if c else "" for c in counts], padding=3, fontsize=10)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        png, svg = io.BytesIO(), io.BytesIO()
        fig.savefig(png, format="png", facecolor="white")
        fig.savefig(svg, format="svg", facecolor="white")
    return png.getvalue(), svg.getvalue()


# --- the job type ----------------------------------------------------------------------------------


@job_type(
    "cost_infographic", input=CostInput, queue="cpu", soft_time_limit_s=120, time_limit_s=180, max_retries=1,
    description="An infographic (PNG and SVG) of your usage over a period: jobs and compute seconds per job "
                "type and per queue, cost per type and in total. The numbers are in the result too.",
    examples=({"task_type": "cost_infographic",
               "parameters": {"since": "2026-11-01", "until": "2026-11-30",
                              "prices": {"background_removal": {"per_second": 0.002}, "*": {"per_job": 0.01}}}},),
)
def cost_infographic(data: CostInput, ctx: JobContext) -> dict[str, Any]:
    settings = get_settings()
    params = data.parameters
    started = time.monotonic()
    first, last = params.period(datetime.now(UTC).date())
    if (last - first).days + 1 > usage.MAX_DAYS:
        raise JobError(f"the period {first} to {last} is longer than {usage.MAX_DAYS} days")
    tenant = ctx.job.tenant
    rows = ctx.tenant_usage(first, last)
    ctx.progress(20, f"usage read: {len(rows)} type/queue/day rows")
    if params.prices is not None:
        prices, source = params.prices, "request"
    else:
        prices, source = settings.prices, "settings" if settings.prices else "none"
    currency = params.currency or settings.currency
    numbers = compute(rows, prices)
    ctx.progress(35, "costs computed")
    ctx.check_cancel()
    png, svg = draw(numbers, params.title, tenant, first, last, currency)
    ctx.progress(85, "charts drawn")
    ctx.check_cancel()
    ctx.save_artifact(PNG_NAME, png, "image/png")
    ctx.save_artifact(SVG_NAME, svg, "image/svg+xml")
    ctx.progress(97, "infographic saved")
    return {
        "image_artifact": PNG_NAME,
        "svg_artifact": SVG_NAME,
        "period": {"since": first.isoformat(), "until": last.isoformat(), "days": (last - first).days + 1},
        "currency": currency,
        "price_source": source,
        **numbers,
        "metadata": {"elapsed_ms": round((time.monotonic() - started) * 1000, 1)},
    }
