"""Generate the blocking client, src/aitasks/client/sync.py, from the asyncio one, async_client.py, as
httpcore does: a list of regex substitutions (AsyncClient -> Client, async def -> def, await -> ...).

    .venv/bin/python scripts/unasync.py           # rewrite sync.py
    .venv/bin/python scripts/unasync.py --check   # exit 1, with a diff, if sync.py is not what it makes

What differs between the two by more than these words lives in client/concurrency.py, in pairs.
A substitution that no longer matches anything fails the run, so the list stays exact.
"""

from __future__ import annotations

import argparse
import difflib
import io
import re
import sys
import tokenize
from pathlib import Path

CLIENT = Path(__file__).resolve().parent.parent / "src" / "aitasks" / "client"
SOURCE, TARGET = CLIENT / "async_client.py", CLIENT / "sync.py"

HEADER = """\
# GENERATED FILE, do not edit: scripts/unasync.py writes it from src/aitasks/client/async_client.py.
# Change async_client.py, then run `.venv/bin/python scripts/unasync.py` (a test checks the two agree).
"""

NOTE = re.compile(r"^# sync\.py .*\n(?:# .*\n)*\n", re.MULTILINE)  # async_client.py's note to its editors

SUBS: list[tuple[re.Pattern[str], str]] = [(re.compile(pattern), replacement) for pattern, replacement in [
    (r"\bThe asyncio client\b", "The synchronous client"),
    (r"\bAsync([A-Z]\w*)", r"\1"),  # AsyncClient, AsyncJob, AsyncIterator, AsyncGenerator, AsyncBaseTransport
    (r"\basync def\b", "def"),
    (r"\basync with\b", "with"),
    (r"\basync for\b", "for"),
    (r"\bawait ", ""),
    (r"\basync_(\w+)", r"\1"),  # the pairs of concurrency.py
    (r"\baclosing\b", "closing"),
    (r"\baclose\b", "close"),
    (r"\baread\b", "read"),
    (r"\baiter_(\w+)", r"iter_\1"),
    (r"\b__aenter__\b", "__enter__"),
    (r"\b__aexit__\b", "__exit__"),
]]


def substitute(text: str, used: set[int] | None = None) -> str:
    for index, (pattern, replacement) in enumerate(SUBS):
        text, count = pattern.subn(replacement, text)
        if count and used is not None:
            used.add(index)
    return text


def enclosing_brackets(source: str) -> dict[int, tuple[int, int]]:
    """For each line that starts inside brackets: (line, column) of the innermost open one (0-based)."""
    stack: list[tuple[int, int]] = []
    enclosing: dict[int, tuple[int, int]] = {}
    last_row = 0
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        row, col = tok.start[0] - 1, tok.start[1]
        if row > last_row and stack:
            enclosing.setdefault(row, stack[-1])
        last_row = tok.end[0] - 1
        if tok.type == tokenize.OP and tok.string in "([{":
            stack.append((row, col))
        elif tok.type == tokenize.OP and tok.string in ")]}":
            stack.pop()
    return enclosing


def unasync(source: str) -> str:
    """The blocking twin of the asyncio source, with the header; ValueError if a substitution is stale.
    Substitutions shorten lines, so continuation lines aligned under an open bracket move with it."""
    source, notes = NOTE.subn("", source, count=1)
    lines = source.splitlines(keepends=True)
    enclosing = enclosing_brackets(source)
    used: set[int] = set()
    indents: list[int] = []
    out = []
    for row, line in enumerate(lines):
        body = line.lstrip(" ")
        indent = len(line) - len(body)
        if row in enclosing and indent == enclosing[row][1] + 1:
            open_row, open_col = enclosing[row]
            opener = lines[open_row]
            start = len(opener) - len(opener.lstrip(" "))
            indent = indents[open_row] + len(substitute(opener[start:open_col])) + 1
        indents.append(indent)
        out.append(" " * indent + substitute(body, used) if body.strip() else line)
    stale = [SUBS[i][0].pattern for i in range(len(SUBS)) if i not in used] + ([] if notes else [NOTE.pattern])
    if stale:
        raise ValueError(f"substitutions that match nothing in {SOURCE.name}: {stale}")
    generated = HEADER + "".join(out)
    left = {t.string for t in tokenize.generate_tokens(io.StringIO(generated).readline)
            if t.type == tokenize.NAME and t.string in ("async", "await", "asyncio")}
    if left:
        raise ValueError(f"{sorted(left)} left in the blocking client: add a substitution or a concurrency.py pair")
    return generated


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that sync.py is up to date")
    args = parser.parse_args(argv)
    wanted = unasync(SOURCE.read_text())
    current = TARGET.read_text() if TARGET.exists() else ""
    if args.check:
        if current == wanted:
            return 0
        diff = difflib.unified_diff(current.splitlines(keepends=True), wanted.splitlines(keepends=True),
                                    str(TARGET), f"{TARGET} (generated)")
        sys.stdout.writelines(diff)
        print(f"{TARGET} is out of date: run scripts/unasync.py", file=sys.stderr)
        return 1
    if current != wanted:
        TARGET.write_text(wanted)
        print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
