"""DOCX files: the zip checks (no bomb, not encrypted, a Word document inside) before python-docx reads
paragraphs and tables in document order."""

from __future__ import annotations

import io
import zipfile

from aitasks.documents.errors import CorruptDocument, DocumentTooLarge, EncryptedDocument, UnsupportedDocument
from aitasks.documents.formats import DEFAULT_LIMITS, SUPPORTED, Limits
from aitasks.documents.text import normalize_text


def check_docx(data: bytes, limits: Limits = DEFAULT_LIMITS) -> None:
    """A readable zip, no bomb, and a Word document inside (not a spreadsheet or a presentation)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise CorruptDocument("The DOCX file is damaged (not a readable zip archive).") from None
    with archive:
        check_zip(archive, limits)
        names = set(archive.namelist())
    if "word/document.xml" not in names:
        kind = ("a spreadsheet (XLSX)" if "xl/workbook.xml" in names else
                "a presentation (PPTX)" if "ppt/presentation.xml" in names else "a zip archive but not a Word document")
        raise UnsupportedDocument(f"The file is {kind}: upload {SUPPORTED}.")


def extract_docx(data: bytes, limits: Limits = DEFAULT_LIMITS) -> str:
    """Paragraphs and tables in document order (python-docx), after checking the zip is no bomb."""
    check_docx(data, limits)
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


def check_zip(archive: zipfile.ZipFile, limits: Limits) -> None:
    """Refuse a zip whose entries declare too much inflated data, before anything is inflated.

    Python's zipfile stops each entry at its declared size and checks the CRC, so the declared sizes
    bound what parsing can inflate; overlapping-entry bombs declare their full size too.
    """
    infos = archive.infolist()
    if len(infos) > limits.max_docx_entries:
        raise DocumentTooLarge(f"The DOCX file has {len(infos)} parts; at most {limits.max_docx_entries} are accepted.")
    total = sum(info.file_size for info in infos)
    if total > limits.max_docx_uncompressed_bytes:
        raise DocumentTooLarge(
            f"The DOCX file would inflate to {total // (1024 * 1024)} MiB (limit "
            f"{limits.max_docx_uncompressed_bytes // (1024 * 1024)} MiB): refused as a possible zip bomb.")
    for info in infos:
        # Small parts can compress absurdly well (a run of spaces) without harm: judge only the big ones.
        if info.file_size > 1024 * 1024 and info.file_size > limits.max_docx_ratio * max(info.compress_size, 1):
            raise DocumentTooLarge(
                f"The DOCX part {info.filename!r} inflates {info.file_size // max(info.compress_size, 1)}x "
                f"(limit {limits.max_docx_ratio:.0f}x): refused as a possible zip bomb.")
        if info.flag_bits & 0x1:
            raise EncryptedDocument("The DOCX file is encrypted: upload an unprotected copy.")


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
