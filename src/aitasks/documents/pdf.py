"""PDF text layers (pypdfium2, loaded on first use): open with the checks an upload needs (password,
damage, page count), read each page's text, flag the pages without usable text for OCR."""

from __future__ import annotations

from typing import Any

from aitasks.documents.errors import CorruptDocument, DocumentTooLarge, EmptyDocument, EncryptedDocument
from aitasks.documents.formats import DEFAULT_LIMITS, Limits, Page
from aitasks.documents.text import normalize_text


def open_pdf(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Any:
    """An open ``pypdfium2.PdfDocument`` with 1..max_pages pages (close it), or the error saying why not."""
    import pypdfium2 as pdfium  # type: ignore[import-untyped]
    import pypdfium2.raw as pdfium_c  # type: ignore[import-untyped]

    try:
        pdf = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        if getattr(exc, "err_code", None) in (pdfium_c.FPDF_ERR_PASSWORD, pdfium_c.FPDF_ERR_SECURITY):
            raise EncryptedDocument("The PDF is protected by a password: upload an unprotected copy.") from None
        raise CorruptDocument("The PDF is damaged or not a PDF, and cannot be read.") from None
    count = len(pdf)
    if count == 0 or count > limits.max_pages:
        pdf.close()
        if count == 0:
            raise EmptyDocument("The PDF has no pages.")
        raise DocumentTooLarge(f"The PDF has {count} pages; at most {limits.max_pages} are accepted.")
    return pdf


def extract_pdf(data: bytes, limits: Limits = DEFAULT_LIMITS) -> list[Page]:
    """The text layer of each page (pypdfium2); pages without a usable one are flagged for OCR."""
    import pypdfium2 as pdfium  # type: ignore[import-untyped]

    pdf = open_pdf(data, limits)
    try:
        count = len(pdf)
        pages: list[Page] = []
        for index in range(count):
            page = pdf[index]
            try:
                textpage = page.get_textpage()
                text = normalize_text(textpage.get_text_bounded())
                textpage.close()
                usable = _usable_text(text, limits.min_page_chars) and not _mostly_image(page, text)
            except pdfium.PdfiumError:
                text, usable = "", False  # an unreadable page object: OCR of the rendered page may still work
            finally:
                page.close()
            pages.append(Page(index + 1, text if usable else "", needs_ocr=not usable))
        return pages
    finally:
        pdf.close()


def _usable_text(text: str, min_chars: int) -> bool:
    # A font without a Unicode map yields replacement or control characters: as good as no text.
    good = sum(ch.isalnum() for ch in text)
    bad = text.count("\ufffd") + sum(1 for ch in text if ord(ch) < 32 and ch not in "\n\t")
    return good >= min_chars and bad <= good // 4


def _mostly_image(page: object, text: str) -> bool:
    """A scan with a little text on top (a stamp, a header): the image holds the content, so OCR it."""
    if len(text) >= 200:
        return False
    import pypdfium2.raw as pdfium_c  # type: ignore[import-untyped]

    width, height = page.get_size()  # type: ignore[attr-defined]
    area = max(width * height, 1.0)
    covered = 0.0
    for obj in page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_IMAGE], max_depth=2):  # type: ignore[attr-defined]
        left, bottom, right, top = obj.get_pos()
        covered += max(right - left, 0) * max(top - bottom, 0)
    return covered / area >= 0.5
