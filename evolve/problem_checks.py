"""Checks of a problem against what its evaluator returns: every metric ``problem.toml`` names must be among them.

``[score] metric``, each feature's metric (built-in features such as ``code_length`` aside) and each stage's
``threshold_metric`` are looked up in the metrics a cascade returned; a name that is missing is reported with the
closest names the evaluator did return (``difflib``), so a typo (``sum_radius`` for ``sum_radii``) is caught by
``evolve eval`` and before a run evolves from nothing. Only meaningful once every stage ran and passed: a cascade
stopped early returns only some metrics.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from evolve.problem import BUILTIN_FEATURES, PROBLEM_FILE, Problem, ProblemError


@dataclass(frozen=True)
class MissingMetric:
    """A metric ``problem.toml`` names that the evaluator did not return."""

    name: str
    where: str  # the key naming it: "score.metric", "features[1].name", "stages[0].threshold_metric"
    suggestions: tuple[str, ...] = ()

    @property
    def reason(self) -> str:
        hint = f"; did you mean {' or '.join(repr(s) for s in self.suggestions)}?" if self.suggestions else ""
        return f"the evaluator returns no metric {self.name!r}{hint}"

    def describe(self) -> str:
        return f"{self.where}: {self.reason}"


def closest(name: str, candidates: Iterable[str], n: int = 3) -> tuple[str, ...]:
    """The candidates closest to ``name`` (case-insensitive; a difference in case only comes first)."""
    pool = sorted(set(candidates))
    lowered: dict[str, str] = {}
    for candidate in pool:
        lowered.setdefault(candidate.lower(), candidate)
    found = [lowered[c] for c in difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.6)]
    same = [c for c in pool if c.lower() == name.lower() and c != name]
    return tuple(dict.fromkeys(same + found))[:n]


def missing_metrics(problem: Problem, metrics: Iterable[str]) -> list[MissingMetric]:
    """Every metric named by ``problem`` that is not among ``metrics`` (the names a full cascade returned)."""
    returned = set(metrics)
    missing: list[MissingMetric] = []
    if problem.score.metric not in returned:
        missing.append(MissingMetric(problem.score.metric, "score.metric", closest(problem.score.metric, returned)))
    for i, dim in enumerate(problem.features):
        if dim.source in returned or dim.source in BUILTIN_FEATURES:
            continue
        where = f"features[{i}].metric" if dim.metric else f"features[{i}].name"
        missing.append(MissingMetric(dim.source, where, closest(dim.source, returned | set(BUILTIN_FEATURES))))
    for i, stage in enumerate(problem.stages):
        if stage.threshold is not None and stage.threshold_metric not in returned \
                and stage.threshold_metric != problem.score.metric:  # the score is reported once, above
            missing.append(MissingMetric(stage.threshold_metric, f"stages[{i}].threshold_metric",
                                         closest(stage.threshold_metric, returned)))
    return missing


def describe_missing(missing: Sequence[MissingMetric], metrics: Iterable[str]) -> str:
    """One message for every missing metric, with the names the evaluator did return."""
    returned = ", ".join(sorted(set(metrics))) or "none"
    lines = [m.describe() for m in missing]
    return "\n".join(lines + [f"(the evaluator returned: {returned})"])


def check_metrics(problem: Problem, metrics: Iterable[str]) -> None:
    """Raise ``ProblemError`` (at ``problem.toml``, one entry per missing metric) unless every named metric is
    among ``metrics``."""
    names = list(metrics)
    missing = missing_metrics(problem, names)
    if missing:
        returned = ", ".join(sorted(set(names))) or "none"
        errors = [(m.where, f"{m.reason} (it returns: {returned})") for m in missing]
        raise ProblemError(problem.root / PROBLEM_FILE, errors)
