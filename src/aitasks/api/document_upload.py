"""Reading a document upload: the multipart form, then the cheap checks that answer 4xx at once.

Type, encryption, zip bomb and page count take milliseconds (in a thread): a bad file never becomes a
job. What passes is a ``Prepared`` document, ready for its record and its ingestion job.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

import anyio.to_thread
import orjson
from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from aitasks.api.services import Services
from aitasks.documents import service
from aitasks.documents.errors import DocumentError, InvalidStoreArgument
from aitasks.errors import ApiError, FieldError, PayloadTooLarge, ValidationFailed

if TYPE_CHECKING:
    from aitasks.documents.extract import DocType
    from aitasks.settings import Settings

# Each type's stored input file: media type and extension.
MEDIA = {"pdf": ("application/pdf", "pdf"),
         "docx": ("application/vnd.openxmlformats-officedocument.wordprocessingml.document", "docx"),
         "text": ("text/plain", "txt"), "markdown": ("text/markdown", "md"), "html": ("text/html", "html"),
         "png": ("image/png", "png"), "jpeg": ("image/jpeg", "jpg")}


@dataclass
class Prepared:
    document_id: str
    filename: str | None
    content_type: str | None
    data: bytes
    metadata: dict[str, Any]
    doc_type: DocType

    @property
    def media(self) -> tuple[str, str]:
        """The stored file's media type and extension."""
        return MEDIA[self.doc_type.value]


def document_error(exc: DocumentError, field: str = "file") -> ApiError:
    """A DocumentError seen at upload, as an API answer naming the field (415, 413 or 422)."""
    err = ApiError(str(exc), [FieldError(field, str(exc))])
    err.status, err.code = exc.status, exc.code
    return err


async def read_form(request: Request, max_files: int) -> tuple[dict[str, str], list[UploadFile]]:
    """The form's fields (``document_id``, ``metadata``, ``priority``) and its ``file`` parts, at most ``max_files``."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "multipart/form-data":
        raise ValidationFailed("send multipart/form-data with the document in the part `file`",
                               [FieldError("file", "is required (a multipart file part)")])
    try:
        form = await request.form(max_files=max_files + 1, max_fields=50)
    except HTTPException as exc:
        if exc.status_code != 400:
            raise
        raise ValidationFailed(f"request body is not valid multipart/form-data ({exc.detail})",
                               [FieldError("body", "is not valid multipart/form-data")]) from None
    fields: dict[str, str] = {}
    files: list[UploadFile] = []
    for name, value in form.multi_items():
        if isinstance(value, UploadFile):
            if name != "file":
                raise ValidationFailed(f"{name} is not a file field: send documents in the part `file`",
                                       [FieldError(name, "is not a known file field (use `file`)")])
            files.append(value)
        elif name in ("document_id", "metadata", "priority"):
            fields[name] = value
        elif name == "file":
            raise ValidationFailed("file must be a file part, not a text field",
                                   [FieldError("file", "must be a multipart file part")])
        else:
            raise ValidationFailed(f"{name} is not a known field", [FieldError(name, "is not a known field")])
    if not files:
        raise ValidationFailed("file is required", [FieldError("file", "is required (a multipart file part)")])
    if len(files) > max_files:
        raise ValidationFailed(f"at most {max_files} files per request",
                               [FieldError("file", f"at most {max_files} files per request")])
    return fields, files


def parse_metadata(raw: str | None) -> dict[str, Any]:
    if raw is None or not raw.strip():
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ValidationFailed("metadata is not valid JSON", [FieldError("metadata", "must be a JSON object")]) from None
    if not isinstance(value, dict):
        raise ValidationFailed("metadata must be a JSON object", [FieldError("metadata", "must be a JSON object")])
    return value


def _check(data: bytes, filename: str | None, content_type: str | None, document_id: str,
           metadata: dict[str, Any], settings: Settings, field: str) -> DocType:
    """The cheap checks, in a thread: the id, the metadata, then the file (type, PDF, zip bomb, pages)."""
    from aitasks.documents.extract import check_upload
    from aitasks.documents.store import check_document_id, check_metadata

    try:
        check_document_id(document_id)
    except InvalidStoreArgument as exc:
        raise ValidationFailed(str(exc), [FieldError("document_id", str(exc))]) from None
    try:
        check_metadata(metadata)
    except InvalidStoreArgument as exc:
        raise ValidationFailed(str(exc), [FieldError("metadata", str(exc))]) from None
    try:
        return check_upload(data, filename, content_type, service.limits(settings))
    except DocumentError as exc:
        raise document_error(exc, field) from None


async def prepare(services: Services, upload: UploadFile, document_id: str | None, metadata: dict[str, Any],
                  field: str = "file") -> Prepared:
    """Read and check one uploaded file; ``field`` names it in errors (``file[2]`` in a batch)."""
    settings = services.settings
    data = await upload.read()
    if len(data) > settings.max_upload_bytes:
        raise PayloadTooLarge(f"{field} is {len(data)} bytes, over the limit of {settings.max_upload_bytes}",
                              [FieldError(field, f"over the limit of {settings.max_upload_bytes} bytes")])
    name = PurePosixPath((upload.filename or "").replace("\\", "/")).name[-255:] or None
    content_type = upload.content_type or None
    doc_id = document_id if document_id is not None else uuid.uuid4().hex
    doc_type = await anyio.to_thread.run_sync(_check, data, name, content_type, doc_id, metadata, settings, field)
    return Prepared(doc_id, name, content_type, data, metadata, doc_type)
