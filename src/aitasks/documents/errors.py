"""Errors of the document pipeline. Each says when it is raised; ``status`` is the HTTP answer it
deserves when it is seen at upload, ``code`` a stable word for clients and job records.

They subclass ``JobError``: inside a job they are permanent (retrying cannot fix a bad file).
"""

from __future__ import annotations

from aitasks.errors import AitasksError, ConfigurationError, JobError


class DocumentError(JobError):
    """Base: raised when a document cannot be read. ``str(exc)`` is the human sentence."""

    status: int = 422
    code: str = "invalid_document"


class UnsupportedDocument(DocumentError):
    """Raised when the content is of a type the pipeline does not read (a spreadsheet, a legacy .doc)."""

    status = 415
    code = "unsupported_document"


class DocumentTypeMismatch(DocumentError):
    """Raised when the file name's extension and the content's magic bytes name different types."""

    status = 415
    code = "type_mismatch"


class EmptyDocument(DocumentError):
    """Raised when a document has no bytes, no pages or no text (not even after OCR)."""

    code = "empty_document"


class EncryptedDocument(DocumentError):
    """Raised when a PDF needs a password or a Word file is encrypted."""

    code = "encrypted_document"


class CorruptDocument(DocumentError):
    """Raised when the content claims a type but cannot be parsed as it (a truncated PDF, a broken zip)."""

    code = "corrupt_document"


class DocumentTooLarge(DocumentError):
    """Raised when a document is over a limit: page count, pixels, or a zip that inflates too far (a zip bomb)."""

    status = 413
    code = "document_too_large"


class OcrUnavailable(ConfigurationError):
    """Raised when a page needs OCR and the ``tesseract`` program is not installed."""


class InvalidStoreArgument(AitasksError, ValueError):
    """Raised by a vector store for a tenant, document id, filter key or vector it refuses.

    Ids are checked against a strict pattern before they reach any filter expression, so no id can
    change the meaning of a query (no SQL or filter injection).
    """
