"""How fast do ``evolve ui`` pages load on a run of 1,000,000 programs?

Generates the synthetic run of ``bench/archive_scale.py`` (its generator, same layout and schema), builds the run's
query index once (as the first ``evolve archive`` command would), then for each repetition starts a fresh UI server
(empty caches: every page is a cold load) and times, in headless Chromium, each page from navigation until its
scripts have drawn everything (``body[data-ready]``): the runs list, the run page (progress, outcomes, four MAP-Elites
grids, genealogy, failures, best and latest programs), the best program's page (code, diff, lineage, children)
and a deep page of the programs list. A breakdown times each JSON view the run page asks for, cold, over HTTP.

Usage::

    python bench/ui_pages.py                           # 1,000,000 programs under /tmp/evolve-ui-scale
    python bench/ui_pages.py --reuse --repeat 5        # keep an existing generated run
    python bench/ui_pages.py --programs 100000

Needs the ``ui`` extra; the browser timings need Playwright and Debian's ``chromium`` (skipped otherwise).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from archive_scale import generate  # noqa: E402 - the generator of bench/archive_scale.py

from evolve.query import INDEX_DIR, RunArchive  # noqa: E402
from evolve.ui.server import UIServer  # noqa: E402

TOKEN = "bench-token-0123456789"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# The JSON views the run page asks for (it asks them all at once; here one after the other, in this order).
VIEWS = {"overview": "overview", "progress": "progress", "outcomes": "outcomes", "maps": "maps",
         "failures": "failures", "genealogy": "tree?limit=150", "best programs": "programs?order=best&per_page=10&"
         "status=ok&standing=auto", "latest programs": "programs?per_page=20", "audit": "audit", "strategies":
         "strategies", "steering": "steering"}


def cpu_seconds() -> float:
    """CPU time of this process, every thread (the server and its DuckDB workers run here)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def browser_pages(root: Path, key: str, best: str, repeat: int) -> dict[str, list[float]]:
    """Seconds from navigation to a fully drawn page, per page, each on a fresh server (cold caches); and the CPU
    seconds the server spent on it (the browser is another process), a figure less sensitive to other load."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        chromium = None
    if chromium is None:
        print("browser timings skipped: playwright or chromium is missing")
        return {}
    pages = {
        "runs list": ("/", "body[data-ready='1']"),
        "run page (every view drawn)": (f"/run/{key}", "body[data-ready='1']"),
        "best program's page": (f"/run/{key}/program/{best}", "body[data-ready='1']"),
        "programs list, page 1,000": (f"/run/{key}/programs?page=999", "#programs"),
    }
    times: dict[str, list[float]] = {name: [] for name in pages}
    times.update({f"{name} (server CPU)": [] for name in pages})
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=FLAGS)
        for _ in range(repeat):
            with UIServer(root, token=TOKEN) as server:
                context = browser.new_context(viewport={"width": 1280, "height": 900})
                page = context.new_page()
                for name, (path, selector) in pages.items():
                    start, cpu = time.perf_counter(), cpu_seconds()
                    page.goto(server.url + path)
                    # Checked every animation frame: a selector wait polls every 500 ms after its first few
                    # tries, which would add up to half a second to a page that takes more than 0.3 s.
                    page.wait_for_function(f"() => document.querySelector({json.dumps(selector)}) !== null",
                                           polling="raf", timeout=120_000)
                    times[name].append(time.perf_counter() - start)
                    times[f"{name} (server CPU)"].append(cpu_seconds() - cpu)
                context.close()
        browser.close()
    return times


def view_times(root: Path, key: str, repeat: int) -> dict[str, list[float]]:
    """Seconds per JSON view of the run page, asked one after the other on a fresh server (cold), and the CPU
    seconds this process spent on each (the server's threads and DuckDB's; the HTTP client's share is small)."""
    times: dict[str, list[float]] = {}
    for _ in range(repeat):
        with UIServer(root, token=TOKEN) as server, httpx.Client(base_url=server.url, timeout=120) as client:
            for name, view in VIEWS.items():
                start, cpu = time.perf_counter(), cpu_seconds()
                client.get(f"/api/run/{key}/{view}").raise_for_status()
                times.setdefault(name, []).append(time.perf_counter() - start)
                times.setdefault(f"{name} (CPU)", []).append(cpu_seconds() - cpu)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--programs", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, default=Path("/tmp/evolve-ui-scale"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--reuse", action="store_true", help="reuse an existing generated run folder")
    args = parser.parse_args()

    run_dir = args.out / "scale" / "run"
    if not (args.reuse and (run_dir / "run.json").exists()):
        seconds = generate(run_dir, args.programs, 4, 1024, 0)
        print(f"generated {args.programs:,} programs in {seconds:.1f} s")
    if not (run_dir / INDEX_DIR).exists():
        start = time.perf_counter()
        with RunArchive(run_dir) as archive:
            archive.top(1)
        print(f"built the run's index in {time.perf_counter() - start:.1f} s (once, as any first query does)")
    with RunArchive(run_dir) as archive:
        count, best = archive.count(), archive.best()
    assert best is not None
    key = "scale~run"
    views = view_times(args.out, key, args.repeat)
    pages = browser_pages(args.out, key, str(best["program_id"]), args.repeat)
    print(f"run: {run_dir}  programs: {count:,}  cpus: {os.cpu_count()}  load average: "
          f"{', '.join(f'{v:.1f}' for v in os.getloadavg())}")
    for title, table in (("page, cold (navigation to fully drawn)", pages), ("JSON view, cold", views)):
        if table:
            print(f"{title:40s} {'median':>8s}   runs")
        for name, values in table.items():
            print(f"  {name:38s} {statistics.median(values):7.2f} s   "
                  f"{', '.join(f'{v:.2f}' for v in values)}")
    print(json.dumps({"programs": count, "load_average": os.getloadavg(),
                      "pages_median_seconds": {k: statistics.median(v) for k, v in pages.items()},
                      "views_median_seconds": {k: statistics.median(v) for k, v in views.items()}}))


if __name__ == "__main__":
    main()
