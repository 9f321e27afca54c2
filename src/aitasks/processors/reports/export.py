"""``export``: a PDF report of some of the tenant's finished jobs.

A summary table first (one row per job), then one page per job: its type, status, queue, attempts,
timings (queued, started, finished; time waiting and running), error if it failed, its parameters,
thumbnails of its input images and its output images (transparent parts on a checkerboard). The text
is real text in an embedded TrueType font (DejaVu Sans, from the matplotlib wheel), so the PDF is
searchable and copyable; every page says "Page N of M".

Only the caller's own jobs can be exported, and only finished ones: the API refuses other ids at submit
(400 naming ``parameters.task_ids``), without telling an unknown id from another tenant's. A job that
expires between submit and run fails the export with an error naming it.
"""

from __future__ import annotations

import io
import json
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from aitasks.errors import FieldError, JobError, ValidationFailed
from aitasks.jobs import keys
from aitasks.jobs.models import Job
from aitasks.processors.registry import job_type
from aitasks.processors.reports.common import font_path, on_checkerboard
from aitasks.worker.context import JobContext

if TYPE_CHECKING:
    from aitasks.jobs.store import AsyncJobStore

REPORT_NAME = "report.pdf"
MAX_JOBS = 100
_ID_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
TERMINAL = ("SUCCESS", "FAILURE", "REVOKED")


class ExportParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task_ids: list[str] = Field(min_length=1, max_length=MAX_JOBS,
                                description="Ids of your finished jobs to report on, in this order (1-100; "
                                            "repeats are listed once).")
    title: str = Field("Job report", min_length=1, max_length=120, description="The report's title.")
    include_images: bool = Field(True, description="Embed input thumbnails and output images.")

    @field_validator("task_ids")
    @classmethod
    def _ids(cls, value: list[str]) -> list[str]:
        for job_id in value:
            if not job_id or len(job_id) > 64 or not set(job_id) <= _ID_CHARS:
                raise ValueError(f"{job_id[:70]!r} is not a job id")
        return list(dict.fromkeys(value))


class ExportInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    parameters: ExportParameters


def _refusal(missing: list[str], unfinished: list[str]) -> ValidationFailed | None:
    parts = []
    if missing:
        parts.append(f"not found among your jobs (unknown, expired or not yours): {', '.join(missing)}")
    if unfinished:
        parts.append(f"not finished yet: {', '.join(unfinished)}")
    if not parts:
        return None
    message = "; ".join(parts)
    return ValidationFailed(f"parameters.task_ids: {message}", [FieldError("parameters.task_ids", message)])


async def check_access(data: ExportInput, tenant: str, store: AsyncJobStore) -> None:
    """At submit: every id is one of the caller's jobs, still kept, and finished."""
    ids = data.parameters.task_ids
    pipe = store.r.pipeline(transaction=False)
    for job_id in ids:
        pipe.hmget(keys.job(job_id), "tenant", "status")
    missing, unfinished = [], []
    for job_id, (owner, status) in zip(ids, await pipe.execute()):
        owner = owner.decode() if isinstance(owner, bytes) else owner
        status = status.decode() if isinstance(status, bytes) else status
        if owner != tenant:
            missing.append(job_id)
        elif status not in TERMINAL:
            unfinished.append(job_id)
    refusal = _refusal(missing, unfinished)
    if refusal is not None:
        raise refusal


# --- formatting ------------------------------------------------------------------------------------


def when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 60:
        return f"{value:.2f} s"
    minutes, secs = divmod(value, 60)
    return f"{int(minutes)} min {secs:04.1f} s"


def size(n: int) -> str:
    return f"{n} B" if n < 1024 else f"{n / 1024:.1f} KB" if n < 1024 * 1024 else f"{n / 1024 / 1024:.1f} MB"


def input_files(job: Job) -> list[tuple[str, dict[str, Any]]]:
    """The job's file inputs: (field, file reference) for each field that holds one."""
    return [(name, value) for name, value in job.input.items()
            if isinstance(value, dict) and isinstance(value.get("artifact"), str) and "media_type" in value]


def parameters_of(job: Job) -> dict[str, Any]:
    files = {name for name, _ in input_files(job)}
    return {k: v for k, v in job.input.items() if k not in files}


def clip_lines(text: str, max_lines: int, max_chars: int = 110) -> str:
    lines = []
    for line in text.splitlines():
        while len(line) > max_chars:
            lines.append(line[:max_chars])
            line = "  " + line[max_chars:]
        lines.append(line)
    if len(lines) > max_lines:
        lines = lines[:max_lines - 1] + [f"... ({len(lines) - max_lines + 1} more lines)"]
    return "\n".join(lines)


def compact_json(value: Any, indent: int = 0, width: int = 104) -> str:
    """JSON on few lines: a value that fits on its line stays on it; short members share lines."""
    flat = json.dumps(value, default=str, ensure_ascii=False)
    pad = "  " * indent
    if len(pad) + len(flat) <= width or not isinstance(value, (dict, list)) or not value:
        return pad + flat
    if isinstance(value, dict):
        items = [f"{json.dumps(str(k), ensure_ascii=False)}: " + compact_json(v, indent + 1, width).lstrip()
                 for k, v in value.items()]
        opening, closing = "{", "}"
    else:
        items = [compact_json(v, indent + 1, width).lstrip() for v in value]
        opening, closing = "[", "]"
    lines: list[str] = []
    for item in items:
        if lines and "\n" not in item and "\n" not in lines[-1] and len(lines[-1]) + len(item) + 2 <= width:
            lines[-1] += ", " + item
        else:
            if lines:
                lines[-1] += ","
            lines.append(pad + "  " + item)
    return pad + opening + "\n" + "\n".join(lines) + "\n" + pad + closing


def result_summary(job: Job) -> dict[str, Any]:
    """The job's result without inline data: metadata and the small fields."""
    out: dict[str, Any] = {}
    for k, v in (job.result or {}).items():
        if k in ("image_data", "artifacts"):
            continue
        text = json.dumps(v, default=str)
        out[k] = v if len(text) <= 2000 else f"<{len(text)} characters>"
    return out


# --- the PDF ---------------------------------------------------------------------------------------


class _Fonts:
    def __init__(self) -> None:
        from reportlab.pdfbase import pdfmetrics
        from reportlab.pdfbase.ttfonts import TTFont

        regular, bold = font_path(False), font_path(True)
        mono = regular.with_name("DejaVuSansMono.ttf") if regular else None
        if regular and bold and mono and mono.is_file():
            for name, path in (("DejaVuSans", regular), ("DejaVuSans-Bold", bold), ("DejaVuSansMono", mono)):
                if name not in pdfmetrics.getRegisteredFontNames():
                    pdfmetrics.registerFont(TTFont(name, str(path)))
            self.regular, self.bold, self.mono = "DejaVuSans", "DejaVuSans-Bold", "DejaVuSansMono"
        else:  # the standard PDF fonts: Latin-1 only, but always there
            self.regular, self.bold, self.mono = "Helvetica", "Helvetica-Bold", "Courier"


def _styles(fonts: _Fonts) -> dict[str, Any]:
    from reportlab.lib import colors
    from reportlab.lib.styles import ParagraphStyle

    base = ParagraphStyle("base", fontName=fonts.regular, fontSize=9.5, leading=12.5)
    return {
        "title": ParagraphStyle("title", parent=base, fontName=fonts.bold, fontSize=20, leading=25, spaceAfter=4),
        "subtitle": ParagraphStyle("subtitle", parent=base, textColor=colors.HexColor("#555555"), spaceAfter=10),
        "h1": ParagraphStyle("h1", parent=base, fontName=fonts.bold, fontSize=15, leading=19, spaceAfter=6),
        "h2": ParagraphStyle("h2", parent=base, fontName=fonts.bold, fontSize=11, leading=14, spaceBefore=8,
                             spaceAfter=4),
        "body": base,
        "small": ParagraphStyle("small", parent=base, fontSize=7.5, leading=9.5),
        "cell": ParagraphStyle("cell", parent=base, fontSize=8, leading=10),
        "mono": ParagraphStyle("mono", parent=base, fontName=fonts.mono, fontSize=7.5, leading=9.5),
        "monocell": ParagraphStyle("monocell", parent=base, fontName=fonts.mono, fontSize=6.5, leading=9),
        "error": ParagraphStyle("error", parent=base, textColor=colors.HexColor("#b00020")),
    }


STATUS_COLOURS = {"SUCCESS": "#1b7f3b", "FAILURE": "#b00020", "REVOKED": "#8a6d00"}
STATUS_WORDS = {"SUCCESS": "succeeded", "FAILURE": "failed", "REVOKED": "cancelled"}


def _esc(text: Any) -> str:
    from xml.sax.saxutils import escape

    return escape(str(text))


def _picture(data: bytes, max_w: float, max_h: float, max_px: int) -> Any:
    """A reportlab Image of ``data`` fitted in max_w x max_h points (transparency on a checkerboard)."""
    from PIL import Image as PILImage
    from reportlab.platypus import Image

    img = on_checkerboard(PILImage.open(io.BytesIO(data)))
    img.thumbnail((max_px, max_px), PILImage.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=88)  # embedded as is (DCT): a tenth of the size of raw pixels
    buf.seek(0)
    scale = min(max_w / img.width, max_h / img.height, 1.0 if max_px >= 400 else 2.0)
    flow = Image(buf, width=img.width * scale, height=img.height * scale)
    flow.hAlign = "LEFT"
    return flow


def _gallery(items: list[tuple[Any, str]], width: float, columns: int, style: Any) -> Any:
    """Pictures with captions in a grid."""
    from reportlab.lib import colors
    from reportlab.platypus import Paragraph, Table, TableStyle

    rows: list[list[Any]] = []
    row: list[Any] = []
    for picture, caption in items:
        row.append([picture, Paragraph(caption, style)])
        if len(row) == columns:
            rows.append(row)
            row = []
    if row:
        rows.append(row + [""] * (columns - len(row)))
    table = Table(rows, colWidths=[width / columns] * columns, hAlign="LEFT")
    table.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("LEFTPADDING", (0, 0), (-1, -1), 0),
                               ("BOTTOMPADDING", (0, 0), (-1, -1), 6),
                               ("TEXTCOLOR", (0, 0), (-1, -1), colors.black)]))
    return table


def _summary_table(jobs: list[Job], styles: dict[str, Any], width: float) -> Any:
    from reportlab.lib import colors
    from reportlab.platypus import Paragraph, Table, TableStyle

    head = ["#", "Job id", "Type", "Status", "Finished (UTC)", "Ran for", "Attempts"]
    rows: list[list[Any]] = [[Paragraph(f"<b>{h}</b>", styles["cell"]) for h in head]]
    for i, job in enumerate(jobs, 1):
        colour = STATUS_COLOURS.get(job.status.value, "#000000")
        rows.append([
            Paragraph(str(i), styles["cell"]),
            Paragraph(_esc(job.id), styles["monocell"]),
            Paragraph(_esc(job.type), styles["cell"]),
            Paragraph(f'<font color="{colour}">{job.status.value}</font>', styles["cell"]),
            Paragraph(when(job.finished_at).replace(" UTC", ""), styles["cell"]),
            Paragraph(seconds(job.duration_s), styles["cell"]),
            Paragraph(str(job.attempts), styles["cell"]),
        ])
    fractions = [0.05, 0.32, 0.195, 0.105, 0.14, 0.09, 0.10]
    table = Table(rows, colWidths=[width * f for f in fractions], repeatRows=1, hAlign="LEFT")
    table.setStyle(TableStyle([
        ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e8eaf0")),
        ("ROWBACKGROUNDS", (0, 1), (-1, -1), [colors.white, colors.HexColor("#f6f7f9")]),
        ("LINEBELOW", (0, 0), (-1, 0), 0.8, colors.HexColor("#8890a0")),
        ("GRID", (0, 0), (-1, -1), 0.25, colors.HexColor("#d0d4dc")),
        ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
        ("LEFTPADDING", (0, 0), (-1, -1), 4), ("RIGHTPADDING", (0, 0), (-1, -1), 4),
    ]))
    return table


def _by_type_table(jobs: list[Job], styles: dict[str, Any], width: float) -> Any:
    from reportlab.lib import colors
    from reportlab.platypus import Paragraph, Table, TableStyle

    tally: dict[str, dict[str, float]] = {}
    for job in jobs:
        row = tally.setdefault(job.type, {"jobs": 0, "SUCCESS": 0, "FAILURE": 0, "REVOKED": 0, "seconds": 0.0})
        row["jobs"] += 1
        row[job.status.value] += 1
        row["seconds"] += job.duration_s or 0.0
    head = ["Type", "Jobs", "Succeeded", "Failed", "Cancelled", "Ran for (sum)"]
    rows: list[list[Any]] = [[Paragraph(f"<b>{h}</b>", styles["cell"]) for h in head]]
    for name, row in sorted(tally.items()):
        rows.append([Paragraph(_esc(name), styles["cell"])]
                    + [Paragraph(str(int(row[k])), styles["cell"]) for k in ("jobs", "SUCCESS", "FAILURE", "REVOKED")]
                    + [Paragraph(seconds(row["seconds"]), styles["cell"])])
    table = Table(rows, colWidths=[width * f for f in (0.3, 0.12, 0.14, 0.14, 0.14, 0.16)], hAlign="LEFT")
    table.setStyle(TableStyle([
        ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e8eaf0")),
        ("GRID", (0, 0), (-1, -1), 0.25, colors.HexColor("#d0d4dc")),
        ("LEFTPADDING", (0, 0), (-1, -1), 4), ("RIGHTPADDING", (0, 0), (-1, -1), 4),
    ]))
    return table


def _facts_table(job: Job, styles: dict[str, Any], width: float) -> Any:
    from reportlab.lib import colors
    from reportlab.platypus import Paragraph, Table, TableStyle

    colour = STATUS_COLOURS.get(job.status.value, "#000000")
    waited = (job.started_at - job.created_at) if job.started_at is not None else None
    total = (job.finished_at - job.created_at) if job.finished_at is not None else None
    facts: list[tuple[str, str]] = [
        ("Job id", f'<font name="{styles["mono"].fontName}">{_esc(job.id)}</font>'),
        ("Type", _esc(job.type)),
        ("Status", f'<font color="{colour}"><b>{job.status.value}</b></font>'
                   + (f" - {_esc(job.message)}" if job.message else "")),
        ("Queue", _esc(job.queue)),
        ("Attempts", f"{job.attempts} (of at most {job.max_retries + 1}); deliveries: {job.deliveries}"),
        ("Queued", when(job.created_at)),
        ("Started", when(job.started_at)),
        ("Finished", when(job.finished_at)),
        ("Durations", f"waited {seconds(waited)}, ran {seconds(job.duration_s)}, total {seconds(total)}"),
    ]
    if job.error_message:
        facts.append(("Error", f'<font color="#b00020">{_esc(job.error_type or "")}: '
                               f'{_esc(clip_lines(job.error_message, 6, 200))}</font>'))
    rows = [[Paragraph(f"<b>{k}</b>", styles["cell"]), Paragraph(v, styles["cell"])] for k, v in facts]
    table = Table(rows, colWidths=[width * 0.16, width * 0.84], hAlign="LEFT")
    table.setStyle(TableStyle([
        ("GRID", (0, 0), (-1, -1), 0.25, colors.HexColor("#d0d4dc")),
        ("BACKGROUND", (0, 0), (0, -1), colors.HexColor("#f0f2f5")),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
    ]))
    return table


def _job_section(index: int, job: Job, styles: dict[str, Any], width: float, height: float,
                 read: Any, include_images: bool) -> Any:
    """One job's page, shrunk to fit one page if it must."""
    from reportlab.platypus import KeepInFrame, Paragraph, Preformatted, Spacer

    story: list[Any] = [Paragraph(f"{index}. {_esc(job.type)}", styles["h1"]),
                        _facts_table(job, styles, width)]
    files = input_files(job)
    story.append(Paragraph("Inputs", styles["h2"]))
    if files:
        items = []
        for name, ref in files:
            caption = (f"{_esc(name)}: {_esc(ref.get('media_type'))}, {ref.get('width') or '?'}x"
                       f"{ref.get('height') or '?'} px, {size(int(ref.get('bytes') or 0))}")
            data = read(job.id, ref["artifact"]) if include_images else None
            if data is not None and str(ref.get("media_type", "")).startswith("image/"):
                items.append((_picture(data, width / 4 - 8, 110, 300), caption))
            else:
                items.append((Paragraph("(file not shown)" if include_images else "", styles["small"]), caption))
        story.append(_gallery(items, width, 4, styles["small"]))
    else:
        story.append(Paragraph("No input files.", styles["body"]))
    story.append(Paragraph("Parameters", styles["h2"]))
    story.append(Preformatted(clip_lines(compact_json(parameters_of(job)), 12),
                              styles["mono"]))
    story.append(Paragraph("Outputs", styles["h2"]))
    outputs = [a for a in job.artifacts if not a.name.startswith("input-")]  # inputs are shown above
    images = [a for a in outputs if a.media_type.startswith("image/")]
    others = [a for a in outputs if a not in images]
    if images and include_images:
        items = []
        for a in images[:6]:
            data = read(job.id, a.name)
            caption = f"{_esc(a.name)} ({_esc(a.media_type)}, {size(a.bytes)})"
            if data is None:
                items.append((Paragraph("(file no longer stored)", styles["small"]), caption))
            else:
                items.append((_picture(data, width / 2 - 10, 210, 600), caption))
        story.append(_gallery(items, width, 2, styles["small"]))
        if len(images) > 6:
            story.append(Paragraph(f"... and {len(images) - 6} more images.", styles["small"]))
    for a in (others if include_images else outputs):
        story.append(Paragraph(f"{_esc(a.name)} ({_esc(a.media_type)}, {size(a.bytes)})", styles["body"]))
    if not outputs:
        story.append(Paragraph("No output files.", styles["body"]))
    summary = result_summary(job)
    if summary:
        story.append(Paragraph("Result", styles["h2"]))
        story.append(Preformatted(clip_lines(compact_json(summary), 10), styles["mono"]))
    story.append(Spacer(1, 4))
    return KeepInFrame(width, height, story, mode="shrink", name=job.id)


def build_pdf(jobs: list[Job], title: str, tenant: str, read: Any, include_images: bool,
              on_section: Any = None) -> tuple[bytes, int]:
    """The report's bytes and its page count. ``read(job_id, name)`` gives a file's bytes or None;
    ``on_section(i)`` is called after job ``i`` (1-based) is laid out."""
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.units import mm
    from reportlab.pdfgen import canvas
    from reportlab.platypus import PageBreak, Paragraph, SimpleDocTemplate, Spacer

    fonts = _Fonts()
    styles = _styles(fonts)
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    pages: list[int] = []

    class NumberedCanvas(canvas.Canvas):
        """Holds each page until the end, so every footer can say how many pages there are."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._states: list[dict[str, Any]] = []

        def showPage(self) -> None:  # noqa: N802 (reportlab's name)
            self._states.append(dict(self.__dict__))
            self._startPage()

        def save(self) -> None:
            total = len(self._states)
            pages.append(total)
            for state in self._states:
                self.__dict__.update(state)
                self.setFont(fonts.regular, 8)
                self.setFillColor(colors.HexColor("#666666"))
                w, _ = A4
                self.drawCentredString(w / 2, 10 * mm, f"Page {self._pageNumber} of {total}")
                self.drawString(18 * mm, 10 * mm, title[:60])
                self.drawRightString(w - 18 * mm, 10 * mm, f"aitasks · {generated}")
                super().showPage()
            super().save()

    class Doc(SimpleDocTemplate):
        def afterFlowable(self, flowable: Any) -> None:  # noqa: N802 (reportlab's name)
            name = getattr(flowable, "name", "")
            if on_section is not None and name in order:
                on_section(order[name])

    order = {job.id: i for i, job in enumerate(jobs, 1)}
    buf = io.BytesIO()
    doc = Doc(buf, pagesize=A4, leftMargin=18 * mm, rightMargin=18 * mm, topMargin=16 * mm,
              bottomMargin=18 * mm, title=title, author="aitasks", subject=f"{len(jobs)} jobs of {tenant}")
    width, height = doc.width - 12, doc.height - 14  # the frame pads 6 pt a side; KeepInFrame must never spill
    statuses: dict[str, int] = {}
    for job in jobs:
        statuses[job.status.value] = statuses.get(job.status.value, 0) + 1
    run_total = sum(job.duration_s or 0.0 for job in jobs)
    story: list[Any] = [
        Paragraph(_esc(title), styles["title"]),
        Paragraph(f"{len(jobs)} jobs of tenant <b>{_esc(tenant)}</b> · generated {generated} · "
                  + ", ".join(f"{statuses[s]} {word}" for s, word in STATUS_WORDS.items() if s in statuses)
                  + f" · {seconds(run_total)} of compute in all", styles["subtitle"]),
        Paragraph("Summary", styles["h1"]),
        _summary_table(jobs, styles, width),
        Spacer(1, 10),
        Paragraph("By job type", styles["h2"]),
        _by_type_table(jobs, styles, width),
        Spacer(1, 6),
        Paragraph("Each job follows on its own page: timings, parameters, input thumbnails and outputs.",
                  styles["small"]),
    ]
    for i, job in enumerate(jobs, 1):
        story.append(PageBreak())
        story.append(_job_section(i, job, styles, width, height, read, include_images))
    doc.build(story, canvasmaker=NumberedCanvas)
    return buf.getvalue(), pages[-1] if pages else 0


# --- the job type ----------------------------------------------------------------------------------


@job_type(
    "export", input=ExportInput, queue="cpu", soft_time_limit_s=240, time_limit_s=300, max_retries=1,
    description="A PDF report of your finished jobs: a summary table, then per job its timings, "
                "parameters, input thumbnails and output images. Searchable text, page numbers.",
    check_access=check_access,
    examples=({"task_type": "export", "parameters": {"task_ids": ["<a finished job's id>", "<another>"],
                                                     "title": "Job report"}},),
)
def export(data: ExportInput, ctx: JobContext) -> dict[str, Any]:
    from aitasks.worker.resources import resources

    res = resources()
    params = data.parameters
    started = time.monotonic()
    jobs: list[Job] = []
    missing, unfinished = [], []
    for job_id in params.task_ids:
        job = res.store.get(job_id)
        if job is None or job.tenant != ctx.job.tenant:
            missing.append(job_id)
        elif not job.status.is_terminal():
            unfinished.append(job_id)
        else:
            jobs.append(job)
    refusal = _refusal(missing, unfinished)
    if refusal is not None:
        raise JobError(f"cannot export: {refusal.fields[0].message}")
    ctx.progress(5, f"{len(jobs)} jobs loaded")

    files: dict[tuple[str, str], bytes | None] = {}

    def read(job_id: str, name: str) -> bytes | None:
        if (job_id, name) not in files:
            try:
                files[(job_id, name)] = res.artifacts.read(job_id, name)
            except (FileNotFoundError, ValueError):
                files[(job_id, name)] = None
        return files[(job_id, name)]

    def laid_out(i: int) -> None:
        ctx.progress(5 + 90 * i / len(jobs), f"job {i}/{len(jobs)} rendered")
        ctx.check_cancel()

    pdf, pages = build_pdf(jobs, params.title, ctx.job.tenant, read, params.include_images, laid_out)
    ctx.check_cancel()
    ctx.save_artifact(REPORT_NAME, pdf, "application/pdf")
    ctx.progress(98, "report saved")
    return {
        "report_artifact": REPORT_NAME,
        "pages": pages,
        "bytes": len(pdf),
        "jobs": [{"task_id": j.id, "task_type": j.type, "status": j.status.value} for j in jobs],
        "metadata": {"title": params.title, "include_images": params.include_images,
                     "elapsed_ms": round((time.monotonic() - started) * 1000, 1)},
    }
