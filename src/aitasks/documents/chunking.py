"""Token-aware chunks, counted with the embedding model's own tokenizer.

Each page is tokenized once (with character offsets); sentences are token ranges; chunks are runs of
whole sentences up to ``chunk_tokens``, each starting with the tail of the previous one (``overlap_tokens``)
so that each chunk carries some context of the one before. A sentence longer than a chunk is cut at token
boundaries. No chunk crosses a page, so every chunk has one page number; none exceeds the model's input.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aitasks.documents.extract import Page

# A sentence ends at . ! ? (and closing quotes/brackets) before whitespace and a capital, digit or
# opening mark; a blank line or a line that starts a list item ends one too.
_SENTENCE_END = re.compile(
    r"""(?<!\b[A-Z])(?<!\bMr)(?<!\bMs)(?<!\bDr)(?<!\bSt)(?<!\bNo)(?<!\bMrs)(?<!\bFig)(?<!\be\.g)(?<!\bi\.e)"""
    r"""([.!?]["')\]]*)\s+(?=["'(\[]?[A-Z0-9])"""  # not after an initial or a common abbreviation
    r"""|\n\s*\n|\n(?=\s*(?:[-*•]|\d+[.)])\s)"""
)
_WS = re.compile(r"\s+")
SEGMENT_CHARS = 50_000  # a long page is tokenized in paragraph-aligned pieces: offsets of a 25 MB text
                        # at once would take ~0.5 GB of Python tuples


class Tokenizer(Protocol):
    def __call__(self, text: str, **kwargs: Any) -> Any: ...


@dataclass(frozen=True)
class Chunk:
    index: int  # position in the document, from 0
    text: str
    page: int | None
    token_count: int


def _sentence_spans(text: str) -> list[tuple[int, int]]:
    spans, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        end = match.end(1) if match.group(1) else match.start()  # the full stop stays in its sentence
        if end > start:
            spans.append((start, end))
        start = match.end()
    if start < len(text):
        spans.append((start, len(text)))
    return spans


def chunk_pages(pages: Iterable[Page], tokenizer: Tokenizer, max_model_tokens: int, chunk_tokens: int = 200,
                overlap_tokens: int = 40) -> list[Chunk]:
    """Cut pages into chunks of at most ``min(chunk_tokens, max_model_tokens)`` tokens.

    ``max_model_tokens`` is the model's input size less its special tokens (``Embedder.max_tokens``).
    """
    limit = min(chunk_tokens, max_model_tokens)
    if limit < 8:
        raise ValueError("chunk_tokens must be at least 8")
    overlap = max(0, min(overlap_tokens, limit // 2))
    chunks: list[Chunk] = []
    for page in pages:
        for segment in _segments(page.text):
            for text, count in _chunk_text(segment, tokenizer, limit, overlap):
                chunks.append(Chunk(len(chunks), text, page.number, count))
    return chunks


def _segments(text: str) -> Iterator[str]:
    """Pieces of at most ~SEGMENT_CHARS, cut at a paragraph break, else a line break, else a space."""
    while len(text) > SEGMENT_CHARS:
        cuts = (text.rfind(sep, SEGMENT_CHARS // 2, SEGMENT_CHARS) for sep in ("\n\n", "\n", " "))
        cut = next((c for c in cuts if c > 0), SEGMENT_CHARS)
        yield text[:cut]
        text = text[cut:]
    yield text


def _chunk_text(text: str, tokenizer: Tokenizer, limit: int, overlap: int) -> list[tuple[str, int]]:
    if not text.strip():
        return []
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    offsets: list[tuple[int, int]] = [tuple(o) for o in encoded["offset_mapping"]]
    if not offsets:
        return []
    # Sentences as token ranges [first, last): a token belongs to the sentence its first character is in.
    sentences: list[tuple[int, int]] = []
    token = 0
    for _, end in _sentence_spans(text):
        first = token
        while token < len(offsets) and offsets[token][0] < end:
            token += 1
        if token > first:
            sentences.extend(_split_long(first, token, limit, offsets))
    if token < len(offsets):
        sentences.extend(_split_long(token, len(offsets), limit, offsets))
    starts = [first for first, _ in sentences]

    ranges: list[tuple[int, int]] = []
    current: tuple[int, int] | None = None
    for first, last in sentences:
        if current is None:
            current = (first, last)
        elif last - current[0] <= limit:
            current = (current[0], last)
        else:
            ranges.append(current)
            start = _overlap_start(starts, current, overlap)
            current = (start, last) if last - start <= limit else (first, last)
    if current is not None:
        ranges.append(current)
    return [_verified(text, offsets, first, last, tokenizer, limit) for first, last in ranges]


def _split_long(first: int, last: int, limit: int, offsets: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """A run of tokens longer than ``limit`` (a sentence without full stops) cut into pieces, each cut moved
    back to a word start where one is near (a word's pieces touch: no gap between their offsets)."""
    pieces = []
    while last - first > limit:
        cut = first + limit
        word_start = cut
        while word_start > cut - 16 and offsets[word_start][0] == offsets[word_start - 1][1]:
            word_start -= 1
        cut = word_start if word_start > cut - 16 else cut
        pieces.append((first, cut))
        first = cut
    pieces.append((first, last))
    return pieces


def _overlap_start(starts: Sequence[int], chunk: tuple[int, int], overlap: int) -> int:
    """Where the next chunk starts: the previous chunk's trailing whole sentences that fit in ``overlap``
    tokens (none if its last sentence alone is longer: a half sentence would only compete with the whole)."""
    i = bisect.bisect_left(starts, max(chunk[1] - overlap, chunk[0] + 1))
    return starts[i] if i < len(starts) and starts[i] < chunk[1] else chunk[1]


def _verified(text: str, offsets: Sequence[tuple[int, int]], first: int, last: int, tokenizer: Tokenizer,
              limit: int) -> tuple[str, int]:
    """The chunk's text, re-counted alone: the guarantee of ``<= limit`` rests on this count, not on slicing
    arithmetic. Re-tokenizing a slice differs from the slice only where it starts inside a word (a cut of a
    run-on sentence); then the tail tokens over the limit are dropped, a few word pieces at most."""
    while True:
        piece = _WS.sub(" ", text[offsets[first][0]:offsets[last - 1][1]]).strip()
        count = len(tokenizer(piece, add_special_tokens=False, verbose=False)["input_ids"])
        if count <= limit or last - first <= 1:
            return piece, count
        last -= max(1, count - limit)
