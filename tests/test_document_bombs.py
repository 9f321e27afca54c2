"""Zip bombs posing as DOCX, whose parts lie about their size (security review item 4).

The bombs are real zips built here: word/document.xml is a huge run of one byte compressed with bzip2,
LZMA or deflate, its declared size patched to a few bytes in the local header and the central directory.
Python's zipfile trusts that size only to cut the output after inflating a whole chunk, which for bzip2
is the whole part. The upload must refuse them with a 413 naming `file`; the worker's extraction (which
the upload check guards, so it is called directly here, in its own process) must fail with a permanent
error, its memory staying flat.
"""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx
import pytest

from aitasks.documents.errors import CorruptDocument, DocumentTooLarge
from aitasks.documents.extract import Limits, check_upload, extract

MIB = 1024 * 1024


def word_docx(paragraphs: list[str]) -> bytes:
    """A real DOCX (python-docx)."""
    import docx

    document = docx.Document()
    for text in paragraphs:
        document.add_paragraph(text)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def recompressed(data: bytes, method: int, part: str = "word/document.xml", content: bytes | None = None,
                 inflated: int = 0) -> bytes:
    """The DOCX with ``part`` compressed by ``method``: its own bytes, ``content``, or ``inflated`` bytes of
    'A' written a MiB at a time (never held whole)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            if item.filename != part:
                dst.writestr(item, src.read(item))
        info = zipfile.ZipInfo(part, (2026, 1, 1, 0, 0, 0))
        info.compress_type = method
        with dst.open(info, "w") as stream:
            if inflated:
                chunk = b"A" * MIB
                for _ in range(inflated // MIB):
                    stream.write(chunk)
            else:
                stream.write(src.read(part) if content is None else content)
    return out.getvalue()


def declared_size(data: bytes, part: str, size: int) -> bytes:
    """``data`` with ``part``'s uncompressed size set to ``size`` in its local header and the central directory."""
    buf = bytearray(data)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        local = archive.getinfo(part).header_offset
    assert buf[local:local + 4] == b"PK\x03\x04"
    struct.pack_into("<L", buf, local + 22, size)
    end = buf.rfind(b"PK\x05\x06")
    (count,) = struct.unpack_from("<H", buf, end + 10)
    (pos,) = struct.unpack_from("<L", buf, end + 16)
    patched = 0
    for _ in range(count):
        assert buf[pos:pos + 4] == b"PK\x01\x02"
        name_len, extra_len, comment_len = struct.unpack_from("<3H", buf, pos + 28)
        if buf[pos + 46:pos + 46 + name_len].decode() == part:
            struct.pack_into("<L", buf, pos + 24, size)
            patched += 1
        pos += 46 + name_len + extra_len + comment_len
    assert patched == 1
    return bytes(buf)


def lying_bomb(method: int, inflated: int, declared: int = 4) -> bytes:
    return declared_size(recompressed(word_docx(["x"]), method, inflated=inflated), "word/document.xml", declared)


METHODS = {"bzip2": zipfile.ZIP_BZIP2, "lzma": zipfile.ZIP_LZMA, "deflate": zipfile.ZIP_DEFLATED}


# --- the check, in process -----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", list(METHODS), ids=list(METHODS))
def test_a_part_that_inflates_past_its_declared_size_is_refused(method: str) -> None:
    bomb = lying_bomb(METHODS[method], 8 * MIB)
    with zipfile.ZipFile(io.BytesIO(bomb)) as archive:
        part = archive.getinfo("word/document.xml")
    assert part.file_size == 4 and part.compress_size < 16 * 1024  # 8 MiB inside, 4 bytes declared
    for call in (lambda: check_upload(bomb, "bomb.docx"), lambda: extract(bomb, "bomb.docx")):
        with pytest.raises(DocumentTooLarge) as caught:
            call()
        message = str(caught.value)
        assert "'word/document.xml'" in message and "4 bytes its header declares" in message, message
        assert caught.value.status == 413 and caught.value.code == "document_too_large"


@pytest.mark.parametrize("method", list(METHODS), ids=list(METHODS))
def test_honest_docx_in_every_method_still_reads_across_many_chunks(method: str) -> None:
    # ~300 KiB of XML: several 64 KiB pieces per part, so the streaming resumes and drains between them.
    paragraphs = [f"Paragraph {i} of the long report, about harbour tides and lighthouse keepers." for i in range(3000)]
    data = recompressed(word_docx(paragraphs), METHODS[method])
    assert check_upload(data, "report.docx").value == "docx"
    text = extract(data, "report.docx")[1][0].text
    assert "Paragraph 0 of" in text and "Paragraph 2999 of" in text


def test_a_part_shorter_than_declared_or_with_a_wrong_checksum_is_damaged() -> None:
    good = word_docx(["The tide tables for the harbour."])
    with zipfile.ZipFile(io.BytesIO(good)) as archive:
        real = archive.getinfo("word/document.xml").file_size
    with pytest.raises(CorruptDocument, match="size or checksum"):
        check_upload(declared_size(good, "word/document.xml", real + 10), "short.docx")
    stored = recompressed(good, zipfile.ZIP_STORED)
    with zipfile.ZipFile(io.BytesIO(stored)) as archive:
        local = archive.getinfo("word/document.xml").header_offset
    name_len, extra_len = struct.unpack_from("<2H", stored, local + 26)
    at = local + 30 + name_len + extra_len + 10  # a byte of the part's (stored) content
    spoiled = stored[:at] + bytes([stored[at] ^ 0xFF]) + stored[at + 1:]
    with pytest.raises(CorruptDocument, match="size or checksum"):
        check_upload(spoiled, "spoiled.docx")


def test_an_honest_part_over_the_per_part_limit_is_refused_from_its_header() -> None:
    data = recompressed(word_docx(["x"]), zipfile.ZIP_DEFLATED, part="word/media/big.bin", content=b"\0" * (3 * MIB))
    with pytest.raises(DocumentTooLarge, match="per part"):
        check_upload(data, "big.docx", limits=Limits(max_docx_part_bytes=2 * MIB, max_docx_ratio=1e9))


# --- the worker's extraction, in its own process: memory stays flat ------------------------------------------

EXTRACT_IN_A_PROCESS = """
import json, resource, sys
import docx  # loaded before the baseline: the worker has python-docx in memory already
from aitasks.documents.errors import DocumentError
from aitasks.documents.pipeline import read_document
from aitasks.errors import JobError, TransientJobError

data = open(sys.argv[1], "rb").read()
baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    read_document(data, "bomb.docx")
    outcome = {"error": None}
except DocumentError as exc:
    outcome = {"error": type(exc).__name__, "message": str(exc), "status": exc.status,
               "permanent": isinstance(exc, JobError) and not isinstance(exc, TransientJobError)}
outcome["grew_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline
print(json.dumps(outcome))
"""


@pytest.mark.slow  # builds a 320 MiB bomb (a second or two of bzip2) and starts a Python process
def test_the_worker_extraction_fails_permanently_with_flat_memory(tmp_path: Path) -> None:
    bomb = lying_bomb(zipfile.ZIP_BZIP2, 320 * MIB)
    with zipfile.ZipFile(io.BytesIO(bomb)) as archive:
        assert archive.getinfo("word/document.xml").compress_size < 2048  # 320 MiB in a few hundred bytes
    path = tmp_path / "bomb.docx"
    path.write_bytes(bomb)
    run = subprocess.run([sys.executable, "-c", EXTRACT_IN_A_PROCESS, str(path)], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    outcome = json.loads(run.stdout.strip().splitlines()[-1])
    assert outcome["grew_kib"] < 100 * 1024, outcome  # before the fix: +320 MiB, inflated by zipfile at once
    # A DocumentError is a permanent JobError: the runner records FAILURE and never retries it.
    assert outcome["error"] == "DocumentTooLarge" and outcome["permanent"] and outcome["status"] == 413, outcome
    assert "declares" in outcome["message"]


# --- the upload -------------------------------------------------------------------------------------------------


@pytest.mark.slow  # the shared test stack
@pytest.mark.parametrize("method", ["bzip2", "lzma"])
def test_the_upload_refuses_a_lying_bomb_naming_the_file(client: httpx.Client, method: str) -> None:
    bomb = lying_bomb(METHODS[method], 64 * MIB)
    for path in ("/api/v1/documents/", "/api/ingest/"):
        r = client.post(path, files={"file": ("report.docx", bomb, "application/octet-stream")})
        assert r.status_code == 413, (path, r.status_code, r.text[:300])
        body = r.json()
        assert body["code"] == "document_too_large" and "zip bomb" in body["error"], body
        assert [f["field"] for f in body["fields"]] == ["file"], body
    assert client.get("/api/v1/documents/").json()["documents"] == []  # nothing was accepted
