"""Damage as a user meets it, through the CLI: a damaged journal line, garbage in a journal, a truncated segment, a
byte-flipped column chunk, a zero-byte segment, a full filesystem. Each test asserts the message and exit code the
user sees, that nothing changes until the damage is accepted, and that no row that was ever readable is lost."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result

from evolve import faults
from evolve.archive import ArchiveWriter, read_events, read_programs
from evolve.cli import main
from evolve.cli_archive import archive
from evolve.loop import Evolution
from evolve.mutators.scripted import ScriptedMutator
from evolve.problem import load_problem
from evolve.ranges import format_ranges
from evolve.schema import ProgramRecord
from evolve.settings import RunSettings

from .test_events import flip_in_column
from .test_loop import write_tiny_problem

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_problem(tmp_path_factory.mktemp("damage") / "tiny")


@pytest.fixture(scope="module")
def base_run(ray_session, tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run of 24 iterations written in many small segments (6 rows each), with migrations."""
    run_dir = tmp_path_factory.mktemp("base") / "run"
    settings = RunSettings(iterations=24, concurrency=2, islands=2, migration_interval=4, seed=3, mutator="scripted",
                           segment_rows=6, flush_seconds=3600)
    Evolution(load_problem(tiny), settings, ScriptedMutator(), run_dir, "base-run").run()
    assert len(list((run_dir / "segments").glob("*.parquet"))) >= 4
    return run_dir


@pytest.fixture
def run(base_run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(base_run, copy)
    return copy


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def archive_cli(*args: str) -> Result:
    return CliRunner().invoke(archive, list(args))


def rows(run_dir: Path) -> dict[str, int]:
    """program_id -> iteration of every row readers can read (every column read: a full read)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = read_programs(run_dir).table
    return dict(zip(table.column("program_id").to_pylist(), table.column("iteration").to_pylist(), strict=True))


def segments(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "segments").glob("*.parquet"))


def rows_of(path: Path) -> dict[str, int]:
    table = pq.read_table(path, columns=["program_id", "iteration"])
    return dict(zip(table.column("program_id").to_pylist(), table.column("iteration").to_pylist(), strict=True))


def snapshot(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


def journal_instead_of(run_dir: Path, segment: Path) -> Path:
    """Turn a segment back into the journal of a killed session: as if the process died before flushing it."""
    table = pq.read_table(segment)
    segment.unlink()
    ledger = run_dir / "ledger.jsonl"
    name = f"segments/{segment.name}"
    ledger.write_text("".join(line + "\n" for line in ledger.read_text().splitlines() if name not in line))
    writer = ArchiveWriter(run_dir, "base-run", segment_rows=10_000, flush_seconds=1e9)
    for row in table.to_pylist():
        writer.append(ProgramRecord.from_row(row))
    journal = writer.journal_path
    os.close(writer._journal_fd)  # the writer dies: no flush, the kernel drops the lock
    os.close(writer._lock_fd)
    return journal


def assert_refused_untouched(run_dir: Path, tiny: Path, *named: str) -> str:
    before = snapshot(run_dir)
    result = cli("run", str(tiny), "--resume", "--run-dir", str(run_dir), "--quiet")
    assert result.exit_code == 1, result.output
    out = result.output
    assert "cannot resume" in out and "nothing was changed" in out and "--accept-damage" in out, out
    for text in named:
        assert text in out, (text, out)
    assert "Traceback" not in out and "UserWarning" not in out
    assert snapshot(run_dir) == before  # journals included: nothing converted, moved or deleted
    return out


def resume_accepting(run_dir: Path, tiny: Path, *extra: str) -> Result:
    result = cli("run", str(tiny), "--resume", "--run-dir", str(run_dir), "--accept-damage", "--quiet", *extra)
    assert result.exit_code == 0, result.output
    return result


def assert_lost_recorded(run_dir: Path, lost: set[int], readable: dict[str, int], before_max: int) -> None:
    info = json.loads((run_dir / "run.json").read_text())
    recorded = {i for a, b in info["lost"]["iterations"] for i in range(a, b + 1)}
    assert lost <= recorded
    now = rows(run_dir)
    assert not lost & set(now.values()), "a lost iteration's number was used again"
    new = [i for pid, i in now.items() if pid not in readable]
    assert new and min(new) > before_max  # numbering went on after every number ever used
    stats = json.loads((run_dir / "stats.json").read_text())
    assert stats["lost"]["count"] >= len(lost)
    shown = archive_cli("stats", str(run_dir))
    assert shown.exit_code == 0 and "lost to damage" in shown.output, shown.output
    children = [i for i in now.values() if i > 0]
    assert len(children) + info["lost"]["count"] == info["settings"]["iterations"]  # lost ones count as done


# -- journals ----------------------------------------------------------------------------------------------------


def test_damaged_journal_line_is_named_kept_and_only_moved_when_accepted(run: Path, tiny: Path) -> None:
    last = segments(run)[-2]  # six rows (the very last segment holds what was left at the end)
    held = rows_of(last)
    journal = journal_instead_of(run, last)
    lines = journal.read_bytes().split(b"\n")
    victim = 2  # the third row: flip one byte inside its code, the line still parses as JSON
    damaged_iteration = json.loads(lines[victim])["p"]["iteration"]
    pos = lines[victim].index(b'"code":"') + 12
    lines[victim] = lines[victim][:pos] + bytes([lines[victim][pos] ^ 0x01]) + lines[victim][pos + 1:]
    journal.write_bytes(b"\n".join(lines))
    assert damaged_iteration in held.values()
    readable = rows(run)
    assert damaged_iteration not in readable.values() and len(readable) == 25 - 1

    verify = archive_cli("verify", str(run))
    assert verify.exit_code == 1
    assert journal.name in verify.output and "line(s) 3" in verify.output and "checksum" in verify.output
    out = assert_refused_untouched(run, tiny, journal.name, f"iteration(s) {damaged_iteration}", "line(s) 3")
    assert "UserWarning" not in out

    before_max = max(readable.values())
    resume_accepting(run, tiny, "--more", "4")
    assert not list((run / "journal").glob("*.jsonl"))
    moved = run / "damaged" / "journal" / journal.name
    assert moved.exists() and moved.read_bytes() == b"\n".join(lines)  # preserved byte for byte
    note = json.loads((moved.parent / (moved.name + ".note.json")).read_text())
    assert note["lines"] == [3] and note["moved_from"] == f"journal/{journal.name}"
    assert set(readable.items()) <= set(rows(run).items())  # the other journal rows are in segments now
    assert_lost_recorded(run, {damaged_iteration}, readable, before_max)


def test_garbage_in_a_journal_is_reported_with_its_lines(run: Path, tiny: Path) -> None:
    journal = journal_instead_of(run, segments(run)[-2])
    lines = journal.read_bytes().split(b"\n")
    garbage = [b"\x00\x00\xff\xfe binary garbage", b'{"not": "a row"}', b"[1, 2, 3]"]
    journal.write_bytes(b"\n".join(lines[:1] + garbage + lines[1:]))
    readable = rows(run)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        read_programs(run)
    assert any(journal.name in str(w.message) for w in caught)  # the library reader says so too
    out = assert_refused_untouched(run, tiny, journal.name, "line(s) 2-4")
    assert "not valid JSON" in out or "not UTF-8" in out
    resume_accepting(run, tiny)
    assert (run / "damaged" / "journal" / journal.name).exists()
    assert set(readable.items()) <= set(rows(run).items())


def test_torn_last_line_after_a_kill_is_not_damage(run: Path, tiny: Path) -> None:
    journal = journal_instead_of(run, segments(run)[-1])
    with open(journal, "ab") as f:
        f.write(b'{"c":123,"p":{"program_id":"0123456789abcdef","iteration":9')  # an append cut short
    readable = rows(run)
    result = cli("run", str(tiny), "--resume", "--run-dir", str(run), "--quiet", "--more", "2")
    assert result.exit_code == 0, result.output
    assert "cut short by the kill" in result.output and "nothing lost" in result.output
    assert not (run / "damaged").exists() and not list((run / "journal").glob("*.jsonl"))
    assert set(readable.items()) <= set(rows(run).items())


# -- segments ----------------------------------------------------------------------------------------------------


def test_truncated_segment_refused_with_its_iterations_then_accepted(run: Path, tiny: Path) -> None:
    victim = segments(run)[1]
    held = rows_of(victim)
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    readable = rows(run)
    assert not set(held) & set(readable)
    iterations = sorted(held.values())
    out = assert_refused_untouched(run, tiny, victim.name, f"iteration(s) {format_ranges(iterations)}",
                                   "from the ledger")
    assert "no footer" in out
    before_max = max(max(readable.values()), *iterations)
    resume_accepting(run, tiny, "--more", "3")
    assert (run / "damaged" / "segments" / victim.name).exists() and not victim.exists()
    assert set(readable.items()) <= set(rows(run).items())
    assert_lost_recorded(run, set(iterations) - {0}, readable, before_max)


def test_byte_flipped_column_chunk_is_found_by_every_reader(run: Path, tiny: Path) -> None:
    victim = segments(run)[2]
    held = rows_of(victim)
    meta = pq.ParquetFile(victim).metadata.row_group(0)
    code = next(meta.column(i) for i in range(meta.num_columns) if meta.column(i).path_in_schema == "code")
    data = bytearray(victim.read_bytes())
    # Inside the compressed code strings (the dictionary page), past its header.
    middle = code.dictionary_page_offset + (code.data_page_offset - code.dictionary_page_offset) * 2 // 3
    data[middle] ^= 0xFF
    victim.write_bytes(bytes(data))
    pq.read_metadata(victim)  # the footer still reads: only a full read finds this
    survivors = len(rows(run))
    assert survivors == 25 - len(held)

    stats = archive_cli("stats", str(run), "--json")
    assert stats.exit_code == 0
    assert json.loads(stats.stdout)["programs"] == survivors  # not counted from a file that does not read back
    assert victim.name in stats.stderr
    top = archive_cli("top", str(run), "-n", "100", "--json")
    assert {r["program_id"] for r in json.loads(top.stdout)}.isdisjoint(held) and victim.name in top.stderr
    show = archive_cli("show", str(run), next(iter(held)))
    assert show.exit_code == 1 and victim.name in show.output and "Out of buffer" not in show.output
    assert "Traceback" not in show.output

    assert_refused_untouched(run, tiny, victim.name)
    resume_accepting(run, tiny)
    assert (run / "damaged" / "segments" / victim.name).read_bytes() == bytes(data)


def test_zero_byte_segment_is_named_with_what_the_ledger_says_it_held(run: Path, tiny: Path) -> None:
    victim = segments(run)[-2]
    held = rows_of(victim)
    victim.write_bytes(b"")
    iterations = sorted(held.values())
    out = assert_refused_untouched(run, tiny, victim.name, "empty (0 bytes)",
                                   f"{len(held)} program row(s), iteration(s) {format_ranges(iterations)}")
    assert "from the ledger" in out
    readable = rows(run)
    before_max = iterations[-1]
    resume_accepting(run, tiny, "--more", "2")
    assert set(readable.items()) <= set(rows(run).items())
    assert_lost_recorded(run, set(iterations), readable, before_max)


# -- events ------------------------------------------------------------------------------------------------------


def add_events(run_dir: Path, n: int, per_file: int) -> list[str]:
    """Record ``n`` events in the run (``per_file`` to a segment), as a feature of the loop would."""
    rng = np.random.default_rng(11)
    with ArchiveWriter(run_dir, "base-run", segment_rows=per_file, flush_seconds=1e9) as writer:
        return [writer.record_event("note", {"text": rng.bytes(120).hex()}, iteration=24, event_id=f"note-{k}")
                for k in range(n)]


def event_ids(run_dir: Path) -> list[str]:
    """The ids of the test's own ``note`` events (the run records oversight events of its own)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = read_events(run_dir)
    return [row["event_id"] for row in table.select(["event_id", "kind"]).to_pylist() if row["kind"] == "note"]


def assert_no_iteration_lost(run_dir: Path, readable: dict[str, int], moved: str) -> None:
    info = json.loads((run_dir / "run.json").read_text())
    assert not info.get("lost", {}).get("count")  # events are not iterations of the budget
    assert moved in info["history"][-1]["accepted_damage"]
    assert set(readable.items()) <= set(rows(run_dir).items())
    children = [i for i in rows(run_dir).values() if i > 0]
    assert len(children) == info["settings"]["iterations"]


def test_damaged_events_segment_is_refused_then_moved_and_costs_no_iteration(run: Path, tiny: Path) -> None:
    before = set((run / "events").glob("*.parquet"))  # the run's own (oversight) events
    ids = add_events(run, 6, 3)
    victim = sorted(set((run / "events").glob("*.parquet")) - before)[0]
    data = flip_in_column(victim, "data")
    readable = rows(run)
    assert event_ids(run) == ids[3:]

    verify = archive_cli("verify", str(run))
    assert verify.exit_code == 1 and victim.name in verify.output and "3 event(s)" in verify.output
    assert "no iteration is lost" in verify.output and "recorded as lost" not in verify.output
    out = assert_refused_untouched(run, tiny, victim.name, "note-0, note-1, note-2")
    assert "iteration(s)" not in out.split("Choices:")[0]  # the damage holds no iteration of the budget
    assert "no iteration is lost" in out and "count against the budget" not in out

    resume_accepting(run, tiny)
    moved = run / "damaged" / "events" / victim.name
    assert moved.read_bytes() == data and not victim.exists()
    lost = json.loads((run / "run.json").read_text())["lost"]  # the file is on record, at no cost in iterations
    assert lost["count"] == 0 and [f["file"] for f in lost["files"]] == [f"events/{victim.name}"]
    note = json.loads(moved.with_name(moved.name + ".note.json").read_text())
    assert note["table"] == "events" and note["event_ids"] == ids[:3]
    assert_no_iteration_lost(run, readable, f"events/{victim.name}")
    assert event_ids(run) == ids[3:]
    assert archive_cli("verify", str(run)).exit_code == 0


def test_damaged_events_journal_line_is_refused_then_moved_with_the_good_events_kept(run: Path, tiny: Path) -> None:
    writer = ArchiveWriter(run, "base-run", segment_rows=100, flush_seconds=1e9)
    for k in range(4):
        writer.record_event("note", {"text": f"note {k}"}, iteration=24, event_id=f"note-{k}")
    journal = writer.journal_path
    os.close(writer._journal_fd)  # the writer dies: no flush, the kernel drops the lock
    os.close(writer._lock_fd)
    lines = journal.read_bytes().split(b"\n")
    lines[2] = lines[2].replace(b"note 2", b"note X")  # still JSON: only the checksum tells
    journal.write_bytes(b"\n".join(lines))
    readable = rows(run)

    out = assert_refused_untouched(run, tiny, journal.name, "line(s) 3", "note-2")
    assert "checksum" in out
    resume_accepting(run, tiny)
    assert (run / "damaged" / "journal" / journal.name).read_bytes() == b"\n".join(lines)
    assert not list((run / "journal").glob("*.jsonl"))
    assert event_ids(run) == ["note-0", "note-1", "note-3"]  # the good lines are in events/ segments now
    assert sorted((run / "events").glob("*.parquet"))
    assert_no_iteration_lost(run, readable, f"journal/{journal.name}")


# -- a full filesystem -------------------------------------------------------------------------------------------


def _small_filesystem(path: Path) -> bool:
    path.mkdir()
    try:
        # Room for far more than the rows the test waits for (a fast run on a loaded machine wrote 3 MB first).
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(path)], capture_output=True,
                              timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _fill(path: Path) -> Path:
    """Fill the filesystem at ``path`` (the run may have filled it already: then creating the file fails too)."""
    filler = path / "filler"
    try:
        with open(filler, "wb") as f:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    return filler


def test_full_disk_is_a_clean_stop_and_the_run_resumes(ray_session, tiny: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    mount = tmp_path / "small"
    mounted = _small_filesystem(mount)
    run_dir = (mount if mounted else tmp_path) / "run"
    result: dict[str, Result] = {}
    args = ["run", str(tiny), "--mutator", "tune", "--iterations", "100000", "--concurrency", "2", "--run-dir",
            str(run_dir), "--quiet"]
    try:
        if not mounted:  # no tmpfs here: the journal's 40th write fails with ENOSPC instead
            monkeypatch.setenv("EVOLVE_FAILPOINTS", "enospc:40")
            faults.reload()
        worker = threading.Thread(target=lambda: result.setdefault("r", cli(*args)))
        worker.start()
        filler = None
        deadline = time.monotonic() + 120
        while mounted and time.monotonic() < deadline and worker.is_alive():
            if (run_dir / "journal").exists() and len(rows(run_dir)) >= 15:
                before = rows(run_dir)
                filler = _fill(mount)
                break
            time.sleep(0.2)
        worker.join(180)
        assert not worker.is_alive()
        if not mounted:
            before = rows(run_dir)
        out = result["r"].output
        assert result["r"].exit_code == 4, out
        first = next(line for line in out.splitlines() if line.startswith("error:"))
        assert "disk full" in first and str(run_dir) in first and "free on its filesystem" in first
        assert f"--resume --run-dir {run_dir}" in out and "Traceback" not in out
        info = json.loads((run_dir / "run.json").read_text())
        assert info["state"] == "stopped" and info["stop_reason"] == "disk_full"
        assert json.loads((run_dir / "stats.json").read_text())["stop_reason"] == "disk_full"
        after = rows(run_dir)
        assert set(before.items()) <= set(after.items())  # everything written before is readable
        if filler is not None:
            filler.unlink(missing_ok=True)
        monkeypatch.delenv("EVOLVE_FAILPOINTS", raising=False)
        faults.reload()
        again = cli("run", str(tiny), "--resume", "--run-dir", str(run_dir), "--quiet", "--more", "5")
        assert again.exit_code == 0, again.output
        assert set(after.items()) <= set(rows(run_dir).items())
        assert json.loads((run_dir / "run.json").read_text())["state"] == "finished"
    finally:
        monkeypatch.delenv("EVOLVE_FAILPOINTS", raising=False)
        faults.reload()
        if mounted:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=30)
