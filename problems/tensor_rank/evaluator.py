"""Trusted evaluator for tensor_rank: the candidate searches in the sandbox; budgets and exactness are decided here.

For each target <n, m, p> this process drives the descent in rank: it calls the candidate's ``search`` across the
process boundary for rank n*m*p - 1, then for one less than each rank it gets back, until the candidate gives up
(returns None) or the target's budget is spent. Budgets are CPU seconds of the candidate's whole process tree, as
the kernel counts them on this side (``Candidate.cpu_seconds``): helpers it forks and clocks it patches change
nothing. While a search runs, this side watches that count and kills the tree when the budget (plus a small
grace) is spent, which counts as giving up at that rank; the next target gets a fresh process. A courtesy
``SIGPROF`` timer in the candidate's process interrupts an honest search at its budget so it keeps its process.
A wall-clock timeout (``wall_timeout``) is the backstop for a search that sleeps.

CPU windows are contiguous: every CPU second from the moment the candidate's module starts importing is charged to
a target, the one whose window it falls in (work between two searches goes to the next target). A target that
overspends leaves a debt that comes off the budgets of the following ones, so precomputing at import time (charged
to the first target) or in a background thread gains nothing: the work is paid for from the same budgets, exactly
as if it had been done in the first search call.

Every decomposition the search returns is verified here in exact integer arithmetic: entries must be multiples of
1/2 in [-2, 2], so doubling them gives small integers, and the tensor must satisfy
sum_r (2u_r) (x) (2v_r) (x) (2w_r) == 8 T exactly (int64 sums of at most 27 products of magnitude <= 64: no
overflow, no rounding).

Score per target: (n*m*p - r) / (n*m*p - best known rank) for the lowest exact rank r found, so the naive algorithm
scores 0 and matching the best known rank scores 1 (a new record would score above 1). A target scores 0 when
nothing was found, when any returned decomposition is not exact, or when the search overran its budget. The stage
score is the mean over targets.

``heldout`` is the held-out stage (``role = "heldout"``, run by oversight for a program about to count as best): the
same targets and budgets, fresh generator seeds, and each tensor presented in another basis, the rows of each of its
three factor spaces permuted by permutations drawn from the held-out seed. A search finds decompositions of those as
easily as of the usual ones; a program that answers from a table keyed by the shape does not.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from tensor_search import effective_rank, matmul_tensor, target_seed

from evaluators.array_lint import check_source
from evaluators.array_session import INTERRUPTED, XP, ArraySession, Held, RemoteCall, numeric_array
from evolve import Candidate, CompileError, StageReport, WrongOutput
from evolve.candidate import CandidateTimeout, CpuBudgetExceeded, evaluator_code

WALL_FACTOR, WALL_GRACE = 6.0, 2.0  # wall-clock backstop per target: 6x the CPU budget + 2 s (a loaded machine)
CPU_GRACE, CPU_GRACE_FRACTION = 0.05, 0.1  # CPU past a target's budget before its process tree is killed
MAX_DOUBLED = 4  # entries are k/2 with |k| <= 4, i.e. {-2, -1.5, ..., 1.5, 2}


@dataclass(frozen=True)
class Target:
    dims: tuple[int, int, int]
    best_known: int  # best known rank over the rationals (see the README's table)
    seconds: float  # search budget, CPU seconds of the candidate's process

    @property
    def wall_timeout(self) -> float:
        return WALL_FACTOR * self.seconds + WALL_GRACE

    @property
    def naive(self) -> int:
        return self.dims[0] * self.dims[1] * self.dims[2]

    @property
    def key(self) -> str:
        return "".join(str(d) for d in self.dims)


TARGETS: tuple[Target, ...] = (
    Target((2, 2, 2), 7, 0.4),  # Strassen (1969); optimal (Winograd 1971)
    Target((2, 2, 3), 11, 0.6),  # optimal (Alekseyev 1985)
    Target((2, 3, 3), 15, 0.8),  # Hopcroft and Kerr (1971)
    Target((3, 3, 3), 23, 1.2),  # Laderman (1976)
)


@dataclass(frozen=True)
class Verdict:
    exact: bool
    rank: int
    reason: str = ""


def verify(dims: tuple[int, int, int], factors: Any, tensor: np.ndarray | None = None) -> Verdict:
    """Exact check of one decomposition of the <n, m, p> tensor (or of ``tensor``, the same in another basis); never
    trusts the float arithmetic of anyone."""
    tensor = matmul_tensor(*dims) if tensor is None else tensor
    if not isinstance(factors, list | tuple) or len(factors) != 3:
        return Verdict(False, 0, "not three factor matrices")
    doubled = []
    for name, rows, value in zip("UVW", tensor.shape, factors, strict=True):
        try:
            array = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            return Verdict(False, 0, f"{name} is not numeric")
        if array.ndim != 2 or array.shape[0] != rows:
            return Verdict(False, 0, f"{name} has shape {array.shape}, expected ({rows}, rank)")
        if not np.isfinite(array).all():
            return Verdict(False, 0, f"{name} has NaN or infinite entries")
        twice = array * 2.0  # exact in binary floating point
        if not (np.round(twice) == twice).all() or np.abs(twice).max(initial=0) > MAX_DOUBLED:
            bad = array[(np.round(twice) != twice) | (np.abs(twice) > MAX_DOUBLED)]
            return Verdict(False, 0, f"{name} has entries outside {{-2, -1.5, ..., 2}}, e.g. {float(bad[0])!r}")
        doubled.append(np.round(twice).astype(np.int64))
    if len({d.shape[1] for d in doubled}) != 1:
        return Verdict(False, 0, "factor matrices have different numbers of columns")
    rebuilt = np.einsum("ir,jr,kr->ijk", *doubled)
    rank = effective_rank(doubled)
    if not np.array_equal(rebuilt, 8 * tensor):
        wrong = int((rebuilt != 8 * tensor).sum())
        return Verdict(False, rank, f"not exact: {wrong} of {tensor.size} tensor entries differ")
    return Verdict(True, rank)


def target_score(target: Target, rank: int) -> float:
    return (target.naive - rank) / (target.naive - target.best_known)


def source_check(candidate: Candidate) -> None:
    reasons = check_source(candidate.code)
    if reasons:
        raise CompileError("source check failed: " + "; ".join(reasons[:4]), {"check": "\n".join(reasons)})


def judge(target: Target, found: list[Any], tensor: np.ndarray | None = None) -> tuple[int, str]:
    """Lowest exact rank among the returned decompositions (naive when none), and what happened."""
    best = target.naive
    for item in found:
        verdict = verify(target.dims, item.get("factors") if isinstance(item, dict) else None, tensor)
        asked = str(item.get("asked"))[:12] if isinstance(item, dict) else "?"
        if not verdict.exact:
            return target.naive, f"asked rank {asked}: {verdict.reason} -> target scores 0"
        best = min(best, verdict.rank)
    return best, f"lowest exact rank {best}" if best < target.naive else "no decomposition found"


def returned_factors(value: Any, shape: tuple[int, int, int]) -> list[np.ndarray]:
    """Three float64 matrices with the tensor's row counts and one column count, or ``WrongOutput``."""
    if not isinstance(value, list) or len(value) != 3:
        raise WrongOutput("search() must return None or three factor matrices (U, V, W), got "
                          f"{type(value).__name__}{f' of length {len(value)}' if isinstance(value, list) else ''}")
    factors = []
    for name, rows, item in zip("UVW", shape, value, strict=True):
        array = numeric_array(item, f"search() returned {name}")
        if array.ndim != 2 or array.shape[0] != rows:
            raise WrongOutput(f"search() returned {name} with shape {array.shape}, expected ({rows}, rank)")
        factors.append(array)
    if len({f.shape[1] for f in factors}) != 1:
        raise WrongOutput(f"search() returned factors with different ranks {[f.shape[1] for f in factors]}")
    return factors


@dataclass
class TargetRun:
    found: list[dict[str, Any]]
    note: str = ""  # why the descent stopped, when that matters for the score
    timed_out: bool = False


def search_target(session: ArraySession, target: Target, seed: int, window_start: float, allowed: float,
                  exact: np.ndarray | None = None) -> TargetRun:
    """The descent in rank for one target (its tensor, or ``exact``: the same in another basis), with ``allowed``
    CPU seconds counted from ``window_start``."""
    candidate = session.candidate
    with evaluator_code():  # the evaluator's own work: a failure here is never the candidate's
        tensor = (matmul_tensor(*target.dims) if exact is None else exact).astype(np.float64)
    wall_deadline = time.monotonic() + target.wall_timeout
    key = f"rng_{target.key}"
    run = TargetRun([])
    rng_made = False
    rank = target.naive - 1
    with candidate.cpu_limit(window_start + allowed + CPU_GRACE + CPU_GRACE_FRACTION * target.seconds):
        while rank >= 1:
            left = allowed - (candidate.cpu_seconds() - window_start)
            wall_left = wall_deadline - time.monotonic()
            if left <= 0:
                break
            calls = [] if rng_made else [RemoteCall("@rng", (seed,), keep=key)]
            calls.append(RemoteCall("search", (tensor, target.dims, rank, left, Held(key), XP), cpu_budget=left))
            try:
                if wall_left <= 0:
                    raise CandidateTimeout("wall-clock backstop reached")
                result = session.batch(calls, timeout=wall_left)[-1]
            except CpuBudgetExceeded:
                run.note = f"CPU budget spent while asked for rank {rank}: process killed"
                break
            except CandidateTimeout:
                if candidate.remaining() <= 0:
                    raise
                candidate.restart()
                run.timed_out = True
                run.note = (f"still running after {target.wall_timeout:g} s of wall time (budget "
                            f"{target.seconds:g} CPU s): process killed -> 0")
                break
            rng_made = True
            if result is None or result is INTERRUPTED:
                break
            factors = returned_factors(result, tensor.shape)
            run.found.append({"asked": rank, "factors": factors})
            rank = min(rank, effective_rank(factors)) - 1
    return run


def permuted_tensor(dims: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """The <n, m, p> tensor with the rows of each factor space permuted: ``T'[a, b, c] = T[p1[a], p2[b], p3[c]]``.
    A decomposition (U, V, W) of T is one of T' with its rows permuted the same way: equally hard to find."""
    tensor = matmul_tensor(*dims)
    p1, p2, p3 = (rng.permutation(size) for size in tensor.shape)
    return tensor[np.ix_(p1, p2, p3)]


def evaluate(candidate: Candidate) -> StageReport:
    """The visible stage: the targets as the description states them."""
    return search_all(candidate, None)


def heldout(candidate: Candidate) -> StageReport:
    """The held-out stage: the same targets in bases permuted from the (held-out) seed, as ``heldout_*`` metrics."""
    report = search_all(candidate, np.random.default_rng([candidate.seed % 2**63, 7]))
    metrics = {f"heldout_{k}": v for k, v in report.metrics.items() if k == "score" or k.startswith(("rank_", "target_"))}
    return StageReport(metrics, {"heldout_targets": (report.artifacts or {}).get("targets", "")})


def search_all(candidate: Candidate, permute: np.random.Generator | None) -> StageReport:
    source_check(candidate)
    session = ArraySession(candidate)
    metrics: dict[str, float] = {}
    notes: list[str] = []
    wall, mark, debt = 0.0, candidate.cpu_seconds(), 0.0  # mark: 0.0, and CPU accounting armed before any process
    for target in TARGETS:
        start = time.monotonic()
        allowed = max(0.0, target.seconds - debt)
        with evaluator_code():
            exact = permuted_tensor(target.dims, permute) if permute is not None else None
        run = search_target(session, target, target_seed(candidate.seed, target.dims), mark, allowed, exact)
        wall += time.monotonic() - start
        end = candidate.cpu_seconds()
        spent, mark = end - mark, end
        debt = max(0.0, debt + spent - target.seconds)
        if run.timed_out:
            rank, note = target.naive, run.note
        else:
            rank, note = judge(target, run.found, exact)
            note += f" ({run.note})" if run.note else ""
        metrics[f"rank_{target.key}"] = float(rank)
        metrics[f"target_{target.key}"] = target_score(target, rank)
        notes.append(f"<{','.join(map(str, target.dims))}> naive {target.naive}, best known {target.best_known}, "
                     f"{spent:.2f} of {allowed:.2f} CPU s: {note}")
    metrics["score"] = statistics.fmean(metrics[f"target_{t.key}"] for t in TARGETS)
    # time_fraction (a feature, never the score): the kernel's count of the candidate's CPU, import included, over
    # the total budget. search_seconds is the trusted wall time.
    metrics["search_seconds"] = wall
    metrics["time_fraction"] = mark / sum(t.seconds for t in TARGETS)
    return StageReport(metrics, {"targets": "\n".join(notes), "array_module": session.remote_module})
