"""The Parquet archive: round trips, atomic segments, journal recovery after SIGKILL, dedup, compaction."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from evolve.archive import (
    ArchiveLockedError,
    ArchiveWriter,
    compact,
    iter_records,
    list_runs,
    load_run_info,
    read_migrations,
    read_programs,
    recover,
    write_json_atomic,
    write_run_info,
)
from evolve.schema import ProgramRecord
from evolve.types import program_id_for

REPO = Path(__file__).resolve().parents[1]
RUN_ID = "run-1"


def make_record(i: int, *, run_id: str = RUN_ID, code_lines: int = 3) -> ProgramRecord:
    code = "".join(f"def f{i}_{k}():\n    return {i} * {k}\n" for k in range(code_lines))
    ok = i % 5 != 4
    return ProgramRecord(
        program_id=program_id_for(code),
        parent_ids=(program_id_for(str(i - 1)), program_id_for("insp")) if i else (),
        island=i % 3,
        iteration=i,
        generation=i // 3,
        code=code,
        status="ok" if ok else "runtime_error",
        edit=f"<<<<<<< SEARCH\nreturn {i - 1}\n=======\nreturn {i}\n>>>>>>> REPLACE\n",
        mutator="scripted",
        score=i * 0.25 if ok else None,
        fitness=-i * 0.25 if ok else None,
        metrics={"score": i * 0.25, "n": float(i)} if ok else {},
        features={"code_length": float(len(code))},
        cell=i % 7 if ok else None,
        stages=[{"stage": "evaluate", "status": "ok" if ok else "runtime_error", "message": "" if ok else "boom"}],
        artifacts={"stderr": "Traceback ..." if not ok else ""},
        isolation="session+rlimits",
        llm={"model": "none", "tokens": i},
        mutate_seconds=0.001 * i,
        eval_seconds=0.5,
        created_at=1_700_000_000.125 + i,  # whole milliseconds: the column's precision
        run_id=run_id,
    )


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return tmp_path / "archive" / "demo" / RUN_ID


def segment_files(run_dir: Path, sub: str = "segments") -> list[Path]:
    return sorted((run_dir / sub).glob("*.parquet"))


def raw_program_ids(run_dir: Path) -> list[str]:
    """Every program_id row in every segment file, duplicates included."""
    ids: list[str] = []
    for path in segment_files(run_dir):
        ids += pq.read_table(path, columns=["program_id"]).column("program_id").to_pylist()
    return ids


# -- round trips ---------------------------------------------------------------------------------------------------


def test_round_trip_records_through_segments(run_dir: Path) -> None:
    records = [make_record(i) for i in range(50)]
    with ArchiveWriter(run_dir, RUN_ID, segment_rows=16, flush_seconds=1e9) as writer:
        for record in records:
            writer.append(record)
        assert len(segment_files(run_dir)) == 3  # 48 rows flushed in batches of 16; 2 still journaled
        assert writer.pending == 2
    assert len(segment_files(run_dir)) == 4
    assert list((run_dir / "journal").glob("*.jsonl")) == []
    assert list(iter_records(run_dir)) == records
    read = read_programs(run_dir)
    assert read.bad_files == []
    assert read.table.num_rows == 50
    assert read.table.schema.field("created_at").type.unit == "ms"


def test_writer_fills_missing_run_id(run_dir: Path) -> None:
    with ArchiveWriter(run_dir, RUN_ID) as writer:
        writer.append(make_record(1, run_id=""))
    assert next(iter_records(run_dir)).run_id == RUN_ID


def test_columns_and_where_filter(run_dir: Path) -> None:
    with ArchiveWriter(run_dir, RUN_ID) as writer:
        for i in range(30):
            writer.append(make_record(i))
    table = read_programs(run_dir, columns=["program_id", "score"], where="status = 'ok' AND score >= 5").table
    assert table.column_names == ["program_id", "score"]
    expected = [make_record(i).program_id for i in range(20, 30) if i % 5 != 4]
    assert table.column("program_id").to_pylist() == expected
    with pytest.raises(ValueError, match="unknown archive column"):
        read_programs(run_dir, columns=["nope"])
    with pytest.raises(ValueError, match="invalid archive filter"):
        read_programs(run_dir, where="no_such_column > 1")


def test_empty_run_reads_as_empty(run_dir: Path) -> None:
    read = read_programs(run_dir)
    assert read.table.num_rows == 0 and read.bad_files == []
    assert read_migrations(run_dir).num_rows == 0


# -- batching and the journal --------------------------------------------------------------------------------------


def test_append_is_journaled_before_any_segment(run_dir: Path) -> None:
    writer = ArchiveWriter(run_dir, RUN_ID, segment_rows=1000, flush_seconds=1e9)
    try:
        writer.append(make_record(3))
        assert segment_files(run_dir) == []
        lines = writer.journal_path.read_text().splitlines()
        assert json.loads(lines[0])["p"]["program_id"] == make_record(3).program_id
        # Readers see journaled rows of a live writer; without the journal they see only segments.
        assert read_programs(run_dir).table.column("program_id").to_pylist() == [make_record(3).program_id]
        assert read_programs(run_dir, include_journal=False).table.num_rows == 0
    finally:
        writer.close()


def test_time_based_flush(run_dir: Path) -> None:
    with ArchiveWriter(run_dir, RUN_ID, segment_rows=1000, flush_seconds=0.2) as writer:
        writer.append(make_record(1))
        assert writer.maybe_flush() is False
        time.sleep(0.25)
        assert writer.maybe_flush() is True
        assert len(segment_files(run_dir)) == 1
        writer.append(make_record(2))  # a fresh journal, not yet old enough to flush
        assert len(segment_files(run_dir)) == 1
        assert len(list((run_dir / "journal").glob("*.jsonl"))) == 1


def test_resume_appends_after_previous_session(run_dir: Path) -> None:
    with ArchiveWriter(run_dir, RUN_ID) as writer:
        for i in range(5):
            writer.append(make_record(i))
    with ArchiveWriter(run_dir, RUN_ID) as writer:
        for i in range(5, 9):
            writer.append(make_record(i))
    assert list(iter_records(run_dir)) == [make_record(i) for i in range(9)]


def test_second_writer_is_refused_while_first_is_open(run_dir: Path) -> None:
    writer = ArchiveWriter(run_dir, RUN_ID)
    try:
        with pytest.raises(ArchiveLockedError):
            ArchiveWriter(run_dir, RUN_ID)
        with pytest.raises(ArchiveLockedError):
            recover(run_dir)
    finally:
        writer.close()
    recover(run_dir)  # free again


def test_append_cost_is_small(run_dir: Path) -> None:
    """Loose sanity bound (the target is < 0.1 ms; the bench measures it): journaling must not fsync."""
    records = [make_record(i, code_lines=20) for i in range(2000)]
    with ArchiveWriter(run_dir, RUN_ID, segment_rows=10_000, flush_seconds=1e9) as writer:
        start = time.perf_counter()
        for record in records:
            writer.append(record)
        per_append = (time.perf_counter() - start) / len(records)
    assert per_append < 1e-3


# -- crashes, corrupt files, dedup ---------------------------------------------------------------------------------

_CHILD = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {tests!r})
    from test_archive import make_record
    import evolve.archive as archive

    mode = sys.argv[2]
    if mode == "midwrite":
        import io

        def half_write(table, where, **kwargs):
            # Put the first half of the real file's bytes on disk (no footer), then wait to be killed.
            buffer = io.BytesIO()
            real_write(table, buffer, **kwargs)
            data = buffer.getvalue()
            with open(where, "wb") as f:
                f.write(data[: len(data) // 2])
            print("MIDWRITE", flush=True)
            time.sleep(60)

        import pyarrow.parquet as pq

        real_write = pq.write_table
        pq.write_table = half_write
    writer = archive.ArchiveWriter(sys.argv[1], "run-1", segment_rows=int(sys.argv[3]), flush_seconds=1e9)
    i = 0
    while True:
        writer.append(make_record(i, code_lines=30))
        if i % 10 == 0:
            writer.record_migration(make_record(i).program_id, i % 3, (i + 1) % 3, i)
        print("ACK", i, flush=True)
        i += 1
    """
)


def _run_child_until(run_dir: Path, mode: str, segment_rows: int, stop) -> list[int]:
    """Start a writer process, SIGKILL it when ``stop(line, acked)`` says so; return the acknowledged indices."""
    script = run_dir.parent / "child.py"
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(_CHILD.format(tests=str(REPO / "tests")))
    proc = subprocess.Popen(
        [sys.executable, str(script), str(run_dir), mode, str(segment_rows)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    acked: list[int] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("ACK"):
                acked.append(int(line.split()[1]))
            if stop(line, acked):
                break
        else:
            pytest.fail(f"writer child exited early with {proc.wait()}")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # ACKs the child printed before it died but that we had not read yet count too.
    assert proc.stdout is not None
    acked += [int(line.split()[1]) for line in proc.stdout.read().splitlines() if line.startswith("ACK")]
    return acked


def _assert_exactly_once(run_dir: Path, acked: list[int]) -> None:
    ids = read_programs(run_dir).table.column("program_id").to_pylist()
    assert len(ids) == len(set(ids))
    expected = [make_record(i, code_lines=30).program_id for i in acked]
    assert set(expected) <= set(ids)
    # At most the one append that was in progress when the kill landed may also be there.
    assert len(ids) - len(expected) <= 1


def test_sigkill_at_random_point_loses_no_acknowledged_record(run_dir: Path) -> None:
    acked = _run_child_until(run_dir, "normal", 64, lambda line, acked: len(acked) >= 300)
    assert len(acked) >= 300
    assert segment_files(run_dir)  # some batches reached Parquet, the rest only the journal
    _assert_exactly_once(run_dir, acked)  # readers include the dead writer's journal
    report = recover(run_dir)
    assert report.journals <= 1  # zero only if the kill landed right between a flush and the next append
    assert list((run_dir / "journal").glob("*.jsonl")) == []
    _assert_exactly_once(run_dir, acked)
    raw = raw_program_ids(run_dir)
    assert len(raw) == len(set(raw))  # exactly once on disk too, not merely after dedup
    migrations = read_migrations(run_dir)
    assert set(migrations.column("iteration").to_pylist()) >= {i for i in acked if i % 10 == 0}


def test_sigkill_mid_parquet_write_leaves_no_readable_garbage(run_dir: Path) -> None:
    acked = _run_child_until(run_dir, "midwrite", 40, lambda line, acked: line.startswith("MIDWRITE"))
    assert len(acked) == 39  # the 40th append triggered the flush that was killed
    temps = [p for p in (run_dir / "segments").iterdir() if p.name.startswith(".")]
    assert len(temps) == 1 and not temps[0].name.endswith(".parquet")
    with pytest.raises(Exception):  # noqa: B017 - the half-written file really is unreadable Parquet
        pq.read_table(temps[0])
    read = read_programs(run_dir)
    assert read.bad_files == []
    _assert_exactly_once(run_dir, acked)
    report = recover(run_dir)
    assert report.temp_files_removed == 1
    assert [p.name for p in (run_dir / "segments").iterdir() if p.name.startswith(".")] == []
    _assert_exactly_once(run_dir, acked)
    assert read_programs(run_dir).table.num_rows == 40  # the 40th record was journaled before the flush began


def test_corrupt_and_truncated_segments_are_skipped_with_warning(run_dir: Path) -> None:
    with ArchiveWriter(run_dir, RUN_ID, segment_rows=10) as writer:
        for i in range(30):
            writer.append(make_record(i))
    good = segment_files(run_dir)
    truncated = run_dir / "segments" / "9999-truncated.parquet"
    data = good[0].read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    garbage = run_dir / "segments" / "9999-garbage.parquet"
    garbage.write_bytes(b"not parquet at all" * 10)
    with pytest.warns(UserWarning) as caught:
        read = read_programs(run_dir)
    messages = " ".join(str(w.message) for w in caught)
    assert str(truncated) in messages and str(garbage) in messages
    assert sorted(p for p, _ in read.bad_files) == sorted([truncated, garbage])
    assert all(reason for _, reason in read.bad_files)
    assert read.table.num_rows == 30
    with pytest.warns(UserWarning):
        assert [r.iteration for r in iter_records(run_dir)] == list(range(30))


def test_crash_between_segment_and_journal_deletion_does_not_duplicate(run_dir: Path) -> None:
    writer = ArchiveWriter(run_dir, RUN_ID, segment_rows=1000, flush_seconds=1e9)
    for i in range(12):
        writer.append(make_record(i))
    journal = writer.journal_path
    saved = journal.read_bytes()
    writer.flush()
    writer.close()
    journal.write_bytes(saved)  # as if the process died right after the segment's rename
    assert read_programs(run_dir).table.num_rows == 12
    report = recover(run_dir)
    assert (report.duplicates, report.programs, report.journals) == (12, 0, 1)
    assert len(raw_program_ids(run_dir)) == 12
    assert recover(run_dir).journals == 0  # idempotent


def test_torn_last_journal_line_is_ignored(run_dir: Path) -> None:
    writer = ArchiveWriter(run_dir, RUN_ID, segment_rows=1000, flush_seconds=1e9)
    for i in range(5):
        writer.append(make_record(i))
    journal = writer.journal_path
    with open(journal, "ab") as f:
        f.write(b'{"p": {"program_id": "torn", "cod')
    # Simulate the writer's death: drop the lock without flushing.
    os.close(writer._journal_fd)
    os.close(writer._lock_fd)
    report = recover(run_dir)
    assert (report.programs, report.skipped_lines) == (5, 1)
    assert list(iter_records(run_dir)) == [make_record(i) for i in range(5)]


def test_duplicate_segments_are_deduplicated(run_dir: Path) -> None:
    with ArchiveWriter(run_dir, RUN_ID) as writer:
        for i in range(8):
            writer.append(make_record(i))
    (segment,) = segment_files(run_dir)
    shutil.copy(segment, segment.with_name("zz-copy.parquet"))
    assert len(raw_program_ids(run_dir)) == 16
    assert list(iter_records(run_dir)) == [make_record(i) for i in range(8)]


# -- migrations, compaction, run info ------------------------------------------------------------------------------


def test_migrations_round_trip(run_dir: Path) -> None:
    with ArchiveWriter(run_dir, RUN_ID, segment_rows=2) as writer:
        writer.record_migration("a" * 16, 0, 1, 50)
        writer.record_migration("b" * 16, 1, 2, 50)
        writer.record_migration("c" * 16, 2, 0, 100)
    table = read_migrations(run_dir)
    assert table.column_names == ["program_id", "from_island", "to_island", "iteration", "created_at"]
    rows = [(r["program_id"][0], r["from_island"], r["to_island"], r["iteration"]) for r in table.to_pylist()]
    assert rows == [("a", 0, 1, 50), ("b", 1, 2, 50), ("c", 2, 0, 100)]
    assert len(segment_files(run_dir, "migrations")) == 2


def test_compact_merges_small_segments(run_dir: Path) -> None:
    with ArchiveWriter(run_dir, RUN_ID, segment_rows=5) as writer:
        for i in range(42):
            writer.append(make_record(i))
            if i % 6 == 0:
                writer.record_migration(make_record(i).program_id, 0, 1, i)
    before = read_programs(run_dir).table
    migrations_before = read_migrations(run_dir)
    assert len(segment_files(run_dir)) == 9
    garbage = run_dir / "segments" / "0-garbage.parquet"
    garbage.write_bytes(b"junk")
    report = compact(run_dir, small_rows=1024)
    assert report.rows == 42 + migrations_before.num_rows
    assert [p for p, _ in report.bad_files] == [garbage]
    assert segment_files(run_dir) == [garbage] + [p for p in segment_files(run_dir) if p != garbage]
    assert len(segment_files(run_dir)) == 2  # the merged segment and the untouched bad file
    garbage.unlink()
    assert read_programs(run_dir).table.equals(before)
    assert read_migrations(run_dir).equals(migrations_before)
    assert compact(run_dir).merged_files == 0  # nothing left to merge


def test_run_info_and_list_runs(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    a = root / "p1" / "r2"
    b = root / "p1" / "r1"
    c = root / "p0" / "r9"
    for run in (a, b, c):
        write_run_info(run, {"run_id": run.name, "seed": 7})
    (root / "p1" / "not-a-run").mkdir()
    assert list_runs(root) == [c, b, a]
    assert load_run_info(a) == {"run_id": "r2", "seed": 7}
    assert load_run_info(root / "missing") == {}
    write_json_atomic(a / "stats.json", {"best": 1.5})
    write_json_atomic(a / "stats.json", {"best": 2.5})
    assert json.loads((a / "stats.json").read_text()) == {"best": 2.5}
    assert sorted(p.name for p in a.iterdir()) == ["run.json", "stats.json"]  # no temporary left behind
    assert list_runs(tmp_path / "nowhere") == []


# -- damage: found, named, never repaired without consent ----------------------------------------------------------


def _killed_writer(run_dir: Path, records: list[ProgramRecord]) -> Path:
    """Journal ``records`` and die (no flush): the journal of a killed session."""
    writer = ArchiveWriter(run_dir, RUN_ID, segment_rows=10_000, flush_seconds=1e9)
    for record in records:
        writer.append(record)
    journal = writer.journal_path
    os.close(writer._journal_fd)
    os.close(writer._lock_fd)
    return journal


def test_journal_checksum_catches_a_changed_byte_that_still_parses(run_dir: Path) -> None:
    from evolve.archive import ArchiveDamaged
    from evolve.damage import inspect_run

    journal = _killed_writer(run_dir, [make_record(i) for i in range(6)])
    lines = journal.read_bytes().split(b"\n")
    assert lines[3].count(b'"score":0.75') == 1
    lines[3] = lines[3].replace(b'"score":0.75', b'"score":9.75')  # still JSON, a different score
    journal.write_bytes(b"\n".join(lines))
    before = journal.read_bytes()
    with pytest.warns(UserWarning, match=journal.name):
        read = read_programs(run_dir)
    assert read.table.column("iteration").to_pylist() == [0, 1, 2, 4, 5]  # the changed row is never shown
    with pytest.raises(ArchiveDamaged, match=r"line\(s\) 4: checksum mismatch"):
        recover(run_dir)
    assert journal.read_bytes() == before and not segment_files(run_dir)  # nothing converted or deleted
    (damage,) = inspect_run(run_dir).damage
    assert (damage.kind.value, damage.lines, damage.iterations, damage.unknown_rows) == ("journal", (4,), (3,), 0)


def test_accepted_journal_damage_is_moved_with_a_note_never_deleted(run_dir: Path) -> None:
    from evolve.damage import inspect_run
    from evolve.recovery import lock_run, recover_locked, unlock

    journal = _killed_writer(run_dir, [make_record(i) for i in range(5)])
    with open(journal, "ab") as f:
        f.write(b"garbage\n" + journal.read_bytes().splitlines(keepends=True)[0])
    inspection = inspect_run(run_dir)
    fd = lock_run(run_dir)
    try:
        report = recover_locked(run_dir, inspection, {"why": "test"})
    finally:
        unlock(fd)
    moved = run_dir / "damaged" / "journal" / journal.name
    assert report.quarantined == (f"damaged/journal/{journal.name}",) and moved.exists() and not journal.exists()
    note = json.loads(moved.with_name(moved.name + ".note.json").read_text())
    assert note["lines"] == [6] and note["why"] == "test" and note["moved_from"] == f"journal/{journal.name}"
    assert [r.iteration for r in iter_records(run_dir)] == list(range(5))  # the good rows are in segments now
    assert inspect_run(run_dir).damage == []


def test_the_ledger_names_what_a_missing_or_empty_segment_held(run_dir: Path) -> None:
    from evolve.damage import DamageKind, inspect_run

    with ArchiveWriter(run_dir, RUN_ID, segment_rows=4) as writer:
        for i in range(12):
            writer.append(make_record(i))
    first, second, third = segment_files(run_dir)
    first.unlink()
    second.write_bytes(b"")
    damage = {d.file: d for d in inspect_run(run_dir).damage}
    gone, empty = damage[f"segments/{first.name}"], damage[f"segments/{second.name}"]
    assert (gone.kind, gone.iterations, gone.known_from) == (DamageKind.MISSING, (0, 1, 2, 3), "the ledger")
    assert (empty.kind, empty.iterations, empty.reason) == (DamageKind.UNREADABLE, (4, 5, 6, 7),
                                                             "the file is empty (0 bytes)")
    assert compact(run_dir).merged_files == 0  # one readable segment: nothing to merge, nothing touched


def test_a_corrupt_chunk_behind_a_valid_footer_is_found_only_by_a_full_read(run_dir: Path) -> None:
    from evolve.damage import DamageKind, verify_run

    with ArchiveWriter(run_dir, RUN_ID, segment_rows=100) as writer:
        for i in range(40):
            writer.append(make_record(i, code_lines=20))
    (segment,) = segment_files(run_dir)
    meta = pq.ParquetFile(segment).metadata.row_group(0)
    code = next(meta.column(i) for i in range(meta.num_columns) if meta.column(i).path_in_schema == "code")
    data = bytearray(segment.read_bytes())
    data[code.dictionary_page_offset + (code.data_page_offset - code.dictionary_page_offset) * 2 // 3] ^= 0x10
    segment.write_bytes(bytes(data))
    assert pq.read_metadata(segment).num_rows == 40  # the footer is fine
    (damage,) = verify_run(run_dir)
    assert damage.kind is DamageKind.CORRUPT and damage.rows == 40
    assert damage.iterations == tuple(range(40)) and damage.known_from == "its iteration column"


def test_a_full_disk_spends_the_reserve_on_the_row_then_reports(run_dir: Path, monkeypatch) -> None:
    import errno

    from evolve import faults
    from evolve.archive import ArchiveIOError

    monkeypatch.setenv("EVOLVE_FAILPOINTS", "enospc:3")
    faults.reload()
    try:
        writer = ArchiveWriter(run_dir, RUN_ID, segment_rows=1000, flush_seconds=1e9)
        for i in range(3):
            writer.append(make_record(i))  # the third write fails, is retried in the reserve's space
        assert writer.failure is not None and writer.failure.disk_full
        assert str(writer.journal_path) in writer.failure.one_line() and "free" in writer.failure.one_line()
        assert not (run_dir / ".reserve").exists()
        real_write = os.write

        def short_then_full(fd: int, data: bytes) -> int:
            real_write(fd, bytes(data)[:10])  # part of the line, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr("evolve.archive.os.write", short_then_full)
        with pytest.raises(ArchiveIOError, match="disk full"):
            writer.append(make_record(3))
        monkeypatch.undo()
        assert all(json.loads(line) for line in writer.journal_path.read_bytes().splitlines())  # no half line
        writer.close(flush=False)
    finally:
        faults.reload()
    assert [r.iteration for r in iter_records(run_dir)] == [0, 1, 2]


def test_other_write_errors_name_the_file_and_are_not_called_a_full_disk(run_dir: Path, monkeypatch) -> None:
    import errno

    from evolve.archive import ArchiveIOError

    writer = ArchiveWriter(run_dir, RUN_ID, segment_rows=1000, flush_seconds=1e9)
    writer.append(make_record(0))

    def failing(fd: int, data: bytes) -> int:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr("evolve.archive.os.write", failing)
    with pytest.raises(ArchiveIOError) as caught:
        writer.append(make_record(1))
    monkeypatch.undo()
    assert not caught.value.disk_full and (run_dir / ".reserve").exists()  # the reserve is for a full disk only
    assert caught.value.one_line().startswith(f"I/O error writing {writer.journal_path}: Input/output error")
    writer.close()
    assert [r.iteration for r in iter_records(run_dir)] == [0]
