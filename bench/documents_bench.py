"""The document pipeline's throughput, each number next to the plain library call it wraps, same run.

    .venv/bin/python -m bench.documents_bench            # about 1.5 minutes
    .venv/bin/python -m bench.documents_bench --quick    # about 30 seconds
    .venv/bin/python -m bench.run_all --only documents   # the same, inside `make bench`

Everything runs in this process on files it makes (reportlab, PIL), into an embedded LanceDB store in a
temporary folder that is removed at the end; nothing listens on a port.

(a) Pages per second through the whole pipeline, ``pipeline.ingest_document`` (extract, chunk with the
    model's tokenizer, embed, store), on an N-page PDF with a text layer, re-ingesting the same document
    (each run replaces the last one's chunks, as a retried job does). The progress callback's timestamps
    split the time by stage. Baseline: pypdfium2's own text extraction of the same pages (open, per page
    ``get_textpage().get_text_range()``), the library call under the extract stage. Two ratios: whole
    pipeline / baseline (what a page costs beyond reading its text: mostly the embedding), and extract
    stage / baseline (what ``extract.py`` adds around the call: checks, image detection, normalising).
(a') OCR pages per second on M scanned pages (an image-only PDF): the pipeline's OCR stage (render each
    page at 300 dpi with pypdfium2, Tesseract via ``ocr.ocr_image``) and the whole ``ingest_document``,
    next to plain ``pytesseract.image_to_string`` on the same rendered images: with pytesseract's defaults,
    and with the ``OMP_THREAD_LIMIT=1`` the pipeline gives Tesseract (so that ratio is the pipeline's own
    cost: rendering, normalising).
(b) Chunks per second through the pipeline's embedding, ``Embedder.encode`` (batch 32, unit vectors as
    float32), next to the model's own ``SentenceTransformer.encode`` on the same chunk texts with the same
    batch size. Rounds alternate (and which goes first alternates).

Each number is the best of its rounds (the machine may be shared: the fastest round is the one least
disturbed, for the pipeline and its baseline alike).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.procs import quick_flag
from bench.search_corpus import BRIDGE, GREENHOUSE, KIMCHI, LAB, TERN, image_pdf, scan_image, text_pdf

TENANT = "bench"
BATCH = 32


def settings(quick: bool) -> dict[str, int]:
    if quick:
        return {"pages": 8, "rounds": 1, "ocr_pages": 1, "ocr_rounds": 1, "embed_rounds": 2}
    return {"pages": 20, "rounds": 6, "ocr_pages": 3, "ocr_rounds": 2, "embed_rounds": 6}


# --- the documents -------------------------------------------------------------------------------


def _paragraphs() -> list[str]:
    paragraphs = [p for doc in (GREENHOUSE, BRIDGE) for page in doc.pages for p in page]
    paragraphs += [p for doc in (KIMCHI, TERN) for p in doc.pages[0][1:]] + LAB.pages[0]
    return paragraphs


def long_pdf(pages: int) -> bytes:
    """``pages`` pages of ~300 tokens each (about two chunks a page), no two pages alike."""
    pool = _paragraphs()
    return text_pdf([[f"Section {n + 1}. " + pool[(n * 4 + k) % len(pool)] for k in range(4)]
                     for n in range(pages)])


def scanned_pdf(pages: int) -> bytes:
    """``pages`` image-only pages, each ~12 lines of text as pixels (200 dpi)."""
    words = " ".join(_paragraphs()).split()
    images = []
    for n in range(pages):
        start = n * 90
        lines = [" ".join(words[(start + i * 6) % len(words):][:6]) for i in range(12)]
        images.append(scan_image([f"Scanned page {n + 1}"] + lines))
    return image_pdf(images)


# --- measurements --------------------------------------------------------------------------------


class StageClock:
    """A ``progress`` callback that splits the time by stage: a stage runs from the previous stage's last
    report (or its own first, for the first stage) to its own last one (embed reports only after a batch)."""

    def __init__(self) -> None:
        self.first: dict[str, float] = {}
        self.last: dict[str, float] = {}

    def __call__(self, stage: str, fraction: float) -> None:
        now = time.perf_counter()
        self.first.setdefault(stage, now)
        self.last[stage] = now

    def seconds(self) -> dict[str, float]:
        out, previous = {}, None
        for stage in self.first:  # dicts keep the order the stages reported in
            out[stage] = self.last[stage] - (self.first[stage] if previous is None else self.last[previous])
            previous = stage
        return out


def pdfium_text(data: bytes) -> int:
    """The baseline: pypdfium2's text of every page (as ``extract_pdf`` calls it), returns the characters."""
    import pypdfium2 as pdfium  # type: ignore[import-untyped]

    pdf = pdfium.PdfDocument(data)
    chars = 0
    try:
        for i in range(len(pdf)):
            page = pdf[i]
            textpage = page.get_textpage()
            chars += len(textpage.get_text_range())
            textpage.close()
            page.close()
    finally:
        pdf.close()
    return chars


def _timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def pipeline_pages(store: Any, embedder: Any, data: bytes, pages: int, rounds: int) -> dict[str, Any]:
    from aitasks.documents.pipeline import ingest_document

    baseline_reps = 20  # the baseline takes milliseconds: best of 20 within each round
    warm = long_pdf(2)  # first calls of the tokenizer, the model and the table, on another document
    ingest_document(store, embedder, TENANT, "warm", warm, filename="warm.pdf")
    pdfium_text(warm)
    runs, stages, base, result = [], [], [], None
    for _ in range(rounds):
        clock = StageClock()
        started = time.perf_counter()
        result = ingest_document(store, embedder, TENANT, "long", data, filename="long.pdf", progress=clock)
        runs.append(time.perf_counter() - started)
        stages.append(clock.seconds())
        base.append(min(_timed(lambda: pdfium_text(data)) for _ in range(baseline_reps)))
    assert result is not None and result.pages == pages
    best = runs.index(min(runs))
    pipeline_s, base_s, stage_s = runs[best], min(base), stages[best]
    return {
        "pages": pages, "chunks": result.chunks, "tokens": result.tokens, "rounds": rounds,
        "pipeline_pages_per_s": round(pages / pipeline_s, 2),
        "baseline_pages_per_s": round(pages / base_s, 1),
        "ratio": round(base_s / pipeline_s, 5),  # pipeline pages/s / baseline pages/s
        "extract_stage_pages_per_s": round(pages / stage_s["extract"], 1),
        "extract_ratio": round(base_s / stage_s["extract"], 3),
        "embed_stage_chunks_per_s": round(result.chunks / stage_s["embed"], 2),
        "stage_ms": {s: round(v * 1000, 1) for s, v in stage_s.items()},
        "pipeline_s": round(pipeline_s, 3), "baseline_ms": round(base_s * 1000, 2),
    }


def ocr_pages(store: Any, embedder: Any, data: bytes, pages: int, rounds: int) -> dict[str, Any]:
    import pypdfium2 as pdfium  # type: ignore[import-untyped]
    import pytesseract  # type: ignore[import-untyped]

    from aitasks.documents import ocr
    from aitasks.documents.pipeline import ingest_document

    module = pytesseract.pytesseract
    saved_env = module.environ  # ocr_image replaces it (OMP_THREAD_LIMIT=1); put back what was there
    pdf = pdfium.PdfDocument(data)
    try:
        images = [ocr.render_pdf_page(pdf, n) for n in range(1, pages + 1)]  # the pipeline's own rendering
    finally:
        pdf.close()

    def plain(env: Any) -> float:
        module.environ = env
        return _timed(lambda: [pytesseract.image_to_string(image) for image in images])

    ocr.tesseract_version()
    whole, stage, plain_default, plain_one = [], [], [], []
    try:
        for _ in range(rounds):
            plain_default.append(plain(os.environ))
            clock = StageClock()
            whole.append(_timed(lambda: ingest_document(store, embedder, TENANT, "scan", data, filename="scan.pdf",
                                                        progress=clock)))
            stage.append(clock.seconds()["ocr"])
            plain_one.append(plain({**os.environ, "OMP_THREAD_LIMIT": "1"}))
    finally:
        module.environ = saved_env
    med = {k: min(v) for k, v in
           (("whole", whole), ("stage", stage), ("default", plain_default), ("one", plain_one))}
    return {
        "pages": pages, "rounds": rounds, "image_size": list(images[0].size),
        "pipeline_pages_per_s": round(pages / med["whole"], 3),
        "ocr_stage_pages_per_s": round(pages / med["stage"], 3),
        "plain_pages_per_s": round(pages / med["default"], 3),
        "plain_omp1_pages_per_s": round(pages / med["one"], 3),
        "ratio_stage_vs_plain": round(med["default"] / med["stage"], 3),
        "ratio_stage_vs_plain_omp1": round(med["one"] / med["stage"], 3),
        "ratio_pipeline_vs_plain": round(med["default"] / med["whole"], 3),
    }


def embedding_chunks(embedder: Any, texts: list[str], rounds: int) -> dict[str, Any]:
    model = embedder.model
    embedder.encode(texts[:BATCH], batch_size=BATCH)  # warm both paths
    model.encode(texts[:BATCH], batch_size=BATCH, show_progress_bar=False)
    ours, plain = [], []
    for i in range(rounds):  # alternate which goes first, so a drift in load hits both alike
        for which in ((0, 1) if i % 2 == 0 else (1, 0)):
            if which == 0:
                plain.append(_timed(lambda: model.encode(texts, batch_size=BATCH, show_progress_bar=False)))
            else:
                ours.append(_timed(lambda: embedder.encode(texts, batch_size=BATCH)))
    ours_s, plain_s = min(ours), min(plain)
    return {
        "chunks": len(texts), "batch_size": BATCH, "rounds": rounds,
        "mean_tokens": round(statistics.fmean(embedder.count_tokens(t) for t in texts), 1),
        "embedder_chunks_per_s": round(len(texts) / ours_s, 2),
        "model_chunks_per_s": round(len(texts) / plain_s, 2),
        "ratio": round(plain_s / ours_s, 3),
        "torch_threads": _torch_threads(),
    }


def _torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())


def run(quick: bool = False) -> dict[str, Any]:
    from aitasks.documents.chunking import chunk_pages
    from aitasks.documents.embedding import load_embedder
    from aitasks.documents.extract import extract
    from aitasks.documents.lancedb_store import LanceDBStore

    cfg = settings(quick)
    started = time.perf_counter()
    embedder = load_embedder()
    long, scans = long_pdf(cfg["pages"]), scanned_pdf(cfg["ocr_pages"])
    _, pages = extract(long, "long.pdf")
    texts = [c.text for c in chunk_pages(pages, embedder.tokenizer, embedder.max_tokens)]
    with tempfile.TemporaryDirectory(prefix="aitasks-bench-documents-") as tmp:
        store = LanceDBStore(Path(tmp) / "vectors", dimension=embedder.dimension)
        print(f"  (a) {cfg['pages']}-page text PDF through ingest_document vs pypdfium2 text extraction", flush=True)
        text = pipeline_pages(store, embedder, long, cfg["pages"], cfg["rounds"])
        print(f"  (a') {cfg['ocr_pages']} scanned pages: OCR stage vs pytesseract.image_to_string", flush=True)
        scanned = ocr_pages(store, embedder, scans, cfg["ocr_pages"], cfg["ocr_rounds"])
    print(f"  (b) {len(texts)} chunks: Embedder.encode vs SentenceTransformer.encode", flush=True)
    embedding = embedding_chunks(embedder, texts, cfg["embed_rounds"])
    return {"settings": cfg, "model": embedder.name, "model_load_ms": embedder.load_ms, "text_pdf": text,
            "ocr": scanned, "embedding": embedding, "elapsed_s": round(time.perf_counter() - started, 1)}


def render(result: dict[str, Any]) -> str:
    t, o, e = result["text_pdf"], result["ocr"], result["embedding"]
    st = t["stage_ms"]
    lines = [
        "",
        f"documents: {result['model']} (loaded in {result['model_load_ms'] / 1000:.1f} s), whole run "
        f"{result['elapsed_s']:.0f} s",
        f"  (a) {t['pages']}-page text PDF, {t['chunks']} chunks, best of {t['rounds']}: ingest_document "
        f"{t['pipeline_pages_per_s']:.1f} pages/s vs pypdfium2 text {t['baseline_pages_per_s']:.0f} pages/s "
        f"= {t['ratio']:.4f}x",
        f"      stages (ms): extract {st.get('extract', 0):.0f}, chunk {st.get('chunk', 0):.0f}, "
        f"embed {st.get('embed', 0):.0f}, store {st.get('store', 0):.0f}; extract stage "
        f"{t['extract_stage_pages_per_s']:.0f} pages/s = {t['extract_ratio']:.2f}x the bare call; embed stage "
        f"{t['embed_stage_chunks_per_s']:.1f} chunks/s",
        f"  (a') {o['pages']} scanned pages ({o['image_size'][0]}x{o['image_size'][1]} px rendered), best of "
        f"{o['rounds']}: OCR stage {o['ocr_stage_pages_per_s']:.2f} pages/s, whole ingest "
        f"{o['pipeline_pages_per_s']:.2f} pages/s; plain image_to_string {o['plain_pages_per_s']:.2f} pages/s "
        f"(OMP_THREAD_LIMIT=1: {o['plain_omp1_pages_per_s']:.2f})",
        f"      OCR stage / plain = {o['ratio_stage_vs_plain']:.2f}x; / plain with OMP_THREAD_LIMIT=1 = "
        f"{o['ratio_stage_vs_plain_omp1']:.2f}x; whole ingest / plain = {o['ratio_pipeline_vs_plain']:.2f}x",
        f"  (b) {e['chunks']} chunks (mean {e['mean_tokens']:.0f} tokens), batch {e['batch_size']}, best of "
        f"{e['rounds']}: Embedder.encode {e['embedder_chunks_per_s']:.1f} chunks/s vs SentenceTransformer.encode "
        f"{e['model_chunks_per_s']:.1f} chunks/s = {e['ratio']:.3f}x (torch threads {e['torch_threads']})",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    print(render(run(quick_flag("python -m bench.documents_bench", __doc__, argv, "fewer pages and rounds (about 30 s)"))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
