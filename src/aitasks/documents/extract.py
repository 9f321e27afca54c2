"""Bytes + file name -> pages of text, for every format the pipeline reads.

The type comes from the content's magic bytes; the extension must agree with it (a PDF named
``.docx`` is refused, not guessed at). Each refusal is a ``DocumentError`` subclass with a sentence a
user can act on. Pages that carry no usable text layer come back flagged ``needs_ocr``: ``ocr`` reads
them, so this module needs neither Tesseract nor a renderer.
"""

from __future__ import annotations

import enum
import io
import re
import zipfile
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import PurePosixPath
from typing import Any, NamedTuple

from aitasks.documents.errors import (
    CorruptDocument,
    DocumentTooLarge,
    DocumentTypeMismatch,
    EmptyDocument,
    EncryptedDocument,
    UnsupportedDocument,
)


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
    # A PDF page whose text layer has fewer letters/digits than this goes to OCR.
    min_page_chars: int = 16
    # An image scan larger than this is refused from its header, before any pixel is decoded.
    max_image_pixels: int = 60_000_000


DEFAULT_LIMITS = Limits()

_EXTENSIONS: dict[str, DocType] = {
    ".pdf": DocType.PDF,
    ".docx": DocType.DOCX,
    ".txt": DocType.TEXT,
    ".text": DocType.TEXT,
    ".md": DocType.MARKDOWN,
    ".markdown": DocType.MARKDOWN,
    ".html": DocType.HTML,
    ".htm": DocType.HTML,
    ".png": DocType.PNG,
    ".jpg": DocType.JPEG,
    ".jpeg": DocType.JPEG,
}
_CONTENT_TYPES: dict[str, DocType] = {
    "application/pdf": DocType.PDF,
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": DocType.DOCX,
    "text/plain": DocType.TEXT,
    "text/markdown": DocType.MARKDOWN,
    "text/x-markdown": DocType.MARKDOWN,
    "text/html": DocType.HTML,
    "image/png": DocType.PNG,
    "image/jpeg": DocType.JPEG,
}
_TEXT_FAMILY = {DocType.TEXT, DocType.MARKDOWN, DocType.HTML}
_DESCRIBE = {DocType.PDF: "a PDF", DocType.DOCX: "a zip archive (DOCX)", DocType.PNG: "a PNG image",
             DocType.JPEG: "a JPEG image"}
SUPPORTED = "PDF, DOCX, TXT, Markdown, HTML, PNG or JPEG"


# --- type detection ---------------------------------------------------------------------------------


def _sniff(data: bytes) -> DocType | str | None:
    """The type the bytes declare: a DocType, a name of an unsupported type (str), or None (no magic)."""
    head = data[:1024]
    if b"%PDF-" in head:  # the spec lets junk precede the header; PDFium accepts it too
        return DocType.PDF
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return DocType.PNG
    if data.startswith(b"\xff\xd8\xff"):
        return DocType.JPEG
    if data.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return DocType.DOCX  # confirmed (or refused) when the zip is opened
    if data.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):
        # OLE2: a legacy .doc/.xls, or an Office file encrypted with a password (that is wrapped in OLE too).
        return "an encrypted Office file or a legacy Word/Excel (OLE) file"
    for magic, name in ((b"GIF8", "a GIF image"), (b"II*\x00", "a TIFF image"), (b"MM\x00*", "a TIFF image"),
                        (b"RIFF", "a RIFF (WebP/AVI/WAV) file"), (b"\x1f\x8b", "a gzip archive"),
                        (b"7z\xbc\xaf", "a 7z archive"), (b"Rar!", "a RAR archive"), (b"\x7fELF", "a program")):
        if data.startswith(magic):
            return name
    if b"\x00" in data[:8192] and not data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "binary data"  # text has no NUL bytes (UTF-16 with a BOM aside)
    return None


def detect_type(data: bytes, filename: str | None = None, content_type: str | None = None) -> DocType:
    """The document's type from its magic bytes, checked against the extension.

    Raises EmptyDocument, UnsupportedDocument, DocumentTypeMismatch.
    """
    if not data or not data.strip():
        raise EmptyDocument("The document is empty.")
    suffix = PurePosixPath((filename or "").replace("\\", "/")).suffix.lower()
    by_ext = _EXTENSIONS.get(suffix)
    if suffix and by_ext is None:
        raise UnsupportedDocument(f"Files of type {suffix!r} are not supported: upload {SUPPORTED}.")
    sniffed = _sniff(data)
    if sniffed is not None and not isinstance(sniffed, DocType):  # (DocType is a str too)
        raise (DocumentTypeMismatch if by_ext else UnsupportedDocument)(
            f"The content is {sniffed}{f', not the {suffix} its name says' if by_ext else ''}: upload {SUPPORTED}.")
    if sniffed is None:  # text of some kind: the extension (or content type) says which
        hint = by_ext or _CONTENT_TYPES.get((content_type or "").split(";")[0].strip().lower())
        if hint is not None and hint not in _TEXT_FAMILY:
            raise DocumentTypeMismatch(f"The file is named {suffix or content_type} but its content is plain text.")
        if hint is None:
            return DocType.HTML if _looks_like_html(data) else DocType.TEXT
        return hint
    if by_ext is not None and by_ext != sniffed:
        raise DocumentTypeMismatch(
            f"The file is named {suffix} but its content is {_DESCRIBE[sniffed]}: rename it or upload the right file.")
    return sniffed


def _looks_like_html(data: bytes) -> bool:
    head = data[:2048].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return head.startswith((b"<!doctype html", b"<html")) or b"<body" in head


# --- extraction -------------------------------------------------------------------------------------


def check_upload(data: bytes, filename: str | None = None, content_type: str | None = None,
                 limits: Limits = DEFAULT_LIMITS) -> DocType:
    """The cheap checks, for an API to answer 4xx at upload instead of a failed job later: type and
    extension, PDF encryption/damage/page count, DOCX zip bomb, image size. Reads no text (milliseconds)."""
    doc_type = detect_type(data, filename, content_type)
    if doc_type is DocType.PDF:
        open_pdf(data, limits).close()
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


def decode_text(data: bytes) -> str:
    """UTF-8 (with or without BOM), UTF-16 with a BOM, else Windows-1252, else Latin-1 (never fails)."""
    if data.startswith(b"\xef\xbb\xbf"):
        return data.decode("utf-8-sig", errors="replace")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", errors="replace")
    for encoding in ("utf-8", "cp1252"):  # cp1252 before latin-1: it maps 0x80-0x9f to real characters
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


_SPACES = re.compile(r"[ \t\f\v\u00a0]+")
_BLANK_LINES = re.compile(r"\n{3,}")


def normalize_text(text: str) -> str:
    """Unix line ends, no NULs or soft hyphens, runs of spaces collapsed, at most one blank line."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "").replace("\u00ad", "")
    text = _SPACES.sub(" ", text)
    text = "\n".join(line.strip() for line in text.split("\n"))
    return _BLANK_LINES.sub("\n\n", text).strip()


class _TextOfHtml(HTMLParser):
    """Visible text of an HTML page: no scripts, styles or templates; block elements break lines."""

    SKIP = {"script", "style", "noscript", "template", "svg", "math", "iframe", "object"}
    BLOCK = {"p", "div", "br", "li", "ul", "ol", "tr", "table", "section", "article", "header", "footer",
             "h1", "h2", "h3", "h4", "h5", "h6", "pre", "blockquote", "hr", "dt", "dd", "title", "main", "nav"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIP:
            self.skipping.append(tag)
        elif tag in self.BLOCK:
            self.parts.append("\n")
        elif tag in ("td", "th"):
            self.parts.append(" | ")

    def handle_endtag(self, tag: str) -> None:
        if self.skipping and tag == self.skipping[-1]:
            self.skipping.pop()
        elif tag in self.BLOCK and not self.skipping:
            self.parts.append("\n")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.BLOCK and not self.skipping:
            self.parts.append("\n")  # <br/>, <hr/>: no end tag follows

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    """The visible text of an HTML document (stdlib parser: no network, no entity expansion tricks)."""
    parser = _TextOfHtml()
    parser.feed(html)
    parser.close()
    text = "".join(parser.parts)
    text = re.sub(r"\n[ |]*\| ", "\n", text)  # a row's leading cell separator
    return normalize_text(text)
