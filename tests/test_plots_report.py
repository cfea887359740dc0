"""PNG plots and the self-contained HTML report, the report rendered by headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from evolve.archive import ArchiveWriter
from evolve.plots import grid_matrix, progress_figure, write_plots
from evolve.query import RunArchive
from evolve.report import build_report, write_report

from .test_cli_archive import make_record, program, write_toy_run

HOSTILE = '# </pre><script>alert("x")</script>'


class PageText(HTMLParser):
    """The text a browser shows and the elements it builds: assertions on what the page means, not on how a
    library escaped it (Pygments 2.21 stopped writing ' as &#39;)."""

    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.tags: list[str] = []
        self.feed(page)
        self.close()
        self.text = "".join(self.parts)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    run_dir = tmp_path_factory.mktemp("plots") / "toy" / "toy-run"
    data = write_toy_run(run_dir)
    # A program whose text would break the page if it were not escaped.
    hostile = make_record(program(-1.0, HOSTILE), 9, data["best"], island=1, loss=0.1)
    with ArchiveWriter(run_dir, "toy-run") as writer:
        writer.append(hostile)
    data["hostile"] = hostile
    return run_dir, data


def test_plots_are_written_as_non_empty_pngs(toy, tmp_path: Path) -> None:
    run_dir, _ = toy
    with RunArchive(run_dir) as archive:
        paths = write_plots(archive, tmp_path / "plots")
    assert set(paths) == {"progress", "failures", "map_island_0", "map_island_1"}
    for path in paths.values():
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        pixels = imread(path)
        assert pixels.shape[0] > 200 and pixels.shape[1] > 200
        assert np.ptp(pixels[..., :3]) > 0.5, f"{path.name} is blank"


def test_progress_plot_best_so_far_follows_the_direction(toy) -> None:
    run_dir, _ = toy
    with RunArchive(run_dir) as archive:
        fig = progress_figure(archive.history(), archive.problem)
    best_line = next(line for line in fig.axes[0].lines if line.get_label() == "best so far")
    ys = np.asarray(best_line.get_ydata(), dtype=float)
    assert ys[0] == 9.0 and ys[-1] == 0.0  # loss is minimized: the seed's 9.0 down to the best 0.0
    assert (np.diff(ys) <= 0).all()


def test_map_matrix_places_each_elite_in_its_cell(toy) -> None:
    run_dir, data = toy
    with RunArchive(run_dir) as archive:
        grid = archive.grid(0)
    matrix = grid_matrix(grid)  # rows: feature a (5 bins), columns: code_length (4 bins)
    assert matrix.shape == (5, 4)
    assert matrix[2, 0] == 9.0 and matrix[3, 0] == 0.25 and matrix[4, 0] == 0.0
    assert np.isnan(matrix).sum() == 20 - 3


def test_plots_of_a_run_without_scored_programs(tmp_path: Path) -> None:
    run_dir = tmp_path / "p" / "r"
    run_dir.mkdir(parents=True)
    with ArchiveWriter(run_dir, "r") as writer:
        writer.append(make_record(program(1.0), 0, None, status="runtime_error"))
    with RunArchive(run_dir) as archive:
        paths = write_plots(archive, tmp_path / "plots")
    assert all(p.stat().st_size > 0 for p in paths.values())


def test_report_holds_plots_top_programs_diffs_lineage_settings_and_costs(toy) -> None:
    run_dir, data = toy
    with RunArchive(run_dir) as archive:
        page = build_report(archive, top=3)
    assert page.count('src="data:image/png;base64,') == 4
    assert "http://" not in page and "https://" not in page  # self-contained
    best = data["best"].program_id
    assert f'<code id="best-program">{best}</code>' in page
    for key in ("seed", "c1", "c2", "c3"):
        assert data[key].program_id in page  # the lineage of the best
    shown = PageText(page)
    assert "diff to parent" in shown.text and "# the model's idea" in shown.text
    assert "0.0015" in shown.text and "islands" in shown.text  # cost, settings
    # The hostile program is shown as text, whole, and adds no element: the page's one script is its own.
    assert HOSTILE in shown.text and HOSTILE not in page
    assert shown.tags.count("script") == 1


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="chromium is not installed (Debian package 'chromium'; .ci/run "
                                                "installs it)")
def test_report_renders_in_headless_chromium(toy, tmp_path: Path) -> None:
    run_dir, data = toy
    path = write_report(run_dir, tmp_path / "report.html", top=3)
    argv = [
        _chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
        f"--user-data-dir={tmp_path / 'chromium-profile'}", "--dump-dom", path.as_uri(),
    ]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    dom = result.stdout
    assert result.returncode == 0 and "<body" in dom, result.stderr[-2000:]
    # The load handler ran and every plot decoded as an image.
    assert re.search(r'data-images-total="4"', dom), dom[:500]
    assert re.search(r'data-images-decoded="4"', dom)
    assert re.search(r"<h1>evolve report: toy / toy-run</h1>", dom)
    assert f'<code id="best-program">{data["best"].program_id}</code>' in dom
    assert '<span id="best-score">0</span>' in dom
    for heading in ("Overview", "Plots", "Top 3 programs", "Lineage of the best program", "Costs", "Settings"):
        assert f">{heading}</h2>" in dom
    # The hostile program is shown as text: no script element came from it.
    assert dom.count("<script>") == 1


def test_report_shows_the_improvement_signed_and_the_top_failure_reasons(toy, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from evolve.cli_archive import archive

    run_dir, data = toy
    out = tmp_path / "report.html"
    result = CliRunner().invoke(archive, ["report", str(run_dir), "-o", str(out)], catch_exceptions=False)
    assert result.exit_code == 0
    shown = PageText(out.read_text())
    # The toy minimizes a loss from 9 (seed) to 0 (best): an improvement of +9.
    assert "+9 (the best scores 9 lower than the seed; minimize)" in shown.text
    assert "Top failure reasons" in shown.text
    # Three failures of three statuses (each stage says "failed"): three groups, each with its example program.
    for status, key in (("runtime_error", "bad"), ("invalid_edit", "invalid")):
        assert status in shown.text and data[key].program_id in shown.text
    assert "3 of 10 programs failed, in 3 group(s)" in shown.text
