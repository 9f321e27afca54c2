"""File inputs: declared on a job type's input model, sent as base64 or multipart, stored as artifacts.

A job type declares a file field with ``ImageFile`` (or another ``FileKind``). Clients send the
field as a base64 string (the seeds' way; a ``data:`` URI works too) or as a multipart part of the
same name. The API decodes and checks it (real image, pixel limit), stores it beside the job's
outputs and puts a ``FileRef`` in the record: Redis never holds the bytes.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import typing
import warnings
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, WithJsonSchema

from aitasks.errors import FieldError, PayloadTooLarge, ValidationFailed


class FileRef(BaseModel):
    """What a job record holds for a file input: a reference to the stored bytes."""

    artifact: str
    media_type: str
    bytes: int
    filename: str | None = None
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True)
class FileKind:
    """Marks a model field as a file of this kind; the API reads it from base64 or multipart."""

    kind: str  # "image" | "document" | "any"
    media_types: tuple[str, ...] = ()


IMAGE_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}

ImageFile = Annotated[
    FileRef,
    FileKind("image", tuple(IMAGE_FORMATS.values())),
    WithJsonSchema({
        "type": "string",
        "contentEncoding": "base64",
        "contentMediaType": "image/*",
        "description": "An image (PNG, JPEG or WebP) as base64 or a data: URI, "
                       "or a multipart file part of the same name.",
    }),
]

DocumentFile = Annotated[
    FileRef,
    FileKind("document"),
    WithJsonSchema({
        "type": "string",
        "contentEncoding": "base64",
        "description": "A document (PDF, DOCX, TXT, Markdown, HTML, PNG/JPEG scan) as base64, "
                       "or a multipart file part of the same name.",
    }),
]


def file_fields(model: type[BaseModel]) -> dict[str, FileKind]:
    """The model's file fields and their kinds."""
    out: dict[str, FileKind] = {}
    for name, info in model.model_fields.items():
        kind = _find_kind(list(info.metadata)) or _find_kind_in(info.annotation)
        if kind is not None:
            out[name] = kind
    return out


def _find_kind(metadata: list[Any]) -> FileKind | None:
    return next((m for m in metadata if isinstance(m, FileKind)), None)


def _find_kind_in(annotation: Any) -> FileKind | None:
    """Look inside ``ImageFile | None`` and the like."""
    kind = _find_kind(list(getattr(annotation, "__metadata__", ())))
    if kind is not None:
        return kind
    for arg in typing.get_args(annotation):
        kind = _find_kind_in(arg)
        if kind is not None:
            return kind
    return None


_DATA_URI = re.compile(r"^data:([\w/+.-]+)?(;[\w=-]+)*;base64,", re.IGNORECASE)


def decode_base64(field: str, value: Any) -> bytes:
    if not isinstance(value, str):
        raise ValidationFailed(f"{field} must be a base64 string",
                               [FieldError(field, "must be a base64-encoded string")])
    text = _DATA_URI.sub("", value.strip(), count=1)
    text = "".join(text.split())
    if not text:
        raise ValidationFailed(f"{field} is empty", [FieldError(field, "is empty")])
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValidationFailed(f"{field} is not valid base64",
                               [FieldError(field, "is not valid base64")]) from None


@dataclass
class CheckedFile:
    data: bytes
    media_type: str
    extension: str
    width: int | None = None
    height: int | None = None


def check_file(field: str, kind: FileKind, data: bytes, max_bytes: int, max_pixels: int) -> CheckedFile:
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"{field} is {len(data)} bytes, over the limit of {max_bytes}",
                              [FieldError(field, f"over the limit of {max_bytes} bytes")])
    if kind.kind != "image":
        return CheckedFile(data, "application/octet-stream", "bin")
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit decides below
            with Image.open(io.BytesIO(data)) as img:
                fmt = img.format or ""
                width, height = img.size
    except Image.DecompressionBombError:
        raise PayloadTooLarge(f"{field} is a decompression bomb (its header claims far more pixels than the "
                              f"limit of {max_pixels})", [FieldError(field, f"over the limit of {max_pixels} pixels")]) from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise ValidationFailed(f"{field} is not an image this service reads (PNG, JPEG, WebP)",
                               [FieldError(field, "is not a readable image")]) from None
    if fmt not in IMAGE_FORMATS:
        raise ValidationFailed(f"{field} is a {fmt or 'unknown'} image; accepted: {', '.join(IMAGE_FORMATS)}",
                               [FieldError(field, f"unsupported image format {fmt}")])
    if width * height > max_pixels:  # refused from the header, before any pixel is decoded
        raise PayloadTooLarge(
            f"{field} is {width}x{height} = {width * height} pixels, over the limit of {max_pixels}",
            [FieldError(field, f"over the limit of {max_pixels} pixels")])
    try:  # header parsed; now make sure the pixel data is really there
        with Image.open(io.BytesIO(data)) as img:
            if fmt == "PNG":
                img.verify()  # every chunk's CRC up to IEND: catches truncation and corruption in ~0.1 ms
            else:
                img.load()  # JPEG and WebP carry no checksum: decode to be sure (a few ms at 512 px)
    except (OSError, ValueError, SyntaxError):
        raise ValidationFailed(f"{field} is a truncated or corrupt {fmt} image",
                               [FieldError(field, "is truncated or corrupt")]) from None
    ext = {"JPEG": "jpg"}.get(fmt, fmt.lower())
    return CheckedFile(data, IMAGE_FORMATS[fmt], ext, width, height)
