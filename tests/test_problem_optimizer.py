"""problems/optimizer: baselines as the README says, trusted recomputation of every loss, held-out stage, tuning."""

from __future__ import annotations

import math
import re
import statistics
from pathlib import Path

import numpy as np
import pytest

from evolve import Status, load_problem, program_id_for
from evolve.edits import apply_response
from evolve.evaluation import evaluate_locally, load_evaluator, run_cascade, run_stage
from evolve.mutators.tune import TuneMutator
from evolve.oversight.standing import Standing
from evolve.oversight.verdict import eval_verdict

from .conftest import PROBLEMS, has_gpu

ROOT = PROBLEMS / "optimizer"
CANDIDATES = Path(__file__).resolve().parent / "array_candidates"
CHEATS = Path(__file__).resolve().parent / "heldout_cheats"
README_SIGMAS = 3.0  # stated in the README: one evaluation seed within 3 standard deviations of the mean over 10
SEED = 0


@pytest.fixture(scope="module")
def problem():
    return load_problem(ROOT)


@pytest.fixture(scope="module")
def evaluator(problem):
    return load_evaluator(problem)


@pytest.fixture(scope="module")
def baseline_metrics(problem) -> dict[str, dict[str, float]]:
    """Both stages (train, then the held-out one) for each README baseline at one evaluation seed (shared by several
    tests)."""
    programs = {"sgd (seed)": ROOT / "initial_program.py", "momentum": ROOT / "baselines" / "momentum.py",
                "adam": ROOT / "baselines" / "adam.py"}
    out = {}
    for name, path in programs.items():
        code = path.read_text()
        outcomes = evaluate_locally(problem, code, program_id_for(code), SEED)
        outcomes += run_cascade(problem, problem.heldout_stages, code, program_id_for(code), SEED)
        assert [o.status for o in outcomes] == [Status.OK, Status.OK], [o.message for o in outcomes]
        out[name] = {k: v for o in outcomes for k, v in o.metrics.items()}
    return out


def readme_baselines() -> dict[str, dict[str, tuple[float, float]]]:
    """The README's table: program -> {"score": (mean, sd), "heldout_score": (mean, sd)}."""
    number = r"(-?\d+\.\d+) ± (\d+\.\d+)"
    rows = re.findall(rf"^\| (.+?) \| {number} \| {number} \|", (ROOT / "README.md").read_text(), flags=re.M)
    return {name: {"score": (float(a), float(b)), "heldout_score": (float(c), float(d))}
            for name, a, b, c, d in rows}


def train_outcome(problem, path: Path, seed: int = SEED):
    code = path.read_text()
    return run_stage(problem, "train", code, program_id_for(code), seed)


def test_problem_loads_with_features_and_stages(problem) -> None:
    assert [s.name for s in problem.stages] == ["train"]
    assert [s.name for s in problem.heldout_stages] == ["heldout"]
    assert problem.heldout_metric == "heldout_score" and problem.oversight.reevaluations == 1
    assert [f.name for f in problem.features] == ["code_length", "state_buffers"]


def test_jumping_to_the_old_rosenbrock_optimum_gains_nothing(problem, baseline_metrics) -> None:
    """The measured hack (the README): recognise the Rosenbrock tasks and return ones. With each valley shifted by
    an amount only the evaluator knows, ones is far from the optimum: worse than the seed's gradient descent."""
    outcome = train_outcome(problem, CHEATS / "optimizer_rosenbrock_ones.py")
    assert outcome.status is Status.OK, outcome.message
    seed = baseline_metrics["sgd (seed)"]
    assert outcome.metrics["task_rosenbrock"] < seed["task_rosenbrock"]
    assert outcome.metrics["score"] < seed["score"]
    for name in ("quadratic", "logistic", "mlp"):  # the seed's own update everywhere else
        assert outcome.metrics[f"task_{name}"] == pytest.approx(seed[f"task_{name}"])


def test_a_rule_that_learnt_the_training_start_is_found_overfit(problem) -> None:
    """The subtler hack beats tuned Adam on the training Rosenbrock; the held-out Rosenbrock starts elsewhere, and
    ``evolve eval``'s verdict (held-out stage plus a re-evaluation) calls it overfit, figures side by side."""
    code = (CHEATS / "optimizer_rosenbrock_start.py").read_text()
    pid = program_id_for(code)
    visible = evaluate_locally(problem, code, pid, SEED)
    assert visible[0].status is Status.OK and visible[0].metrics["task_rosenbrock"] > 1.0  # beats tuned Adam
    verdict = eval_verdict(problem, code, pid, visible, SEED)
    assert verdict.standing is Standing.OVERFIT, verdict.lines()
    assert verdict.verdict.behind is not None and verdict.verdict.behind > problem.oversight.tolerance
    lines = verdict.lines()
    assert lines[0] == "standing: overfit" and "visible score = " in lines[1] and "held-out heldout_score = " in lines[1]


def test_baselines_score_as_the_readme_says(baseline_metrics) -> None:
    table = readme_baselines()
    assert set(table) == {"sgd (seed)", "momentum", "adam"}
    for name, row in table.items():
        for metric, (mean, sd) in row.items():
            got = baseline_metrics[name][metric]
            assert abs(got - mean) <= README_SIGMAS * sd, (name, metric, got, mean, sd)


def test_adam_beats_momentum_beats_sgd(baseline_metrics) -> None:
    assert baseline_metrics["adam"]["score"] > baseline_metrics["momentum"]["score"] > \
        baseline_metrics["sgd (seed)"]["score"]


def test_heldout_metrics_and_state_buffers(baseline_metrics) -> None:
    for name, expected_buffers in (("sgd (seed)", 0.0), ("momentum", 1.0), ("adam", 2.0)):
        metrics = baseline_metrics[name]
        assert metrics["state_buffers"] == expected_buffers
        held = {k for k in metrics if k.startswith("heldout_")}
        assert {"heldout_score", "heldout_task_quadratic50", "heldout_task_mlp_wide"} <= held
        assert all(math.isfinite(metrics[k]) for k in held)


def test_reference_adam_scores_zero_against_itself(evaluator) -> None:
    """Tuned Adam, run through the same scoring as candidates, scores exactly 0 on every task."""
    jobs = evaluator.jobs_for("train", evaluator.TRAIN_SUITE, SEED)
    results = []
    for spec, job_seed in jobs:
        instance = evaluator.make_instance(spec, job_seed)
        run = evaluator.train(np, instance, *evaluator.adam_rule(evaluator.ADAM_LR[spec.name]))
        results.append({"params": run.params})
    metrics, _ = evaluator.score_suite("train", evaluator.TRAIN_SUITE, SEED, results)
    assert metrics["score"] == 0.0


def test_a_frame_walker_finds_no_loss_curve_to_forge(problem, evaluator, monkeypatch) -> None:
    """The loss curve is computed by the evaluator: a candidate walking its own process's frames for the training
    loop's result (with the lint switched off) finds none, and scores the parameters it returned."""
    monkeypatch.setattr(evaluator, "source_check", lambda candidate: None)  # let the frame walk run
    outcome = train_outcome(problem, CANDIDATES / "forged_curve_optimizer.py")
    assert outcome.status is Status.OK, outcome.message
    assert "1e-30" not in outcome.artifacts["loss_curves"]
    jobs = evaluator.jobs_for("train", evaluator.TRAIN_SUITE, SEED)
    unmoved = [{"params": list(evaluator.make_instance(spec, s).params)} for spec, s in jobs]
    expected, _ = evaluator.score_suite("train", evaluator.TRAIN_SUITE, SEED, unmoved)
    assert outcome.metrics["score"] == pytest.approx(expected["score"])
    assert outcome.metrics["score"] < -2.0


def test_source_check_refuses_the_frame_walker(problem) -> None:
    outcome = train_outcome(problem, CANDIDATES / "forged_curve_optimizer.py")
    assert outcome.status is Status.COMPILE_ERROR
    assert "imports sys" in outcome.message


def test_numpy_import_is_refused_with_a_clear_reason(problem) -> None:
    outcome = train_outcome(problem, CANDIDATES / "numpy_optimizer.py")
    assert outcome.status is Status.COMPILE_ERROR
    assert "must not import numpy/cupy" in outcome.message and "`xp`" in outcome.message


def test_unrelated_parameters_get_their_own_score(problem, evaluator) -> None:
    """Parameters swapped at the last step for zeros are scored as zeros, recomputed independently here."""
    outcome = train_outcome(problem, CANDIDATES / "unrelated_params_optimizer.py")
    assert outcome.status is Status.OK, outcome.message
    jobs = [(spec, s) for spec, s in evaluator.jobs_for("train", evaluator.TRAIN_SUITE, SEED)
            if spec.name == "quadratic"]
    # Quadratic at x = 0: 0.5 x*^T A x*, written out here rather than taken from the evaluator.
    logs = []
    for spec, s in jobs:
        data = evaluator.make_instance(spec, s).data
        logs.append(math.log10(0.5 * data["optimum"] @ data["a"] @ data["optimum"]))
    assert outcome.metrics["log10_loss_quadratic"] == pytest.approx(statistics.fmean(logs), abs=1e-9)
    zeros = [{"params": [np.zeros_like(p) for p in evaluator.make_instance(spec, s).params]}
             for spec, s in evaluator.jobs_for("train", evaluator.TRAIN_SUITE, SEED)]
    expected, _ = evaluator.score_suite("train", evaluator.TRAIN_SUITE, SEED, zeros)
    assert outcome.metrics["score"] == pytest.approx(expected["score"])


def test_wrong_parameter_shapes_are_wrong_output(evaluator) -> None:
    jobs = evaluator.jobs_for("train", evaluator.TRAIN_SUITE, SEED)
    results = [{"params": [np.zeros(3)]} for _ in jobs]
    with pytest.raises(evaluator.WrongOutput, match="shape|parameter arrays"):
        evaluator.score_suite("train", evaluator.TRAIN_SUITE, SEED, results)


def test_nan_parameters_score_the_worst_value(evaluator) -> None:
    jobs = evaluator.jobs_for("train", evaluator.TRAIN_SUITE, SEED)
    results = [{"params": [np.full_like(p, np.nan) for p in evaluator.make_instance(spec, s).params]}
               for spec, s in jobs]
    metrics, _ = evaluator.score_suite("train", evaluator.TRAIN_SUITE, SEED, results)
    assert metrics["score"] == evaluator.WORST
    assert metrics["diverged"] == len(jobs)


def test_tuning_the_seeds_constants_improves_its_score(problem) -> None:
    """A small hill climb with the `tune` mutator on the seed's learning rate raises the score."""
    code = problem.seed_code()

    def score(program: str) -> float:
        outcome = run_stage(problem, "train", program, program_id_for(program), 7)
        return outcome.metrics["score"] if outcome.passed else -math.inf

    seed_score = best = score(code)
    mutator = TuneMutator()
    for i in range(12):
        child = apply_response(code, mutator.answer(code, "python", i))
        if child.ok and (s := score(child.child)) > best:
            best, code = s, child.child
    assert best > seed_score + 0.1, (seed_score, best)


@pytest.mark.gpu
def test_same_candidate_on_cupy_scores_like_numpy(problem_copy) -> None:
    root = problem_copy("optimizer")
    toml = root / "problem.toml"
    toml.write_text(toml.read_text().replace("cpus = 1\n", "cpus = 1\ngpus = 1\n"))
    gpu_problem = load_problem(root)
    code = gpu_problem.seed_code()
    on_gpu = run_stage(gpu_problem, "train", code, program_id_for(code), SEED)
    on_cpu = run_stage(load_problem(ROOT), "train", code, program_id_for(code), SEED)
    assert on_gpu.artifacts["array_module"] == "cupy" and has_gpu()
    assert on_gpu.metrics["score"] == pytest.approx(on_cpu.metrics["score"], abs=0.05)
