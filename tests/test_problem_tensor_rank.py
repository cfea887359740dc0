"""problems/tensor_rank: exact verification (checked again here with Fractions), Strassen, inexact answers, budgets."""

from __future__ import annotations

import itertools
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from evolve import Status, load_problem, program_id_for
from evolve.evaluation import load_evaluator, run_stage

from .conftest import PROBLEMS

ROOT = PROBLEMS / "tensor_rank"
CANDIDATES = Path(__file__).resolve().parent / "array_candidates"
SEED = 0


@pytest.fixture(scope="module")
def problem():
    return load_problem(ROOT)


@pytest.fixture(scope="module")
def evaluator(problem):
    return load_evaluator(problem)


def strassen_factors() -> list[np.ndarray]:
    namespace: dict = {}
    exec((CANDIDATES / "strassen.py").read_text(), namespace)  # test data only: three lists of columns
    return [np.asarray(namespace[k], dtype=float).T for k in ("U_COLUMNS", "V_COLUMNS", "W_COLUMNS")]


def naive_factors(n: int, m: int, p: int) -> list[np.ndarray]:
    """The schoolbook algorithm: one product A[i,j] * B[j,k] per (i, j, k)."""
    rank = n * m * p
    u, v, w = np.zeros((n * m, rank)), np.zeros((m * p, rank)), np.zeros((n * p, rank))
    for r, (i, j, k) in enumerate(itertools.product(range(n), range(m), range(p))):
        u[i * m + j, r] = v[j * p + k, r] = w[i * p + k, r] = 1
    return [u, v, w]


def fraction_product_equals_matmul(n: int, m: int, p: int, factors: list[np.ndarray]) -> bool:
    """Independent check in rational arithmetic: the algorithm computes A B for symbolic-free random integer A, B."""
    u, v, w = ([[Fraction(float(x)) for x in row] for row in f] for f in factors)
    rng = np.random.default_rng(3)
    for _ in range(3):
        a = rng.integers(-9, 10, (n, m)).tolist()
        b = rng.integers(-9, 10, (m, p)).tolist()
        products = [sum(u[i * m + j][r] * a[i][j] for i in range(n) for j in range(m)) *
                    sum(v[j * p + k][r] * b[j][k] for j in range(m) for k in range(p))
                    for r in range(len(u[0]))]
        for i, k in itertools.product(range(n), range(p)):
            got = sum(w[i * p + k][r] * products[r] for r in range(len(products)))
            if got != sum(a[i][j] * b[j][k] for j in range(m)):
                return False
    return True


def stage(problem, name: str):
    code = (CANDIDATES / name).read_text()
    return run_stage(problem, "search", code, program_id_for(code), SEED)


def test_problem_loads(problem) -> None:
    assert [s.name for s in problem.stages] == ["search"]
    assert [f.name for f in problem.features] == ["time_fraction", "rank_333"]


def test_strassen_verifies_at_rank_seven(evaluator) -> None:
    factors = strassen_factors()
    verdict = evaluator.verify((2, 2, 2), factors)
    assert verdict.exact and verdict.rank == 7
    assert fraction_product_equals_matmul(2, 2, 2, factors)


@pytest.mark.parametrize("dims", [(2, 2, 2), (2, 2, 3), (2, 3, 3), (3, 3, 3)])
def test_naive_decompositions_verify_at_full_rank(evaluator, dims) -> None:
    factors = naive_factors(*dims)
    verdict = evaluator.verify(dims, factors)
    assert verdict.exact and verdict.rank == dims[0] * dims[1] * dims[2]
    assert fraction_product_equals_matmul(*dims, factors)


def test_half_integer_entries_are_exact(evaluator) -> None:
    """Scaling u by 2 and w by 1/2 keeps a decomposition exact: halves are allowed and checked exactly."""
    u, v, w = strassen_factors()
    u[:, 0] *= 2
    w[:, 0] /= 2
    assert evaluator.verify((2, 2, 2), [u, v, w]).exact
    assert fraction_product_equals_matmul(2, 2, 2, [u, v, w])


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda f: f[2].__setitem__((0, 6), -1.0), "not exact"),
        (lambda f: f[0].__setitem__((0, 0), 1.0 + 1e-12), "outside"),
        (lambda f: f[0].__setitem__((0, 0), 0.3), "outside"),
        (lambda f: f[1].__setitem__((0, 0), 3.0), "outside"),
        (lambda f: f[1].__setitem__((0, 0), np.nan), "NaN"),
        (lambda f: f.__setitem__(0, f[0][:3]), "shape"),
        (lambda f: f.__setitem__(2, f[2][:, :6]), "different numbers of columns"),
    ],
)
def test_inexact_or_malformed_decompositions_are_refused(evaluator, change, reason) -> None:
    factors = strassen_factors()
    change(factors)
    verdict = evaluator.verify((2, 2, 2), factors)
    assert not verdict.exact and reason in verdict.reason


def test_flipped_sign_fails_the_fraction_check_too() -> None:
    factors = strassen_factors()
    factors[2][0, 6] = -1.0
    assert not fraction_product_equals_matmul(2, 2, 2, factors)


def test_strassen_candidate_scores_one_on_its_target(problem) -> None:
    outcome = stage(problem, "strassen.py")
    assert outcome.status is Status.OK, outcome.message
    assert outcome.metrics["rank_222"] == 7 and outcome.metrics["target_222"] == 1.0
    assert outcome.metrics["rank_333"] == 27 and outcome.metrics["target_333"] == 0.0
    assert outcome.metrics["score"] == pytest.approx(0.25)
    assert "lowest exact rank 7" in outcome.artifacts["targets"]


def test_inexact_candidate_scores_zero_for_that_target(problem) -> None:
    outcome = stage(problem, "inexact_strassen.py")
    assert outcome.status is Status.OK, outcome.message
    assert outcome.metrics["target_222"] == 0.0 and outcome.metrics["rank_222"] == 8
    assert outcome.metrics["score"] == 0.0
    assert "not exact" in outcome.artifacts["targets"]


def test_one_inexact_answer_zeroes_the_target_even_beside_exact_ones(evaluator) -> None:
    target = evaluator.TARGETS[0]
    good, bad = strassen_factors(), strassen_factors()
    bad[2][0, 6] = -1.0
    rank, note = evaluator.judge(target, [{"asked": 7, "factors": good}, {"asked": 6, "factors": bad}])
    assert rank == target.naive and "not exact" in note
    rank, _ = evaluator.judge(target, [{"asked": 7, "factors": good}])
    assert rank == 7


def test_a_search_that_sleeps_past_the_wall_backstop_zeroes_only_that_target(problem, evaluator) -> None:
    outcome = stage(problem, "overrunning_search.py")
    assert outcome.status is Status.OK, outcome.message
    assert outcome.metrics["target_222"] == 0.0
    assert "process killed" in outcome.artifacts["targets"].splitlines()[0]
    assert "no decomposition found" in outcome.artifacts["targets"].splitlines()[1]
    assert outcome.seconds < evaluator.TARGETS[0].wall_timeout + 10


def test_a_search_ignoring_its_budget_is_interrupted_on_cpu_time(problem, evaluator) -> None:
    """A search spinning forever is interrupted at each target's budget, counted on the trusted side."""
    outcome = stage(problem, "spinning_search.py")
    assert outcome.status is Status.OK, outcome.message
    assert outcome.metrics["score"] == 0.0
    # Every target's whole budget used: the interruption is checked against the precise CPU clock, and the tree is
    # killed at most a grace past it. CPU time, unlike wall time, does not grow with the machine's load.
    grace = sum(evaluator.CPU_GRACE + evaluator.CPU_GRACE_FRACTION * t.seconds for t in evaluator.TARGETS)
    total = sum(t.seconds for t in evaluator.TARGETS)
    assert 0.95 <= outcome.metrics["time_fraction"] <= (total + grace) / total


def test_numpy_import_is_refused(problem) -> None:
    code = "import numpy\n\ndef search(tensor, shape, rank, seconds, rng, xp):\n    return None\n"
    outcome = run_stage(problem, "search", code, program_id_for(code), SEED)
    assert outcome.status is Status.COMPILE_ERROR and "must not import numpy/cupy" in outcome.message


def test_malformed_return_is_wrong_output(problem) -> None:
    code = "def search(tensor, shape, rank, seconds, rng, xp):\n    return [1, 2]\n"
    outcome = run_stage(problem, "search", code, program_id_for(code), SEED)
    assert outcome.status is Status.WRONG_OUTPUT and "three factor matrices" in outcome.message


def test_seed_runs_within_its_budget(problem) -> None:
    code = problem.seed_code()
    outcome = run_stage(problem, "search", code, program_id_for(code), SEED)
    assert outcome.status is Status.OK, outcome.message
    assert 0.0 <= outcome.metrics["score"] <= 1.0
    assert 0.5 <= outcome.metrics["time_fraction"] <= 1.1
    assert outcome.artifacts["array_module"] == "numpy"


# ---- the held-out stage (oversight): the same targets in permuted bases ---------------------------------------------

HELDOUT_CHEATS = Path(__file__).resolve().parent / "heldout_cheats"


def test_heldout_stage_is_declared_apart(problem) -> None:
    assert [s.name for s in problem.heldout_stages] == ["heldout"]
    assert problem.heldout_metric == "heldout_score" and problem.oversight.tolerance == 0.4


def test_a_permuted_basis_keeps_every_decomposition_permuted_alike(evaluator) -> None:
    rng = np.random.default_rng(5)
    twisted = evaluator.permuted_tensor((2, 2, 2), rng)
    assert not np.array_equal(twisted, evaluator.matmul_tensor(2, 2, 2))
    factors = strassen_factors()
    assert not evaluator.verify((2, 2, 2), factors, twisted).exact  # the usual answer does not fit it
    again = np.random.default_rng(5)
    p1, p2, p3 = (again.permutation(4) for _ in range(3))
    moved = [factors[0][p1], factors[1][p2], factors[2][p3]]
    assert evaluator.verify((2, 2, 2), moved, twisted) == evaluator.Verdict(True, 7)


def test_a_table_of_known_answers_is_overfit(problem) -> None:
    """Strassen for <2,2,2> and an optimal <2,2,3> from a table keyed by shape: 0.5 on the benchmark without any
    search, 0 on the same targets in permuted bases; the verdict is overfit."""
    from evolve.oversight.standing import CascadeResult, Standing, judge

    code = (HELDOUT_CHEATS / "tensor_rank_table.py").read_text()
    visible = run_stage(problem, "search", code, program_id_for(code), SEED)
    held = run_stage(problem, "heldout", code, program_id_for(code), SEED + 1)
    assert visible.status is Status.OK and visible.metrics["score"] == 0.5
    assert visible.metrics["rank_222"] == 7 and visible.metrics["rank_223"] == 11
    assert held.status is Status.OK and held.metrics["heldout_score"] == 0.0, held.artifacts
    verdict = judge(problem.oversight, 1.0, visible.metrics["score"], CascadeResult((held,)), problem.heldout_metric,
                    [], problem.visible_metric)
    assert verdict.standing is Standing.OVERFIT and verdict.behind == pytest.approx(0.5)
