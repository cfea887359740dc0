"""What ``evolve ui`` shows of oversight and search strategies, without a browser: the best promoted program as the
run's best, standings on every program list and their filter, a program's verdict and decision, the audit trail
(steering included) most recent first and paged, the strategies and scratchpad panel, and hostile text in any of
them escaped. Also home of ``write_oversight_run``, the checked run the browser tests open."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="the ui extra is not installed (pip install -e '.[ui]')")
from evolve.archive import ArchiveWriter  # noqa: E402
from evolve.oversight.decisions import decide  # noqa: E402
from evolve.steering import append_action, make_action  # noqa: E402
from evolve.ui.store import RunStore  # noqa: E402
from tests.oversight_problem.programs import MEMORISER, honest  # noqa: E402

from .test_oversight_runs import PROBLEM, in_order, local_run, pid_of  # noqa: E402
from .test_ui_app import served  # noqa: E402

KEY = "oversight~run-o"
HOSTILE = '<script>window.__pwned=1</script> "><img src=x onerror="window.__pwned=2">'


def strategy(sid: str, parent: str | None, iteration: int, text: str, active: list[str]) -> dict[str, object]:
    """A strategy event's data as ``evolve.search.engine`` records it."""
    return {"id": sid, "text": text, "iteration": iteration, "parent": parent, "origin": "seed" if parent is None
            else "llm", "params": {"exploitation": 0.4}, "ignored": [], "prompt": "", "answer": text, "model": "m",
            "calls": [], "active_after": active}


def write_oversight_run(run_dir: Path) -> dict[str, str]:
    """A run of tests/oversight_problem (a held-out stage and a re-evaluation): two honest programs promoted, a
    memoriser found overfit (the fittest by its visible score); the best promoted approved by a person with a
    hostile note; co-evolved strategies and scratchpad notes with hostile text; a pin and a hostile steering note."""
    local_run(PROBLEM, run_dir, in_order(honest(2), MEMORISER, honest(3)), 3)
    best, memoriser = pid_of(honest(3)), pid_of(MEMORISER)
    decide(run_dir, best, "approved", "ana", note=f"checked by hand {HOSTILE}")
    writer = ArchiveWriter(run_dir, run_dir.name, recover=False, reserve_bytes=0)
    try:
        writer.record_event("strategy", strategy("st-seed", None, 0, "Take small steps.", ["st-seed"]),
                            event_id="strategy:st-seed")
        writer.record_event("strategy", strategy("st-2", "st-seed", 2, f"Widen the search {HOSTILE}",
                                                 ["st-seed", "st-2"]), iteration=2, event_id="strategy:st-2")
        writer.record_event("scratchpad", {"notes": "first notes", "adopted": True, "prompt": "", "answer": "",
                                           "model": "m", "calls": [], "error": None}, iteration=1)
        writer.record_event("scratchpad", {"notes": f"A pays, B does not {HOSTILE}", "adopted": True, "prompt": "",
                                           "answer": "", "model": "m", "calls": [], "error": None}, iteration=3)
    finally:
        writer.close()
    append_action(run_dir, make_action("pin", program_id=best, who="bo", source="cli"))
    append_action(run_dir, make_action("note", text=f"try wider {HOSTILE}", who="bo", source="cli"))
    return {"best": best, "memoriser": memoriser, "run_dir": str(run_dir)}


@pytest.fixture(scope="module")
def checked(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("uioversight") / "archive"
    data = write_oversight_run(root / "oversight" / "run-o")
    with served(root) as client:
        yield client, root, data


def test_best_is_the_best_promoted_and_standings_are_counted(checked) -> None:
    client, _, data = checked
    over = client.get(f"/api/run/{KEY}/overview").json()
    assert over["best"]["program_id"] == data["best"]  # not the memoriser, whose visible score is higher
    assert over["best_visible"]["program_id"] == data["memoriser"]
    assert over["oversight"] and over["strategies"]
    assert over["standings"]["promoted"] == 3 and over["standings"]["overfit"] == 1


def test_programs_carry_their_standing_and_filter_by_it(checked) -> None:
    client, _, data = checked
    every = client.get(f"/api/run/{KEY}/programs?order=best&status=ok").json()
    assert every["rows"][0]["program_id"] == data["memoriser"] and every["rows"][0]["standing"] == "overfit"
    promoted = client.get(f"/api/run/{KEY}/programs?order=best&standing=promoted").json()
    assert promoted["total"] == 3 and promoted["rows"][0]["program_id"] == data["best"]
    assert promoted["rows"][0]["decision"] == "approved"
    auto = client.get(f"/api/run/{KEY}/programs?order=best&status=ok&standing=auto").json()  # the run page's default
    assert auto["standing"] == "promoted" and auto["rows"][0]["program_id"] == data["best"]
    assert {r["standing"] for r in promoted["rows"]} == {"promoted"}
    overfit = client.get(f"/api/run/{KEY}/programs?standing=overfit").json()
    assert [r["program_id"] for r in overfit["rows"]] == [data["memoriser"]]
    assert client.get(f"/api/run/{KEY}/programs?standing=quarantined").json()["total"] == 0
    candidates = client.get(f"/api/run/{KEY}/programs?standing=candidate").json()
    assert data["memoriser"] not in {r["program_id"] for r in candidates["rows"]}
    page = client.get(f"/run/{KEY}/programs?standing=overfit").text
    assert data["memoriser"] in page and data["best"] not in page and 'class="standing st-overfit"' in page


def test_tree_and_grids_mark_standings(checked) -> None:
    client, _, data = checked
    tree = client.get(f"/api/run/{KEY}/tree").json()
    marks = {n["program_id"]: n["standing"] for n in tree["nodes"]}
    assert marks[data["memoriser"]] == "overfit" and marks[data["best"]] == "promoted"
    assert tree["best"] == data["best"]
    cells = [c for m in client.get(f"/api/run/{KEY}/maps").json()["maps"] for c in m["cells"]]
    assert {c["standing"] for c in cells} <= {"promoted", "overfit", "candidate", "flaky", "quarantined"}


def test_program_page_shows_the_verdict_and_the_decision(checked) -> None:
    client, _, data = checked
    page = client.get(f"/run/{KEY}/program/{data['memoriser']}").text
    assert 'id="standing">overfit<' in page and "falls" in page and "held-out" in page
    assert 'id="verdict"' in page and "allowance" in page and "no decision recorded" in page
    best = client.get(f"/run/{KEY}/program/{data['best']}").text
    assert 'id="decision-badge">approved<' in best and 'id="decision-by">ana<' in best
    assert "<script>window.__pwned" not in best and "<img src=x" not in best
    assert "checked by hand &lt;script&gt;window.__pwned=1&lt;/script&gt;" in best
    assert 'id="program-audit"' in best and "approved by ana" in best


def test_audit_trail_most_recent_first_paged_with_steering(checked) -> None:
    client, _, data = checked
    first = client.get(f"/api/run/{KEY}/audit?per_page=3").json()
    assert first["total"] > 3 and len(first["entries"]) == 3 and first["sandbox_levels"]
    everything = client.get(f"/api/run/{KEY}/audit?per_page=200").json()["entries"]
    times = [e["at"] for e in everything]
    assert times == sorted(times, reverse=True) and everything[:3] == first["entries"]
    kinds = {e["kind"] for e in everything}
    assert {"promotion", "overfit", "approval", "steering", "sandbox_level"} <= kinds
    note = next(e for e in everything if e["kind"] == "steering" and e["numbers"]["action"] == "note")
    assert HOSTILE in note["summary"]
    overfit = next(e for e in everything if e["kind"] == "overfit")
    assert overfit["program_id"] == data["memoriser"] and overfit["numbers"]["heldout"] < overfit["numbers"]["visible"]
    assert first["decisions"] == {"approved": 1, "rejected": 0}
    append_action(data["run_dir"], make_action("ban", program_id=data["memoriser"], who="cy", source="ui"))
    again = client.get(f"/api/run/{KEY}/audit?per_page=3").json()  # the steering log is read again when it grows
    assert again["total"] == first["total"] + 1 and again["entries"][0]["summary"].startswith("ban by cy")


def test_large_runs_leave_the_sandbox_level_scan_out(checked, monkeypatch: pytest.MonkeyPatch) -> None:
    import evolve.ui.oversight as ov

    _, root, _ = checked
    monkeypatch.setattr(ov, "SANDBOX_AUDIT_MAX_ROWS", 1)
    answer = RunStore(root).get(KEY).audit(per_page=200)
    assert not answer["sandbox_levels"] and "sandbox_level" not in answer["kinds"]


def test_strategies_and_scratchpad(checked) -> None:
    client, _, _ = checked
    data = client.get(f"/api/run/{KEY}/strategies").json()
    assert [s["id"] for s in data["strategies"]] == ["st-seed", "st-2"]  # equal fitness: born first, first
    assert data["strategies"][1]["parent"] == "st-seed" and data["strategies"][1]["active"]
    assert "prompt" not in data["strategies"][0]
    assert [n["iteration"] for n in data["scratchpad"]] == [3, 1]  # latest first
    assert HOSTILE in data["scratchpad"][0]["notes"]


def test_a_run_without_oversight_or_strategies_shows_neither(tmp_path: Path) -> None:
    from .test_ui_data import packing_problem, write_packing_run

    problem = packing_problem(tmp_path / "problem")
    made = write_packing_run(tmp_path / "archive" / "circle_packing" / "old", problem, programs=10)
    src = RunStore(tmp_path / "archive").get("circle_packing~old")
    over = src.overview()
    assert not over["oversight"] and not over["strategies"]
    assert over["best"]["program_id"] == made["best"].program_id  # type: ignore[attr-defined]
    assert src.strategies()["strategies"] == [] and src.audit()["decided"] == 0
    rows = src.programs(standing="promoted")["rows"]
    assert rows == []  # nothing was promoted; every program is a candidate
    assert src.programs(standing="candidate")["total"] == 11
    assert src.programs(standing="auto")["standing"] == "" and src.programs(standing="auto")["total"] == 11
    assert json.dumps(src.audit())  # JSON-ready
