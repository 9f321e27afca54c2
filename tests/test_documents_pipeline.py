"""The document pipeline as a library (aitasks.documents), on real files the tests make themselves:
real PDFs (reportlab, PIL, pypdfium2), a real DOCX (python-docx), real Tesseract, the real embedding model
and a real LanceDB folder. No mocks."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from aitasks.documents.chunking import chunk_pages
from aitasks.documents.embedding import Embedder, load_embedder
from aitasks.documents.errors import (
    CorruptDocument,
    DocumentError,
    DocumentTooLarge,
    DocumentTypeMismatch,
    EmptyDocument,
    EncryptedDocument,
    UnsupportedDocument,
)
from aitasks.documents.extract import DocType, Limits, Page, check_upload, decode_text, extract
from aitasks.documents.lancedb_store import LanceDBStore
from aitasks.documents.pipeline import ingest_document, read_document
from aitasks.documents.store import StoredChunk

pytestmark = pytest.mark.slow  # the sentence-transformers model

# Tesseract and this font come from scripts/ensure-tesseract.sh (`make install`). Without them these tests
# fail (OcrUnavailable says how to install) rather than skip: a skipped OCR test would hide a missing step.
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"

# --- the documents ----------------------------------------------------------------------------------

LIGHTHOUSE = [
    "The Bell Rock lighthouse stands on a reef eleven miles off the coast of Angus in Scotland. "
    "Robert Stevenson built it between 1807 and 1810, and it is the oldest surviving sea-washed lighthouse "
    "in the world. Its tower is made of dovetailed granite and sandstone blocks that lock together so that "
    "the waves cannot pull them apart. The painter J. M. W. Turner made a watercolour of the tower in a storm.",
    "For more than a century three keepers lived in the tower at a time, rowing out on a relief boat and "
    "staying for weeks while the weather allowed no landing. The light was converted to run automatically "
    "in 1988, and on that day the last keepers left the rock for good. Since then the lamp has been "
    "monitored remotely from Edinburgh.",
]
EXPENSES = [
    "Employees who travel for work may claim a second-class rail ticket or, when no train goes there, the "
    "cheapest reasonable flight. Taxis are refunded only late at night or when carrying heavy equipment.",
    "Hotel bills are reimbursed up to one hundred and twenty euros per night when an itemised receipt is "
    "attached to the claim. Minibar items, films and laundry are never refunded. Claims must be filed "
    "within thirty days of the trip or they lapse.",
]
BEES = [
    "Honey bees tell their sisters where flowers are by performing a waggle dance on the comb. The angle "
    "of the dance relative to gravity gives the direction of the food source relative to the sun, and "
    "the length of the waggle run tells how far away it is.",
    "A colony in summer holds up to sixty thousand workers, a few hundred drones and a single queen, who "
    "lays as many as two thousand eggs a day during the peak of the season.",
]
SCAN_LINES = [
    "Notice to all drivers",
    "The warehouse in Rotterdam closes at",
    "six o'clock every Friday evening for",
    "the weekly inventory count. Deliveries",
    "arriving later wait until Monday.",
]
SOURDOUGH = (
    "Feeding a sourdough starter\n\n"
    "Keep the starter in a glass jar at room temperature and feed it every day with equal weights of flour "
    "and water. It is ready to use when it doubles in size within six hours.\n\n"
    "Baking the loaf\n\n"
    "After shaping, leave the dough to prove in the refrigerator overnight, about twelve to sixteen hours, "
    "so that it develops a sour flavour. Bake it in a covered cast-iron pot at two hundred and fifty degrees "
    "for twenty minutes, then uncover it for another twenty-five."
)


def text_pdf(pages: list[list[str]]) -> bytes:
    """A PDF with a real text layer: one page per list of paragraphs (reportlab)."""
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.platypus import PageBreak, Paragraph, SimpleDocTemplate

    out = io.BytesIO()
    style = getSampleStyleSheet()["BodyText"]
    story: list[object] = []
    for i, paragraphs in enumerate(pages):
        if i:
            story.append(PageBreak())
        story.extend(Paragraph(p, style) for p in paragraphs)
    SimpleDocTemplate(out, pagesize=A4).build(story)
    return out.getvalue()


def scan_image(lines: list[str]) -> Image.Image:
    """A 'scanned' letter-size page at 200 dpi: text as pixels only."""
    image = Image.new("L", (1700, 2200), 255)
    draw = ImageDraw.Draw(image)
    font = ImageFont.truetype(FONT, 48)
    for i, line in enumerate(lines):
        draw.text((150, 200 + i * 80), line, fill=0, font=font)
    return image


def image_pdf(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PDF", resolution=200.0)
    return out.getvalue()


def image_bytes(image: Image.Image, fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


def merge_pdfs(*documents: bytes) -> bytes:
    import pypdfium2 as pdfium  # type: ignore[import-untyped]

    merged = pdfium.PdfDocument.new()
    for data in documents:
        merged.import_pages(pdfium.PdfDocument(data))
    out = io.BytesIO()
    merged.save(out)
    return out.getvalue()


def policies_docx() -> bytes:
    """A DOCX with a paragraph, a table and a paragraph after it (python-docx)."""
    import docx

    document = docx.Document()
    document.add_heading("Leave policy", level=1)
    document.add_paragraph("Remote work is allowed up to three days a week with the agreement of your manager.")
    table = document.add_table(rows=1, cols=2)
    table.rows[0].cells[0].text = "Country"
    table.rows[0].cells[1].text = "Annual holiday allowance"
    for country, days in (("Germany", "30 working days"), ("France", "25 working days"),
                          ("Japan", "10 working days plus public holidays")):
        row = table.add_row()
        row.cells[0].text = country
        row.cells[1].text = days
    document.add_paragraph("Unused holiday may be carried over until the end of March.")
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return load_embedder()  # once for the module: ~1-5 s


@pytest.fixture(scope="module")
def handbook_pdf() -> bytes:
    return text_pdf([LIGHTHOUSE, EXPENSES, BEES])


# --- extraction ------------------------------------------------------------------------------------


def test_pdf_pages_are_numbered_from_one_with_their_text(handbook_pdf: bytes) -> None:
    doc_type, pages = extract(handbook_pdf, "handbook.pdf", "application/pdf")
    assert doc_type is DocType.PDF
    assert [p.number for p in pages] == [1, 2, 3]
    assert not any(p.needs_ocr for p in pages)
    assert "Bell Rock" in pages[0].text and "1988" in pages[0].text
    assert "receipt" in pages[1].text and "waggle dance" in pages[2].text
    assert check_upload(handbook_pdf, "handbook.pdf") is DocType.PDF


def test_docx_keeps_paragraphs_and_table_rows_in_document_order() -> None:
    doc_type, pages = extract(policies_docx(), "policies.docx")
    assert doc_type is DocType.DOCX and check_upload(policies_docx(), "policies.docx") is DocType.DOCX
    assert len(pages) == 1 and pages[0].number is None
    text = pages[0].text
    assert "Germany | 30 working days" in text
    assert text.index("Remote work") < text.index("Germany") < text.index("carried over")


def test_text_markdown_and_html() -> None:
    _, pages = extract(SOURDOUGH.encode(), "notes.txt")
    assert pages == [Page(None, pages[0].text, False)] and "cast-iron pot" in pages[0].text
    assert extract("# Title\n\nSome *markdown* text.".encode(), "readme.md")[0] is DocType.MARKDOWN
    html = (b"<!DOCTYPE html><html><head><title>T</title><style>p{color:red}</style>"
            b"<script>var secret = 'do not index';</script></head><body><h1>Opening hours</h1>"
            b"<p>We open at nine &amp; close at five.</p><table><tr><td>Mon</td><td>9-17</td></tr></table></body></html>")
    doc_type, pages = extract(html, "hours.html")
    assert doc_type is DocType.HTML
    assert "We open at nine & close at five." in pages[0].text and "Mon | 9-17" in pages[0].text
    assert "secret" not in pages[0].text and "color" not in pages[0].text
    assert extract(html)[0] is DocType.HTML  # no name: the content says HTML


def test_text_encodings() -> None:
    assert decode_text("Café crème".encode("utf-8-sig")) == "Café crème"
    assert decode_text("Café crème".encode("utf-8")) == "Café crème"
    assert decode_text("Café crème".encode("latin-1")) == "Café crème"
    assert decode_text("“smart” quotes".encode("cp1252")) == "“smart” quotes"
    assert decode_text("Grüße".encode("utf-16")) == "Grüße"


def test_scanned_pdf_page_is_flagged_then_read_by_ocr(handbook_pdf: bytes) -> None:
    mixed = merge_pdfs(handbook_pdf, image_pdf(scan_image(SCAN_LINES)))
    _, pages = extract(mixed, "mixed.pdf")
    assert [p.needs_ocr for p in pages] == [False, False, False, True]
    read = read_document(mixed, "mixed.pdf")
    assert read.ocr_pages == 1
    assert read.pages[3].number == 4
    assert "warehouse in Rotterdam" in read.pages[3].text and "Friday" in read.pages[3].text
    assert read.pages[0].text.startswith("The Bell Rock")  # text-layer pages untouched


@pytest.mark.parametrize(("fmt", "name", "doc_type"), [("PNG", "notice.png", DocType.PNG),
                                                      ("JPEG", "notice.jpg", DocType.JPEG)])
def test_image_scan_is_one_ocr_page(fmt: str, name: str, doc_type: DocType) -> None:
    read = read_document(image_bytes(scan_image(SCAN_LINES), fmt), name)
    assert read.doc_type is doc_type and read.ocr_pages == 1
    assert [p.number for p in read.pages] == [1]
    assert "inventory count" in read.pages[0].text


# --- bad input -------------------------------------------------------------------------------------


def encrypted_pdf(data: bytes) -> bytes:
    import pypdf

    writer = pypdf.PdfWriter(clone_from=pypdf.PdfReader(io.BytesIO(data)))
    writer.encrypt("secret-password")  # RC4: pypdf needs no extra package for it
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def zip_bomb_docx(inflated_bytes: int) -> bytes:
    """A real DOCX with one extra part of zeros that deflates ~1000x (parts are never inflated by the check)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(policies_docx())) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            dst.writestr(item, src.read(item))
        with dst.open("word/media/padding.bin", "w") as part:
            chunk = bytes(1024 * 1024)
            for _ in range(inflated_bytes // len(chunk)):
                part.write(chunk)
    return out.getvalue()


@pytest.mark.parametrize(
    ("make", "filename", "limits", "error", "words"),
    [
        (lambda pdf: encrypted_pdf(pdf), "locked.pdf", Limits(), EncryptedDocument, "password"),
        (lambda pdf: pdf[: len(pdf) // 3], "truncated.pdf", Limits(), CorruptDocument, "damaged"),
        (lambda pdf: b"%PDF-1.7\n" + bytes(range(256)) * 40, "garbage.pdf", Limits(), CorruptDocument, "damaged"),
        (lambda pdf: b"", "empty.pdf", Limits(), EmptyDocument, "empty"),
        (lambda pdf: b"  \n\t ", "blank.txt", Limits(), EmptyDocument, "empty"),
        (lambda pdf: text_pdf([[""]]), "blankpage.txt", Limits(), DocumentTypeMismatch, ".txt"),
        (lambda pdf: pdf, "handbook.docx", Limits(), DocumentTypeMismatch, "PDF"),
        (lambda pdf: policies_docx(), "policies.pdf", Limits(), DocumentTypeMismatch, "DOCX"),
        (lambda pdf: b"just some plain words", "scan.png", Limits(), DocumentTypeMismatch, "plain text"),
        (lambda pdf: b"just some plain words", "fake.docx", Limits(), DocumentTypeMismatch, "plain text"),
        (lambda pdf: b"\x00\x01binary\x00" * 100, "fake.docx", Limits(), DocumentTypeMismatch, "binary"),
        (lambda pdf: b"PK\x03\x04 not really a zip", "broken.docx", Limits(), CorruptDocument, "zip"),
        (lambda pdf: b"GIF89a" + bytes(100), "anim.gif", Limits(), UnsupportedDocument, ".gif"),
        (lambda pdf: b"GIF89a" + bytes(100), None, Limits(), UnsupportedDocument, "GIF"),
        (lambda pdf: b"a,b\n1,2\n", "sheet.xlsx", Limits(), UnsupportedDocument, ".xlsx"),
        (lambda pdf: zip_bomb_docx(8 * 1024 * 1024), "bomb.docx", Limits(), DocumentTooLarge, "zip bomb"),
        (lambda pdf: zip_bomb_docx(8 * 1024 * 1024), "bomb.docx",
         Limits(max_docx_uncompressed_bytes=4 * 1024 * 1024, max_docx_ratio=1e9), DocumentTooLarge, "MiB"),
        (lambda pdf: text_pdf([["page"]] * 12), "long.pdf", Limits(max_pages=10), DocumentTooLarge, "12 pages"),
        (lambda pdf: text_pdf([[""]]), "blank.pdf", Limits(min_page_chars=0), EmptyDocument, "no text"),
        (lambda pdf: image_bytes(Image.new("L", (200, 100), 255)), "big.png", Limits(max_image_pixels=10_000),
         DocumentTooLarge, "200x100 pixels"),
        (lambda pdf: image_bytes(Image.new("L", (200, 100), 255))[:60], "cut.png", Limits(), CorruptDocument,
         "damaged"),
    ],
    ids=["encrypted-pdf", "truncated-pdf", "corrupt-pdf", "empty", "blank-text", "pdf-named-txt",
         "pdf-named-docx", "docx-named-pdf", "text-named-png", "text-named-docx", "binary-named-docx",
         "broken-zip-docx", "gif", "gif-unnamed", "xlsx", "zip-bomb-ratio", "zip-bomb-total", "too-many-pages",
         "pdf-without-text", "image-too-large", "truncated-png"],
)
def test_bad_input_raises_a_clear_error(handbook_pdf: bytes, make: Callable[[bytes], bytes], filename: str | None,
                                        limits: Limits, error: type[DocumentError], words: str) -> None:
    data = make(handbook_pdf)
    with pytest.raises(error) as caught:
        read_document(data, filename, limits=limits)
    assert words.lower() in str(caught.value).lower()
    assert caught.value.code and 400 <= caught.value.status < 500
    if error is not EmptyDocument or not data.strip():  # "no text" is only known once the text is read
        with pytest.raises(error):
            check_upload(data, filename, limits=limits)


def test_xlsx_content_named_docx_is_not_a_word_document() -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        z.writestr("xl/workbook.xml", "<workbook/>")
    with pytest.raises(UnsupportedDocument, match="spreadsheet"):
        extract(out.getvalue(), "book.docx")


def test_scanned_pdf_with_no_readable_text_is_empty() -> None:
    with pytest.raises(EmptyDocument, match="OCR found none"):
        read_document(image_pdf(Image.new("L", (850, 1100), 255)), "white.pdf")


# --- chunking --------------------------------------------------------------------------------------


def test_chunks_respect_the_model_limit_keep_pages_and_overlap(embedder: Embedder) -> None:
    assert embedder.max_tokens == 254  # MiniLM: 256 less [CLS] and [SEP]
    sentence = "The keeper climbed {n} steps to polish the great lens before the evening light was lit."
    long_page = " ".join(sentence.format(n=n) for n in range(120))
    run_on = "word " * 700  # one "sentence" far over the limit: cut at token boundaries
    pages = [Page(1, long_page), Page(2, "A short second page."), Page(3, ""), Page(4, run_on)]
    chunks = chunk_pages(pages, embedder.tokenizer, embedder.max_tokens, chunk_tokens=1000, overlap_tokens=40)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert {c.page for c in chunks} == {1, 2, 4}
    for chunk in chunks:
        assert chunk.token_count == embedder.count_tokens(chunk.text) <= 254
    page1 = [c for c in chunks if c.page == 1]
    assert len(page1) > 5
    for chunk in page1:  # whole sentences: every chunk starts and ends on a sentence boundary
        assert chunk.text.startswith("The keeper") and chunk.text.endswith("lit.")
    for before, after in zip(page1, page1[1:], strict=False):  # the next chunk repeats the previous one's end
        assert after.text.split(". ")[0] in before.text
    assert [c.text for c in chunks if c.page == 2] == ["A short second page."]
    smaller = chunk_pages(pages[:1], embedder.tokenizer, embedder.max_tokens, chunk_tokens=100, overlap_tokens=0)
    assert max(c.token_count for c in smaller) <= 100 and len(smaller) > len(page1)


# --- embeddings and the store ----------------------------------------------------------------------


def test_embedder_loads_once_and_returns_unit_vectors(embedder: Embedder) -> None:
    from aitasks.documents import embedding

    loads = embedding.LOADS
    assert load_embedder() is embedder and embedding.LOADS == loads >= 1  # cached: no second load
    vectors = embedder.encode(["a lighthouse on a reef", "bees dance to share directions"])
    assert vectors.shape == (2, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


@pytest.fixture
def store(tmp_path: Path) -> LanceDBStore:
    return LanceDBStore(tmp_path / "vectors", dimension=384)


@pytest.fixture
def ingested(store: LanceDBStore, embedder: Embedder, handbook_pdf: bytes) -> LanceDBStore:
    """Tenant acme: handbook (3 text pages + 1 scanned page), policies.docx, notes.txt; tenant globex:
    its own handbook under the same document id, about something else."""
    handbook = merge_pdfs(handbook_pdf, image_pdf(scan_image(SCAN_LINES)))
    small: dict[str, Any] = {"chunk_tokens": 80, "overlap_tokens": 16}  # several chunks a page: the right chunk
    ingest_document(store, embedder, "acme", "handbook", handbook, filename="handbook.pdf",
                    metadata={"department": "ops", "year": 2026}, **small)
    ingest_document(store, embedder, "acme", "policies", policies_docx(), filename="policies.docx",
                    metadata={"department": "hr"}, **small)
    ingest_document(store, embedder, "acme", "notes", SOURDOUGH.encode(), filename="notes.txt", **small)
    ingest_document(store, embedder, "globex", "handbook",
                    text_pdf([["Globex sells industrial adhesives in drums of two hundred litres. Orders ship "
                               "from Springfield within five working days."]]), filename="globex.pdf")
    return store


PARAPHRASES = [
    # (question in other words, document, page, a phrase the right chunk holds)
    ("When did the rock's beacon stop needing people to run it?", "handbook", 1, "1988"),
    ("How much is refunded for a night's accommodation on a business trip?", "handbook", 2, "hundred and twenty euros"),
    ("How do insects let the hive know which way the blossoms are?", "handbook", 3, "waggle dance"),
    ("How much paid vacation does staff in Germany get each year?", "policies", None, "Germany | 30"),
    ("How long should the bread rest in the fridge before baking?", "notes", None, "refrigerator overnight"),
]


def test_paraphrased_questions_find_the_right_chunk_first(ingested: LanceDBStore, embedder: Embedder) -> None:
    for question, document_id, page, phrase in PARAPHRASES:
        hits = ingested.search("acme", embedder.encode_query(question), question, top_k=3)
        top = hits[0]
        assert (top.document_id, top.page) == (document_id, page), (question, [(h.document_id, h.page, h.score) for h in hits])
        assert phrase in top.text, (question, top.text)
        assert all(h.score >= hits[i + 1].score for i, h in enumerate(hits[:-1]))


def test_ocr_page_text_is_found_at_its_page(ingested: LanceDBStore, embedder: Embedder) -> None:
    question = "What time does the Dutch depot shut at the end of the week?"
    top = ingested.search("acme", embedder.encode_query(question), question, top_k=3)[0]
    assert (top.document_id, top.page, top.filename) == ("handbook", 4, "handbook.pdf")
    assert "Rotterdam" in top.text


def test_tenants_never_see_each_other(ingested: LanceDBStore, embedder: Embedder) -> None:
    question = "When was the lighthouse automated?"
    vector = embedder.encode_query(question)
    globex = ingested.search("globex", vector, question, top_k=10)
    assert globex and all("Globex" in h.text for h in globex)  # only its own handbook, same document id
    assert ingested.search("initech", vector, question, top_k=10) == []
    assert [d.document_id for d in ingested.list_documents("acme")] == ["handbook", "notes", "policies"]
    assert [d.document_id for d in ingested.list_documents("globex")] == ["handbook"]
    assert ingested.delete_document("globex", "handbook") == 1  # globex's delete leaves acme's handbook
    assert ingested.count("acme", "handbook") > 0 and ingested.count("globex") == 0


def test_reingesting_leaves_exactly_one_set_and_delete_removes_all(
        ingested: LanceDBStore, embedder: Embedder, handbook_pdf: bytes) -> None:
    before = ingested.count("acme", "handbook")
    rows_before = sorted((h.chunk_index, h.text) for h in _all_hits(ingested, embedder, "handbook"))
    for _ in range(2):  # a retried job, then a re-upload of the same file
        ingest_document(ingested, embedder, "acme", "handbook", merge_pdfs(handbook_pdf, image_pdf(
            scan_image(SCAN_LINES))), filename="handbook.pdf", chunk_tokens=80, overlap_tokens=16)
    assert ingested.count("acme", "handbook") == before > 4
    assert sorted((h.chunk_index, h.text) for h in _all_hits(ingested, embedder, "handbook")) == rows_before
    # A new version with fewer chunks replaces the old set entirely (no stale tail).
    ingest_document(ingested, embedder, "acme", "handbook", text_pdf([BEES]), filename="handbook.pdf")
    assert ingested.count("acme", "handbook") == 1
    docs = {d.document_id: d for d in ingested.list_documents("acme")}
    assert docs["handbook"].pages == [1] and docs["handbook"].chunks == 1
    assert ingested.delete_document("acme", "handbook") == 1
    assert ingested.count("acme", "handbook") == 0 and ingested.delete_document("acme", "handbook") == 0
    assert ingested.count("acme") > 0  # the tenant's other documents stay


def _all_hits(store: LanceDBStore, embedder: Embedder, document_id: str) -> list:  # type: ignore[type-arg]
    return store.search("acme", embedder.encode_query("anything"), None, top_k=100, document_ids=[document_id])


def test_search_by_document_ids_and_metadata_filters(ingested: LanceDBStore, embedder: Embedder) -> None:
    question = "How many holiday days are there in France?"
    vector = embedder.encode_query(question)
    assert {h.document_id for h in ingested.search("acme", vector, question, 10, document_ids=["notes"])} == {"notes"}
    hr = ingested.search("acme", vector, question, 10, filters={"department": "hr"})
    assert hr and {h.document_id for h in hr} == {"policies"}
    ops = ingested.search("acme", vector, question, 10, filters={"department": "ops", "year": 2026})
    assert ops and {h.document_id for h in ops} == {"handbook"}
    assert ingested.search("acme", vector, question, 10, filters={"department": "ops", "year": 2025}) == []
    assert ingested.search("acme", vector, question, 10, filters={"department": "x' OR '1'='1"}) == []


def _replace_repeatedly(path: str, run: int, chunks: int) -> None:
    """One 'worker': replaces the same document again and again with its own set of chunks."""
    store = LanceDBStore(path, dimension=8)
    rng = np.random.default_rng(run)
    for _ in range(15):
        vectors = rng.normal(size=(chunks, 8)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        store.replace_document("acme", "doc", [StoredChunk(i, f"run{run} chunk{i}", 1, vectors[i]) for i in range(chunks)])


def test_concurrent_workers_replacing_one_document_leave_one_whole_set(tmp_path: Path) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    path = str(tmp_path / "vectors")
    sizes = {1: 6, 2: 4, 3: 5}
    with ProcessPoolExecutor(len(sizes), mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(_replace_repeatedly, [path] * len(sizes), list(sizes), list(sizes.values())))
    store = LanceDBStore(path, dimension=8)
    rows = store.search("acme", np.ones(8, dtype=np.float32) / np.sqrt(8), None, top_k=100)
    runs = {h.text.split()[0] for h in rows}
    assert len(runs) == 1, sorted(h.text for h in rows)  # never a mix of two runs
    run = int(runs.pop().removeprefix("run"))
    assert sorted(h.chunk_index for h in rows) == list(range(sizes[run])) and store.count("acme", "doc") == sizes[run]
