"""What the extraction stages share: the document types read, a page of text, and the limits applied."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple

SUPPORTED = "PDF, DOCX, TXT, Markdown, HTML, PNG or JPEG"


class DocType(enum.StrEnum):
    PDF = "pdf"
    DOCX = "docx"
    TEXT = "text"
    MARKDOWN = "markdown"
    HTML = "html"
    PNG = "png"
    JPEG = "jpeg"

    @property
    def is_image(self) -> bool:
        return self in (DocType.PNG, DocType.JPEG)


class Page(NamedTuple):
    """One page of a document: ``number`` counts from 1 as a reader does, None where the format has no
    pages (DOCX, text, HTML). ``needs_ocr``: no usable text layer, ``text`` is empty or a stub."""

    number: int | None
    text: str
    needs_ocr: bool = False


@dataclass(frozen=True)
class Limits:
    max_pages: int = 2000
    # A DOCX is a zip: refuse before inflating anything when the entries declare more than this...
    max_docx_uncompressed_bytes: int = 256 * 1024 * 1024
    # ...or an entry inflates by more than this ratio (real Word XML compresses ~5-20x; bombs ~1000x).
    max_docx_ratio: float = 200.0
    max_docx_entries: int = 10_000
    # ...or one part declares more than this; no part ever inflates past what it declares (safezip.py).
    max_docx_part_bytes: int = 64 * 1024 * 1024
    # A PDF page whose text layer has fewer letters/digits than this goes to OCR.
    min_page_chars: int = 16
    # An image scan larger than this is refused from its header, before any pixel is decoded.
    max_image_pixels: int = 60_000_000


DEFAULT_LIMITS = Limits()


DEFAULT_LIMITS = Limits()
