"""The per-session journal: one JSON line per row, written before anything else so that a kill loses nothing.

A line is ``{"c":<crc32>,"<tag>":<row>}`` where the tag names the row's table (``evolve.segments.TABLES``): ``"p"``
a program row, ``"m"`` a migration, ``"e"`` an event. The CRC covers the row's JSON text exactly as written, so a
byte changed inside a line that still parses is caught too. Lines without ``"c"`` (journals of older versions) are
read as before.

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

import pyarrow as pa

from evolve.segments import (
    EVENT_TABLE,
    READ_ERRORS,
    TABLE_BY_TAG,
    TABLES,
    TableKind,
)

EVENT_TAG = EVENT_TABLE.tag
JOURNAL_SUFFIX = ".jsonl"

_TAGS = "".join(t.tag for t in TABLES).encode()
_CHECKED = re.compile(rb'^\{"c":(\d+),"([' + _TAGS + rb'])":')
_ITERATION = re.compile(rb'"iteration":(-?\d+)')
_PROGRAM_ID = re.compile(rb'"program_id":"([0-9a-f]{6,64})"')
_EVENT_ID = re.compile(rb'"event_id":"([^"\\]{1,200})"')
_EVENT_KIND = re.compile(rb'"kind":"([^"\\]{1,200})"')
_TAG = re.compile(rb'"([' + _TAGS + rb'])":\{')


def encode_line(tag: str, row: dict[str, Any]) -> bytes:
    payload = json.dumps(row, separators=(",", ":")).encode("utf-8")
    return b'{"c":%d,"%s":%s}\n' % (zlib.crc32(payload), tag.encode(), payload)


@dataclass(frozen=True)
class BadLine:
    """A journal line that could not be read back: damage."""

    number: int  # 1-based line number
    offset: int  # byte offset of the line in the file
    reason: str
    tag: str | None = None  # the table's tag ("p" a program row, "m" a migration, "e" an event), where shown
    iteration: int | None = None
    program_id: str | None = None
    event_id: str | None = None  # an event line's id and kind, where the text still shows them
    event_kind: str | None = None

    @property
    def table(self) -> TableKind | None:
        return TABLE_BY_TAG.get(self.tag or "")

    @property
    def may_be_program(self) -> bool:
        """A program row, or a line that shows no table: it may have held an iteration of the budget."""
        return self.table is None or self.table.iterations


@dataclass(frozen=True)
class JournalContent:
    path: Path
    rows: dict[str, list[dict[str, Any]]]  # table name -> its good rows, in journal order
    bad: list[BadLine] = field(default_factory=list)
    torn_tail: bool = False  # ended in an unacknowledged append cut short by a kill
    tables: dict[str, pa.Table] = field(default_factory=dict)  # the good rows as Arrow, converted when checked

    def of(self, table: TableKind) -> list[dict[str, Any]]:
        return self.rows.get(table.name, [])

    def arrow(self, table: TableKind) -> pa.Table:
        """The good rows of ``table`` in its schema (the conversion that checked them: readers need not redo it)."""
        found = self.tables.get(table.name)
        return found if found is not None else table.schema.empty_table()

    @property
    def bad_lines(self) -> int:
        return len(self.bad) + int(self.torn_tail)


def _text(match: re.Match[bytes] | None) -> str | None:
    return match.group(1).decode("utf-8", "replace") if match else None


def _hints(line: bytes) -> dict[str, Any]:
    tag = _TAG.search(line[:64])
    iteration = _ITERATION.search(line)
    hints = {
        "tag": tag.group(1).decode() if tag else None,
        "iteration": int(iteration.group(1)) if iteration else None,
        "program_id": _text(_PROGRAM_ID.search(line)),
    }
    if hints["tag"] == EVENT_TAG:
        hints.update(event_id=_text(_EVENT_ID.search(line)), event_kind=_text(_EVENT_KIND.search(line)))
    return hints


def _decode(line: bytes) -> tuple[TableKind, dict[str, Any]]:
    """``(table, row)`` of one line; raises ValueError with the reason."""
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
        tag = next((t.tag for t in TABLES if t.tag in entry), "")
        if not tag:
            raise ValueError("not a row of any archive table (program, migration or event)")
        row = entry[tag]
    table = TABLE_BY_TAG[tag]
    if not isinstance(row, dict) or not isinstance(row.get(table.id_column), str):
        raise ValueError(f"the row has no {table.id_column}")
    missing = set(table.schema.names) - row.keys()
    if missing:  # evolve writes every column of a row; a row without them is not one it wrote
        names = sorted(missing)
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        raise ValueError(f"not a row evolve wrote (no {shown})")
    return table, row


def read_journal(path: Path) -> JournalContent:
    data = path.read_bytes()
    rows: dict[str, list[tuple[dict[str, Any], BadLine]]] = {t.name: [] for t in TABLES}
    bad: list[BadLine] = []
    torn = False
    offset = 0
    lines = data.split(b"\n")
    for number, line in enumerate(lines, 1):
        start, offset = offset, offset + len(line) + 1
        if not line.strip():
            continue
        try:
            table, row = _decode(line)
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            if number == len(lines):  # no newline after it: the append never finished
                torn = True
            else:
                reason = "not valid JSON" if isinstance(exc, json.JSONDecodeError) else str(exc)
                bad.append(BadLine(number, start, reason, **_hints(line)))
            continue
        event = table is EVENT_TABLE
        place = BadLine(number, start, "", table.tag, row.get("iteration") if table.iterations else None,
                        row.get("program_id"), row.get("event_id") if event else None,
                        row.get("kind") if event else None)
        rows[table.name].append((row, place))
    checked = {t.name: _schema_checked(rows[t.name], t, bad) for t in TABLES}
    bad.sort(key=lambda b: b.number)
    return JournalContent(path, {name: good for name, (good, _) in checked.items()}, bad, torn,
                          {name: arrow for name, (_, arrow) in checked.items()})


def _schema_checked(rows: list[tuple[dict[str, Any], BadLine]], table: TableKind, bad: list[BadLine]
                    ) -> tuple[list[dict[str, Any]], pa.Table]:
    """Rows that convert to the table's schema, and their conversion; the others are recorded as bad lines."""
    try:
        return [row for row, _ in rows], table.table([row for row, _ in rows])
    except READ_ERRORS:
        pass
    good: list[dict[str, Any]] = []
    converted = [table.schema.empty_table()]
    for row, place in rows:
        try:
            converted.append(table.table([row]))
            good.append(row)
        except READ_ERRORS as exc:
            reason = f"the {table.noun} row does not fit the archive schema ({type(exc).__name__}: {exc})"
            iteration = place.iteration if isinstance(place.iteration, int) else None
            bad.append(BadLine(place.number, place.offset, reason, place.tag, iteration, place.program_id,
                               _str_or_none(place.event_id), _str_or_none(place.event_kind)))
    return good, pa.concat_tables(converted)


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def journal_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.name.endswith(JOURNAL_SUFFIX) and not p.name.startswith("."))

