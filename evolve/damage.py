"""Finding, describing and quarantining damage in a run folder. Never repairs anything silently.

``inspect_run`` reads everything a resume needs with full verification (every page of every segment, every
journal line) and lists what could not be read: unreadable or corrupt segments, segments the ledger lists but that
are gone, and bad journal lines, each with the file, the rows and iterations it held where known, and where that
knowledge came from. ``verify_run`` finds the same damage without keeping the rows (``evolve archive verify``).

A damaged file is only ever moved, into ``RUN/damaged/<its folder>/``, next to a ``<name>.note.json`` that says
what it was, why it was moved and what it held (``quarantine``). That happens only when the user accepts the damage
(``evolve run --resume --accept-damage``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from evolve.journal import JournalContent, journal_files, read_journal
from evolve.ranges import format_ranges, to_ranges
from evolve.segments import (
    DAMAGED_DIR,
    EVENT_TABLE,
    JOURNAL_DIR,
    MIGRATION_TABLE,
    PROGRAM_TABLE,
    READ_ERRORS,
    SEGMENT_SUFFIX,
    TABLES,
    Ledger,
    TableKind,
    conform,
    describe_error,
    footer_rows,
    fsync_dir,
    ledger_retired,
    read_ledger,
    read_segment,
    readable_column,
    relative,
    segment_files,
    table_of_file,
    verify_file,
    write_json_atomic,
)

_SHOWN_EVENTS = 5  # event ids named in a damage line; the note lists them all


class DamageKind(StrEnum):
    UNREADABLE = "unreadable"  # not a whole Parquet file: empty, truncated, overwritten
    CORRUPT = "corrupt"  # the footer reads, but a column chunk does not (found only by a full read)
    MISSING = "missing"  # the ledger says it was written; it is gone
    JOURNAL = "journal"  # journal lines that do not read back


@dataclass(frozen=True)
class Damage:
    """One damaged (or missing) file and what it held, as far as anything tells."""

    file: str  # relative to the run folder
    kind: DamageKind
    reason: str
    table: str = "programs"  # or "migrations", "events" (``evolve.segments.TABLES``)
    rows: int | None = None  # rows it held, where known
    iterations: tuple[int, ...] = ()  # iterations of the program rows it held, where known
    known_from: str = ""  # where ``rows``/``iterations`` come from
    lines: tuple[int, ...] = ()  # journal: the bad line numbers
    unknown_rows: int = 0  # program rows whose iteration nothing tells
    event_ids: tuple[str, ...] = ()  # events it held, where known (events are no iterations: never "lost" ones)
    event_kinds: tuple[tuple[str, int], ...] = ()  # (kind, count) of the events it held, where known

    def describe(self) -> str:
        what = self.reason
        if self.lines:
            what = f"line(s) {format_ranges(self.lines)}: {self.reason}"
        return f"{self.file}: {what}; held {self.held()}"

    def held(self) -> str:
        """What the file held, as far as anything tells, and where that is known from."""
        held = []
        if self.table == "migrations":
            held.append(f"{self.rows} migration event(s)" if self.rows is not None else "migration events")
        elif self.table == "events":
            held.append(f"{self.rows} event(s)" if self.rows is not None else "events")
        elif self.iterations:
            held.append(f"{len(self.iterations)} program row(s), iteration(s) {format_ranges(self.iterations)}")
        elif self.rows is not None:
            held.append(f"{self.rows} program row(s)")
        if self.unknown_rows and self.iterations:
            held.append(f"{self.unknown_rows} more of unknown iteration")
        if not held:
            held.append("rows unknown")
        if self.event_kinds:
            held.append("kinds " + ", ".join(f"{kind} ({n})" for kind, n in self.event_kinds))
        if self.event_ids:
            more = len(self.event_ids) - _SHOWN_EVENTS
            held.append("event id(s) " + ", ".join(self.event_ids[:_SHOWN_EVENTS])
                        + (f" and {more} more" if more > 0 else ""))
        source = f" (from {self.known_from})" if self.known_from else ""
        return f"{', '.join(held)}{source}"

    def to_dict(self) -> dict[str, Any]:
        data = {"file": self.file, "kind": self.kind.value, "reason": self.reason, "table": self.table,
                "rows": self.rows, "iterations": to_ranges(self.iterations), "known_from": self.known_from,
                "lines": list(self.lines), "unknown_rows": self.unknown_rows}
        if self.event_ids or self.event_kinds:
            data.update(event_ids=list(self.event_ids), event_kinds=dict(self.event_kinds))
        return data


@dataclass
class RunInspection:
    """Everything readable in a run, fully verified, and everything that is not."""

    run_dir: Path
    programs: pa.Table  # one row per program_id (the earliest written), iteration order; journals included
    migrations: pa.Table
    damage: list[Damage]
    journals: list[JournalContent] = field(default_factory=list)
    ledger: Ledger = field(default_factory=Ledger)
    fingerprint: tuple[tuple[str, int, int], ...] = ()
    events: pa.Table = field(default_factory=EVENT_TABLE.schema.empty_table)  # by created_at, then event_id

    @property
    def torn_tails(self) -> list[Path]:
        return [j.path for j in self.journals if j.torn_tail]

    @functools.cached_property
    def present_iterations(self) -> frozenset[int]:
        """Iterations a readable row holds (built once: a resume asks three times)."""
        return frozenset(self.programs.column("iteration").to_pylist()) if self.programs.num_rows else frozenset()

    def lost_iterations(self) -> set[int]:
        """Child iterations the damage held that no readable row holds."""
        held = {i for d in self.damage for i in d.iterations if i > 0}
        return held - self.present_iterations

    def unknown_lost_rows(self) -> int:
        return sum(d.unknown_rows for d in self.damage)

    def max_iteration(self) -> int:
        """The highest iteration number ever used, readable, damaged or only in the ledger."""
        present = max(self.present_iterations, default=-1)
        damaged = max((i for d in self.damage for i in d.iterations), default=-1)
        return max(present, damaged, self.ledger.max_iteration)

    def summary_lines(self) -> list[str]:
        return [d.describe() for d in self.damage]


# ---------------------------------------------------------------------------------------------------------------
# Reading everything


def fingerprint(run_dir: Path) -> tuple[tuple[str, int, int], ...]:
    """Names, sizes and modification times of every data file: equal fingerprints, same content (files are
    immutable once renamed into place, and journals only grow)."""
    found = []
    for sub in (*(t.directory for t in TABLES), JOURNAL_DIR):
        directory = run_dir / sub
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            for name in sorted(n for n in os.listdir(directory) if not n.startswith(".")):
                with contextlib.suppress(FileNotFoundError):
                    st = (directory / name).stat()
                    found.append((f"{sub}/{name}", st.st_size, st.st_mtime_ns))
    return tuple(found)


def _segment_damage(run_dir: Path, path: Path, table: TableKind, reason: str, ledger: Ledger) -> Damage:
    """Describe a damaged segment: its rows and iterations from its own readable parts, else from the ledger."""
    name = relative(run_dir, path)
    rows = footer_rows(path)
    kind = DamageKind.CORRUPT if rows is not None else DamageKind.UNREADABLE
    entry = ledger.entries.get(name)
    iterations: tuple[int, ...] = ()
    known_from = ""
    if table.iterations:
        column = readable_column(path, "iteration") if rows is not None else None
        if column is not None:
            iterations, known_from = tuple(sorted({int(i) for i in column if i is not None})), "its iteration column"
        elif entry is not None and entry.iterations:
            iterations, known_from = tuple(sorted(entry.iterations)), "the ledger"
    event_ids: tuple[str, ...] = ()
    event_kinds: tuple[tuple[str, int], ...] = ()
    if table is EVENT_TABLE:
        ids = readable_column(path, "event_id") if rows is not None else None
        kinds = readable_column(path, "kind") if rows is not None else None
        event_ids = tuple(str(i) for i in ids or [] if i is not None)
        if kinds is not None:
            event_kinds = _count_kinds(kinds)
        elif entry is not None:
            event_kinds = entry.kinds
        if event_ids or kinds is not None:
            known_from = "its readable columns"
    if rows is None and entry is not None:
        rows, known_from = entry.rows, known_from or "the ledger"
    elif rows is not None and not known_from:
        known_from = "its footer"
    unknown = 0
    if table.iterations and not iterations:
        unknown = rows or 0
    return Damage(name, kind, reason, table.name, rows, iterations, known_from, (), unknown, event_ids, event_kinds)


def _count_kinds(kinds: list[Any]) -> tuple[tuple[str, int], ...]:
    return tuple(sorted(Counter(str(kind) for kind in kinds).items()))


def journals_damage(run_dir: Path, journals: list[JournalContent]) -> list[Damage]:
    """The damage of each journal that has any."""
    return [d for d in (journal_damage(run_dir, j) for j in journals) if d is not None]


def journal_damage(run_dir: Path, content: JournalContent) -> Damage | None:
    if not content.bad:
        return None
    iterations = tuple(sorted({b.iteration for b in content.bad if b.may_be_program and isinstance(b.iteration, int)}))
    unknown = sum(1 for b in content.bad if b.may_be_program and b.iteration is None)
    events = [b for b in content.bad if b.table is EVENT_TABLE]
    # A journal whose bad lines were all events held no iteration of the budget.
    table = EVENT_TABLE.name if len(events) == len(content.bad) else PROGRAM_TABLE.name
    reasons = sorted({b.reason for b in content.bad})
    return Damage(relative(run_dir, content.path), DamageKind.JOURNAL, "; ".join(reasons), table,
                  len(content.bad), iterations, "the line text" if iterations or events else "",
                  tuple(b.number for b in content.bad), unknown,
                  tuple(b.event_id for b in events if b.event_id is not None),
                  _count_kinds([b.event_kind for b in events if b.event_kind is not None]))


def _missing(run_dir: Path, ledger: Ledger) -> list[Damage]:
    damage = []
    for name in ledger.expected_files():
        if (run_dir / name).exists() or (run_dir / DAMAGED_DIR / name).exists():
            continue  # present, or moved aside by an accepted resume killed before it told the ledger
        entry = ledger.entries[name]
        table = table_of_file(name)
        iterations = tuple(sorted(entry.iterations))
        damage.append(Damage(name, DamageKind.MISSING, "listed in the ledger, but the file is gone", table.name,
                             entry.rows, iterations, "the ledger",
                             unknown_rows=entry.rows if table.iterations and not iterations else 0,
                             event_kinds=entry.kinds))
    return damage


def first_per_key(table: pa.Table, keys: list[str]) -> pa.Table:
    """Keep the first row (in table order) of each distinct ``keys`` tuple."""
    if table.num_rows == 0:
        return table
    if len(keys) == 1 and pc.count_distinct(table.column(keys[0])).as_py() == table.num_rows:
        return table  # the usual case: nothing to drop, no copy
    positions = pa.array(np.arange(table.num_rows, dtype=np.int64))
    grouped = table.select(keys).append_column("_pos", positions)
    first = grouped.group_by(keys, use_threads=False).aggregate([("_pos", "min")]).column("_pos_min")
    return table.take(pa.array(np.sort(first.to_numpy())))


def sorted_by_iteration(table: pa.Table) -> pa.Table:
    iteration = table.column("iteration").to_numpy()
    if table.num_rows < 2 or bool(np.all(iteration[1:] >= iteration[:-1])):
        return table  # segments are written in iteration order in a sequential run: no copy
    return table.take(pc.sort_indices(table, [("iteration", "ascending")]))  # stable: keeps write order on ties


def dedup_sorted(tables: list[pa.Table], schema: pa.Schema, keys: list[str],
                 order: tuple[str, ...] = ("iteration",)) -> pa.Table:
    """One row per key (the first in ``tables`` order), sorted by ``order`` (stable)."""
    table = pa.concat_tables(tables) if tables else schema.empty_table()
    table = first_per_key(table, keys)
    if order == ("iteration",):
        return sorted_by_iteration(table)
    if table.num_rows < 2:
        return table
    return table.take(pc.sort_indices(table, [(name, "ascending") for name in order]))


def dedup_table(tables: list[pa.Table], table: TableKind) -> pa.Table:
    """The rows of one archive table, deduplicated by its key and in its order."""
    return dedup_sorted(tables, table.schema, list(table.key), table.order)


def read_journals(run_dir: Path) -> list[JournalContent]:
    contents = []
    for path in journal_files(run_dir / JOURNAL_DIR):
        with contextlib.suppress(FileNotFoundError):  # flushed and deleted meanwhile: its segment is read later
            contents.append(read_journal(path))
    return contents


def read_segments(run_dir: Path, table: TableKind, columns: list[str] | None,
                  on_bad: Callable[[Path, str], None]) -> list[pa.Table]:
    tables = []
    for path in segment_files(run_dir / table.directory):
        try:
            tables.append(read_segment(path, table.schema, columns, table.id_column))
        except FileNotFoundError:
            continue  # removed by a concurrent compaction; its rows are in the merged segment
        except READ_ERRORS as exc:
            on_bad(path, describe_error(path, exc))
    return tables


def inspect_run(run_dir: str | Path) -> RunInspection:
    """Read every row of a run with full verification; list the damage (see the module docstring)."""
    run_dir = Path(run_dir)
    ledger = read_ledger(run_dir)
    prints = fingerprint(run_dir)
    # Journals before segments: a flush between the two reads moves rows into a segment still to be read.
    journals = read_journals(run_dir)
    damage = journals_damage(run_dir, journals)
    found: dict[str, pa.Table] = {}
    for table in TABLES:
        def bad(path: Path, reason: str, table: TableKind = table) -> None:
            damage.append(_segment_damage(run_dir, path, table, reason, ledger))

        tables = read_segments(run_dir, table, None, bad)
        tables += [conform(j.arrow(table), table.schema, None) for j in journals if j.of(table)]
        found[table.name] = dedup_table(tables, table)
    damage += _missing(run_dir, ledger)
    return RunInspection(
        run_dir=run_dir,
        programs=found[PROGRAM_TABLE.name],
        migrations=found[MIGRATION_TABLE.name],
        damage=damage,
        journals=journals,
        ledger=ledger,
        fingerprint=prints,
        events=found[EVENT_TABLE.name],
    )


Stamp = tuple[int, int]  # a file's size and modification time (ns): segments never change once written


def verify_run(run_dir: str | Path, known: Callable[[str, Stamp], bool] | None = None,
               on_ok: Callable[[str, Stamp], None] | None = None) -> list[Damage]:
    """The damage ``inspect_run`` would find, without keeping any rows (bounded memory).

    ``known(key, stamp)`` may say a segment (``key`` like ``"segments/<name>"``) was verified before with that
    stamp (a verification cache); ``on_ok`` hears of each file found whole (see ``unreadable_segments``)."""
    run_dir = Path(run_dir)
    ledger = read_ledger(run_dir)
    damage = journals_damage(run_dir, read_journals(run_dir))
    damage += [_segment_damage(run_dir, path, table, reason, ledger)
               for table, path, reason in unreadable_segments(run_dir, known, on_ok)]
    return damage + _missing(run_dir, ledger)


def unreadable_segments(run_dir: Path, known: Callable[[str, Stamp], bool] | None = None,
                        on_ok: Callable[[str, Stamp], None] | None = None) -> Iterator[tuple[TableKind, Path, str]]:
    """Every segment of every table read in full, pages checked, except those ``known(key, stamp)`` skips; yields
    each that does not read back, with the reason. Files that vanish meanwhile (compaction) are passed over.

    Plain strings, not ``Path`` objects, until a file must be read: a million-row run has a thousand segments, and
    this runs before every query."""
    for table in TABLES:
        sub = table.directory
        directory = os.path.join(run_dir, sub)
        try:
            names = sorted(n for n in os.listdir(directory) if n.endswith(SEGMENT_SUFFIX) and not n.startswith("."))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for name in names:
            key = f"{sub}/{name}"
            try:
                st = os.stat(os.path.join(directory, name))
            except FileNotFoundError:
                continue  # compacted away meanwhile
            stamp = (st.st_size, st.st_mtime_ns)
            if known is not None and known(key, stamp):
                continue
            path = run_dir / sub / name
            try:
                reason = verify_file(path, table.id_column)
            except FileNotFoundError:
                continue
            if reason is None:
                if on_ok is not None:
                    on_ok(key, stamp)
            else:
                yield table, path, reason


# ---------------------------------------------------------------------------------------------------------------
# Quarantine


def _free(dest: Path) -> Path:
    candidate, k = dest, 1
    while candidate.exists() or candidate.with_name(candidate.name + ".note.json").exists():
        candidate = dest.with_name(f"{dest.name}.{k}")
        k += 1
    return candidate


def quarantine(run_dir: Path, damage: Damage, note: dict[str, Any]) -> str | None:
    """Move a damaged file to ``RUN/damaged/<folder>/`` with a note beside it; returns where it went.

    A missing file is only marked in the ledger (so it is not reported again)."""
    if damage.kind is DamageKind.MISSING:
        ledger_retired(run_dir, [damage.file], "missing, accepted as lost")
        return None
    source = run_dir / damage.file
    dest = _free(run_dir / DAMAGED_DIR / damage.file)
    dest.parent.mkdir(parents=True, exist_ok=True)
    moved = relative(run_dir, dest)
    # The note first: a crash before the move leaves the file where it was (found again next time), never a
    # quarantined file that nothing explains.
    write_json_atomic(dest.with_name(dest.name + ".note.json"), {
        **note, **damage.to_dict(), "moved_from": damage.file, "moved_to": moved, "moved_at": time.time(),
    })
    os.replace(source, dest)
    fsync_dir(dest.parent)
    fsync_dir(source.parent)
    ledger_retired(run_dir, [damage.file], "damaged", into=moved)
    return moved


def damaged_notes(run_dir: Path) -> list[dict[str, Any]]:
    """The notes of every quarantined file."""
    notes = []
    for path in sorted((run_dir / DAMAGED_DIR).rglob("*.note.json")) if (run_dir / DAMAGED_DIR).is_dir() else []:
        with contextlib.suppress(OSError, ValueError):
            notes.append(json.loads(path.read_text(encoding="utf-8")))
    return notes

