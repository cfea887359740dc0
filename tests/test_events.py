"""The events table: round trips through journal and segments, SIGKILL durability, dedup, compaction, queries,
damage found and named (events are no iterations), and run folders written before events existed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import warnings
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from evolve.archive import (
    EVENT_SCHEMA,
    ArchiveDamaged,
    ArchiveIOError,
    ArchiveWriter,
    compact,
    read_events,
    read_migrations,
    read_programs,
    recover,
)
from evolve.damage import DamageKind, inspect_run, verify_run
from evolve.query import ArchiveQueryError, RunArchive
from evolve.query_index import INDEX_MIN_FILES

from .test_archive import make_record

REPO = Path(__file__).resolve().parents[1]
RUN_ID = "run-e"


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return tmp_path / "archive" / "demo" / RUN_ID


def event_files(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "events").glob("*.parquet"))


def raw_event_ids(run_dir: Path) -> list[str]:
    """Every event_id row in every events segment, duplicates included."""
    ids: list[str] = []
    for path in event_files(run_dir):
        ids += pq.read_table(path, columns=["event_id"]).column("event_id").to_pylist()
    return ids


def killed(writer: ArchiveWriter) -> Path:
    """The writer dies without flushing (the kernel drops its lock); its journal stays."""
    journal = writer.journal_path
    os.close(writer._journal_fd)
    os.close(writer._lock_fd)
    return journal


# -- round trips -----------------------------------------------------------------------------------------------


def test_events_round_trip_through_journal_and_segments(run_dir: Path) -> None:
    writer = ArchiveWriter(run_dir, RUN_ID, segment_rows=3, flush_seconds=1e9)
    first = writer.record_event("heldout", {"score": 2.5, "cases": [1, 2]}, program_id="ab" * 8, iteration=7)
    assert len(first) >= 16 and event_files(run_dir) == []
    line = json.loads(writer.journal_path.read_bytes().splitlines()[0])
    assert set(line) == {"c", "e"} and line["e"]["event_id"] == first and line["e"]["kind"] == "heldout"
    journaled = read_events(run_dir)  # a live writer's journal is read too
    assert journaled.schema == EVENT_SCHEMA and journaled.column("event_id").to_pylist() == [first]
    assert read_events(run_dir, include_journal=False).num_rows == 0
    ids = [first] + [writer.record_event("note", {"k": k}, iteration=k, event_id=f"note-{k}") for k in range(4)]
    assert ids[1:] == [f"note-{k}" for k in range(4)]
    writer.append(make_record(0))  # programs and events share the journal and the flushes
    writer.close()
    assert len(event_files(run_dir)) == 2 and not list((run_dir / "journal").glob("*.jsonl"))
    table = read_events(run_dir)
    assert table.column("event_id").to_pylist() == ids  # recording order (created_at, then id)
    row = table.to_pylist()[0]
    assert (row["kind"], row["program_id"], row["iteration"], row["run_id"]) == ("heldout", "ab" * 8, 7, RUN_ID)
    assert json.loads(row["data"]) == {"cases": [1, 2], "score": 2.5}
    assert read_events(run_dir, kinds=["note"]).column("event_id").to_pylist() == ids[1:]
    assert read_events(run_dir, kinds=[]).num_rows == 0
    assert read_programs(run_dir).table.num_rows == 1 and read_migrations(run_dir).num_rows == 0
    ledger = [json.loads(line) for line in (run_dir / "ledger.jsonl").read_text().splitlines()]
    assert {"file": f"events/{event_files(run_dir)[0].name}", "rows": 3, "kinds": {"heldout": 1, "note": 2}} in ledger
    inspection = inspect_run(run_dir)
    assert inspection.damage == [] and inspection.events.column("event_id").to_pylist() == ids


def test_bad_event_arguments_are_refused_before_anything_is_written(run_dir: Path) -> None:
    with ArchiveWriter(run_dir, RUN_ID, flush_seconds=1e9) as writer:
        with pytest.raises(ValueError, match="not JSON"):
            writer.record_event("heldout", {"score": float("nan")})
        with pytest.raises(ValueError, match="not JSON"):
            writer.record_event("heldout", {"when": object()})
        with pytest.raises(TypeError, match="mapping"):
            writer.record_event("heldout", [1, 2])  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="kind"):
            writer.record_event("", {})
        assert writer.pending == 0 and not writer.journal_path.exists()
    assert read_events(run_dir).num_rows == 0


def test_concurrent_recorders_lose_nothing(run_dir: Path) -> None:
    with ArchiveWriter(run_dir, RUN_ID, segment_rows=7, flush_seconds=1e9) as writer:
        def record(t: int) -> None:
            for k in range(40):
                writer.record_event("tick", {"t": t, "k": k}, event_id=f"{t}-{k}")

        threads = [threading.Thread(target=record, args=(t,)) for t in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert sorted(raw_event_ids(run_dir)) == sorted(f"{t}-{k}" for t in range(4) for k in range(40))


# -- durability and dedup --------------------------------------------------------------------------------------

_CHILD = textwrap.dedent(
    """
    import sys
    import evolve.archive as archive

    writer = archive.ArchiveWriter(sys.argv[1], "run-e", segment_rows=16, flush_seconds=1e9)
    i = 0
    while True:
        writer.record_event("tick", {"i": i, "pad": "x" * 200}, iteration=i, event_id=f"tick-{i}")
        print("ACK", i, flush=True)
        i += 1
    """
)


def test_sigkill_loses_no_acknowledged_event(run_dir: Path) -> None:
    run_dir.mkdir(parents=True)
    script = run_dir.parent / "child.py"
    script.write_text(_CHILD)
    proc = subprocess.Popen([sys.executable, str(script), str(run_dir)], stdout=subprocess.PIPE, text=True, cwd=REPO)
    acked: list[int] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            acked.append(int(line.split()[1]))
            if len(acked) >= 120:
                break
        else:
            pytest.fail(f"writer child exited early with {proc.wait()}")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.stdout is not None
    complete = proc.stdout.read().split("\n")[:-1]  # a line the kill cut short acknowledged nothing
    acked += [int(line.split()[1]) for line in complete]
    expected = {f"tick-{i}" for i in acked}

    def check() -> None:
        ids = read_events(run_dir).column("event_id").to_pylist()
        assert len(ids) == len(set(ids)) and expected <= set(ids)
        assert len(ids) - len(expected) <= 1  # at most the append in progress when the kill landed

    assert event_files(run_dir)  # some batches reached Parquet, the rest only the journal
    check()
    report = recover(run_dir)
    assert report.journals <= 1 and not list((run_dir / "journal").glob("*.jsonl"))
    check()
    raw = raw_event_ids(run_dir)
    assert len(raw) == len(set(raw))  # exactly once on disk too


def test_a_re_recorded_event_id_keeps_one_row_the_earliest(run_dir: Path) -> None:
    with ArchiveWriter(run_dir, RUN_ID, segment_rows=100, flush_seconds=1e9) as writer:
        writer.record_event("standing", {"rank": 1}, event_id="standing-5")
        writer.record_event("standing", {"rank": 1}, event_id="standing-5")  # same flush: same segment
        writer.record_event("note", {"text": "other"})
    with ArchiveWriter(run_dir, RUN_ID, flush_seconds=1e9) as writer:  # a resumed session records it again
        writer.record_event("standing", {"rank": 2}, event_id="standing-5")
        live = read_events(run_dir, kinds=["standing"])  # segments and this session's journal
        assert live.num_rows == 1 and json.loads(live.column("data")[0].as_py()) == {"rank": 1}
    assert raw_event_ids(run_dir).count("standing-5") == 3
    for table in (read_events(run_dir), inspect_run(run_dir).events):
        assert table.column("event_id").to_pylist().count("standing-5") == 1
    with RunArchive(run_dir) as archive:
        standing = archive.events(kinds=["standing"])
    assert [(e["event_id"], e["data"]) for e in standing] == [("standing-5", {"rank": 1})]
    compact(run_dir)
    assert raw_event_ids(run_dir).count("standing-5") == 1  # compaction keeps the earliest row only
    assert json.loads(read_events(run_dir, kinds=["standing"]).column("data")[0].as_py()) == {"rank": 1}


def test_recovery_writes_journal_events_into_segments_and_compaction_merges_them(run_dir: Path) -> None:
    with ArchiveWriter(run_dir, RUN_ID, segment_rows=2, flush_seconds=1e9) as writer:
        for k in range(9):
            writer.record_event("note", {"k": k}, event_id=f"n{k}")
    writer = ArchiveWriter(run_dir, RUN_ID, segment_rows=100, flush_seconds=1e9)
    writer.record_event("note", {"k": 9}, event_id="n9")
    killed(writer)
    assert len(event_files(run_dir)) == 5
    report = recover(run_dir)
    assert (report.journals, report.events, report.programs) == (1, 1, 0)
    assert len(event_files(run_dir)) == 6 and recover(run_dir).journals == 0
    before = read_events(run_dir)
    done = compact(run_dir)
    assert (done.merged_files, done.rows) == (6, 10) and len(event_files(run_dir)) == 1
    assert read_events(run_dir).equals(before)
    assert inspect_run(run_dir).damage == []  # the ledger knows the parts were merged, not lost
    assert compact(run_dir).merged_files == 0


# -- queries ---------------------------------------------------------------------------------------------------


def test_run_archive_events_filter_and_the_events_view(run_dir: Path) -> None:
    pid = make_record(1).program_id
    with ArchiveWriter(run_dir, RUN_ID, segment_rows=1, flush_seconds=1e9) as writer:
        for i in range(3):
            writer.append(make_record(i))
        # One file per event: enough files for the query index.
        for k in range(INDEX_MIN_FILES):
            writer.record_event("heldout" if k % 2 else "standing", {"k": k}, program_id=pid if k % 4 == 1 else None,
                                iteration=k, event_id=f"e{k:03d}")
    with RunArchive(run_dir) as archive:
        assert [r["iteration"] for r in archive.top(3)] == [0, 1, 2]
    assert not (run_dir / ".index" / "events.parquet").exists()  # questions about programs never read events
    writer = ArchiveWriter(run_dir, RUN_ID, segment_rows=100, flush_seconds=1e9)
    writer.record_event("approval", {"ok": True}, program_id=pid, event_id="z-live")
    try:
        with RunArchive(run_dir) as archive:
            everything = archive.events()
            assert [e["event_id"] for e in everything] == [f"e{k:03d}" for k in range(INDEX_MIN_FILES)] + ["z-live"]
            assert everything[3]["data"] == {"k": 3} and everything[3]["kind"] == "heldout"
            assert "events" in archive.index_files  # served from the index, plus the live journal
            heldout = archive.events(kinds=["heldout"])
            assert [e["iteration"] for e in heldout] == list(range(1, INDEX_MIN_FILES, 2))
            about = archive.events(program_id=pid)
            assert [e["event_id"] for e in about] == [f"e{k:03d}" for k in range(1, INDEX_MIN_FILES, 4)] + ["z-live"]
            both = archive.events(kinds=["approval", "standing"], program_id=pid)
            assert [e["event_id"] for e in both] == ["z-live"]
            assert archive.events(kinds=[]) == []
            counted = archive.rows("SELECT kind, count(DISTINCT event_id) AS n FROM events GROUP BY kind ORDER BY kind")
            assert counted == [{"kind": "approval", "n": 1}, {"kind": "heldout", "n": 16}, {"kind": "standing", "n": 16}]
            assert archive.count() == 3  # the programs' views are unchanged
            with pytest.raises(ArchiveQueryError, match="no_such_view"):
                archive.rows("SELECT * FROM no_such_view")
    finally:
        writer.close()


# -- damage ----------------------------------------------------------------------------------------------------


def flip_in_column(path: Path, column: str) -> bytes:
    """Flip one byte inside the compressed pages of ``column`` (its footer still reads); the file's new bytes."""
    meta = pq.ParquetFile(path).metadata.row_group(0)
    chunk = next(meta.column(i) for i in range(meta.num_columns) if meta.column(i).path_in_schema == column)
    if chunk.has_dictionary_page:
        start, end = chunk.dictionary_page_offset, chunk.data_page_offset
    else:
        start, end = chunk.data_page_offset, chunk.data_page_offset + chunk.total_compressed_size
    data = bytearray(path.read_bytes())
    data[start + (end - start) * 2 // 3] ^= 0xFF  # inside the page's compressed bytes, past its header
    path.write_bytes(bytes(data))
    return bytes(data)


def _noted_events(run_dir: Path, n: int, per_file: int) -> list[str]:
    import numpy as np

    rng = np.random.default_rng(5)
    with ArchiveWriter(run_dir, RUN_ID, segment_rows=per_file, flush_seconds=1e9) as writer:
        return [writer.record_event("note", {"text": rng.bytes(120).hex()}, iteration=k, event_id=f"note-{k}")
                for k in range(n)]


def test_damaged_events_segment_is_named_with_its_events_and_loses_no_iteration(run_dir: Path) -> None:
    ids = _noted_events(run_dir, 6, 3)
    first, second = event_files(run_dir)
    flip_in_column(first, "data")
    pq.read_metadata(first)  # the footer still reads: only a full read finds this
    (damage,) = verify_run(run_dir)
    assert (damage.table, damage.kind, damage.rows) == ("events", DamageKind.CORRUPT, 3)
    assert damage.event_ids == tuple(ids[:3]) and damage.event_kinds == (("note", 3),)
    assert (damage.iterations, damage.unknown_rows) == ((), 0)  # events are not iterations of the budget
    assert "3 event(s)" in damage.describe() and "note-0" in damage.describe()
    with pytest.warns(UserWarning, match=first.name):
        assert read_events(run_dir).column("event_id").to_pylist() == ids[3:]
    with RunArchive(run_dir) as archive:
        assert [e["event_id"] for e in archive.events()] == ids[3:]  # the damaged file is left out
        assert first in {p for p, _ in archive.bad_files}
    inspection = inspect_run(run_dir)
    assert inspection.lost_iterations() == set() and inspection.unknown_lost_rows() == 0
    second.write_bytes(b"")  # nothing of it reads: what it held comes from the ledger
    empty = next(d for d in verify_run(run_dir) if d.file.endswith(second.name))
    assert (empty.rows, empty.event_kinds, empty.known_from) == (3, (("note", 3),), "the ledger")


def test_damaged_events_journal_line_blocks_recovery_and_names_the_event(run_dir: Path) -> None:
    writer = ArchiveWriter(run_dir, RUN_ID, segment_rows=100, flush_seconds=1e9)
    for k in range(3):
        writer.record_event("note", {"text": f"note {k}"}, event_id=f"note-{k}")
    journal = killed(writer)
    lines = journal.read_bytes().split(b"\n")
    lines[1] = lines[1].replace(b"note 1", b"note X")  # still JSON: only the checksum tells
    journal.write_bytes(b"\n".join(lines))
    with pytest.raises(ArchiveDamaged, match=r"line\(s\) 2: checksum mismatch"):
        recover(run_dir)
    (damage,) = inspect_run(run_dir).damage
    assert (damage.table, damage.lines, damage.event_ids, damage.unknown_rows) == ("events", (2,), ("note-1",), 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert read_events(run_dir).column("event_id").to_pylist() == ["note-0", "note-2"]


# -- full disk -------------------------------------------------------------------------------------------------


def test_a_full_disk_while_recording_an_event_is_reported_like_any_append(run_dir: Path, monkeypatch) -> None:
    from evolve import faults

    monkeypatch.setenv("EVOLVE_FAILPOINTS", "enospc:2")
    faults.reload()
    try:
        writer = ArchiveWriter(run_dir, RUN_ID, segment_rows=1000, flush_seconds=1e9)
        writer.record_event("note", {"k": 0}, event_id="a")
        writer.record_event("note", {"k": 1}, event_id="b")  # fails, then written in the reserve's space
        assert writer.failure is not None and writer.failure.disk_full
        monkeypatch.setattr("evolve.archive.os.write", lambda fd, data: (_ for _ in ()).throw(OSError(28, "full")))
        with pytest.raises(ArchiveIOError, match="disk full"):
            writer.record_event("note", {"k": 2}, event_id="c")
        monkeypatch.undo()
        writer.close(flush=False)
    finally:
        faults.reload()
    assert read_events(run_dir).column("event_id").to_pylist() == ["a", "b"]


# -- run folders from before events ----------------------------------------------------------------------------


def test_a_run_folder_without_events_reads_as_before(run_dir: Path) -> None:
    with ArchiveWriter(run_dir, RUN_ID, segment_rows=4) as writer:
        for i in range(6):
            writer.append(make_record(i))
        writer.record_migration(make_record(2).program_id, 0, 1, 2)
    # A journal of an older version: lines without a checksum.
    old = run_dir / "journal" / "0000000000000000001-1-000000.jsonl"
    old.write_text(json.dumps({"p": make_record(6).to_row()}) + "\n")
    assert not (run_dir / "events").exists()
    assert read_events(run_dir).num_rows == 0 and read_events(run_dir).schema == EVENT_SCHEMA
    inspection = inspect_run(run_dir)
    assert inspection.damage == [] and inspection.events.num_rows == 0 and inspection.programs.num_rows == 7
    with RunArchive(run_dir) as archive:
        assert archive.events() == [] and archive.count() == 7
    assert recover(run_dir).programs == 1
    assert compact(run_dir).merged_files == 3
    assert not (run_dir / "events").exists()  # appears with a run's first event only
    assert [r["iteration"] for r in read_programs(run_dir).table.to_pylist()] == list(range(7))
