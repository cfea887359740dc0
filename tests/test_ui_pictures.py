"""Problem pictures: the SVG sanitiser, the renderer declaration in problem.toml, and the shipped renderers."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from evolve.schema import ProgramRecord
from evolve.ui.pictures import picture_for, program_data, render_picture, renderer_path
from evolve.ui.svg import UnsafeSvg, line_panel, nice_ticks, num, sanitize_svg, viridis

from .test_ui_data import packing_record

REPO = Path(__file__).resolve().parents[1]
SVG = 'xmlns="http://www.w3.org/2000/svg"'


def load(path: Path):  # type: ignore[no-untyped-def]
    from evolve.ui.pictures import load_renderer

    return load_renderer(path)


def test_sanitiser_keeps_drawing_and_drops_everything_active() -> None:
    dirty = (f'<svg {SVG} xmlns:xlink="http://www.w3.org/1999/xlink" viewBox="0 0 10 10" onload="alert(1)">'
             '<script>alert(2)</script><circle cx="5" cy="5" r="2" fill="url(#g)" onclick="alert(3)" style="x"/>'
             '<a href="javascript:alert(4)"><rect width="1" height="1"/></a>'
             '<image href="http://evil/x.png"/><foreignObject><div>hi</div></foreignObject>'
             '<rect fill="url(http://evil/p)" width="2" height="2"/>'
             '<text x="1" y="2">a &lt;b&gt; &amp; "c"<tspan>t</tspan>tail</text></svg>')
    clean = sanitize_svg(dirty)
    assert clean.startswith(f"<svg {SVG}") and 'viewBox="0 0 10 10"' in clean
    for bad in ("onload", "onclick", "<script", "alert", "javascript", "<a", "<image", "foreignObject", "evil",
                "style="):
        assert bad not in clean, bad
    assert '<circle cx="5" cy="5" r="2" fill="url(#g)">' in clean
    assert "a &lt;b&gt; &amp; &quot;c&quot;<tspan>t</tspan>tail" in clean


@pytest.mark.parametrize("markup", ["<div>no</div>", "not xml", '<!DOCTYPE svg [<!ENTITY a "b">]><svg/>', 42,
                                    "<svg>" + "x" * 2_100_000 + "</svg>"])
def test_sanitiser_refuses_what_is_not_an_svg_document(markup: object) -> None:
    with pytest.raises(UnsafeSvg):
        sanitize_svg(markup)  # type: ignore[arg-type]


def test_svg_helpers() -> None:
    assert num(float("nan")) == "0" and num(1.23456789) == "1.2346" and num(-0.0) == "0"
    assert viridis(0) == "#440154" and viridis(1) == "#fde725" and viridis(float("nan")) == "#440154"
    assert nice_ticks(0, 1, 5) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    panel = line_panel(0, 0, 100, 80, [("a", "#000", [(0, 1), (1, float("inf")), (2, 3)])])
    assert sanitize_svg(f"<svg {SVG}>{panel}</svg>").count("<circle") == 2


def _problem(tmp_path: Path, ui: str, files: dict[str, str]) -> Path:
    root = tmp_path / "prob"
    root.mkdir()
    (root / "problem.toml").write_text(f'name = "p"\n{ui}\n')
    for name, text in files.items():
        (root / name).write_text(text)
    return root


def test_renderer_is_declared_in_problem_toml_and_stays_in_the_problem_folder(tmp_path: Path) -> None:
    (tmp_path / "outside.py").write_text("def render(p):\n    return ''\n")
    root = _problem(tmp_path, '[ui]\nrenderer = "../outside.py"', {"render.py": "def render(p):\n    return ''\n"})
    assert renderer_path(tmp_path, {"problem_root": str(root)}) is None
    (root / "problem.toml").write_text('name = "p"\n[ui]\nrenderer = "render.py"\n')
    assert renderer_path(tmp_path, {"problem_root": str(root)}) == (root / "render.py").resolve()
    (root / "problem.toml").write_text('name = "p"\n')
    assert renderer_path(tmp_path, {"problem_root": str(root)}) is None  # not declared: no picture
    assert renderer_path(tmp_path, {}) is None  # no problem folder recorded
    assert renderer_path(tmp_path, {"problem_root": str(tmp_path / "moved")}) is None


def test_broken_or_hostile_renderers_give_an_error_not_a_crash(tmp_path: Path) -> None:
    record = packing_record(0, None)
    for body, expected in (("def render(p):\n    raise RuntimeError('boom')\n", "RuntimeError: boom"),
                           ("def render(p):\n    return '<div>x</div>'\n", "unusable SVG"),
                           ("render = 3\n", "no render(program) function")):
        root = tmp_path / f"r{len(expected)}"
        root.mkdir()
        (root / "render.py").write_text(body)
        picture = render_picture(root / "render.py", record)
        assert picture.svg == "" and expected in picture.error
    root = tmp_path / "script"
    root.mkdir()
    (root / "render.py").write_text(
        "def render(p):\n    return f'<svg xmlns=\"http://www.w3.org/2000/svg\"><text>{p[\"program_id\"]}</text>"
        "<script>alert(1)</script></svg>'\n")
    picture = render_picture(root / "render.py", record)
    assert "<script" not in picture.svg and record.program_id in picture.svg
    assert picture.data_uri().startswith("data:image/svg+xml;base64,")


def test_renderer_is_given_stored_data_but_not_the_code() -> None:
    data = program_data(packing_record(0, None))
    assert set(data) == {"program_id", "status", "score", "metrics", "features", "artifacts"}


def test_circle_packing_picture_draws_every_validated_circle(tmp_path: Path) -> None:
    record = packing_record(3, None, shrink=0.8)
    svg = sanitize_svg(load(REPO / "problems" / "circle_packing" / "render.py")(program_data(record)))
    assert svg.count("<circle") == 26 and f"sum of radii {record.score:.10g}" in svg
    assert load(REPO / "problems" / "circle_packing" / "render.py")(
        {"artifacts": {"packing": "{not json"}}) == ""
    assert load(REPO / "problems" / "circle_packing" / "render.py")(
        {"artifacts": {"validate.packing": json.dumps({"centers": [[0.5, 0.5]], "radii": [float("nan")]})}}) == ""
    root = tmp_path / "cp"
    root.mkdir()
    (root / "problem.toml").write_text('[ui]\nrenderer = "render.py"\n')
    (root / "render.py").write_text((REPO / "problems" / "circle_packing" / "render.py").read_text())
    assert picture_for(tmp_path, {"problem_root": str(root)}, record).svg.count("<circle") == 26


def test_optimizer_picture_draws_a_loss_curve_per_task() -> None:
    artifacts = {
        "train.loss_curves": "loss at steps 1, 50, 100, ... as reported by the training process:\n"
                             "quadratic: 12.5, 0.31, 0.002, 1e-05\nrosenbrock: 3.2, ?, 0.5, 0.4\nmlp: nan, inf",
        "train.tasks": "task           score  log10 loss  adam log10 loss\nquadratic       0.42       -5.00"
                       "           -5.42\nrosenbrock     -1.10       -0.40           -1.50\n(score per task: ...)",
    }
    svg = sanitize_svg(load(REPO / "problems" / "optimizer" / "render.py")({"artifacts": artifacts}))
    assert "quadratic: +0.42 vs Adam" in svg and "rosenbrock: -1.10 vs Adam" in svg and "mlp" in svg
    assert svg.count("<polyline") == 2  # mlp has no finite loss
    assert load(REPO / "problems" / "optimizer" / "render.py")({"artifacts": {}}) == ""


def test_matmul_picture_compares_each_measured_shape_with_cublas() -> None:
    metrics = {"cublas_fraction": 0.8, "tflops_4096x4096x4096": 20.0, "cublas_tflops_4096x4096x4096": 25.0,
               "tflops_2048x6144x3072": 18.0, "cublas_tflops_2048x6144x3072": 24.0, "registers": 96.0}
    svg = sanitize_svg(load(REPO / "problems" / "matmul" / "render.py")({"metrics": metrics}))
    assert svg.count("<rect") >= 4 + 1 and "80.0% of cuBLAS" in svg and "75.0% of cuBLAS" in svg
    assert svg.index("2048x6144x3072") < svg.index("4096x4096x4096")
    assert load(REPO / "problems" / "matmul" / "render.py")({"metrics": {"registers": 96.0}}) == ""


def test_shipped_renderers_survive_the_sanitiser_on_empty_and_odd_input() -> None:
    for name in ("circle_packing", "optimizer", "matmul"):
        render = load(REPO / "problems" / name / "render.py")
        for program in ({}, {"metrics": {}, "artifacts": {}}, {"metrics": {"tflops_1x1x1": "x"},
                                                               "artifacts": {"loss_curves": ""}}):
            out = render(program)
            assert out == "" or sanitize_svg(out)


def test_shipped_problems_declare_their_renderers() -> None:
    from evolve.problem import load_problem

    for name in ("circle_packing", "optimizer", "matmul"):
        data = tomllib.loads((REPO / "problems" / name / "problem.toml").read_text())
        assert data["ui"]["renderer"] == "render.py"
        load_problem(REPO / "problems" / name)  # the loader accepts the table
        assert renderer_path(REPO, {"problem_root": str(REPO / "problems" / name)}) is not None


def test_records_round_trip_for_pictures() -> None:
    record = packing_record(0, None)
    assert ProgramRecord.from_row(record.to_row()).artifacts["packing"] == record.artifacts["packing"]
