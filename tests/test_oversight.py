"""Oversight's pure parts: verdicts (promoted, overfit, flaky, quarantined), the jump tripwire, the state and its
rebuild from events."""

from __future__ import annotations

import pytest

from evolve.oversight import events as ev
from evolve.oversight.standing import CascadeResult, JumpWatch, Standing, Tripwire, bound_hit, judge
from evolve.oversight.state import OversightState, key_of
from evolve.problem import OversightSpec, ScoreSpec
from evolve.types import StageOutcome, Status

SPEC = OversightSpec(tolerance=1.0, relative_tolerance=0.0, reevaluations=2, reevaluation_tolerance=0.1)


def run(status: Status = Status.OK, anomalies: tuple[tuple[str, str], ...] = (), **metrics: float) -> CascadeResult:
    return CascadeResult((StageOutcome(stage="s", status=status, metrics=dict(metrics), message="boom"),), anomalies)


def test_agreeing_heldout_and_reproducing_score_promote() -> None:
    v = judge(SPEC, 1.0, 3.0, run(h=2.5), "h", [run(score=3.05), run(score=2.95)], "score")
    assert v.standing is Standing.PROMOTED and v.heldout_agrees and v.reproduces
    assert v.behind == pytest.approx(0.5) and v.allowance == 1.0 and v.spread == pytest.approx(0.05)


def test_heldout_behind_beyond_the_allowance_is_overfit_in_either_direction() -> None:
    assert judge(SPEC, 1.0, 3.0, run(h=1.9), "h", [], "score").standing is Standing.OVERFIT
    assert judge(SPEC, 1.0, 3.0, run(h=9.0), "h", [], "score").standing is Standing.PROMOTED  # better held-out
    minimize = judge(SPEC, -1.0, 3.0, run(h=4.5), "h", [], "score")  # a loss: higher held-out is worse
    assert minimize.standing is Standing.OVERFIT and minimize.behind == pytest.approx(1.5)


def test_a_heldout_stage_that_fails_is_overfit_and_an_evaluator_failure_is_inconclusive() -> None:
    broke = judge(SPEC, 1.0, 3.0, run(Status.WRONG_OUTPUT), "h", [], "score")
    assert broke.standing is Standing.OVERFIT and "breaks on held-out" in broke.reasons[0]
    unsure = judge(SPEC, 1.0, 3.0, run(Status.SYSTEM_ERROR), "h", [], "score")
    assert unsure.standing is Standing.CANDIDATE and unsure.inconclusive
    missing = judge(SPEC, 1.0, 3.0, run(other=1.0), "h", [], "score")
    assert missing.standing is Standing.CANDIDATE and "no 'h' metric" in missing.inconclusive


def test_a_score_that_does_not_reproduce_is_flaky() -> None:
    v = judge(SPEC, 1.0, 3.0, run(h=3.0), "h", [run(score=3.0), run(score=3.5)], "score")
    assert v.standing is Standing.FLAKY and v.reproduces is False and v.spread == pytest.approx(0.5)
    crashed = judge(SPEC, 1.0, 3.0, None, "h", [run(Status.TIMEOUT)], "score")
    assert crashed.standing is Standing.FLAKY


def test_tripwires_quarantine_and_win_over_everything() -> None:
    gap = judge(OversightSpec(tolerance=1.0, gap=2.0), 1.0, 12.0, run(h=0.0), "h", [], "score")
    assert gap.standing is Standing.QUARANTINED and [h.kind for h in gap.tripwires] == [Tripwire.GAP]
    flagged = judge(SPEC, 1.0, 3.0, run(h=3.0, anomalies=(("s", "too fast"),)), "h", [], "score")
    assert flagged.standing is Standing.QUARANTINED and flagged.tripwires[0].kind is Tripwire.ANOMALY
    assert bound_hit(ScoreSpec("score", "maximize", 2.64), 2.7) is not None
    assert bound_hit(ScoreSpec("score", "maximize", 2.64), 2.6) is None
    assert bound_hit(ScoreSpec("loss", "minimize", 0.0), -0.1) is not None
    assert not Tripwire.BOUND.auto_release and not Tripwire.GAP.auto_release and Tripwire.JUMP.auto_release


def test_nothing_to_check_promotes() -> None:
    v = judge(OversightSpec(), 1.0, 3.0, None, "score", [], "score")
    assert v.standing is Standing.PROMOTED and "nothing to check" in v.reasons[0]


def test_jump_tripwire_needs_history_and_fires_far_beyond_recent_improvements() -> None:
    watch = JumpWatch(OversightSpec(jump=3.0, jump_history=2, jump_window=4))
    for value in (0.4, 1.2, 2.4):  # improvements 0.8 and 1.2
        assert watch.check(value) is None
        watch.record(value)
    assert watch.check(4.7) is None  # +2.3 < 3 x 1.2
    hit = watch.check(12.0)
    assert hit is not None and hit.kind is Tripwire.JUMP and hit.numbers["recent_largest"] == pytest.approx(1.2)
    assert watch.check(2.0) is None  # not a new best
    young = JumpWatch(OversightSpec(jump=3.0, jump_history=2))
    young.replay([0.0, 0.1])
    assert young.check(100.0) is None  # one improvement seen: too little history to judge a jump


def _events(*rows: tuple[str, str, dict]) -> list[dict]:
    return [{"kind": kind, "program_id": pid, "data": data} for kind, pid, data in rows]


def test_state_contenders_top_k_and_best_promoted() -> None:
    state = OversightState(top_k=2)
    a, b, c = key_of(5.0, 1, "a"), key_of(7.0, 2, "b"), key_of(4.0, 3, "c")
    assert state.qualifies(a)
    state.start_check("a", a, 5.0, "top_k")
    state.decide("a", a, 5.0, Standing.PROMOTED, 0)
    state.start_check("b", b, 7.0, "top_k")
    assert state.qualifies(c) is False  # b (pending) and a (promoted) hold the top 2
    assert state.best() is not None and state.best().program_id == "a"
    state.decide("b", b, 7.0, Standing.OVERFIT, 0)
    assert state.qualifies(c) and state.excluded() == ["b"] and state.best().program_id == "a"


def test_state_rebuild_from_events_equals_the_live_state() -> None:
    rows = _events(
        (ev.CHECK, "a", {"check": 0, "reason": "top_k", "fitness": 1.0, "iteration": 0, "score": 1.0}),
        (ev.STANDING, "a", {"standing": "promoted", "check": 0, "fitness": 1.0, "iteration": 0}),
        (ev.TRIPWIRE, "q", {"tripwire": "bound", "phase": ev.ARRIVAL}),
        (ev.STANDING, "q", {"standing": "quarantined", "check": None, "fitness": 9.0, "iteration": 2,
                            "tripwires": ["bound"]}),
        (ev.CHECK, "p", {"check": 0, "reason": "top_k", "fitness": 3.0, "iteration": 3}),  # no verdict: pending
        (ev.ANOMALY, "z", {"stage": "s", "anomaly": "odd"}),
        (ev.RELEASE, "q", {"by": "ana"}),
        (ev.STANDING, "q", {"standing": "candidate", "check": None, "released": True, "fitness": 9.0,
                            "iteration": 2}),
    )
    state = OversightState.rebuild(rows, top_k=1)
    assert state.standing("a") is Standing.PROMOTED and state.standing("q") is Standing.CANDIDATE
    assert [w.program_id for w in state.pending()] == ["p"] and state.arrival_tripped == {"q"}
    assert state.unchecked("q") and not state.unchecked("a") and state.unchecked("never-seen")
    assert state.anomalies == {"z": [("s", "odd")]} and state.excluded() == []
    assert not state.qualifies(key_of(2.0, 5, "x"))  # p (3.0, pending) holds the top 1


def test_restore_reads_every_anomaly_but_only_the_known_programs_other_events() -> None:
    """After a resume the standings come from the events about the archive's programs; the anomalies of every
    program (a torn batch's rows included) are kept, so replaying those rows trips the same wires."""
    import json
    from types import SimpleNamespace

    import pyarrow as pa

    from evolve.oversight.rebuild import restore_oversight

    rows = [(ev.TRIPWIRE, "a", {"tripwire": "bound", "phase": ev.ARRIVAL}),
            (ev.TRIPWIRE, "torn", {"tripwire": "bound", "phase": ev.ARRIVAL}),
            (ev.ANOMALY, "torn", {"stage": "s", "anomaly": "odd"}),
            (ev.HELDOUT, "a", {"stage": "h"}),
            (ev.ANOMALY, "a", {"stage": "s", "anomaly": "fast"}),
            (ev.ANOMALY, "a", {"stage": "t", "anomaly": "faster"})]
    events = pa.table({"kind": [k for k, _, _ in rows], "program_id": [p for _, p, _ in rows],
                       "data": [json.dumps({**d, "ns": i}) for i, (_, _, d) in enumerate(rows)]})
    programs = pa.table({"program_id": ["a", "b"], "iteration": [1, 2], "fitness": [1.0, 2.0]})
    restored = restore_oversight(events, programs, SimpleNamespace(oversight=SimpleNamespace(top_k=2)))
    assert restored.state.arrival_tripped == {"a"} and not restored.state.watched
    assert restored.state.anomalies == {"a": [("s", "fast"), ("t", "faster")], "torn": [("s", "odd")]}
    assert restored.jump_fitness == [2.0]  # a, caught on arrival, is no best
