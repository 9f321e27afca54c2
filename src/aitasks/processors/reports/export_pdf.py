"""The export report as a PDF document: a title page with the summary tables, then one page per job, every
page numbered "Page N of M"."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

from aitasks.jobs.models import Job
from aitasks.processors.reports.export_format import seconds
from aitasks.processors.reports.export_layout import (
    STATUS_WORDS,
    Fonts,
    by_type_table,
    esc,
    job_section,
    styles_for,
    summary_table,
)


def build_pdf(jobs: list[Job], title: str, tenant: str, read: Any, include_images: bool,
              on_section: Any = None) -> tuple[bytes, int]:
    """The report's bytes and its page count. ``read(job_id, name)`` gives a file's bytes or None;
    ``on_section(i)`` is called after job ``i`` (1-based) is laid out."""
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.units import mm
    from reportlab.pdfgen import canvas
    from reportlab.platypus import PageBreak, Paragraph, SimpleDocTemplate, Spacer

    fonts = Fonts()
    styles = styles_for(fonts)
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
        Paragraph(esc(title), styles["title"]),
        Paragraph(f"{len(jobs)} jobs of tenant <b>{esc(tenant)}</b> · generated {generated} · "
                  + ", ".join(f"{statuses[s]} {word}" for s, word in STATUS_WORDS.items() if s in statuses)
                  + f" · {seconds(run_total)} of compute in all", styles["subtitle"]),
        Paragraph("Summary", styles["h1"]),
        summary_table(jobs, styles, width),
        Spacer(1, 10),
        Paragraph("By job type", styles["h2"]),
        by_type_table(jobs, styles, width),
        Spacer(1, 6),
        Paragraph("Each job follows on its own page: timings, parameters, input thumbnails and outputs.",
                  styles["small"]),
    ]
    for i, job in enumerate(jobs, 1):
        story.append(PageBreak())
        story.append(job_section(i, job, styles, width, height, read, include_images))
    doc.build(story, canvasmaker=NumberedCanvas)
    return buf.getvalue(), pages[-1] if pages else 0
