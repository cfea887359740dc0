"""The per-session journal: one JSON line per row, written before anything else so that a kill loses nothing.

A line is ``{"c":<crc32>,"p":<program row>}`` or ``{"c":<crc32>,"m":<migration row>}``; the CRC covers the row's
JSON text exactly as written, so a byte changed inside a line that still parses is caught too. Lines without
``"c"`` (journals of older versions) are read as before.

Reading tells three kinds of line apart: good rows; a *torn tail* (a last line without its newline that does not
parse: an append cut short by a kill, whose row was never acknowledged, so nothing was lost); and *bad lines*
(anything else that does not parse, fails its checksum or does not fit the archive schema: damage, reported with
the line number and, where the text still shows them, the iteration and program id it held).
"""

from __future__ import annotations

import json
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evolve.schema import ARCHIVE_SCHEMA
from evolve.segments import MIGRATION_SCHEMA, READ_ERRORS, migrations_table, programs_table

PROGRAM_TAG = "p"
MIGRATION_TAG = "m"
JOURNAL_SUFFIX = ".jsonl"

_CHECKED = re.compile(rb'^\{"c":(\d+),"([pm])":')
_ITERATION = re.compile(rb'"iteration":(-?\d+)')
_PROGRAM_ID = re.compile(rb'"program_id":"([0-9a-f]{6,64})"')
_TAG = re.compile(rb'"([pm])":\{')
_REQUIRED = {PROGRAM_TAG: frozenset(ARCHIVE_SCHEMA.names), MIGRATION_TAG: frozenset(MIGRATION_SCHEMA.names)}


def encode_line(tag: str, row: dict[str, Any]) -> bytes:
    payload = json.dumps(row, separators=(",", ":")).encode("utf-8")
    return b'{"c":%d,"%s":%s}\n' % (zlib.crc32(payload), tag.encode(), payload)


@dataclass(frozen=True)
class BadLine:
    """A journal line that could not be read back: damage."""

    number: int  # 1-based line number
    offset: int  # byte offset of the line in the file
    reason: str
    tag: str | None = None  # "p" (a program row) or "m" (a migration), where the text still shows it
    iteration: int | None = None
    program_id: str | None = None


@dataclass(frozen=True)
class JournalContent:
    path: Path
    programs: list[dict[str, Any]]
    migrations: list[dict[str, Any]]
    bad: list[BadLine] = field(default_factory=list)
    torn_tail: bool = False  # ended in an unacknowledged append cut short by a kill

    @property
    def bad_lines(self) -> int:
        return len(self.bad) + int(self.torn_tail)


def _hints(line: bytes) -> dict[str, Any]:
    tag = _TAG.search(line[:64])
    iteration = _ITERATION.search(line)
    program_id = _PROGRAM_ID.search(line)
    return {
        "tag": tag.group(1).decode() if tag else None,
        "iteration": int(iteration.group(1)) if iteration else None,
        "program_id": program_id.group(1).decode() if program_id else None,
    }


def _decode(line: bytes) -> tuple[str, dict[str, Any]]:
    """``(tag, row)`` of one line; raises ValueError with the reason."""
    checked = _CHECKED.match(line)
    if checked:
        payload = line[checked.end():-1] if line.endswith(b"}") else b""
        if not payload or zlib.crc32(payload) != int(checked.group(1)):
            raise ValueError("checksum mismatch (the line's bytes changed after it was written)")
        tag, row = checked.group(2).decode(), json.loads(payload)
    else:
        try:
            entry = json.loads(line)
        except UnicodeDecodeError:
            raise ValueError("not UTF-8 text") from None
        if not isinstance(entry, dict):
            raise ValueError("not a JSON object")
        tag = PROGRAM_TAG if PROGRAM_TAG in entry else MIGRATION_TAG if MIGRATION_TAG in entry else ""
        if not tag:
            raise ValueError("neither a program nor a migration row")
        row = entry[tag]
    if not isinstance(row, dict) or not isinstance(row.get("program_id"), str):
        raise ValueError("the row has no program_id")
    missing = _REQUIRED[tag] - row.keys()
    if missing:  # evolve writes every column of a row; a row without them is not one it wrote
        names = sorted(missing)
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        raise ValueError(f"not a row evolve wrote (no {shown})")
    return tag, row


def read_journal(path: Path) -> JournalContent:
    data = path.read_bytes()
    rows: dict[str, list[tuple[dict[str, Any], BadLine]]] = {PROGRAM_TAG: [], MIGRATION_TAG: []}
    bad: list[BadLine] = []
    torn = False
    offset = 0
    lines = data.split(b"\n")
    for number, line in enumerate(lines, 1):
        start, offset = offset, offset + len(line) + 1
        if not line.strip():
            continue
        try:
            tag, row = _decode(line)
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            if number == len(lines):  # no newline after it: the append never finished
                torn = True
            else:
                reason = "not valid JSON" if isinstance(exc, json.JSONDecodeError) else str(exc)
                bad.append(BadLine(number, start, reason, **_hints(line)))
            continue
        place = BadLine(number, start, "", tag, row.get("iteration") if tag == PROGRAM_TAG else None,
                        row.get("program_id"))
        rows[tag].append((row, place))
    programs = _schema_checked(rows[PROGRAM_TAG], programs_table, bad)
    migrations = _schema_checked(rows[MIGRATION_TAG], migrations_table, bad)
    bad.sort(key=lambda b: b.number)
    return JournalContent(path, programs, migrations, bad, torn)


def _schema_checked(rows: list[tuple[dict[str, Any], BadLine]], make: Any, bad: list[BadLine]) -> list[dict[str, Any]]:
    """Rows that convert to the archive schema; the others are recorded as bad lines."""
    try:
        make([row for row, _ in rows])
        return [row for row, _ in rows]
    except READ_ERRORS:
        pass
    good = []
    for row, place in rows:
        try:
            make([row])
            good.append(row)
        except READ_ERRORS as exc:
            kind = "migration" if make is migrations_table else "program"
            reason = f"the {kind} row does not fit the archive schema ({type(exc).__name__}: {exc})"
            iteration = place.iteration if isinstance(place.iteration, int) else None
            bad.append(BadLine(place.number, place.offset, reason, place.tag, iteration, place.program_id))
    return good


def journal_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.name.endswith(JOURNAL_SUFFIX) and not p.name.startswith("."))

