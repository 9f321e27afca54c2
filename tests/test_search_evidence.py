"""Which query words count as keyword evidence in hybrid search (documents/evidence.py, issue 22)."""

from __future__ import annotations

import pytest

from aitasks.documents.evidence import distinctive_terms, holds_any


@pytest.mark.parametrize(("query", "terms"), [
    ("What is part BR-4410?", {"br-4410"}),
    ("What does error B07 mean?", {"b07"}),
    ("What is the 2026 nightly hotel limit in Zurich?", {"2026", "zurich"}),
    ("Is TP-GOLD cover worth it?", {"tp-gold"}),
    ("Which bird is Sterna paradisaea?", {"sterna"}),
    ("how old can they get", set()),
    ("Am I insured if I go parachuting on holiday?", set()),  # "Am" opens it, "I" is one letter
    ("When are the burrs worn out", set()),
])
def test_identifiers_numbers_and_names_are_evidence_common_words_are_not(query: str, terms: set[str]) -> None:
    assert distinctive_terms(query) == terms


def test_a_chunk_holds_a_term_only_as_a_whole_token() -> None:
    assert holds_any("Replacement upper burr: part BR-4410.", {"br-4410"})
    assert not holds_any("Replacement upper burr: part BR-44100.", {"br-4410"})
    assert not holds_any("anything", set())
