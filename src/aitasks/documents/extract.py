"""Bytes + file name -> pages of text, for every format the pipeline reads: the entry point that picks
the format's reader (``detect``, ``pdf``, ``office``, ``text``; the shared types in ``formats``).

The type comes from the content's magic bytes; the extension must agree with it (a PDF named
``.docx`` is refused, not guessed at). Each refusal is a ``DocumentError`` subclass with a sentence a
user can act on. Pages that carry no usable text layer come back flagged ``needs_ocr``: ``ocr`` reads
them, so this module needs neither Tesseract nor a renderer.
"""

from __future__ import annotations

import io

from aitasks.documents.detect import detect_type
from aitasks.documents.errors import CorruptDocument, DocumentTooLarge, EmptyDocument
from aitasks.documents.formats import DEFAULT_LIMITS, SUPPORTED, DocType, Limits, Page
from aitasks.documents.office import check_docx, extract_docx
from aitasks.documents.pdf import check_pdf, extract_pdf
from aitasks.documents.text import decode_text, html_to_text, normalize_text

# The names callers import from here, whichever module defines them.
__all__ = ["DEFAULT_LIMITS", "SUPPORTED", "DocType", "Limits", "Page", "check_image", "check_upload",
           "decode_text", "detect_type", "extract", "normalize_text"]


def check_upload(data: bytes, filename: str | None = None, content_type: str | None = None,
                 limits: Limits = DEFAULT_LIMITS) -> DocType:
    """The cheap checks, for an API to answer 4xx at upload instead of a failed job later: type and
    extension, PDF encryption/damage/page count, DOCX zip bomb (every part inflated as a stream under caps),
    image size. Reads no text (milliseconds; a DOCX's parts are inflated and dropped chunk by chunk)."""
    doc_type = detect_type(data, filename, content_type)
    if doc_type is DocType.PDF:
        check_pdf(data, limits)  # under the process's PDFium lock: uploads are checked in parallel threads
    elif doc_type is DocType.DOCX:
        check_docx(data, limits)
    elif doc_type.is_image:
        check_image(data, limits)
    return doc_type


def extract(data: bytes, filename: str | None = None, content_type: str | None = None,
            limits: Limits = DEFAULT_LIMITS) -> tuple[DocType, list[Page]]:
    """Detect the type and extract its pages. Raises a DocumentError subclass for any input it refuses.

    Pages flagged ``needs_ocr`` (scanned PDF pages, image files) still need ``ocr``; a document whose
    pages are all empty and none needs OCR raises EmptyDocument here.
    """
    doc_type = detect_type(data, filename, content_type)
    if doc_type is DocType.PDF:
        pages = extract_pdf(data, limits)
    elif doc_type is DocType.DOCX:
        pages = [Page(None, extract_docx(data, limits))]
    elif doc_type is DocType.HTML:
        pages = [Page(None, html_to_text(decode_text(data)))]
    elif doc_type.is_image:
        check_image(data, limits)
        pages = [Page(1, "", needs_ocr=True)]
    else:
        pages = [Page(None, normalize_text(decode_text(data)))]
    if not any(p.text.strip() or p.needs_ocr for p in pages):
        raise EmptyDocument("The document contains no text.")
    return doc_type, pages


def check_image(data: bytes, limits: Limits = DEFAULT_LIMITS) -> tuple[int, int]:
    """An image scan's size from its header (refused when too large or unreadable); nothing decoded."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            image.verify()  # structure and checksums (PNG), without decoding pixels
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise CorruptDocument("The image is damaged and cannot be decoded.") from None
    if width * height > limits.max_image_pixels:
        raise DocumentTooLarge(
            f"The image is {width}x{height} pixels; at most {limits.max_image_pixels:,} pixels are accepted.")
    return width, height
