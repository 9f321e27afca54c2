"""A document's type from its magic bytes, checked against its file name's extension (a PDF named
``.docx`` is refused, not guessed at); text without magic takes the extension's or content type's word."""

from __future__ import annotations

from pathlib import PurePosixPath

from aitasks.documents.errors import DocumentTypeMismatch, EmptyDocument, UnsupportedDocument
from aitasks.documents.formats import SUPPORTED, DocType

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
