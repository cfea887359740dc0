"""Running one cascade stage of a problem's trusted evaluator against one candidate.

This is what a Ray evaluation task executes. It never raises for anything the candidate does: every outcome is a
``StageOutcome`` with a status, so Ray's retries are reserved for real system failures.

Whose fault is an exception? A ``CandidateFailure`` carries its status. Any other exception the evaluator raises
*after the candidate's data reached it* (``Candidate.received``: a ``call`` returned, a ``run`` finished) is the
candidate's ``wrong_output``: the evaluator choked on what the candidate produced (an overflow on a 10**400
radius, a recursion, a type or value it did not expect), and the message names the exception. Before that, or
when raised as ``EvaluatorError`` (or inside ``with evaluator_code():``), it is ``evaluator_error``: the
evaluator failed on its own, on data it made itself.

An evaluator may declare an *anomaly* (``StageReport.anomaly``): a result it finds suspicious although it checks
out (a figure above the device's peak, timings that disagree). It travels with the outcome under a reserved
artifact name, is taken out before anything is archived, and trips the oversight tripwire of that name
(``evolve.oversight``): the program is quarantined until re-evaluated and cleared. It never reaches a prompt.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from evolve.candidate import Candidate, CandidateFailure, EvaluatorError
from evolve.problem import Problem, StageSpec
from evolve.sandbox import Sandbox, sandbox_for_problem
from evolve.types import StageOutcome, Status

ANOMALY_ARTIFACT = "evolve.anomaly"  # reserved artifact name carrying StageReport.anomaly to the driver
_modules: dict[tuple[str, float], ModuleType] = {}
_modules_lock = threading.Lock()
_problem_roots: set[str] = set()  # folders evaluators were loaded from: their helper modules are theirs


def load_evaluator(problem: Problem) -> ModuleType:
    """Import the problem's evaluator module once per process (reloaded if the file changes)."""
    path = problem.evaluator_path
    key = (str(path), path.stat().st_mtime)
    with _modules_lock:
        if key not in _modules:
            name = f"evolve_problem_{problem.name}_evaluator"
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot import evaluator {path}")
            module = importlib.util.module_from_spec(spec)
            _problem_roots.add(str(problem.root))
            _forget_problem_modules()
            sys.path.insert(0, str(problem.root))
            try:
                sys.modules[name] = module
                spec.loader.exec_module(module)
            finally:
                sys.path.remove(str(problem.root))
            _modules[key] = module
        return _modules[key]


def _forget_problem_modules() -> None:
    """Drop the modules earlier evaluators imported from their problem folders (``import helpers``): a process that
    outlives a run (a Ray worker of ``evolve ray start``'s runner) then imports an edited helper afresh, and never
    hands one problem's ``helpers`` to another's evaluator. Loaded evaluators keep the modules they imported."""
    roots = tuple(os.path.join(root, "") for root in _problem_roots)
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if path and path.startswith(roots):
            del sys.modules[name]


@dataclass(frozen=True)
class StageReport:
    """What an evaluator stage function may return instead of a plain metrics dict.

    ``anomaly``: why the result looks wrong although every check passed (say, a speed above the hardware's peak);
    empty when nothing is suspicious. A non-empty anomaly quarantines the program (see the module docstring)."""

    metrics: dict[str, float]
    artifacts: dict[str, str] | None = None
    anomaly: str = ""


def _clean_metrics(raw: Any) -> tuple[dict[str, float], dict[str, str]]:
    artifacts: dict[str, str] = {}
    if isinstance(raw, StageReport):
        artifacts = dict(raw.artifacts or {})
        if raw.anomaly:
            artifacts[ANOMALY_ARTIFACT] = str(raw.anomaly)[:2000]
        raw = raw.metrics
    if not isinstance(raw, dict):
        raise EvaluatorError(f"stage function must return a dict of metrics or a StageReport, got "
                             f"{type(raw).__name__}")
    metrics: dict[str, float] = {}
    for key, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise EvaluatorError(f"metric {key!r} is not a number: {str(value)[:200]}")
        metrics[str(key)] = float(value)
    return metrics, artifacts


def passes_threshold(stage: StageSpec, metrics: dict[str, float], direction: str) -> tuple[bool, str]:
    if stage.threshold is None:
        return True, ""
    value = metrics.get(stage.threshold_metric)
    if value is None or not math.isfinite(value):
        return False, f"stage {stage.name!r}: metric {stage.threshold_metric!r} missing or not finite"
    ok = value >= stage.threshold if direction == "maximize" else value <= stage.threshold
    if ok:
        return True, ""
    return False, f"stage {stage.name!r}: {stage.threshold_metric}={value:g} misses threshold {stage.threshold:g}"


def _exception_outcome(exc: Exception, candidate: Candidate, artifacts: dict[str, str]) \
        -> tuple[Status, str, dict[str, str]]:
    """The status of an exception that is not a ``CandidateFailure`` (the rule in the module docstring)."""
    text = f"{type(exc).__name__}: {str(exc)[:2000]}"
    if candidate.received and not isinstance(exc, EvaluatorError):
        return (Status.WRONG_OUTPUT, f"the evaluator could not process the candidate's output: {text}",
                {**artifacts, "evaluator_traceback": traceback.format_exc()[-8000:]})
    return Status.EVALUATOR_ERROR, f"evaluator raised {text}", {**artifacts, "traceback": traceback.format_exc()}


def run_stage(
    problem: Problem,
    stage_name: str,
    code: str,
    program_id: str,
    seed: int,
    sandbox: Sandbox | None = None,
) -> StageOutcome:
    """Run one stage; the candidate runs only inside the sandbox, the evaluator function here."""
    stage = problem.stage(stage_name)
    sandbox = sandbox or sandbox_for_problem(problem, stage=stage)
    start = time.monotonic()
    filename = "program" + (problem.seed_path.suffix or ".txt")
    try:
        module = load_evaluator(problem)
        function = getattr(module, stage.function)
    except Exception as exc:  # noqa: BLE001 - a broken evaluator is reported, not raised
        return StageOutcome(stage=stage.name, status=Status.EVALUATOR_ERROR,
                            message=f"cannot load evaluator function {stage.function!r}: {exc}",
                            artifacts={"traceback": traceback.format_exc()}, seconds=time.monotonic() - start)
    candidate = Candidate(code, program_id, stage.name, stage.timeout, seed, sandbox, filename=filename,
                          problem_root=problem.root, gpus=stage.gpus)
    status, message, metrics, artifacts = Status.OK, "", {}, {}
    try:
        with candidate:
            try:
                metrics, artifacts = _clean_metrics(function(candidate))
            finally:
                artifacts = {**candidate.artifacts, **artifacts}
    except CandidateFailure as exc:
        status, message = exc.status, str(exc)
        artifacts = {**artifacts, **exc.artifacts}
        if status is not Status.OK and "traceback" not in artifacts and exc.__traceback__ is not None:
            artifacts.setdefault("check", message)
    except Exception as exc:  # noqa: BLE001 - the trusted evaluator raised: on the candidate's data, or on its own
        status, message, artifacts = _exception_outcome(exc, candidate, artifacts)
    if status is Status.OK:
        ok, why = passes_threshold(stage, metrics, problem.score.direction)
        if not ok:
            status, message = Status.REJECTED, why
    artifacts = {k: v for k, v in artifacts.items() if v}
    return StageOutcome(stage=stage.name, status=status, metrics=metrics, artifacts=artifacts,
                        seconds=time.monotonic() - start, message=message, isolation=sandbox.level,
                        in_process=bool(getattr(candidate, "in_process", False)))


def builtin_features(code: str) -> dict[str, float]:
    return {"code_length": float(len(code)), "code_lines": float(code.count("\n") + 1)}


def feature_values(problem: Problem, metrics: dict[str, float], code: str) -> dict[str, float]:
    """Each declared feature's value, from the metrics or the built-ins; missing ones are left out."""
    available = {**builtin_features(code), **metrics}
    return {dim.name: available[dim.source] for dim in problem.features if dim.source in available}


def split_anomaly(outcome: StageOutcome) -> tuple[StageOutcome, str]:
    """The outcome without its evaluator-declared anomaly, and the anomaly ("" when there is none)."""
    anomaly = outcome.artifacts.get(ANOMALY_ARTIFACT, "")
    if ANOMALY_ARTIFACT not in outcome.artifacts:
        return outcome, ""
    artifacts = {k: v for k, v in outcome.artifacts.items() if k != ANOMALY_ARTIFACT}
    return dataclasses.replace(outcome, artifacts=artifacts), anomaly


def evaluate_locally(problem: Problem, code: str, program_id: str, seed: int,
                     stages: list[str] | None = None) -> list[StageOutcome]:
    """Run the visible cascade in this process (used by ``evolve eval`` and tests); stops at the first failing
    stage. Held-out stages are never part of it (``run_cascade`` runs them)."""
    chosen = [s for s in problem.stages if stages is None or s.name in stages]
    return run_cascade(problem, chosen, code, program_id, seed)


def run_cascade(problem: Problem, stages: Sequence[StageSpec], code: str, program_id: str,
                seed: int) -> list[StageOutcome]:
    """Run ``stages`` in order in this process, stopping at the first that fails."""
    outcomes: list[StageOutcome] = []
    for stage in stages:
        outcome = run_stage(problem, stage.name, code, program_id, seed)
        outcomes.append(outcome)
        if not outcome.passed:
            break
    return outcomes
