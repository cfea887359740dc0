"""Trusted stage functions for OpenEvolve-format problems (see ``evolve.openevolve``).

Each stage runs the problem folder's own ``evaluator.py`` function, whole, inside the sandbox, with the candidate
in the same process (``Candidate.run_evaluator_in_sandbox``). What comes back is cleaned here, on the trusted side:
numbers (and booleans) become metrics, anything else becomes an artifact, and ``combined_score`` is filled in the
way OpenEvolve computes it when the evaluator did not return one.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from evolve.candidate import Candidate, WrongOutput

EVALUATOR = "evaluator.py"
SCORE_METRIC = "combined_score"


def split_result(raw: dict[str, Any]) -> tuple[dict[str, float], dict[str, str]]:
    """Numeric values (booleans as 0/1) as metrics; strings and structures as artifacts."""
    metrics: dict[str, float] = {}
    artifacts: dict[str, str] = {}
    for key, value in raw.items():
        key = str(key)
        if isinstance(value, bool):
            metrics[key] = 1.0 if value else 0.0
        elif isinstance(value, int | float):
            metrics[key] = float(value)
        elif isinstance(value, str):
            artifacts[key] = value
        else:
            artifacts[key] = json.dumps(value, default=str)[:8192]
    return metrics, artifacts


def with_combined_score(metrics: dict[str, float]) -> dict[str, float]:
    """OpenEvolve's rule: ``combined_score`` if given, else the mean of the numeric metrics except ``error``."""
    if SCORE_METRIC in metrics:
        return metrics
    values = [v for k, v in metrics.items() if k != "error" and math.isfinite(v)]
    if not values:
        raise WrongOutput(f"the evaluator returned no numeric metric (got {sorted(metrics) or 'nothing'})")
    return {**metrics, SCORE_METRIC: sum(values) / len(values)}


def _run(candidate: Candidate, function: str) -> dict[str, float]:
    if candidate.problem_root is None:
        raise RuntimeError("the candidate has no problem folder; cannot find evaluator.py")
    raw = candidate.run_evaluator_in_sandbox(Path(candidate.problem_root) / EVALUATOR, function, candidate.path)
    metrics, artifacts = split_result(raw)
    candidate.artifacts.update(artifacts)
    return with_combined_score(metrics)


def evaluate(candidate: Candidate) -> dict[str, float]:
    return _run(candidate, "evaluate")


def evaluate_stage1(candidate: Candidate) -> dict[str, float]:
    return _run(candidate, "evaluate_stage1")


def evaluate_stage2(candidate: Candidate) -> dict[str, float]:
    return _run(candidate, "evaluate_stage2")


def evaluate_stage3(candidate: Candidate) -> dict[str, float]:
    return _run(candidate, "evaluate_stage3")
