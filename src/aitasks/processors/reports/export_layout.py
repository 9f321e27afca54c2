"""The export report's building blocks: fonts, styles, pictures, tables and one job's page (reportlab
flowables; reportlab and Pillow load on first use, never in the API process)."""

from __future__ import annotations

import io
from typing import Any

from aitasks.jobs.models import Job
from aitasks.processors.reports.common import font_path, on_checkerboard
from aitasks.processors.reports.export_format import (
    clip_lines,
    compact_json,
    input_files,
    parameters_of,
    result_summary,
    seconds,
    size,
    when,
)


class Fonts:
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


def styles_for(fonts: Fonts) -> dict[str, Any]:
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


def esc(text: Any) -> str:
    from xml.sax.saxutils import escape

    return escape(str(text))


def picture(data: bytes, max_w: float, max_h: float, max_px: int) -> Any:
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


def gallery(items: list[tuple[Any, str]], width: float, columns: int, style: Any) -> Any:
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


def summary_table(jobs: list[Job], styles: dict[str, Any], width: float) -> Any:
    from reportlab.lib import colors
    from reportlab.platypus import Paragraph, Table, TableStyle

    head = ["#", "Job id", "Type", "Status", "Finished (UTC)", "Ran for", "Attempts"]
    rows: list[list[Any]] = [[Paragraph(f"<b>{h}</b>", styles["cell"]) for h in head]]
    for i, job in enumerate(jobs, 1):
        colour = STATUS_COLOURS.get(job.status.value, "#000000")
        rows.append([
            Paragraph(str(i), styles["cell"]),
            Paragraph(esc(job.id), styles["monocell"]),
            Paragraph(esc(job.type), styles["cell"]),
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


def by_type_table(jobs: list[Job], styles: dict[str, Any], width: float) -> Any:
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
        rows.append([Paragraph(esc(name), styles["cell"])]
                    + [Paragraph(str(int(row[k])), styles["cell"]) for k in ("jobs", "SUCCESS", "FAILURE", "REVOKED")]
                    + [Paragraph(seconds(row["seconds"]), styles["cell"])])
    table = Table(rows, colWidths=[width * f for f in (0.3, 0.12, 0.14, 0.14, 0.14, 0.16)], hAlign="LEFT")
    table.setStyle(TableStyle([
        ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e8eaf0")),
        ("GRID", (0, 0), (-1, -1), 0.25, colors.HexColor("#d0d4dc")),
        ("LEFTPADDING", (0, 0), (-1, -1), 4), ("RIGHTPADDING", (0, 0), (-1, -1), 4),
    ]))
    return table


def facts_table(job: Job, styles: dict[str, Any], width: float) -> Any:
    from reportlab.lib import colors
    from reportlab.platypus import Paragraph, Table, TableStyle

    colour = STATUS_COLOURS.get(job.status.value, "#000000")
    waited = (job.started_at - job.created_at) if job.started_at is not None else None
    total = (job.finished_at - job.created_at) if job.finished_at is not None else None
    facts: list[tuple[str, str]] = [
        ("Job id", f'<font name="{styles["mono"].fontName}">{esc(job.id)}</font>'),
        ("Type", esc(job.type)),
        ("Status", f'<font color="{colour}"><b>{job.status.value}</b></font>'
                   + (f" - {esc(job.message)}" if job.message else "")),
        ("Queue", esc(job.queue)),
        ("Attempts", f"{job.attempts} (of at most {job.max_retries + 1}); deliveries: {job.deliveries}"),
        ("Queued", when(job.created_at)),
        ("Started", when(job.started_at)),
        ("Finished", when(job.finished_at)),
        ("Durations", f"waited {seconds(waited)}, ran {seconds(job.duration_s)}, total {seconds(total)}"),
    ]
    if job.error_message:
        facts.append(("Error", f'<font color="#b00020">{esc(job.error_type or "")}: '
                               f'{esc(clip_lines(job.error_message, 6, 200))}</font>'))
    rows = [[Paragraph(f"<b>{k}</b>", styles["cell"]), Paragraph(v, styles["cell"])] for k, v in facts]
    table = Table(rows, colWidths=[width * 0.16, width * 0.84], hAlign="LEFT")
    table.setStyle(TableStyle([
        ("GRID", (0, 0), (-1, -1), 0.25, colors.HexColor("#d0d4dc")),
        ("BACKGROUND", (0, 0), (0, -1), colors.HexColor("#f0f2f5")),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
    ]))
    return table


def job_section(index: int, job: Job, styles: dict[str, Any], width: float, height: float,
                 read: Any, include_images: bool) -> Any:
    """One job's page, shrunk to fit one page if it must."""
    from reportlab.platypus import KeepInFrame, Paragraph, Preformatted, Spacer

    story: list[Any] = [Paragraph(f"{index}. {esc(job.type)}", styles["h1"]),
                        facts_table(job, styles, width)]
    files = input_files(job)
    story.append(Paragraph("Inputs", styles["h2"]))
    if files:
        items = []
        for name, ref in files:
            caption = (f"{esc(name)}: {esc(ref.get('media_type'))}, {ref.get('width') or '?'}x"
                       f"{ref.get('height') or '?'} px, {size(int(ref.get('bytes') or 0))}")
            data = read(job.id, ref["artifact"]) if include_images else None
            if data is not None and str(ref.get("media_type", "")).startswith("image/"):
                items.append((picture(data, width / 4 - 8, 110, 300), caption))
            else:
                items.append((Paragraph("(file not shown)" if include_images else "", styles["small"]), caption))
        story.append(gallery(items, width, 4, styles["small"]))
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
            caption = f"{esc(a.name)} ({esc(a.media_type)}, {size(a.bytes)})"
            if data is None:
                items.append((Paragraph("(file no longer stored)", styles["small"]), caption))
            else:
                items.append((picture(data, width / 2 - 10, 210, 600), caption))
        story.append(gallery(items, width, 2, styles["small"]))
        if len(images) > 6:
            story.append(Paragraph(f"... and {len(images) - 6} more images.", styles["small"]))
    for a in (others if include_images else outputs):
        story.append(Paragraph(f"{esc(a.name)} ({esc(a.media_type)}, {size(a.bytes)})", styles["body"]))
    if not outputs:
        story.append(Paragraph("No output files.", styles["body"]))
    summary = result_summary(job)
    if summary:
        story.append(Paragraph("Result", styles["h2"]))
        story.append(Preformatted(clip_lines(compact_json(summary), 10), styles["mono"]))
    story.append(Spacer(1, 4))
    return KeepInFrame(width, height, story, mode="shrink", name=job.id)
