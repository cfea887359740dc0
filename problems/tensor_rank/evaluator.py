"""Trusted evaluator for tensor_rank: the candidate searches in the sandbox; exactness is decided here.

For each target <n, m, p> the candidate's ``search`` runs in its sandboxed process under a budget of CPU seconds,
enforced in that process by the driver ``tensor_search.search_target`` (one call per target), with a wall-clock
timeout here as the backstop (``wall_timeout``) for a search that sleeps or swallows the interruption. Every decomposition
it returns is verified here in exact integer arithmetic: entries must be multiples of 1/2 in [-2, 2], so doubling
them gives small integers, and the tensor must satisfy sum_r (2u_r) (x) (2v_r) (x) (2w_r) == 8 T exactly (int64
sums of at most 27 products of magnitude <= 64: no overflow, no rounding).

Score per target: (n*m*p - r) / (n*m*p - best known rank) for the lowest exact rank r found, so the naive algorithm
scores 0 and matching the best known rank scores 1 (a new record would score above 1). A target scores 0 when
nothing was found, when any returned decomposition is not exact, or when the search overran its budget. The stage
score is the mean over targets.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tensor_search import effective_rank, matmul_tensor, target_seed

from evaluators.array_harness import call_driver, check_source
from evolve import Candidate, CompileError, StageReport
from evolve.candidate import CandidateTimeout

DRIVER_PATH = Path(__file__).resolve().parent / "tensor_search.py"
WALL_FACTOR, WALL_GRACE = 6.0, 2.0  # wall-clock backstop per target: 6x the CPU budget + 2 s (a loaded machine)
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


def verify(dims: tuple[int, int, int], factors: Any) -> Verdict:
    """Exact check of one decomposition of the <n, m, p> tensor; never trusts the float arithmetic of anyone."""
    tensor = matmul_tensor(*dims)
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


def judge(target: Target, found: list[Any]) -> tuple[int, str]:
    """Lowest exact rank among the returned decompositions (naive when none), and what happened."""
    best = target.naive
    for item in found:
        verdict = verify(target.dims, item.get("factors") if isinstance(item, dict) else None)
        asked = str(item.get("asked"))[:12] if isinstance(item, dict) else "?"
        if not verdict.exact:
            return target.naive, f"asked rank {asked}: {verdict.reason} -> target scores 0"
        best = min(best, verdict.rank)
    return best, f"lowest exact rank {best}" if best < target.naive else "no decomposition found"


def evaluate(candidate: Candidate) -> StageReport:
    source_check(candidate)
    _, array_module = call_driver(candidate, DRIVER_PATH, "warm")  # process start and imports: not search time
    metrics: dict[str, float] = {}
    notes: list[str] = []
    wall, cpu = 0.0, 0.0
    for target in TARGETS:
        seed = target_seed(candidate.seed, target.dims)
        try:
            value, _ = call_driver(candidate, DRIVER_PATH, "search_target", list(target.dims), target.seconds, seed,
                                   timeout=target.wall_timeout)
            wall += candidate.call_seconds[-1]
        except CandidateTimeout:
            if candidate.remaining() <= 0:
                raise
            wall += target.wall_timeout
            cpu += target.seconds
            rank, note = target.naive, (f"still running after {target.wall_timeout:g} s of wall time (budget "
                                        f"{target.seconds:g} CPU s): process killed -> 0")
        else:
            value = value if isinstance(value, dict) else {}
            found = value.get("found", [])
            rank, note = judge(target, found if isinstance(found, list) else [])
            reported = value.get("cpu_seconds", target.seconds)
            cpu += min(2 * target.seconds, max(0.0, float(reported))) if isinstance(reported, int | float) \
                else target.seconds
        metrics[f"rank_{target.key}"] = float(rank)
        metrics[f"target_{target.key}"] = target_score(target, rank)
        notes.append(f"<{','.join(map(str, target.dims))}> naive {target.naive}, best known {target.best_known}: "
                     f"{note}")
    metrics["score"] = statistics.fmean(metrics[f"target_{t.key}"] for t in TARGETS)
    # time_fraction (a feature, never the score) comes from the process's own CPU clock, as the budget does: it
    # does not change with the machine's load. search_seconds is the trusted wall time.
    metrics["search_seconds"] = wall
    metrics["time_fraction"] = cpu / sum(t.seconds for t in TARGETS)
    return StageReport(metrics, {"targets": "\n".join(notes), "array_module": array_module})
