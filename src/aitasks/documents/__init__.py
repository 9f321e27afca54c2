"""The document pipeline as a library: extract text, OCR scanned pages, chunk, embed, store and search.

One module per stage, each usable alone; ``pipeline`` strings them together for a job:

- ``extract``: bytes + filename -> pages (PDF, DOCX, TXT/Markdown, HTML, PNG/JPEG scans), with a
  clear ``DocumentError`` for every input it refuses.
- ``ocr``: Tesseract on a rendered PDF page or an image scan.
- ``chunking``: token-aware chunks counted with the embedding model's own tokenizer.
- ``embedding``: the offline sentence-embedding model, loaded once per process.
- ``store``: the ``VectorStore`` interface (tenant isolation inside it) and the hybrid score;
  ``lancedb_store``: the embedded default, ``pg_store``: PostgreSQL with pgvector; ``vector_stores``
  opens the one a location names.
"""
