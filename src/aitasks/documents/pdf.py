"""PDF text layers, always under the process's PDFium lock (``pdfium.locked``): open with the checks an
upload needs (password, damage, page count), read each page's text, flag the pages without usable text
for OCR."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from aitasks.documents import pdfium
from aitasks.documents.errors import CorruptDocument, DocumentTooLarge, EmptyDocument, EncryptedDocument
from aitasks.documents.formats import DEFAULT_LIMITS, Limits, Page
from aitasks.documents.text import normalize_text


def check_pdf(data: bytes, limits: Limits = DEFAULT_LIMITS) -> int:
    """The page count of a readable, unprotected PDF within the limits (the upload check), or why not."""
    with pdfium.locked() as lib:
        pdf = _open(lib, data, limits)
        try:
            return len(pdf)
        finally:
            pdf.close()


@contextmanager
def open_pdf(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Iterator[Any]:
    """An open ``pypdfium2.PdfDocument`` with 1..max_pages pages, closed under the lock when the block
    ends. Touch it only inside ``pdfium.locked()`` (as ``ocr.render_pdf_page`` does)."""
    with pdfium.locked() as lib:
        pdf = _open(lib, data, limits)
    try:
        yield pdf
    finally:
        with pdfium.locked():
            pdf.close()


def _open(lib: Any, data: bytes, limits: Limits) -> Any:
    """Open and count the pages; the caller holds the lock and closes what this returns."""
    try:
        pdf = lib.PdfDocument(data)
    except lib.PdfiumError as exc:
        if getattr(exc, "err_code", None) in (lib.raw.FPDF_ERR_PASSWORD, lib.raw.FPDF_ERR_SECURITY):
            raise EncryptedDocument("The PDF is protected by a password: upload an unprotected copy.") from None
        raise CorruptDocument("The PDF is damaged or not a PDF, and cannot be read.") from None
    try:
        count = len(pdf)
    except BaseException:
        pdf.close()
        raise
    if count == 0 or count > limits.max_pages:
        pdf.close()
        if count == 0:
            raise EmptyDocument("The PDF has no pages.")
        raise DocumentTooLarge(f"The PDF has {count} pages; at most {limits.max_pages} are accepted.")
    return pdf


def extract_pdf(data: bytes, limits: Limits = DEFAULT_LIMITS) -> list[Page]:
    """The text layer of each page; pages without a usable one are flagged for OCR. One lock hold for the
    whole document: extraction runs in a worker (one job per process), where nothing else waits on it."""
    with pdfium.locked() as lib:
        pdf = _open(lib, data, limits)
        try:
            pages: list[Page] = []
            for index in range(len(pdf)):
                page = pdf[index]
                try:
                    textpage = page.get_textpage()
                    text = normalize_text(textpage.get_text_bounded())
                    textpage.close()
                    usable = (_usable_text(text, limits.min_page_chars)
                              and not _mostly_image(page, text, lib.raw.FPDF_PAGEOBJ_IMAGE))
                except lib.PdfiumError:
                    text, usable = "", False  # an unreadable page object: OCR of the rendered page may still work
                finally:
                    page.close()  # closes its text page too, if reading it failed
                pages.append(Page(index + 1, text if usable else "", needs_ocr=not usable))
            return pages
        finally:
            pdf.close()


def _usable_text(text: str, min_chars: int) -> bool:
    # A font without a Unicode map yields replacement or control characters: as good as no text.
    good = sum(ch.isalnum() for ch in text)
    bad = text.count("\ufffd") + sum(1 for ch in text if ord(ch) < 32 and ch not in "\n\t")
    return good >= min_chars and bad <= good // 4


def _mostly_image(page: Any, text: str, image_type: int) -> bool:
    """A scan with a little text on top (a stamp, a header): the image holds the content, so OCR it."""
    if len(text) >= 200:
        return False
    width, height = page.get_size()
    area = max(width * height, 1.0)
    covered = 0.0
    for obj in page.get_objects(filter=[image_type], max_depth=2):
        left, bottom, right, top = obj.get_pos()
        covered += max(right - left, 0) * max(top - bottom, 0)
    return covered / area >= 0.5
