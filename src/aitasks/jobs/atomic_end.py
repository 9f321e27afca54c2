"""The UPDATE script, assembled from per-feature Lua fragments: still one atomic step (one EVALSHA).

Every change to a job goes through one Lua script, so whatever a change implies (the event, the
counters, the parent's chord, the document record, the webhook delivery) happens with it or not at
all. Each of those concerns lives next to its feature as a ``.lua`` fragment; ``assemble`` splices
them into the frame (``jobs/end_state.lua``) once, at import, and jobs/lua.py substitutes the key
names from keys.py.

The frame refuses a change to an unknown (0) or finished (-1) job, applies it, bumps ``seq``, reads
the record back into ``f``, runs the fragments, publishes the event and returns ``seq``. What it gives
the fragments is written at the top of end_state.lua: ``status`` (before the change), ``seq``, ``f``,
``x`` (the record fields the fragments declared, by name, read in the same HMGET as ``f``) and
``terminal`` for every fragment; ``now`` for terminal ones. A fragment reads these, writes its own keys,
never returns, and states at its top which locals it uses. Each runs in its own ``do ... end``
block, so its locals are its own.

``FRAGMENTS`` is the declared order. A new concern (a hand-off into a Redis Stream, flow-control
counters) adds a ``.lua`` file and one line here, with ``terminal=True`` when it only acts on the
change that ends a job, and the record ``fields`` it reads (and, for a new key, its placeholder
in keys.py and jobs/lua.py); it does not edit the others. Fragments are indented as they are
spliced, so they hold no long ``[[...]]`` strings.
"""

from __future__ import annotations

from dataclasses import dataclass

from aitasks.jobs import lua

FRAME = ("aitasks.jobs", "end_state.lua")
TERMINAL_MARK = "-- <terminal fragments>"
EVERY_MARK = "-- <every-change fragments>"


@dataclass(frozen=True)
class Fragment:
    name: str
    package: str
    file: str
    terminal: bool  # True: runs only on the change that ends the job; False: on every change
    fields: tuple[str, ...] = ()  # record fields it reads from ``x``


FRAGMENTS: tuple[Fragment, ...] = (
    Fragment("metrics", "aitasks.jobs", "metrics_end.lua", terminal=True),
    Fragment("usage", "aitasks.jobs", "usage_end.lua", terminal=True,
             fields=("tenant", "queue", "children_total")),
    Fragment("chord", "aitasks.worker", "chord_end.lua", terminal=True, fields=("parent",)),
    Fragment("documents", "aitasks.documents", "records_end.lua", terminal=True, fields=("document", "result")),
    # After documents: the entry carries the document record as that fragment left it.
    Fragment("history", "aitasks.store", "history_end.lua", terminal=True, fields=("document",)),
    Fragment("live", "aitasks.jobs", "live_end.lua", terminal=True),
    Fragment("dispatch", "aitasks.jobs", "dispatch_end.lua", terminal=True, fields=("tenant", "queue", "priority")),
    Fragment("webhooks", "aitasks.jobs", "webhooks_end.lua", terminal=False, fields=("webhook", "webhook_events")),
    Fragment("queued", "aitasks.jobs", "queued_end.lua", terminal=False, fields=("tenant",)),
)


def _block(fragment: Fragment, indent: str) -> str:
    """The fragment in its own ``do ... end`` block (its locals stay its own), indented like its mark."""
    body = lua.source(fragment.package, fragment.file).rstrip("\n").splitlines()
    lines = [f"-- fragment {fragment.name} ({fragment.package}/{fragment.file})", "do",
             *("  " + line if line else "" for line in body), "end"]
    return "\n".join(indent + line if line else "" for line in lines)


def _splice(frame: str, mark: str, fragments: list[Fragment]) -> str:
    """``frame`` with the line holding ``mark`` replaced by ``fragments``' blocks."""
    lines = frame.split("\n")
    at = [i for i, line in enumerate(lines) if line.strip() == mark]
    if len(at) != 1:
        raise ValueError(f"{FRAME[1]} must hold {mark!r} exactly once, on a line of its own")
    indent = lines[at[0]][: len(lines[at[0]]) - len(lines[at[0]].lstrip())]
    lines[at[0]] = "\n".join(_block(f, indent) for f in fragments)
    return "\n".join(lines)


def assemble(fragments: tuple[Fragment, ...] = FRAGMENTS) -> str:
    """The frame with ``fragments`` spliced in, in order, every placeholder substituted."""
    fields = list(dict.fromkeys(name for f in fragments for name in f.fields))
    script = _splice(lua.source(*FRAME), TERMINAL_MARK, [f for f in fragments if f.terminal])
    script = _splice(script, EVERY_MARK, [f for f in fragments if not f.terminal])
    return lua.render(script, {"@FIELDS@": ", ".join(f"'{name}'" for name in fields)})
