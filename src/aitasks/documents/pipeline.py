"""The whole pipeline for one document: extract -> OCR -> chunk -> embed -> store.

A job type calls ``ingest_document`` with its context's progress and cancel hooks. Running it twice for
the same document leaves one set of chunks (the store replaces them atomically).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aitasks.documents import ocr
from aitasks.documents.chunking import chunk_pages
from aitasks.documents.embedding import Embedder
from aitasks.documents.errors import EmptyDocument
from aitasks.documents.extract import DEFAULT_LIMITS, DocType, Limits, Page, extract
from aitasks.documents.pdf import open_pdf
from aitasks.documents.store import DocumentWrite, VectorStore, check_document_id, check_tenant, with_vectors

if TYPE_CHECKING:
    import numpy as np

STAGES = ("extract", "ocr", "chunk", "embed", "store")
Progress = Callable[[str, float], None]  # (stage, fraction of that stage done in [0, 1])
# (chunk texts, check_cancel, progress(fraction)) -> one unit vector per text: a job's hook into a shared,
# batched model call
Encode = Callable[[list[str], Callable[[], None], Callable[[float], None]], "np.ndarray"]
# (store, the document's write) -> chunks stored: a job's hook into a shared commit of several documents
Write = Callable[[VectorStore, DocumentWrite], int]


@dataclass(frozen=True)
class ReadResult:
    doc_type: DocType
    pages: list[Page]
    ocr_pages: int


@dataclass(frozen=True)
class IngestResult:
    doc_type: str
    pages: int
    ocr_pages: int
    chunks: int
    tokens: int


def _noop(stage: str, fraction: float) -> None:
    return None


def read_document(data: bytes, filename: str | None = None, content_type: str | None = None,
                  limits: Limits = DEFAULT_LIMITS, lang: str = "eng", progress: Progress = _noop,
                  check_cancel: Callable[[], None] = lambda: None) -> ReadResult:
    """Extract every page's text, OCR-ing the pages that need it. Raises DocumentError subclasses."""
    progress("extract", 0.0)
    doc_type, pages = extract(data, filename, content_type, limits)
    progress("extract", 1.0)
    todo = [i for i, p in enumerate(pages) if p.needs_ocr]
    if todo:
        progress("ocr", 0.0)
        if doc_type is DocType.PDF:
            with open_pdf(data, limits) as pdf:  # opened once for every page; each rendering takes the lock
                for done, i in enumerate(todo):
                    check_cancel()
                    number = pages[i].number or (i + 1)
                    pages[i] = Page(number, ocr.ocr_image(ocr.render_pdf_page(pdf, number), lang=lang), False)
                    progress("ocr", (done + 1) / len(todo))
        else:  # an image scan: one page
            pages[0] = Page(pages[0].number, ocr.ocr_scan(data, lang=lang, max_pixels=limits.max_image_pixels), False)
            progress("ocr", 1.0)
    if not any(p.text.strip() for p in pages):
        raise EmptyDocument("The document contains no text" + (" (OCR found none either)." if todo else "."))
    return ReadResult(doc_type, pages, len(todo))


def ingest_document(store: VectorStore, embedder: Embedder, tenant: str, document_id: str, data: bytes, *,
                    filename: str | None = None, content_type: str | None = None,
                    metadata: Mapping[str, Any] | None = None, limits: Limits = DEFAULT_LIMITS,
                    chunk_tokens: int = 200, overlap_tokens: int = 40, batch_size: int = 32,
                    progress: Progress = _noop, check_cancel: Callable[[], None] = lambda: None,
                    encode: Encode | None = None, write: Write | None = None) -> IngestResult:
    """Read, chunk, embed and store one document, replacing any chunks it had. ``encode``: where the
    chunks are embedded (documents/batched.py shares the model between jobs); default the embedder's own
    call, ``batch_size`` chunks at a time. ``write``: where they are stored (documents/batched.py
    commits several jobs' documents at once); default the store's own ``replace_document``."""
    check_tenant(tenant)
    check_document_id(document_id)  # refuse a bad id before minutes of OCR, not after
    read = read_document(data, filename, content_type, limits, progress=progress, check_cancel=check_cancel)
    check_cancel()
    progress("chunk", 0.0)
    # this thread's tokenizer: another thread may be running the model (and its tokenizer) meanwhile
    chunks = chunk_pages(read.pages, embedder.thread_tokenizer(), embedder.max_tokens, chunk_tokens, overlap_tokens)
    progress("chunk", 1.0)
    vectors = []
    if encode is not None:  # the hook cuts the chunks into its own batches, shared with other jobs
        check_cancel()
        progress("embed", 0.0)
        vectors.append(encode([c.text for c in chunks], check_cancel, lambda done: progress("embed", done)))
        progress("embed", 1.0)
    for start in range(0, len(chunks), batch_size) if encode is None else ():
        check_cancel()
        vectors.append(embedder.encode([c.text for c in chunks[start:start + batch_size]], batch_size=batch_size))
        progress("embed", min(1.0, (start + batch_size) / len(chunks)))
    check_cancel()
    progress("store", 0.0)
    import numpy as np

    matrix = np.concatenate(vectors) if vectors else np.zeros((0, embedder.dimension), dtype=np.float32)
    stored = with_vectors(chunks, matrix)
    if write is None:
        store.replace_document(tenant, document_id, stored, filename=filename, metadata=metadata)
    else:
        write(store, DocumentWrite(tenant, document_id, stored, filename, metadata))
    progress("store", 1.0)
    return IngestResult(read.doc_type.value, len(read.pages), read.ocr_pages, len(chunks),
                        sum(c.token_count for c in chunks))
