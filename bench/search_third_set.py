"""A third labelled search set (issue 22), unseen by any fusion choice: measures the gated hybrid once.

    .venv/bin/python -m bench.search_third_set [--labels-only]

Written (documents, questions, labels) on 2026-12-07 before any search ran on it, by the method of the
other two sets (bench/search_corpus.py, bench/search_tuning_set.py): short documents written for it, on
topics of neither, in same-topic pairs so that the right kind of document is not enough: two models of
one dishwasher brand (PDF manuals), two editions of a climbing gym's rules (2025 as DOCX, 2027 as a
text file), and one page on a river ferry (Markdown). Questions asked as a user would: paraphrases,
questions naming a code, a number or a rare name, and vague ones. A result is right when it is a chunk of
the labelled document (and page, for PDFs) holding the labelled fragment. The run ranks each question
with vector-only, keyword-only, the old hybrid and ``store.search()`` (the gated hybrid, now the default)
through the functions of ``bench/search_tuning_set.py``, with both chunk sizes.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from bench.search_corpus import Document, Question

DISHWASHER_D3 = Document("kelda-d3", "kelda-d3-manual.pdf", "pdf", [
    [
        "The Kelda D3 is a slimline dishwasher, 45 centimetres wide, with room for nine place settings. It "
        "uses 8.5 litres of water in the eco programme, which takes three hours and forty minutes.",
        "Fill the salt container under the lower basket before the first wash and whenever the salt lamp "
        "lights up. Use coarse dishwasher salt only; table salt contains additives that clog the softener.",
        "The quick programme washes lightly soiled dishes at 45 degrees in thirty minutes, but does not dry "
        "them: leave the door ajar afterwards.",
    ],
    [
        "Error code F4 means the water does not drain. Switch the machine off, take out the lower basket and "
        "unscrew the filter cylinder anticlockwise; rinse it under the tap and check the drain hose for kinks.",
        "Clean the spray arms every three months: pull the lower arm straight up, unclip the upper arm, and "
        "clear blocked nozzles with a toothpick.",
        "The spare filter set is sold as part KD-0317. Door seals wear out after about eight years and are "
        "replaced by a technician.",
    ],
])

DISHWASHER_D7 = Document("kelda-d7", "kelda-d7-manual.pdf", "pdf", [
    [
        "The Kelda D7 is a full-size dishwasher, 60 centimetres wide, holding fourteen place settings, with a "
        "cutlery drawer on top. Its eco programme uses 9.9 litres and runs for four hours.",
        "The D7 doses salt and rinse aid automatically from a refill cartridge that lasts about six months; a "
        "message on the display says when to replace it.",
        "Delay start lets a wash begin up to twenty-four hours later, for example when electricity is cheaper "
        "at night.",
    ],
    [
        "Error code E21 means the door was opened during the heating phase. Close the door firmly and press "
        "start again; the programme continues where it stopped.",
        "If glasses come out cloudy, the water is probably too soft for the amount of detergent: use a "
        "smaller dose or switch to a phosphate-free tablet.",
        "Replacement cartridges are sold as part KD-0722, in packs of two.",
    ],
])

GYM_2025 = Document("gym-rules-2025", "boulderhaus-rules-2025.docx", "docx", [[
    "Boulderhaus house rules, edition 2025.",
    "Children under fourteen climb only with an adult who has signed the supervision form at the desk.",
    "Chalk balls are allowed; loose chalk powder is not, because the dust blocks the ventilation.",
    "Route setting closes the east wall every Monday morning until noon.",
    "Anyone who falls and hits their head must report it to staff, even when they feel fine.",
]], [["Pass", "Price"], ["Day pass", "14 euros"], ["Ten-visit card", "120 euros"], ["Shoe rental", "4 euros"]])

GYM_2027 = Document("gym-rules-2027", "boulderhaus-rules-2027.txt", "text", [[
    "Boulderhaus house rules, edition 2027.",
    "Children under twelve climb only with a supervising adult; from twelve to fifteen they may climb alone "
    "after passing the safety briefing called Kletterstart.",
    "Liquid chalk is the only chalk allowed on the new competition wall; chalk balls remain fine elsewhere.",
    "The east wall is reset on Wednesdays now, closed from opening time until two in the afternoon.",
    "A day pass costs 16 euros and shoe rental 5 euros; ten-visit cards are no longer sold, replaced by a "
    "monthly membership of 59 euros.",
]])

FERRY = Document("ferry-marlow", "marlow-ferry.md", "text", [[
    "# The Marlow river ferry",
    "A cable ferry has crossed the river at Marlow since 1884. It carries up to twelve passengers and four "
    "bicycles and needs no engine: the current pushes the angled hull along a steel cable.",
    "The ferry runs from April to October, every day from eight in the morning until dusk. During floods, "
    "when the gauge at the landing shows more than 2.4 metres, it does not sail.",
    "Tickets are sold on board for two pounds, cash only; dogs travel free.",
]])

DOCUMENTS = [DISHWASHER_D3, DISHWASHER_D7, GYM_2025, GYM_2027, FERRY]

_P, _R, _V = "paraphrase", "rare term", "vague"
QUESTIONS = [
    # the slim dishwasher (PDF, 2 pages), with the big one as its distractor
    Question("How much water does the narrow dishwasher use on its economy cycle?", "kelda-d3", 1,
             "uses 8.5 litres of water", _P),
    Question("Can I put kitchen salt in the softener of the D3?", "kelda-d3", 1, "table salt contains additives", _R),
    Question("Why are my plates still wet after the short cycle?", "kelda-d3", 1, "but does not dry them", _P),
    Question("What does F4 on the display mean?", "kelda-d3", 2, "Error code F4", _R),
    Question("how do I unblock the rotating arms", "kelda-d3", 2, "clear blocked nozzles with a toothpick", _V),
    Question("Which part number is the replacement filter for the slim model?", "kelda-d3", 2, "part KD-0317", _P),
    Question("the water stays at the bottom after washing", "kelda-d3", 2, "the water does not drain", _V),
    # the full-size dishwasher
    Question("How many place settings fit in the wide machine?", "kelda-d7", 1, "fourteen place settings", _P),
    Question("Do I have to add rinse aid myself on the D7?", "kelda-d7", 1, "doses salt and rinse aid automatically", _R),
    Question("Can I set the wash to start overnight?", "kelda-d7", 1, "Delay start lets a wash begin", _P),
    Question("What is error E21?", "kelda-d7", 2, "the door was opened during the heating phase", _R),
    Question("glasses look milky", "kelda-d7", 2, "If glasses come out cloudy", _V),
    Question("What do I order when the automatic dosing cartridge is empty?", "kelda-d7", 2, "part KD-0722", _P),
    # the gym's old rules (DOCX with a table)
    Question("In 2025, from what age could kids climb without a grown-up?", "gym-rules-2025", None,
             "Children under fourteen climb only with an adult", _P),
    Question("Was powdered chalk permitted under the 2025 rules?", "gym-rules-2025", None,
             "loose chalk powder is not", _P),
    Question("What did a ten-visit card cost in 2025?", "gym-rules-2025", None, "120 euros", _P),
    Question("what if I bumped my head but I'm ok", "gym-rules-2025", None, "must report it to staff", _V),
    # the gym's new rules (text)
    Question("What is the Kletterstart?", "gym-rules-2027", None, "the safety briefing called Kletterstart", _R),
    Question("Which day is the east wall closed for new routes since 2027?", "gym-rules-2027", None,
             "reset on Wednesdays now", _P),
    Question("How much is a monthly membership now?", "gym-rules-2027", None, "monthly membership of 59 euros", _P),
    Question("what chalk can I use on the competition wall", "gym-rules-2027", None, "Liquid chalk is the only chalk", _V),
    Question("can my 13 year old climb on her own", "gym-rules-2027", None, "from twelve to fifteen they may climb alone",
             _V),
    # the ferry (Markdown)
    Question("How does the boat cross without a motor?", "ferry-marlow", None, "the current pushes the angled hull", _P),
    Question("Since when has the Marlow ferry operated?", "ferry-marlow", None, "since 1884", _R),
    Question("Does the ferry sail when the river is high?", "ferry-marlow", None, "it does not sail", _P),
    Question("Can I pay by card on the crossing?", "ferry-marlow", None, "cash only", _P),
    Question("is it ok to bring the dog", "ferry-marlow", None, "dogs travel free", _V),
    Question("what months does it run", "ferry-marlow", None, "from April to October", _V),
]

METHODS = ("vector", "keyword", "old: max-normalised, alpha 0.8", "gated on identifiers, alpha 0.8")


def run(labels_only: bool = False) -> dict[str, Any]:
    from aitasks.documents.embedding import load_embedder
    from bench import search_tuning_set
    from bench.search_set import CONFIGS

    started = time.perf_counter()
    embedder = load_embedder()
    methods = {name: search_tuning_set.fusions()[name] for name in METHODS}
    configs = [search_tuning_set._one_config(embedder, c, o, labels_only, DOCUMENTS, QUESTIONS, methods)
               for c, o in CONFIGS]
    return {"set": "third (bench/search_third_set.py)", "questions": len(QUESTIONS), "documents": len(DOCUMENTS),
            "kinds": {kind: sum(1 for q in QUESTIONS if q.kind == kind) for kind in sorted({q.kind for q in QUESTIONS})},
            "model": embedder.name, "configs": configs, "elapsed_s": round(time.perf_counter() - started, 1)}


def main(argv: list[str] | None = None) -> int:
    from bench.search_tuning_set import render

    p = argparse.ArgumentParser(prog="python -m bench.search_third_set", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--labels-only", action="store_true", help="only check that every label matches a chunk")
    args = p.parse_args(argv)
    print(render(run(labels_only=args.labels_only)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
