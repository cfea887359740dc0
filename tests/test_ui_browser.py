"""``evolve ui`` driven in a real headless browser (Debian's Chromium through Playwright, never a downloaded one):
the runs list and comparison, the run page (progress, outcomes, grids, genealogy, failures), a program page with
its diff and picture, hostile markup shown as text, live refresh while rows are appended, and steering from the
browser. Screenshots of each view are saved under the test's temporary directory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="the ui extra is not installed (pip install -e '.[ui]')")
playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the test extra)")

from evolve.archive import ArchiveWriter  # noqa: E402
from evolve.steering import SteeringLog, read_state  # noqa: E402
from evolve.ui.server import UIServer  # noqa: E402

from .test_ui_data import packing_problem, packing_record, write_packing_run  # noqa: E402

CHROMIUM = os.environ.get("EVOLVE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TOKEN = "browser-token-0123456789"
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian package 'chromium'; "
                                                        ".ci/run installs it)")


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    with playwright_api.sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield instance
        instance.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    base = tmp_path_factory.mktemp("uibrowser")
    problem = packing_problem(base / "problem")
    root = base / "archive"
    runs = {
        "a": write_packing_run(root / "circle_packing" / "run-a", problem, programs=60),
        "b": write_packing_run(root / "circle_packing" / "run-b", problem, programs=30),
        "live": write_packing_run(root / "circle_packing" / "run-live", problem, programs=12, state="running"),
    }
    with UIServer(root, token=TOKEN, poll_seconds=0.5) as server:
        yield {"url": server.url, "root": root, "runs": runs, "shots": base / "screenshots"}


@pytest.fixture
def page(browser, site):  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.errors = []  # uncaught script errors; every test asserts there were none
    tab.on("pageerror", lambda exc: tab.errors.append(str(exc)))
    tab.on("console", lambda msg: tab.errors.append(msg.text) if msg.type == "error" else None)
    yield tab
    context.close()


def shot(page, site, name: str, target=None) -> Path:  # type: ignore[no-untyped-def]
    path = Path(site["shots"]) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    (target or page).screenshot(path=str(path), **({} if target else {"full_page": True}))
    assert path.stat().st_size > 2000
    return path


def ready(page, url: str) -> None:  # type: ignore[no-untyped-def]
    page.goto(url)
    page.wait_for_selector("body[data-ready='1']", state="attached", timeout=30_000)


def run_url(site, name: str) -> str:  # type: ignore[no-untyped-def]
    return f"{site['url']}/run/circle_packing~run-{name}"


def test_runs_list_and_runs_compared_on_one_chart(page, site) -> None:
    ready(page, site["url"] + "/")
    rows = page.locator("#runs-body tr")
    assert rows.count() == 3
    assert "run-a" in page.inner_text("#runs-table") and "running" in page.inner_text("#runs-table")
    shot(page, site, "runs")
    page.check("input[value='circle_packing~run-a']")
    page.check("input[value='circle_packing~run-b']")
    page.click("#compare-form button[type=submit]")
    page.wait_for_selector("body[data-compared='2']", state="attached")
    assert page.locator("#compare-chart path.series").count() == 2
    shot(page, site, "compare")
    assert page.errors == []


def test_run_page_shows_progress_outcomes_grids_genealogy_and_failures(page, site) -> None:
    data = site["runs"]["a"]
    ready(page, run_url(site, "a"))
    assert page.inner_text("#f-programs") == "61"
    scored = sum(1 for r in data["records"] if r.status == "ok")
    assert page.locator("#progress-chart circle.dot").count() == scored
    assert page.locator("#best-line").count() == 1
    assert page.locator("#outcomes-chart rect.area[data-status='runtime_error']").count() > 0
    assert page.locator(".heatmap").count() == 2 and page.locator(".heatmap rect.cell").count() > 2
    best = data["best"].program_id
    assert page.locator(f"#tree-svg g.node.best[data-id='{best}']").count() == 1
    path_nodes = page.locator("#tree-svg g.node.best-path").count()
    assert path_nodes >= 2 and page.locator("#tree-svg path.edge.best-path").count() == path_nodes - 1
    assert "ValueError: bad radius N" in page.inner_text("#failures")
    assert page.locator("#top tbody tr").first.get_attribute("data-id") == best
    path = shot(page, site, "run")
    if os.environ.get("EVOLVE_UI_DOCS_SHOT"):  # refresh docs/ui.png on demand, never by default
        shutil.copy(path, os.environ["EVOLVE_UI_DOCS_SHOT"])
    dot = page.locator("#progress-chart circle.dot").first
    dot_id = dot.get_attribute("data-id")
    dot.dispatch_event("mouseover")  # its tooltip is made when the pointer reaches it (dots may overlap)
    assert dot_id in dot.locator("title").text_content()
    dot.dispatch_event("click")
    page.wait_for_url(f"**/program/{dot_id}")
    assert page.errors == []


def test_genealogy_filters_expand_and_open(page, site) -> None:
    data = site["runs"]["a"]
    ready(page, run_url(site, "a"))
    page.select_option("#tree-island", "1")
    faded = page.locator("#tree-svg g.node.faded")
    assert faded.count() == page.locator("#tree-svg g.node[data-island='0']").count() > 0
    page.select_option("#tree-island", "")
    page.uncheck("#tree-statuses input[data-status='runtime_error']")
    assert page.locator("#tree-svg g.node.faded").count() == \
        page.locator("#tree-svg g.node[data-status='runtime_error']").count()
    page.uncheck("#tree-best")
    assert page.locator("#tree-svg path.edge.best-path").count() == 0
    page.check("#tree-best")
    shot(page, site, "tree", page.locator("#tree-section"))
    # Shift-click expands the tree below a node: it becomes the root, its ancestors are listed.
    deep = page.locator("#tree-svg g.node.best-path").nth(2)
    deep_id = deep.get_attribute("data-id")
    deep.click(modifiers=["Shift"])
    page.wait_for_function("() => document.querySelector('#tree-ancestors').textContent.includes('ancestors')")
    assert page.locator(f"#tree-svg g.node[data-id='{deep_id}']").count() == 1
    # A click opens the program.
    page.locator(f"#tree-svg g.node[data-id='{data['best'].program_id}']").click()
    page.wait_for_url(f"**/program/{data['best'].program_id}")
    assert page.inner_text("#program-id") == data["best"].program_id
    assert page.errors == []


def test_map_cell_opens_its_elite(page, site) -> None:
    ready(page, run_url(site, "a"))
    cell = page.locator(".heatmap[data-island='0'] rect.cell").first
    elite = cell.get_attribute("data-id")
    shot(page, site, "map", page.locator("#maps-section"))
    cell.click()
    page.wait_for_url(f"**/program/{elite}")
    assert page.inner_text("#program-id") == elite
    assert page.errors == []


def test_program_page_code_diffs_lineage_and_packing_picture(page, site) -> None:
    data = site["runs"]["a"]
    best = data["best"]
    ready(page, f"{run_url(site, 'a')}/program/{best.program_id}")
    assert "SHRINK" in page.inner_text("#code")
    diff = page.inner_text("#parent-diff")
    assert diff.count("SHRINK") >= 2 and "-SHRINK" in diff.replace(" ", "") and "+SHRINK" in diff.replace(" ", "")
    assert page.locator("#lineage tbody tr").count() == best.generation + 1
    assert page.inner_text("#metrics").startswith("radius_spread") or "sum_radii" in page.inner_text("#metrics")
    assert "packing" in page.inner_text("body")  # the artifact
    page.wait_for_function("() => document.querySelector('#picture').complete")
    assert page.evaluate("document.querySelector('#picture').naturalWidth") > 100
    shot(page, site, "picture", page.locator("#picture"))
    shot(page, site, "program")
    seed = data["seed"].program_id
    page.fill("#other-input", seed[:7])
    page.click("#diff-form button[type=submit]")
    page.wait_for_selector("#other-diff")
    assert seed in page.inner_text("#other-diff") and "ROWS" in page.inner_text("#other-diff")
    shot(page, site, "diff", page.locator("#other-diff"))
    assert page.errors == []


def test_hostile_code_and_answer_are_shown_as_text(page, site) -> None:
    hostile = site["runs"]["a"]["hostile"]
    ready(page, f"{run_url(site, 'a')}/program/{hostile.program_id}")
    assert page.evaluate("window.__pwned") is None
    assert page.locator("img[src='x']").count() == 0
    assert [page.locator("script").nth(i).get_attribute("src") for i in range(page.locator("script").count())] == \
        ["/static/ui.js", "/static/steer.js", "/static/program.js"]
    code = page.inner_text("#code")
    assert "<script>window.__pwned = 1</script>" in code and '"><img src=x onerror="window.__pwned=2">' in code
    answer = page.inner_text("#answer")
    assert "<script>window.__pwned = 3</script>" in answer and 'onerror="window.__pwned=4"' in answer
    assert "<script>x()</script>" in page.inner_text("body")  # the prompt
    shot(page, site, "hostile")
    assert page.errors == []


def test_run_page_refreshes_while_rows_are_appended(page, site) -> None:
    run_dir = Path(site["root"]) / "circle_packing" / "run-live"
    best = site["runs"]["live"]["best"]
    ready(page, run_url(site, "live"))
    assert page.inner_text("#f-programs") == "13"
    version = page.evaluate("document.body.dataset.version")
    writer = ArchiveWriter(run_dir, "run-live", segment_rows=1000, flush_seconds=3600)
    fresh = [packing_record(50 + i, best, shrink=0.99, rows=5 + i % 2, island=i % 2) for i in range(4)]
    try:
        for record in fresh:
            writer.append(record)
        page.wait_for_function("() => document.body.dataset.programs === '17'", timeout=30_000)
        assert page.evaluate("document.body.dataset.version") != version and page.inner_text("#f-programs") == "17"
        for record in fresh:
            assert page.locator(f"#recent tr[data-id='{record.program_id}']").count() == 1
        page.wait_for_selector(f"#progress-chart circle.dot[data-id='{fresh[0].program_id}']", state="attached")
        shot(page, site, "live")
        writer.flush()  # the rows move from the journal to a segment: the page follows, nothing doubles
        flushed = page.evaluate("document.body.dataset.version")
        page.wait_for_function(f"() => document.body.dataset.version !== '{flushed}'", timeout=30_000)
        assert page.inner_text("#f-programs") == "17"
    finally:
        writer.close()
    assert page.errors == []


def test_pin_ban_and_note_from_the_browser_reach_the_steering_log(page, browser, site) -> None:
    data = site["runs"]["b"]
    run_dir = Path(site["root"]) / "circle_packing" / "run-b"
    log = SteeringLog(run_dir)
    assert log.poll().actions == ()
    best = data["best"].program_id
    other = next(r.program_id for r in data["records"] if r.status == "ok" and r.program_id != best)
    # Without the token, nothing is recorded and the page says why.
    stranger = browser.new_context()
    tab = stranger.new_page()
    ready(tab, f"{run_url(site, 'b')}/program/{best}")
    tab.click("button[data-steer='pin']")
    tab.wait_for_selector("#steer-message.bad")
    assert "token" in tab.inner_text("#steer-message")
    stranger.close()
    assert read_state(run_dir).actions == ()
    # With the token (given once in the URL, as `evolve ui` prints it).
    ready(page, f"{run_url(site, 'b')}/program/{best}?token={TOKEN}")
    assert "token=" not in page.url
    page.click("button[data-steer='pin']")
    page.wait_for_selector("#badge-pinned")
    ready(page, f"{run_url(site, 'b')}/program/{other}")
    page.click("button[data-steer='ban']")
    page.wait_for_selector("#badge-banned")
    ready(page, run_url(site, "b"))
    page.fill("#note-text", "try fewer rows <b>now</b>")
    page.click("#note-add")
    page.wait_for_function("() => document.querySelector('#steer-notes').textContent.includes('fewer rows')")
    assert page.locator("#steer-notes b").count() == 0  # the note is text too
    page.wait_for_selector(f"#steer-pinned li[data-id='{best}']")
    page.wait_for_selector(f"#steer-banned li[data-id='{other}']")
    shot(page, site, "steering", page.locator("#steering"))
    state = log.poll()  # the incremental reader the driver uses sees the three new actions
    assert state.pinned == (best,) and state.banned == {other}
    assert [n.text for n in state.notes] == ["try fewer rows <b>now</b>"]
    assert [a.action.value for a in state.actions] == ["pin", "ban", "note"]
    assert {a.source for a in state.actions} == {"ui"}
    raw = [json.loads(line) for line in (run_dir / "steering.jsonl").read_text().splitlines()]
    assert all(r["at"] > 1e9 and r["who"] for r in raw)
    assert page.errors == []


@pytest.mark.slow
@pytest.mark.ray
def test_steering_from_the_browser_changes_what_the_running_driver_does(ray_session, page, problem_copy,
                                                                       tmp_path: Path) -> None:
    from evolve.query import RunArchive
    from tests import llm_server as server_lib

    problem = problem_copy("circle_packing")
    run_dir = tmp_path / "archive" / "circle_packing" / "steered"
    with server_lib.ChatServer(models=["fast"]) as llm:
        llm.responder = server_lib.tweak_constant_responder()
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
        env.update({"PYTHONPATH": str(Path(__file__).resolve().parents[1]), "XDG_CONFIG_HOME": "/nonexistent"})
        proc = subprocess.Popen(
            [sys.executable, "-m", "evolve.cli", "run", str(problem), "--mutator", "llm", "--model", "fast",
             "--api-base", llm.url, "--api-key", "test", "--iterations", "2000", "--time-limit", "45",
             "--concurrency", "2", "--run-dir", str(run_dir), "--address",
             ray_session.get_runtime_context().gcs_address, "--quiet"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 90
            best = other = None
            while time.monotonic() < deadline:
                time.sleep(1)
                if not (run_dir / "journal").exists() and not (run_dir / "segments").exists():
                    continue
                with RunArchive(run_dir) as archive:
                    ok = archive.top(50)
                if len(ok) >= 4:
                    best, other = ok[0]["program_id"], ok[-1]["program_id"]
                    break
            assert best and other, "the run did not produce scored programs in time"
            with UIServer(run_dir, token=TOKEN, poll_seconds=0.5) as server:
                ready(page, f"{server.url}/run/{run_dir.name}/program/{other}?token={TOKEN}")
                page.click("button[data-steer='pin']")
                page.wait_for_selector("#badge-pinned")
                ready(page, f"{server.url}/run/{run_dir.name}/program/{best}")
                page.click("button[data-steer='ban']")
                page.wait_for_selector("#badge-banned")
                ready(page, f"{server.url}/run/{run_dir.name}")
                page.fill("#note-text", "NOTE-7f3a: prefer fewer rows")
                page.click("#note-add")
                page.wait_for_function("() => document.querySelector('#steer-notes').textContent.includes('NOTE-7f3a')")
            output, _ = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, output
    applied_after = max(a.at for a in read_state(run_dir).actions) + 3.0  # the driver polls about every second
    with RunArchive(run_dir) as archive:
        rows = archive.table(columns=["program_id", "parent_ids", "prompt", "created_at", "iteration"]).to_pylist()
    later = [r for r in rows if r["created_at"].timestamp() > applied_after and r["iteration"] > 0]
    assert len(later) >= 20, "too few iterations after the steering actions to judge"
    assert all(best not in (r["parent_ids"] or []) for r in later)  # banned: never a parent nor an inspiration
    pinned_share = sum(1 for r in later if r["parent_ids"] and r["parent_ids"][0] == other) / len(later)
    assert pinned_share >= 0.3  # pinned: chosen with probability 0.5 (evolve.steering.PIN_PROBABILITY)
    assert all("NOTE-7f3a" in (r["prompt"] or "") for r in later if r["prompt"])


# ---- oversight and search strategies (tests/test_ui_oversight.py builds the run) -----------------------------------


@pytest.fixture(scope="module")
def checked_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    from .test_ui_oversight import write_oversight_run

    base = tmp_path_factory.mktemp("uichecked")
    root = base / "archive"
    data = write_oversight_run(root / "oversight" / "run-o")
    with UIServer(root, token=TOKEN, poll_seconds=0.5) as server:
        yield {"url": server.url, "root": root, "data": data, "shots": base / "screenshots"}


def no_script_ran(page) -> None:  # type: ignore[no-untyped-def]
    assert page.evaluate("window.__pwned") is None
    assert page.locator("img[src='x']").count() == 0


def test_run_page_shows_best_promoted_standings_oversight_and_strategies(page, checked_site) -> None:
    from .test_ui_oversight import HOSTILE

    data = checked_site["data"]
    ready(page, f"{checked_site['url']}/run/oversight~run-o")
    assert page.inner_text("#f-best-label") == "best promoted"
    assert page.get_attribute("#f-best", "data-id") == data["best"]
    assert page.is_visible("#f-visible-box") and page.get_attribute("#f-visible", "data-id") == data["memoriser"]
    # The best-programs table lists promoted programs by default, like `evolve archive top`.
    assert page.input_value("#top-standing") == "promoted"
    top = page.locator("#top tbody tr")
    assert top.first.get_attribute("data-id") == data["best"]
    assert {top.nth(i).get_attribute("data-standing") for i in range(top.count())} == {"promoted"}
    assert "approved" in top.first.inner_text()
    page.select_option("#top-standing", "overfit")
    page.wait_for_selector(f"#top tbody tr[data-id='{data['memoriser']}'][data-standing='overfit']")
    assert page.locator("#top tbody tr").count() == 1
    # The tree marks the overfit program.
    assert page.locator(f"#tree-svg g.node.st-overfit[data-id='{data['memoriser']}']").count() == 1
    # The Oversight panel: the audit trail, most recent first, programs linked, steering included.
    audit = page.locator("#audit tbody tr")
    total = int(page.evaluate("document.body.dataset.audit"))
    assert audit.count() == min(25, total) >= 8 and f"{total} entries, most recent first" in page.inner_text("#audit-page")
    kinds = [audit.nth(i).get_attribute("data-kind") for i in range(audit.count())]
    assert {"steering", "approval", "overfit"} <= set(kinds)
    assert "promoted 3, overfit 1" in page.inner_text("#oversight-summary")
    overfit = page.locator("#audit tbody tr[data-kind='overfit']").first
    assert overfit.locator("a.pid").get_attribute("href").endswith(data["memoriser"])
    assert "falls" in overfit.inner_text() and "allowance" in overfit.inner_text()
    assert HOSTILE in page.inner_text("#audit")  # the steering note and the decision note, as text
    shot(page, checked_site, "oversight", page.locator("#oversight-section"))
    # Strategies and scratchpad notes.
    assert page.is_visible("#strategies-section")
    assert page.locator("#strategies tbody tr").count() == 2
    assert page.locator("#strategies tbody tr[data-id='st-2'] b").count() == 1  # active: bold
    assert HOSTILE in page.inner_text("#strategies") or HOSTILE in page.text_content("#strategies")
    assert HOSTILE in page.text_content("#scratchpad")
    shot(page, checked_site, "strategies", page.locator("#strategies-section"))
    no_script_ran(page)
    shot(page, checked_site, "run-checked")
    assert page.errors == []


def test_program_page_shows_standing_verdict_and_decision(page, checked_site) -> None:
    from .test_ui_oversight import HOSTILE

    data = checked_site["data"]
    ready(page, f"{checked_site['url']}/run/oversight~run-o/program/{data['best']}")
    assert page.inner_text("#standing") == "promoted" and page.inner_text("#decision-badge") == "approved"
    assert page.inner_text("#decision-by") == "ana" and HOSTILE in page.inner_text("#decision-note")
    assert len(page.inner_text("#decision-sha")) == 64
    verdict = page.inner_text("#verdict")
    assert "held-out" in verdict and "allowance" in verdict and "re-evaluations" in verdict
    no_script_ran(page)
    shot(page, checked_site, "program-checked", page.locator("#oversight"))
    ready(page, f"{checked_site['url']}/run/oversight~run-o/program/{data['memoriser']}")
    assert page.inner_text("#standing") == "overfit" and "falls" in page.inner_text("#standing-reasons")
    assert page.errors == []


def test_programs_list_filters_by_standing(page, checked_site) -> None:
    data = checked_site["data"]
    ready(page, f"{checked_site['url']}/run/oversight~run-o")
    page.goto(f"{checked_site['url']}/run/oversight~run-o/programs")
    page.select_option("#standing-filter", "overfit")
    page.click("form.controls button[type=submit]")
    page.wait_for_url("**standing=overfit**")
    rows = page.locator("#programs tbody tr")
    assert rows.count() == 1 and data["memoriser"] in rows.first.inner_text() and "overfit" in rows.first.inner_text()
    shot(page, checked_site, "programs-overfit")
    assert page.errors == []


def test_a_decision_recorded_while_the_page_is_open_appears(page, checked_site) -> None:
    from evolve.oversight.decisions import decide
    from evolve.query import RunArchive

    data = checked_site["data"]
    ready(page, f"{checked_site['url']}/run/oversight~run-o")
    before = int(page.evaluate("document.body.dataset.audit"))
    with RunArchive(data["run_dir"]) as archive:
        other = next(r["program_id"] for r in archive.top(5) if r["program_id"] not in (data["best"], data["memoriser"]))
    decide(data["run_dir"], other, "rejected", "cy", note="not general")
    page.wait_for_function(f"() => Number(document.body.dataset.audit) > {before}", timeout=30_000)
    first = page.locator("#audit tbody tr").first
    assert first.get_attribute("data-kind") == "rejection" and "rejected by cy: not general" in first.inner_text()
    assert page.errors == []
