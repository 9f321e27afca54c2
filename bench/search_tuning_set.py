"""A second labelled search set, apart from ``bench/search_corpus.py``: the one fusion weights are chosen on.

    .venv/bin/python -m bench.search_tuning_set      # about 20 s: ingest, then compare candidate fusions

Six documents written for this set (no outside text), on other topics than the held-out set's, in
same-topic pairs so that a keyword or a vector that matches "the right kind of document" is not enough:
two coffee grinder manuals of one brand (M40 and M60, different part numbers and settings), two travel
policies of one company (2024 and 2026, different limits), a beekeeping guide and an e-bike battery sheet
whose second page is a scan (read by OCR). Questions as in the held-out set: paraphrases, questions
naming a rare term or code (BR-4410, SW-3, B07, varroa), and vague ones. Labels (document, page,
fragment of the answering sentence) were written from the text before any search ran.

The run ingests the set through the real pipeline into a temporary LanceDB store (both chunk sizes of
``bench/search_set.py``), takes each question's vector and keyword candidate lists once (40 each, what
``store.search`` takes for top_k <= 10), and ranks them with each candidate fusion: the old one
(``alpha * cosine + (1 - alpha) * bm25 / max bm25 of the query``), saturating BM25 ``bm25 / (bm25 + k)``,
the old one scaled by the share of the question's terms the chunk holds, reciprocal rank fusion, at a few
alphas; the old one applied only to questions naming an identifier, number or name (vector order for the
others), or only to chunks holding such a term (issue 22); and ``store.search()`` itself, to check that the
store's current ``fuse`` is one of them (since issue 22: "gated on identifiers, alpha 0.8").
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.search_corpus import Document, Question
from bench.search_set import CONFIGS, POOL, TOP_K, Row, hits_rows, is_answer, metrics, rank_of

TENANT = "tuning"

GRINDER_M40 = Document("brava-m40", "brava-m40-manual.pdf", "pdf", [
    [
        "The Brava M40 is a conical burr coffee grinder for home use. Its hopper holds 250 grams of whole beans "
        "and its motor runs at 450 revolutions per minute, slowly enough that the grounds do not heat up.",
        "Turn the collar clockwise for a finer grind and anticlockwise for a coarser one. There are forty click "
        "positions: positions 1 to 8 suit espresso, 15 to 22 suit filter coffee, and 30 and above suit a "
        "French press.",
        "Never grind while the hopper is removed: a safety switch stops the motor when the hopper is lifted, "
        "and forcing the switch can injure fingers.",
    ],
    [
        "Clean the burrs every two weeks. Run a dose of grinder cleaning tablets through the machine, then "
        "brush out the chamber; never wash the burrs with water, because they rust.",
        "If the motor hums but does not turn, a stone or a hard bean is stuck between the burrs. Unplug the "
        "grinder, remove the upper burr and take out the obstruction.",
        "Replacement upper burr: part BR-4410. The lower burr is fixed to the shaft and is only replaced at a "
        "service centre. The warranty covers the motor for three years.",
    ],
])

GRINDER_M60 = Document("brava-m60", "brava-m60-manual.pdf", "pdf", [
    [
        "The Brava M60 is a flat burr grinder for small cafés. Its hopper holds one kilogram of beans and its "
        "64 millimetre steel burrs grind an espresso dose in about four seconds.",
        "Grind size is set by a stepless dial with a numbered scale from 0 to 12; turning the dial while the "
        "motor runs avoids jamming the burrs with old grounds.",
        "The built-in timer doses by time: program buttons I and II store single and double doses, from 0.5 to "
        "30 seconds in tenths of a second.",
    ],
    [
        "Empty the hopper and vacuum the grinding chamber every evening. Once a month, remove the front plate "
        "with the supplied 3 mm hex key and clean both burrs with a dry brush.",
        "A red light on the thermal fuse means the motor overheated after more than ninety seconds of "
        "continuous grinding. Let it cool for twenty minutes and press the reset pin on the underside.",
        "Replacement burr set: part BR-6620, both discs together. Burrs should be changed after roughly 500 "
        "kilograms of coffee, when doses take noticeably longer to grind.",
    ],
])

TRAVEL_2024 = Document("harbor-travel-2024", "travel-policy-2024.docx", "docx", [[
    "Harbor Analytics travel policy (2024)",
    "This policy applies to trips booked between 1 January and 31 December 2024. Trips must be approved by "
    "your line manager before anything is booked.",
    "Economy class is the rule for all flights. Business class may be booked for flights longer than nine "
    "hours, with the written approval of a director.",
    "Hotels are booked through the company's travel agent. Rooms may cost up to 150 euros a night, or 220 "
    "euros in London, Paris and New York.",
    "Trains are preferred over flights for journeys under four hours door to door. A private car is "
    "reimbursed at 0.30 euros per kilometre.",
    "Submit expense claims within 60 days of the trip, with itemised receipts. Alcohol is never reimbursed.",
]], table=[
    ["Meal", "Daily allowance"],
    ["Breakfast", "12 euros"],
    ["Lunch", "20 euros"],
    ["Dinner", "35 euros"],
])

TRAVEL_2026 = Document("harbor-travel-2026", "travel-policy-2026.md", "text", [[
    "# Harbor Analytics travel policy (2026)",
    "From 1 January 2026 this policy replaces the 2024 version. Approval now happens in the Tripwise booking "
    "tool, where your line manager approves each trip before the booking is confirmed.",
    "Economy class remains the rule. Business class is allowed only on overnight flights of more than ten "
    "hours, and no longer needs a director's signature.",
    "The nightly hotel limit is 170 euros, 250 euros in London, Paris, New York and Zurich. Airbnb-style "
    "apartments are allowed for stays of five nights or more.",
    "Any journey that takes less than five hours by rail must be made by train. Private cars are reimbursed "
    "at 0.35 euros per kilometre, electric cars included.",
    "Expense claims must be filed within 30 days of returning, in the Tripwise app; photos of receipts are "
    "accepted. A flat daily allowance of 60 euros replaces separate meal limits.",
    "Travel to countries on the security watch list, code SW-3, needs clearance from the security team at "
    "least two weeks in advance.",
]])

BEES = Document("first-hive", "first-hive.txt", "text", [[
    "Keeping your first beehive",
    "Place the hive where it gets morning sun and shelter from the wind, with the entrance facing away from "
    "paths where people walk. Bees fly out in a straight line and may sting anyone who crosses that flight path.",
    "Inspect the colony every seven to ten days from spring to late summer. Look for eggs, which show that the "
    "queen is alive and laying; a single egg standing upright at the bottom of each cell is a healthy sign.",
    "Queen cells hanging from the bottom of the frames mean the colony is preparing to swarm. Splitting the "
    "colony into two hives before the new queens hatch usually prevents it.",
    "The varroa mite is the main threat to honey bees. Count the mites that fall onto a sticky board in a "
    "week; more than ten a day means the colony needs treatment with oxalic acid in winter, when there is no "
    "brood.",
    "Leave at least twenty kilograms of honey in the hive for the winter. Taking too much forces the bees to "
    "starve or to be fed sugar syrup.",
]])

BATTERY = Document("voltbike-battery", "voltbike-battery.pdf", "pdf", [
    [
        "The Voltbike PX battery is a 36 volt lithium-ion pack with a capacity of 500 watt-hours, enough for "
        "about 80 kilometres of assisted riding on flat roads.",
        "Charge it only with the supplied 4 amp charger, indoors, on a hard surface away from anything that "
        "can burn. A full charge from empty takes about five hours.",
        "For storage longer than a month, keep the battery at 40 to 60 percent charge in a cool, dry place. "
        "Leaving it empty for months can damage the cells beyond repair.",
        "Below zero degrees Celsius the battery delivers less range, and it must not be charged until it has "
        "warmed up to room temperature.",
    ],
    [  # a scan: OCR reads these lines back
        "Battery fault codes",
        "Code B07: a cell is overheating. Stop riding,",
        "remove the battery and put it outside on",
        "stone or soil, away from buildings.",
        "Code B12: the charger is not recognised.",
        "Use the original charger only.",
        "A swollen or dented battery must never be",
        "charged again; take it to a recycling point.",
    ],
], scanned_pages=frozenset({2}))

DOCUMENTS = [GRINDER_M40, GRINDER_M60, TRAVEL_2024, TRAVEL_2026, BEES, BATTERY]

_P, _R, _V = "paraphrase", "rare term", "vague"
QUESTIONS = [
    # the home grinder (PDF, 2 pages), with the cafe grinder as its distractor
    Question("How fine should I set the M40 for a French press?", "brava-m40", 1,
             "30 and above suit a French press", _R),
    Question("Why won't the home grinder start when the bean container is off?", "brava-m40", 1,
             "a safety switch stops the motor", _P),
    Question("Can I rinse the burrs of the M40 under the tap?", "brava-m40", 2, "never wash the burrs with water", _P),
    Question("What is part BR-4410?", "brava-m40", 2, "Replacement upper burr: part BR-4410", _R),
    Question("the motor makes a noise but nothing turns", "brava-m40", 2, "hums but does not turn", _V),
    Question("How long is the home grinder's motor guaranteed for?", "brava-m40", 2,
             "covers the motor for three years", _P),
    Question("How many beans fit in the M40?", "brava-m40", 1, "holds 250 grams", _R),
    # the cafe grinder (PDF, 2 pages)
    Question("How long does the café grinder take for one espresso?", "brava-m60", 1, "about four seconds", _P),
    Question("What replaces worn discs on the M60?", "brava-m60", 2, "part BR-6620", _R),
    Question("a red lamp came on and the grinder stopped", "brava-m60", 2, "A red light on the thermal fuse", _V),
    Question("How do I save a double shot on the café grinder?", "brava-m60", 1,
             "store single and double doses", _P),
    Question("Should the café grinder be switched off while I change the coarseness?", "brava-m60", 1,
             "turning the dial while the motor runs", _P),
    Question("What tool opens the front of the M60?", "brava-m60", 2, "3 mm hex key", _R),
    Question("when are the burrs worn out", "brava-m60", 2, "after roughly 500 kilograms", _V),
    # the 2024 travel policy (DOCX with a table: no pages)
    Question("In 2024, how much could we spend on an evening meal per day?", "harbor-travel-2024", None,
             "35 euros", _P),
    Question("Who had to sign off a business class ticket under the 2024 rules?", "harbor-travel-2024", None,
             "with the written approval of a director", _P),
    Question("What was the mileage rate for driving my own car in 2024?", "harbor-travel-2024", None,
             "0.30 euros per kilometre", _P),
    Question("How long did I have to hand in receipts under the old 2024 policy?", "harbor-travel-2024", None,
             "within 60 days of the trip", _P),
    Question("can I expense a beer", "harbor-travel-2024", None, "Alcohol is never reimbursed", _V),
    Question("What was the 2024 ceiling for a London hotel room?", "harbor-travel-2024", None,
             "220 euros in London", _P),
    # the 2026 travel policy (Markdown: no pages)
    Question("What is the 2026 nightly hotel limit in Zurich?", "harbor-travel-2026", None,
             "250 euros in London", _R),
    Question("Under the 2026 rules, when must I go by rail instead of flying?", "harbor-travel-2026", None,
             "less than five hours by rail must be made by train", _P),
    Question("Where do managers approve trips since 2026?", "harbor-travel-2026", None, "Tripwise booking tool", _P),
    Question("What is SW-3?", "harbor-travel-2026", None, "security watch list, code SW-3", _R),
    Question("Can I stay in a rented flat instead of a hotel in 2026?", "harbor-travel-2026", None,
             "Airbnb-style apartments are allowed", _P),
    Question("how much per day for food now", "harbor-travel-2026", None, "A flat daily allowance of 60 euros", _V),
    Question("deadline for expenses this year", "harbor-travel-2026", None, "within 30 days of returning", _V),
    # the beekeeping guide (plain text: no pages)
    Question("Which way should the hive's opening face?", "first-hive", None, "entrance facing away from paths", _P),
    Question("How often should I open the hive to check on it?", "first-hive", None, "every seven to ten days", _P),
    Question("How can I stop my bees from leaving in a swarm?", "first-hive", None,
             "Splitting the colony into two hives", _P),
    Question("how many varroa per day is too many", "first-hive", None, "more than ten a day", _R),
    Question("how much honey can I take", "first-hive", None, "Leave at least twenty kilograms of honey", _V),
    Question("how do I know the queen is ok", "first-hive", None, "which show that the queen is alive", _V),
    # the e-bike battery sheet (PDF: page 1 a text layer, page 2 a scan read by OCR)
    Question("How far can I ride on a full battery?", "voltbike-battery", 1, "about 80 kilometres", _P),
    Question("What does error B07 mean?", "voltbike-battery", 2, "a cell is overheating", _R),
    Question("Is it fine to plug the bike in right after riding in frost?", "voltbike-battery", 1,
             "must not be charged until it has warmed up", _P),
    Question("what to do with a battery that has puffed up", "voltbike-battery", 2, "take it to a recycling point",
             _V),
    Question("How full should the battery be when I put the bike away for the winter?", "voltbike-battery", 1,
             "40 to 60 percent charge", _P),
]


# --- candidate fusions: (query vector, question, vector candidates, keyword candidates) -> ranked rows ---

Fusion = Callable[[np.ndarray, str, Sequence[Any], Sequence[Any]], list[Row]]
STOP_WORDS = frozenset(
    "a an and are as at be but by can could did do does for from had has have how i if in into is it its "
    "me my no not now of on or our should so than that the their them then there these they this to too "
    "under up was we what when where which who why will with would you your".split())
_WORD = re.compile(r"\w+")


def _merged(by_vector: Sequence[Any], by_keyword: Sequence[Any]) -> dict[tuple[str, int], Any]:
    merged = {(c.document_id, c.chunk_index): dataclasses.replace(c) for c in by_vector}
    for c in by_keyword:
        key = (c.document_id, c.chunk_index)
        if key in merged:
            merged[key].bm25 = max(merged[key].bm25, c.bm25)
        else:
            merged[key] = dataclasses.replace(c)
    return merged


def _ranked(scored: dict[tuple[str, int], tuple[float, Any]]) -> list[Row]:
    order = sorted(scored, key=lambda k: (-scored[k][0], k))[:TOP_K]
    return [(scored[k][1].document_id, scored[k][1].page, scored[k][1].text) for k in order]


def term_share(question: str, text: str) -> float:
    """The share of the question's words (stop words left out) the text holds, a 5-letter prefix standing
    in for a stem."""
    terms = {w for w in _WORD.findall(question.lower()) if w not in STOP_WORDS}
    if not terms:
        return 0.0
    words = {w[:5] for w in _WORD.findall(text.lower())}
    return sum(1 for t in terms if t[:5] in words) / len(terms)


def linear(alpha: float, keyword: Callable[[float, float, str, str], float]) -> Fusion:
    """``alpha * cosine + (1 - alpha) * keyword(bm25, top bm25 of the query, question, text)``."""
    def fusion(qvec: np.ndarray, question: str, by_vector: Sequence[Any], by_keyword: Sequence[Any]) -> list[Row]:
        merged = _merged(by_vector, by_keyword)
        top = max((c.bm25 for c in merged.values()), default=0.0)
        return _ranked({key: (alpha * float(np.dot(qvec, c.vector))
                              + (1 - alpha) * keyword(c.bm25, top, question, c.text), c)
                        for key, c in merged.items()})
    return fusion


def by_max(bm25: float, top: float, question: str, text: str) -> float:
    return bm25 / top if top > 0 else 0.0


def saturating(k: float) -> Callable[[float, float, str, str], float]:
    return lambda bm25, top, question, text: bm25 / (bm25 + k) if bm25 > 0 else 0.0


def by_max_times_share(bm25: float, top: float, question: str, text: str) -> float:
    return by_max(bm25, top, question, text) * term_share(question, text)


def gated(alpha: float) -> Fusion:
    """The current fusion where the query names an identifier or name (documents/evidence.py), vector
    order where it names none."""
    from aitasks.documents.evidence import distinctive_terms

    current, vector = linear(alpha, by_max), linear(1.0, by_max)
    return lambda qvec, q, bv, bk: (current if distinctive_terms(q) else vector)(qvec, q, bv, bk)


def by_max_if_evidence(bm25: float, top: float, question: str, text: str) -> float:
    """The current keyword term, only for a chunk holding one of the query's identifiers or names."""
    from aitasks.documents.evidence import distinctive_terms, holds_any

    return by_max(bm25, top, question, text) if holds_any(text, distinctive_terms(question)) else 0.0


def rrf(k: int) -> Fusion:
    def fusion(qvec: np.ndarray, question: str, by_vector: Sequence[Any], by_keyword: Sequence[Any]) -> list[Row]:
        scored: dict[tuple[str, int], tuple[float, Any]] = {}
        for ranked in (by_vector, by_keyword):
            for rank, c in enumerate(ranked, start=1):
                key = (c.document_id, c.chunk_index)
                scored[key] = (scored.get(key, (0.0, c))[0] + 1.0 / (k + rank), c)
        return _ranked(scored)
    return fusion


ALPHAS = [0.6, 0.7, 0.8, 0.9]
SATURATION_KS = [1.0, 2.0, 4.0, 8.0]


def fusions() -> dict[str, Fusion]:
    out: dict[str, Fusion] = {"vector": linear(1.0, by_max)}
    out["keyword"] = lambda qvec, q, bv, bk: [(c.document_id, c.page, c.text) for c in bk[:TOP_K]]
    for alpha in ALPHAS:
        out[f"old: max-normalised, alpha {alpha}"] = linear(alpha, by_max)
    for alpha in ALPHAS:
        for k in SATURATION_KS:
            out[f"saturating k={k:g}, alpha {alpha}"] = linear(alpha, saturating(k))
    for alpha in ALPHAS:
        out[f"max-normalised x term share, alpha {alpha}"] = linear(alpha, by_max_times_share)
    for alpha in ALPHAS:
        out[f"gated on identifiers, alpha {alpha}"] = gated(alpha)
    for alpha in ALPHAS:
        out[f"keyword term only with the identifier in the chunk, alpha {alpha}"] = linear(alpha, by_max_if_evidence)
    out["RRF k=60"] = rrf(60)
    out["RRF k=10"] = rrf(10)
    return out


# 2026-11-29: the term-share fusion was measured here once; 2026-12-07 (issue 22): the gated one, chosen on
# the tuning set by the rule written in docs/benchmarks.md before this set was run.
HELD_OUT_METHODS = ("vector", "keyword", "old: max-normalised, alpha 0.8", "max-normalised x term share, alpha 0.6",
                    "gated on identifiers, alpha 0.8")


def _one_config(embedder: Any, chunk_tokens: int, overlap_tokens: int, labels_only: bool,
                documents: Sequence[Document], questions: Sequence[Question], methods: dict[str, Fusion]
                ) -> dict[str, Any]:
    from aitasks.documents.lancedb_store import LanceDBStore
    from aitasks.documents.pipeline import ingest_document
    from bench.search_corpus import document_bytes

    with tempfile.TemporaryDirectory(prefix="aitasks-bench-tuning-") as tmp:
        store = LanceDBStore(Path(tmp) / "vectors", dimension=embedder.dimension)
        for doc in documents:
            ingest_document(store, embedder, TENANT, doc.document_id, document_bytes(doc), filename=doc.filename,
                            chunk_tokens=chunk_tokens, overlap_tokens=overlap_tokens)
        rows = [(r["document_id"], r["page"], r["text"]) for r in store._table.to_arrow().to_pylist()]
        unanswerable = [q.text for q in questions if not any(is_answer(q, row) for row in rows)]
        out: dict[str, Any] = {"chunk_tokens": chunk_tokens, "overlap_tokens": overlap_tokens, "chunks": len(rows),
                               "unanswerable_labels": unanswerable}
        if labels_only:
            return out
        vectors = {q.text: embedder.encode_query(q.text) for q in questions}
        lists = {q.text: (store._vector_candidates(TENANT, vectors[q.text], POOL, None, []),
                          store._keyword_candidates(TENANT, q.text, POOL, None, [])) for q in questions}
        ranks = {name: [rank_of(q, fusion(vectors[q.text], q.text, *lists[q.text])) for q in questions]
                 for name, fusion in methods.items()}
        ranks["store.search() (current fuse)"] = [
            rank_of(q, hits_rows(store.search(TENANT, vectors[q.text], q.text, top_k=TOP_K))) for q in questions]
    kinds = sorted({q.kind for q in questions})
    out["methods"] = {name: {**metrics(r), **{f"hit@1 {kind}": metrics(
        [x for x, q in zip(r, questions, strict=True) if q.kind == kind])["hit@1"] for kind in kinds}}
        for name, r in ranks.items()}
    out["ranks"] = ranks
    return out


def run(quick: bool = False, labels_only: bool = False, held_out: bool = False) -> dict[str, Any]:
    """Every candidate fusion on this set; ``held_out``: the few of ``HELD_OUT_METHODS`` on the set of
    ``bench/search_corpus.py`` instead (to measure a choice made here, once)."""
    from aitasks.documents.embedding import load_embedder
    from bench import search_corpus

    started = time.perf_counter()
    embedder = load_embedder()
    documents, questions = (search_corpus.DOCUMENTS, search_corpus.QUESTIONS) if held_out else (DOCUMENTS, QUESTIONS)
    methods = fusions()
    if held_out:
        methods = {name: methods[name] for name in HELD_OUT_METHODS}
    configs = [_one_config(embedder, c, o, labels_only, documents, questions, methods)
               for c, o in (CONFIGS[:1] if quick else CONFIGS)]
    return {"set": "held-out (bench/search_corpus.py)" if held_out else "tuning (bench/search_tuning_set.py)",
            "questions": len(questions), "documents": len(documents),
            "kinds": {kind: sum(1 for q in questions if q.kind == kind) for kind in sorted({q.kind for q in questions})},
            "model": embedder.name, "configs": configs, "elapsed_s": round(time.perf_counter() - started, 1)}


def render(result: dict[str, Any]) -> str:
    lines = ["", f"search fusions, {result['set']} set: {result['questions']} questions "
             f"({', '.join(f'{n} {k}' for k, n in result['kinds'].items())}) over {result['documents']} documents "
             f"({result['model']}, LanceDB, top {TOP_K})"]
    for cfg in result["configs"]:
        lines.append(f"  chunks of <= {cfg['chunk_tokens']} tokens (overlap {cfg['overlap_tokens']}): "
                     f"{cfg['chunks']} chunks")
        if cfg["unanswerable_labels"]:
            lines.append(f"    LABELS WITH NO MATCHING CHUNK: {cfg['unanswerable_labels']}")
        if "methods" not in cfg:
            continue
        lines.append(f"    {'':<44}{'hit@1':>7}{'hit@3':>7}{'MRR':>7}{'para':>7}{'rare':>7}{'vague':>7}")
        for name, m in cfg["methods"].items():
            lines.append(f"    {name:<44}{m['hit@1']:>7.2f}{m['hit@3']:>7.2f}{m['mrr']:>7.2f}"
                         f"{m['hit@1 paraphrase']:>7.2f}{m['hit@1 rare term']:>7.2f}{m['hit@1 vague']:>7.2f}")
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.search_tuning_set", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--labels-only", action="store_true",
                        help="ingest and check that every label names a stored chunk; run no search")
    parser.add_argument("--held-out", action="store_true",
                        help="the held-out set of bench/search_corpus.py, with the few methods of HELD_OUT_METHODS")
    args = parser.parse_args(argv)
    print(render(run(labels_only=args.labels_only, held_out=args.held_out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
