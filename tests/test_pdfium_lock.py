"""PDFium from many threads (security review item 5): pypdfium2 is not thread-safe, even across documents,
and the API checks uploads in its thread pool. Every PDFium call must run under the one lock of
``aitasks.documents.pdfium``: observed here by wrapping every PDFium C function, then by 20 uploads at once
against a real API."""

from __future__ import annotations

import io
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image, ImageDraw

from aitasks.documents import ocr, pdfium
from aitasks.documents.errors import DocumentError
from aitasks.documents.extract import check_upload, extract
from aitasks.documents.pdf import open_pdf
from stack import Stack

SRC = Path(__file__).resolve().parents[1] / "src" / "aitasks"


def text_pdf(pages: int, seed: int = 0) -> bytes:
    """A PDF with a real text layer, ``pages`` pages (reportlab)."""
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    out = io.BytesIO()
    c = canvas.Canvas(out, pagesize=A4)
    for page in range(pages):
        for line in range(12):
            c.drawString(72, 760 - 18 * line, f"Document {seed} page {page + 1} line {line}: harbour tide tables.")
        c.showPage()
    c.save()
    return out.getvalue()


def scan_pdf() -> bytes:
    """A page that is only an image: extraction flags it for OCR (and looks at its image objects)."""
    image = Image.new("L", (600, 800), 255)
    ImageDraw.Draw(image).rectangle((50, 50, 550, 300), fill=0)
    out = io.BytesIO()
    image.save(out, "PDF", resolution=100.0)
    return out.getvalue()


def encrypted_pdf(data: bytes) -> bytes:
    import pypdf

    writer = pypdf.PdfWriter(clone_from=pypdf.PdfReader(io.BytesIO(data)))
    writer.encrypt("secret-password")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


# --- the lock, observed ------------------------------------------------------------------------------------------


class Observer:
    """Wraps each PDFium C function: counts calls running at once and calls made without the lock."""

    def __init__(self) -> None:
        self.guard = threading.Lock()
        self.active = self.most = self.calls = 0
        self.unlocked: list[str] = []

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            with self.guard:
                self.active += 1
                self.calls += 1
                self.most = max(self.most, self.active)
                if not pdfium.held():
                    self.unlocked.append(name)
            try:
                time.sleep(0)  # let another thread run here if it can: an overlap then shows
                return fn(*args, **kwargs)
            finally:
                with self.guard:
                    self.active -= 1
        return call


@pytest.fixture
def observer(monkeypatch: pytest.MonkeyPatch) -> Observer:
    import ctypes

    with pdfium.locked() as lib:
        raw = lib.raw
    seen = Observer()
    for name in dir(raw):
        fn = getattr(raw, name)
        if name.startswith("FPDF") and isinstance(fn, ctypes._CFuncPtr):  # type: ignore[attr-defined]
            monkeypatch.setattr(raw, name, seen.wrap(name, fn))
    return seen


def render_first_page(data: bytes) -> Image.Image:
    with open_pdf(data) as pdf:
        return ocr.render_pdf_page(pdf, 1, dpi=50)


def test_pdfium_calls_from_many_threads_never_overlap_and_always_hold_the_lock(observer: Observer) -> None:
    texts = [text_pdf(3, seed) for seed in range(4)]
    scan, locked_pdf = scan_pdf(), encrypted_pdf(texts[0])
    work: list[Callable[[], object]] = []
    for data in texts:
        work += [lambda d=data: check_upload(d, "a.pdf"), lambda d=data: extract(d, "a.pdf"),
                 lambda d=data: render_first_page(d)]
    work += [lambda: extract(scan, "scan.pdf"), lambda: render_first_page(scan)]
    refused: list[str] = []

    def run(job: Callable[[], object]) -> None:
        job()
        try:
            check_upload(locked_pdf, "locked.pdf")
        except DocumentError as exc:
            refused.append(exc.code)

    with ThreadPoolExecutor(8) as pool:
        for _ in range(3):
            list(pool.map(run, work))
    assert observer.calls > 500  # the wrappers saw the work
    assert observer.unlocked == [], sorted(set(observer.unlocked))[:10]
    assert observer.most == 1
    assert refused == ["encrypted_document"] * (3 * len(work))


def test_no_module_but_the_owner_imports_pypdfium2() -> None:
    importer = re.compile(r"^\s*(import|from)\s+pypdfium2", re.MULTILINE)
    found = sorted(str(p.relative_to(SRC)) for p in SRC.rglob("*.py") if importer.search(p.read_text()))
    assert found == ["documents/pdfium.py"]


# --- 20 uploads at once against a real API ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def upload_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A deployment whose worker is stopped once it is ready: the uploads' jobs stay queued, only the API works."""
    s = Stack(tmp_path_factory.mktemp("pdfium"), worker_queues=("cpu,gpu",))
    try:
        s.start()
        for worker in s.workers.values():
            worker.stop()
        yield s
    finally:
        s.stop()


@pytest.mark.slow  # its own stack
def test_twenty_concurrent_pdf_uploads_all_answer_and_the_api_stays_up(upload_stack: Stack) -> None:
    good = [text_pdf(2 + i % 5, i) for i in range(14)] + [scan_pdf()] * 2
    bad = [(encrypted_pdf(good[0]), "encrypted_document"), (good[1][: len(good[1]) // 3], "corrupt_document")] * 2
    uploads = [(f"good{i}.pdf", data, None) for i, data in enumerate(good)]
    uploads += [(f"bad{i}.pdf", data, code) for i, (data, code) in enumerate(bad)]
    assert len(uploads) == 20
    start = threading.Barrier(len(uploads))

    def upload(item: tuple[str, bytes, str | None]) -> tuple[str | None, int, dict[str, Any]]:
        name, data, code = item
        with upload_stack.client(timeout=60) as client:
            start.wait()
            r = client.post("/api/v1/documents/", files={"file": (name, data, "application/pdf")})
            return code, r.status_code, r.json()

    for _ in range(2):  # twice: the API is still up and answering after the first wave
        with ThreadPoolExecutor(len(uploads)) as pool:
            answers = list(pool.map(upload, uploads))
        for code, status, body in answers:
            if code is None:
                assert status == 202 and body["status"] == "processing", body
            else:
                assert status == 422 and body["code"] == code, body
                assert [f["field"] for f in body["fields"]] == ["file"], body
        assert upload_stack.api is not None and upload_stack.api.alive()
        assert httpx.get(f"{upload_stack.url}/healthz", timeout=5).status_code == 200
