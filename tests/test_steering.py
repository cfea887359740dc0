"""The steering log: appends from several writers, incremental polls, damaged and torn lines, the fold rules, the
parent-choice helpers and ``evolve steer``."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from evolve.archive import ArchiveWriter
from evolve.cli_steer import steer
from evolve.steering import (
    Action,
    SteeringError,
    SteeringLog,
    SteeringState,
    append_action,
    choose_parent,
    make_action,
    prompt_notes,
    read_state,
    steering_path,
    without_banned,
)

from .test_cli_archive import make_record, program, write_toy_run


def act(kind: str, pid: str = "", text: str = "", at: float = 1.0) -> object:
    return make_action(kind, program_id=pid, text=text, who="tester", source="test", at=at)


def test_actions_fold_in_file_order(tmp_path: Path) -> None:
    for a in (act("pin", "aa"), act("pin", "bb"), act("ban", "aa"), act("note", text=" try smaller radii "),
              act("pin", "cc"), act("unpin", "bb"), act("ban", "dd"), act("unban", "dd"), act("pin", "aa")):
        append_action(tmp_path, a)
    state = read_state(tmp_path)
    assert state.pinned == ("cc", "aa")  # a pin lifts the earlier ban; order is pin order
    assert state.banned == frozenset()
    assert [n.text for n in state.notes] == ["try smaller radii"]
    assert len(state.actions) == 9 and state.actions[0].who == "tester"
    assert not state.damaged and state.incomplete_tail == 0
    lines = steering_path(tmp_path).read_text().splitlines()
    assert json.loads(lines[3]) == {"action": "note", "at": 1.0, "who": "tester", "source": "test",
                                    "text": "try smaller radii"}


def test_invalid_actions_are_refused_before_writing(tmp_path: Path) -> None:
    for kind, pid, text in (("pin", "", ""), ("ban", "../x", ""), ("note", "", "   "), ("note", "", "x" * 5000),
                            ("promote", "aa", "")):
        with pytest.raises(SteeringError):
            append_action(tmp_path, act(kind, pid, text))  # type: ignore[arg-type]
    assert not steering_path(tmp_path).exists()
    with pytest.raises(SteeringError, match="no such run"):
        append_action(tmp_path / "missing", act("pin", "aa"))  # type: ignore[arg-type]


def test_poll_reads_only_new_complete_lines(tmp_path: Path) -> None:
    log = SteeringLog(tmp_path)
    assert log.poll() == SteeringState()
    append_action(tmp_path, act("pin", "aa"))  # type: ignore[arg-type]
    first = log.poll()
    assert first.pinned == ("aa",) and first.size == steering_path(tmp_path).stat().st_size
    assert log.poll() is first  # nothing new: the same object, no read
    # A line being written (no newline yet) is not applied and not called damaged.
    with open(steering_path(tmp_path), "ab") as f:
        f.write(b'{"action":"ban","program_id":"bb"')
    partial = log.poll()
    assert partial.banned == frozenset() and partial.incomplete_tail > 0 and not partial.damaged
    with open(steering_path(tmp_path), "ab") as f:
        f.write(b',"at":2.0}\n')
    done = log.poll()
    assert done.banned == {"bb"} and done.incomplete_tail == 0 and len(done.actions) == 2


def test_damaged_lines_are_reported_with_their_place_and_skipped(tmp_path: Path) -> None:
    path = steering_path(tmp_path)
    append_action(tmp_path, act("pin", "aa"))  # type: ignore[arg-type]
    with open(path, "ab") as f:
        f.write(b"not json\n")
        f.write(b'{"action":"explode","program_id":"aa"}\n')
        f.write(b'{"action":"ban"}\n')
        f.write(b"\xff\xfe\n")
    append_action(tmp_path, act("ban", "bb"))  # type: ignore[arg-type]
    state = read_state(tmp_path)
    assert state.pinned == ("aa",) and state.banned == {"bb"}
    assert [d.line for d in state.damaged] == [2, 3, 4, 5]
    assert "not a JSON line" in state.damaged[0].reason and state.damaged[0].text == "not json"
    assert "unknown action" in state.damaged[1].reason
    assert "needs a program id" in state.damaged[2].reason
    assert state.damaged[1].offset == len(path.read_bytes().split(b"\n")[0]) + 1 + len(b"not json\n")


def test_a_fragment_left_by_a_dead_writer_becomes_one_damaged_line(tmp_path: Path) -> None:
    path = steering_path(tmp_path)
    path.write_bytes(b'{"action":"pin","program_id":"aa","at":1.0}\n{"action":"ban","progr')
    assert read_state(tmp_path).incomplete_tail > 0
    append_action(tmp_path, act("pin", "cc"))  # type: ignore[arg-type]
    state = read_state(tmp_path)
    assert state.pinned == ("aa", "cc") and len(state.damaged) == 1 and state.damaged[0].line == 2
    assert path.read_bytes().count(b"\n") == 3


def test_concurrent_writers_never_interleave(tmp_path: Path) -> None:
    def write(k: int) -> None:
        for i in range(50):
            append_action(tmp_path, act("note", text=f"writer {k} note {i} " + "x" * 300))  # type: ignore[arg-type]

    threads = [threading.Thread(target=write, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    state = read_state(tmp_path)
    assert len(state.notes) == 200 and not state.damaged


def test_replaced_log_is_read_again_with_a_warning(tmp_path: Path) -> None:
    log = SteeringLog(tmp_path)
    append_action(tmp_path, act("pin", "aa"))  # type: ignore[arg-type]
    append_action(tmp_path, act("pin", "bb"))  # type: ignore[arg-type]
    assert log.poll().pinned == ("aa", "bb")
    steering_path(tmp_path).unlink()
    append_action(tmp_path, act("ban", "cc"))  # type: ignore[arg-type]
    state = log.poll()
    assert state.pinned == () and state.banned == {"cc"} and state.warnings


def test_min_interval_rate_limits_reads_with_an_injected_clock(tmp_path: Path) -> None:
    now = [100.0]
    log = SteeringLog(tmp_path, min_interval=1.0, clock=lambda: now[0])
    log.poll()
    append_action(tmp_path, act("pin", "aa"))  # type: ignore[arg-type]
    now[0] += 0.5
    assert log.poll().pinned == ()
    now[0] += 0.6
    assert log.poll().pinned == ("aa",)
    assert log.poll(force=True).pinned == ("aa",)


def _sampler(sequence: list[str]):  # type: ignore[no-untyped-def]
    it = iter(sequence * 100)
    return lambda: next(it)


def test_choose_parent_without_steering_is_the_plain_sampler_and_draws_nothing() -> None:
    rng = np.random.default_rng(1)
    before = rng.bit_generator.state
    assert choose_parent(_sampler(["x"]), SteeringState(), rng) == "x"
    assert rng.bit_generator.state == before


def test_choose_parent_never_returns_a_banned_program() -> None:
    state = SteeringState().applied(act("ban", "bad"))  # type: ignore[arg-type]
    rng = np.random.default_rng(0)
    picks = [choose_parent(_sampler(["bad", "bad", "good"]), state, rng) for _ in range(200)]
    assert set(picks) == {"good"}
    assert choose_parent(_sampler(["bad"]), state, rng) is None


def test_choose_parent_picks_a_pinned_program_at_the_documented_rate() -> None:
    state = SteeringState().applied(act("pin", "star")).applied(act("pin", "gone"))  # type: ignore[arg-type]
    rng = np.random.default_rng(7)
    picks = [choose_parent(_sampler(["other"]), state, rng, pinned_available={"star"}, pin_probability=0.5)
             for _ in range(2000)]
    share = picks.count("star") / len(picks)
    assert 0.45 < share < 0.55 and "gone" not in picks
    # Every draw banned: a pinned program is still a valid parent.
    both = state.applied(act("ban", "other"))  # type: ignore[arg-type]
    assert choose_parent(_sampler(["other"]), both, rng, pinned_available={"star"}, pin_probability=0.0) == "star"


def test_without_banned_and_prompt_notes() -> None:
    state = SteeringState()
    for i in range(5):
        state = state.applied(act("note", text=f"idea {i}"))  # type: ignore[arg-type]
    state = state.applied(act("ban", "b"))  # type: ignore[arg-type]
    assert without_banned(["a", "b", "c"], state) == ["a", "c"]
    assert without_banned([{"id": "b"}, {"id": "d"}], state, key=lambda v: v["id"]) == [{"id": "d"}]
    text = prompt_notes(state, limit=2)
    assert text.splitlines()[1:] == ["- idea 3", "- idea 4"]
    assert prompt_notes(SteeringState()) == ""


# ---------------------------------------------------------------------------------------------------------------
# evolve steer


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    """The archive tests' toy run, in a folder of this module's own (the tests here append to its steering log)."""
    run_dir = tmp_path_factory.mktemp("steer") / "toy" / "toy-run"
    return run_dir, write_toy_run(run_dir)


def invoke(*args: str) -> object:
    return CliRunner().invoke(steer, list(args), catch_exceptions=False)


def test_steer_command_records_pin_ban_note_by_prefix(toy) -> None:
    run_dir, data = toy
    c3, bad = data["c3"].program_id, data["bad"].program_id  # type: ignore[attr-defined]
    result = invoke(str(run_dir), "pin", c3[:8], "--who", "alice")
    assert result.exit_code == 0, result.output
    assert c3 in result.output
    assert invoke(str(run_dir), "ban", bad[:8]).exit_code == 0
    assert invoke(str(run_dir), "note", "prefer", "bigger", "circles").exit_code == 0
    state = read_state(run_dir)
    assert state.pinned == (c3,) and state.banned == {bad}
    assert state.notes[-1].text == "prefer bigger circles" and state.actions[0].who == "alice"
    assert {a.source for a in state.actions} == {"cli"}
    shown = invoke(str(run_dir), "show", "--json")
    assert json.loads(shown.output)["pinned"] == [c3]  # type: ignore[attr-defined]
    assert invoke(str(run_dir), "unpin", c3).exit_code == 0
    assert read_state(run_dir).pinned == ()


def test_steer_command_errors_are_clear(toy, tmp_path: Path) -> None:
    run_dir, data = toy
    missing = invoke(str(run_dir), "pin", "ffffffffffff")
    assert missing.exit_code != 0 and "no program" in missing.output  # type: ignore[attr-defined]
    failed = invoke(str(run_dir), "pin", data["bad"].program_id)  # type: ignore[attr-defined]
    assert failed.exit_code != 0 and "runtime_error" in failed.output  # type: ignore[attr-defined]
    nothing = invoke(str(tmp_path / "nope"), "note", "hello")
    assert nothing.exit_code != 0 and "nope" in nothing.output  # type: ignore[attr-defined]


def test_steer_sees_programs_still_in_the_journal(tmp_path: Path) -> None:
    run_dir = tmp_path / "p" / "live"
    write_toy_run(run_dir)
    fresh = make_record(program(7.0, "# live"), 20, None, loss=1.0)
    writer = ArchiveWriter(run_dir, "toy-run", segment_rows=1000, flush_seconds=3600)
    try:
        writer.append(fresh)  # journaled, not yet in a segment
        result = invoke(str(run_dir), "pin", fresh.program_id[:10])
        assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    finally:
        writer.close()
    assert read_state(run_dir).pinned == (fresh.program_id,)
    assert Action.PIN.needs_program and not Action.NOTE.needs_program


def test_choose_parent_over_a_real_database_sampler() -> None:
    """The wiring the driver will use: the database's own sampler, a ban on its best elite, a pin on another."""
    from evolve.database import ProgramDatabase

    seed = make_record(program(0.0), 0, None, loss=9.0)
    records = [seed] + [make_record(program(float(a)), i + 1, seed, loss=float(9 - i))
                        for i, a in enumerate((-4, -2, 1, 3))]
    db = ProgramDatabase(1, (5, 4))
    for record in records:
        db.add(record)
    best, pinned = db.best().program_id, records[1].program_id  # type: ignore[union-attr]
    state = SteeringState().applied(act("ban", best)).applied(act("pin", pinned))  # type: ignore[arg-type]
    rng = np.random.default_rng(3)
    picks = [choose_parent(lambda: db.sample_parent(0, rng).program_id, state, rng) for _ in range(1000)]
    assert best not in picks and None not in picks
    assert picks.count(pinned) / len(picks) > 0.5  # 0.5 pinned, plus its share of the ordinary draws


def test_driver_steering_bundles_poll_pins_bans_and_damage_reports(tmp_path: Path) -> None:
    from evolve.steering import DriverSteering

    loads: list[str] = []
    reports: list[str] = []
    views = {"a": {"id": "a"}, "b": {"id": "b"}, "p": {"id": "p"}}

    def load(pid: str) -> dict[str, str] | None:
        loads.append(pid)
        return views.get(pid)

    now = [0.0]
    driver = DriverSteering(tmp_path, key=lambda v: v["id"], load=load, report=reports.append, min_interval=1.0,
                            clock=lambda: now[0])
    rng = np.random.default_rng(0)
    state = driver.poll()
    before = rng.bit_generator.state
    assert driver.parent(state, lambda: views["a"], rng) == views["a"] and rng.bit_generator.state == before
    append_action(tmp_path, act("pin", "p"))  # type: ignore[arg-type]
    append_action(tmp_path, act("pin", "gone"))  # type: ignore[arg-type]
    append_action(tmp_path, act("ban", "a"))  # type: ignore[arg-type]
    with open(steering_path(tmp_path), "ab") as f:
        f.write(b"garbage\n")
    assert driver.poll().pinned == ()  # within the interval: the old state, no read
    now[0] += 1.5
    state = driver.poll()
    assert state.banned == {"a"} and reports == ["steering.jsonl line 4 ignored: not a JSON line: "
                                                 "Expecting value: line 1 column 1 (char 0)"]
    picks = [driver.parent(state, lambda: views["a"] if rng.random() < 0.5 else views["b"], rng)["id"]
             for _ in range(400)]
    assert "a" not in picks and 0.4 < picks.count("p") / 400 < 0.85 and sorted(set(loads)) == ["gone", "p"]
    assert loads.count("p") == 1  # a pinned program's view is loaded once
    everything_banned = state.applied(act("ban", "b")).applied(act("ban", "p"))  # type: ignore[arg-type]
    assert driver.parent(everything_banned, lambda: views["a"], rng, fallback=lambda: views.values()) is None
    fallback = driver.parent(state.applied(act("unpin", "p")), lambda: views["a"], rng,  # type: ignore[arg-type]
                             fallback=lambda: [views["a"], views["b"]])
    assert fallback == views["b"]
    assert driver.inspirations(state, [views["a"], views["b"], views["p"]], 1) == (views["b"],)
    driver.poll()
    assert len(reports) == 1  # damage is reported once


def test_a_pin_never_overrides_oversight_exclusion(tmp_path: Path) -> None:
    """A pinned program the database excludes (overfit, quarantined, being checked) is no parent while excluded."""
    from evolve.steering import DriverSteering

    views = {"a": {"id": "a"}, "p": {"id": "p"}}
    excluded = {"p"}
    driver = DriverSteering(tmp_path, key=lambda v: v["id"], load=views.get, breedable=lambda pid: pid not in excluded)
    append_action(tmp_path, act("pin", "p"))  # type: ignore[arg-type]
    state = driver.poll()
    rng = np.random.default_rng(3)
    assert {driver.parent(state, lambda: views["a"], rng)["id"] for _ in range(200)} == {"a"}
    excluded.clear()  # promoted after all: the pin applies again
    picks = [driver.parent(state, lambda: views["a"], rng)["id"] for _ in range(200)]
    assert 0.3 < picks.count("p") / 200 < 0.9
