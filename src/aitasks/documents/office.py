"""DOCX files: the zip checks (no bomb, not encrypted, a Word document inside) before python-docx reads
paragraphs and tables in document order. python-docx opens the zip itself: it only ever gets bytes that
``check_docx`` inflated entry by entry under caps (``safezip``), at upload and again in the worker."""

from __future__ import annotations

import io
import zipfile

from aitasks.documents.errors import CorruptDocument, UnsupportedDocument
from aitasks.documents.formats import DEFAULT_LIMITS, SUPPORTED, Limits
from aitasks.documents.safezip import check_archive
from aitasks.documents.text import normalize_text


def check_docx(data: bytes, limits: Limits = DEFAULT_LIMITS) -> None:
    """A readable zip, no bomb, and a Word document inside (not a spreadsheet or a presentation)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise CorruptDocument("The DOCX file is damaged (not a readable zip archive).") from None
    with archive:
        check_archive(archive, data, limits)
        names = set(archive.namelist())
    if "word/document.xml" not in names:
        kind = ("a spreadsheet (XLSX)" if "xl/workbook.xml" in names else
                "a presentation (PPTX)" if "ppt/presentation.xml" in names else "a zip archive but not a Word document")
        raise UnsupportedDocument(f"The file is {kind}: upload {SUPPORTED}.")


def extract_docx(data: bytes, limits: Limits = DEFAULT_LIMITS) -> str:
    """Paragraphs and tables in document order (python-docx), after checking the zip is no bomb."""
    check_docx(data, limits)  # streams every entry under caps: python-docx then inflates only checked sizes
    import docx
    from docx.table import Table

    try:
        document = docx.Document(io.BytesIO(data))
        blocks: list[str] = []
        for block in document.iter_inner_content():
            blocks.append(_table_text(block) if isinstance(block, Table) else block.text)
    except Exception as exc:  # python-docx raises assorted KeyError/XMLSyntaxError/ValueError on broken parts
        raise CorruptDocument(f"The DOCX file is damaged and cannot be read ({type(exc).__name__}).") from None
    return normalize_text("\n".join(blocks))


def _table_text(table: object) -> str:
    """One line per row, cells separated by ' | '; merged cells once; nested tables inline."""
    from docx.table import Table

    assert isinstance(table, Table)
    lines: list[str] = []
    for row in table.rows:
        cells: list[str] = []
        seen: set[int] = set()
        for cell in row.cells:
            if id(cell._tc) in seen:  # a merged cell repeats in row.cells
                continue
            seen.add(id(cell._tc))
            parts = [_table_text(b) if isinstance(b, Table) else b.text for b in cell.iter_inner_content()]
            cells.append(" ".join(p.strip() for p in parts if p.strip()))
        if any(cells):
            lines.append(" | ".join(cells))
    return "\n".join(lines)
