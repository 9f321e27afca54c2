"""Which words of a query are strong keyword evidence: identifiers, numbers and names.

Hybrid search lets the keyword score reorder the vector ranking only where the query names something
that a paraphrase cannot (a part number, an error code, a year, a place), and only for a chunk that
holds that very term. A vague or paraphrased question ("how old can they get") has no such term and is
ranked by the vector alone: its common words matching some chunk are no evidence of an answer
(docs/benchmarks.md, "Search quality"). Decided from the query's own text, so no corpus statistics are
needed and both vector stores rank alike.
"""

from __future__ import annotations

import re

_TOKEN = re.compile(r"[A-Za-z0-9]+(?:[-_./][A-Za-z0-9]+)*")


def distinctive_terms(query: str) -> set[str]:
    """Identifiers and names in ``query``: a token with a digit (E17, BR-4410, 2026), with two or more
    capitals (TP-GOLD, USB), or capitalised past the query's first word (Zurich); lowercased."""
    terms = set()
    for position, match in enumerate(_TOKEN.finditer(query)):
        token = match.group()
        has_digit = any(ch.isdigit() for ch in token)
        capitals = sum(1 for ch in token if ch.isupper())
        name = position > 0 and token[0].isupper() and len(token) > 1
        if has_digit or capitals >= 2 or name:
            terms.add(token.lower())
    return terms


def holds_any(text: str, terms: set[str]) -> bool:
    """Whether ``text`` holds one of ``terms`` as a whole token (case-insensitive)."""
    if not terms:
        return False
    return any(match.group().lower() in terms for match in _TOKEN.finditer(text))
