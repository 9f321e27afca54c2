"""Zip archives from uploads (DOCX): every entry inflated as a stream under hard caps, whatever its
headers declare, before anything else (python-docx) opens the archive.

Python's zipfile cuts each entry at its declared size only *after* inflating: a bzip2 or LZMA entry's
compressed chunk is inflated whole, so a 329-byte file declaring 4 bytes takes 205 MB first. Here each
entry's raw bytes go to its decompressor with an output limit per call, so memory stays at one chunk; an
entry that inflates past its declared size is refused at once, and the declared sizes were capped per
entry and in total before. An entry that ends short or fails its CRC is refused as damaged, so an
archive that passes inflates, for zipfile too, to exactly the sizes that were checked.
"""

from __future__ import annotations

import bz2
import lzma
import struct
import zipfile
import zlib
from collections.abc import Iterator
from typing import Protocol

from aitasks.documents.errors import CorruptDocument, DocumentTooLarge, EncryptedDocument
from aitasks.documents.formats import Limits

CHUNK = 64 * 1024  # the most any decompressor call may return: the memory an entry's check takes
RATIO_FROM = 1024 * 1024  # small parts can compress absurdly well (a run of spaces) without harm
_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # zip local file header (APPNOTE 4.3.7), 30 bytes
_MIB = 1024 * 1024


class _Decompressor(Protocol):
    @property
    def eof(self) -> bool: ...

    def decompress(self, data: bytes, max_length: int = ..., /) -> bytes: ...


class _Deflate:
    """zlib's raw inflater with the bz2/lzma interface: input it could not take yet is fed again."""

    def __init__(self) -> None:
        self._z = zlib.decompressobj(-15)

    @property
    def eof(self) -> bool:
        return self._z.eof

    def decompress(self, data: bytes, max_length: int = 0, /) -> bytes:
        tail = self._z.unconsumed_tail
        return self._z.decompress(tail + data if tail else data, max_length)


def check_archive(archive: zipfile.ZipFile, data: bytes, limits: Limits, kind: str = "DOCX") -> None:
    """Refuse an archive with too many entries, an encrypted entry, declared sizes over the limits, or an
    entry that inflates past what it declares (a bomb) or to something else (damage). Inflates every
    entry, one chunk at a time, keeping nothing."""
    infos = archive.infolist()
    if len(infos) > limits.max_docx_entries:
        raise DocumentTooLarge(f"The {kind} file has {len(infos)} parts; at most {limits.max_docx_entries} are accepted.")
    total = sum(info.file_size for info in infos)
    if total > limits.max_docx_uncompressed_bytes:
        raise DocumentTooLarge(
            f"The {kind} file would inflate to {total // _MIB} MiB (limit "
            f"{limits.max_docx_uncompressed_bytes // _MIB} MiB): refused as a possible zip bomb.")
    for info in infos:
        if info.flag_bits & 0x1:
            raise EncryptedDocument(f"The {kind} file is encrypted: upload an unprotected copy.")
        if info.file_size > limits.max_docx_part_bytes:
            raise DocumentTooLarge(
                f"The {kind} part {info.filename!r} would inflate to {info.file_size // _MIB} MiB (limit "
                f"{limits.max_docx_part_bytes // _MIB} MiB per part): refused as a possible zip bomb.")
        if info.file_size > RATIO_FROM and info.file_size > limits.max_docx_ratio * max(info.compress_size, 1):
            raise DocumentTooLarge(
                f"The {kind} part {info.filename!r} inflates {info.file_size // max(info.compress_size, 1)}x "
                f"(limit {limits.max_docx_ratio:.0f}x): refused as a possible zip bomb.")
    for info in infos:
        _check_entry(data, info, kind)


def _check_entry(data: bytes, info: zipfile.ZipInfo, kind: str) -> None:
    """Inflate one entry as a stream: never past its declared (already capped) size; size and CRC must match."""
    raw = _raw_bytes(data, info, kind)
    size, crc = 0, 0
    try:
        for piece in _inflate(raw, info.compress_type, info.filename, kind):
            size += len(piece)
            if size > info.file_size:
                raise DocumentTooLarge(
                    f"The {kind} part {info.filename!r} inflates past the {info.file_size:,} bytes its header "
                    "declares: refused as a possible zip bomb.")
            crc = zlib.crc32(piece, crc)
    except (zlib.error, OSError, EOFError, lzma.LZMAError, MemoryError, ValueError):
        raise CorruptDocument(f"The {kind} part {info.filename!r} is damaged (it does not inflate).") from None
    if size != info.file_size or crc != info.CRC:
        raise CorruptDocument(
            f"The {kind} part {info.filename!r} is damaged (its size or checksum does not match its header).")


def _raw_bytes(data: bytes, info: zipfile.ZipInfo, kind: str) -> memoryview:
    """The entry's compressed bytes, found as zipfile finds them: after its local header."""
    start = info.header_offset
    header = data[start:start + _LOCAL_HEADER.size]
    if len(header) < _LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
        raise CorruptDocument(f"The {kind} part {info.filename!r} is damaged (no local header).")
    fields = _LOCAL_HEADER.unpack(header)
    begin = start + _LOCAL_HEADER.size + fields[10] + fields[11]  # + name length + extra length
    if begin + info.compress_size > len(data):
        raise CorruptDocument(f"The {kind} part {info.filename!r} is damaged (the archive is truncated).")
    return memoryview(data)[begin:begin + info.compress_size]


def _inflate(raw: memoryview, method: int, name: str, kind: str) -> Iterator[bytes]:
    """The entry's inflated bytes, at most CHUNK per piece, however much one input chunk expands."""
    if method == zipfile.ZIP_STORED:
        for start in range(0, len(raw), CHUNK):
            yield bytes(raw[start:start + CHUNK])
        return
    decomp, pos = _decompressor(raw, method, name, kind)
    while not decomp.eof:
        data = bytes(raw[pos:pos + CHUNK])
        pos += len(data)
        out = decomp.decompress(data, CHUNK)
        while out:
            yield out
            if decomp.eof:
                break
            out = decomp.decompress(b"", CHUNK)  # what this input still holds, one chunk at a time
        if not data:
            return  # input used up before the stream's end: the size check calls it damaged


def _decompressor(raw: memoryview, method: int, name: str, kind: str) -> tuple[_Decompressor, int]:
    """The entry's decompressor and where its stream starts in ``raw``."""
    if method == zipfile.ZIP_DEFLATED:
        return _Deflate(), 0
    if method == zipfile.ZIP_BZIP2:
        return bz2.BZ2Decompressor(), 0
    if method == zipfile.ZIP_LZMA:
        # APPNOTE 5.8.8: version (2 bytes), properties size (2), LZMA1 properties (lc/lp/pb byte, dictionary size).
        if len(raw) < 9 or raw[2] != 5 or raw[3] != 0:
            raise CorruptDocument(f"The {kind} part {name!r} is damaged (a bad LZMA header).")
        props = raw[4]
        lc, lp, pb = props % 9, props // 9 % 5, props // 45
        dict_size = int.from_bytes(raw[5:9], "little")
        filters = [{"id": lzma.FILTER_LZMA1, "lc": lc, "lp": lp, "pb": pb, "dict_size": dict_size}]
        try:
            return lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=filters), 9
        except (lzma.LZMAError, ValueError, MemoryError):
            raise CorruptDocument(f"The {kind} part {name!r} is damaged (a bad LZMA header).") from None
    raise CorruptDocument(f"The {kind} part {name!r} uses compression method {method}, which is not read "
                          "(stored, deflate, bzip2 and LZMA are): save the file again from a word processor.")
