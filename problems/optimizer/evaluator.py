"""Trusted evaluator for the optimizer problem: the candidate is only an update rule; everything else is here.

Per stage: a static lint (``evaluators/array_lint.py``: no numpy/cupy imports, no introspection; an early
rejection, not a boundary), then training driven from this process: the task instances (data, start points,
minibatches), the losses, the gradients and the loop live here, and each step sends the current parameters and
gradients of every job to the candidate's process, which runs ``step`` and sends back the new parameters; the
optimizer's state stays there between steps. Every returned array is checked (real numbers, exact shape), the
final loss is computed here in float64, and a tuned Adam is trained on the very same instance as the reference.
The candidate's process never holds task data, a loss, or a held-out task it could read.

Score per job: clip(log10(reference excess loss) - log10(candidate excess loss), WORST, BEST), with excess loss =
loss - optimum (optimum known or computed exactly here) floored at LOSS_FLOOR; non-finite parameters score WORST.
The stage score is the mean over tasks of the per-task mean over seeds: 0 means "as good as Adam tuned per task".
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from functools import lru_cache
from typing import Any

import numpy as np
from optimizer_tasks import (
    Instance,
    TaskKind,
    TaskSpec,
    TrainResult,
    full_loss,
    instance_seed,
    make_instance,
    optimum_loss,
    state_buffers,
    train,
    train_many,
)

from evaluators.array_lint import check_source
from evaluators.array_session import XP, ArraySession, Held, RemoteCall, numeric_array
from evolve import Candidate, CompileError, StageReport, WrongOutput
from evolve.candidate import evaluator_code

WORST, BEST = -6.0, 6.0  # per-job clip of the log10 ratio; NaN, infinity or a blow-up score WORST
LOSS_FLOOR = 1e-12  # excess losses below this count as solved (float64 noise on losses of order 1)
DIVERGED_LOG10 = math.log10(sys.float_info.max)  # log10 loss recorded for a diverged run (metrics stay finite)

TRAIN_SUITE: tuple[TaskSpec, ...] = (
    TaskSpec("quadratic", TaskKind.QUADRATIC, dim=20, steps=300, spectrum=(1e-3, 10.0)),
    TaskSpec("rosenbrock", TaskKind.ROSENBROCK, dim=4, steps=300),
    TaskSpec("logistic", TaskKind.LOGISTIC, dim=20, steps=300, spectrum=(0.03, 10.0), samples=200, l2=1e-4),
    TaskSpec("mlp", TaskKind.MLP, dim=4, steps=300, samples=256, hidden=16, classes=3, batch=32),
)
# Other dimensions, other data, other scales, another Rosenbrock start: the held-out stage (role = "heldout"), which
# oversight runs on a seed of its own and keeps apart from everything a prompt can show.
HELDOUT_SUITE: tuple[TaskSpec, ...] = (
    TaskSpec("quadratic50", TaskKind.QUADRATIC, dim=50, steps=300, spectrum=(1e-4, 1.0)),
    # Another start pattern: a rule that learnt where the training tasks' optimum lies from their start breaks here.
    TaskSpec("rosenbrock8", TaskKind.ROSENBROCK, dim=8, steps=300, start=(0.0, -1.0)),
    TaskSpec("logistic40", TaskKind.LOGISTIC, dim=40, steps=300, spectrum=(0.01, 3.0), samples=400, l2=1e-4),
    TaskSpec("mlp_wide", TaskKind.MLP, dim=8, steps=300, samples=384, hidden=32, classes=4, batch=48),
)
REPEATS = {"train": 3, "heldout": 2}  # seeds per task
RECORD_EVERY = 50  # loss-curve sampling for the artifacts (informative only)

# Adam's learning rate tuned per task on seeds the evaluation never uses (``python baselines.py tune``): the best
# of 10^(k/4), k = -16..4, by mean log10 excess loss. betas (0.9, 0.999), eps 1e-8.
ADAM_LR: dict[str, float] = {
    "quadratic": 0.56234,
    "rosenbrock": 1.0,
    "logistic": 0.56234,
    "mlp": 0.05623,
    "quadratic50": 1.0,
    "rosenbrock8": 0.56234,
    "logistic40": 1.0,
    "mlp_wide": 0.17783,
}


# ------------------------------------------------------------------------------------------ the reference


def adam_rule(lr: float, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8) -> tuple[Any, Any]:
    """Adam as (init_state, step) in the candidates' interface; trusted code, run here with NumPy."""

    def init_state(params: list[Any], total_steps: int, xp: Any) -> Any:
        return [xp.zeros_like(p) for p in params], [xp.zeros_like(p) for p in params]

    def step(params: list[Any], grads: list[Any], state: Any, t: int, xp: Any) -> tuple[list[Any], Any]:
        m, v = state
        m = [beta1 * a + (1 - beta1) * g for a, g in zip(m, grads, strict=True)]
        v = [beta2 * a + (1 - beta2) * g * g for a, g in zip(v, grads, strict=True)]
        c1, c2 = 1 - beta1**t, 1 - beta2**t
        new = [p - lr * (a / c1) / (xp.sqrt(b / c2) + eps) for p, a, b in zip(params, m, v, strict=True)]
        return new, (m, v)

    return init_state, step


def excess_loss(instance: Instance, params: list[np.ndarray]) -> float:
    """Loss above the task's optimum, or NaN when the parameters or the loss are not finite."""
    if not all(np.isfinite(p).all() for p in params):
        return math.nan
    with np.errstate(all="ignore"):
        loss = full_loss(instance, params)
    if not math.isfinite(loss):
        return math.nan
    return loss - optimum_loss(instance)


@lru_cache(maxsize=512)
def reference_loss(spec: TaskSpec, seed: int, lr: float | None = None) -> float:
    """Excess loss reached by tuned Adam on this instance (cached: a worker sees the same seeds again)."""
    instance = make_instance(spec, seed)
    init_state, step = adam_rule(ADAM_LR[spec.name] if lr is None else lr)
    with np.errstate(all="ignore"):
        result = train(np, instance, init_state, step)
    return excess_loss(instance, result.params)


def log_ratio(reference: float, candidate: float) -> float:
    """The per-job score: orders of magnitude by which the candidate beats the reference, clipped."""
    if not math.isfinite(candidate):
        return WORST
    ref = max(reference, LOSS_FLOOR) if math.isfinite(reference) else 1.0
    value = math.log10(ref) - math.log10(max(candidate, LOSS_FLOOR))
    return min(BEST, max(WORST, value))


# ------------------------------------------------------------------------------------------ the stages


def source_check(candidate: Candidate) -> None:
    reasons = check_source(candidate.code)
    if reasons:
        raise CompileError("source check failed: " + "; ".join(reasons[:4]), {"check": "\n".join(reasons)})


def jobs_for(suite_name: str, suite: tuple[TaskSpec, ...], seed: int) -> list[tuple[TaskSpec, int]]:
    return [(spec, instance_seed(seed, suite_name, i, r))
            for i, spec in enumerate(suite) for r in range(REPEATS[suite_name])]


def returned_params(item: Any, instance: Instance, where: str) -> list[np.ndarray]:
    """The final parameters of one job, shape-checked against the instance built here."""
    if not isinstance(item, dict) or not isinstance(item.get("params"), list):
        raise WrongOutput(f"{where}: expected a dict with a 'params' list")
    params = item["params"]
    if len(params) != len(instance.params):
        raise WrongOutput(f"{where}: {len(params)} parameter arrays returned, expected {len(instance.params)}")
    out = []
    for i, (got, want) in enumerate(zip(params, instance.params, strict=True)):
        try:
            array = np.asarray(got, dtype=np.float64)
        except (TypeError, ValueError):
            raise WrongOutput(f"{where}: parameter {i} is not numeric") from None
        if array.shape != want.shape:
            raise WrongOutput(f"{where}: parameter {i} has shape {array.shape}, expected {want.shape}")
        out.append(array)
    return out


def score_suite(suite_name: str, suite: tuple[TaskSpec, ...], seed: int, results: list[Any],
                instances: list[Instance] | None = None) -> tuple[dict[str, float], list[str]]:
    """Trusted scoring of the returned parameters: per-task metrics and a readable table. ``instances``: the jobs'
    instances when the caller already built them (``make_instance`` of ``jobs_for``, in order); built here if not."""
    jobs = jobs_for(suite_name, suite, seed)
    if not isinstance(results, list) or len(results) != len(jobs):
        raise WrongOutput(f"expected {len(jobs)} training results, got "
                          f"{len(results) if isinstance(results, list) else type(results).__name__}")
    if instances is None:
        with evaluator_code():
            instances = [make_instance(spec, job_seed) for spec, job_seed in jobs]
    per_task: dict[str, list[float]] = {spec.name: [] for spec in suite}
    logs: dict[str, list[float]] = {spec.name: [] for spec in suite}
    refs: dict[str, list[float]] = {spec.name: [] for spec in suite}
    for (spec, job_seed), instance, item in zip(jobs, instances, results, strict=True):
        loss = excess_loss(instance, returned_params(item, instance, f"task {spec.name} seed {job_seed}"))
        with evaluator_code():
            reference = reference_loss(spec, job_seed)
        per_task[spec.name].append(log_ratio(reference, loss))
        logs[spec.name].append(math.log10(max(loss, LOSS_FLOOR)) if math.isfinite(loss) else DIVERGED_LOG10)
        refs[spec.name].append(math.log10(max(reference, LOSS_FLOOR)))
    metrics = {f"task_{name}": statistics.fmean(values) for name, values in per_task.items()}
    metrics.update({f"log10_loss_{name}": statistics.fmean(values) for name, values in logs.items()})
    metrics["diverged"] = float(sum(v == DIVERGED_LOG10 for values in logs.values() for v in values))
    table = [f"{'task':<12} {'score':>7} {'log10 loss':>11} {'adam log10 loss':>16}"]
    table += [f"{name:<12} {metrics[f'task_{name}']:7.2f} {statistics.fmean(logs[name]):11.2f} "
              f"{statistics.fmean(refs[name]):16.2f}" for name in per_task]
    score = statistics.fmean(metrics[f"task_{spec.name}"] for spec in suite)
    return {"score": score, **metrics}, table


class RemoteRule:
    """The candidate's ``init_state``/``step`` in its sandboxed process, one round trip per step for all jobs.

    Each job's state is held there under the job's key; the new parameters come back as arrays, checked here (real
    numbers, the shapes sent) and turned into float64 arrays of the trusted side's ``xp``.
    """

    def __init__(self, session: ArraySession, keys: list[str]):
        self.session = session
        self.keys = keys
        self._key_of: dict[int, str] = {}

    def init(self, params: list[list[Any]], total_steps: list[int], xp: Any) -> list[Any]:
        calls = [RemoteCall("init_state", (p, n, XP), keep=key)
                 for p, n, key in zip(params, total_steps, self.keys, strict=True)]
        self.session.batch(calls)
        return [Held(key) for key in self.keys]

    def step(self, jobs: list[tuple[list[Any], list[Any], Any, int]], xp: Any) -> list[tuple[list[Any], Any]]:
        calls = [RemoteCall("step", (params, grads, state, t, XP), keep=state.key, split=True)
                 for params, grads, state, t in jobs]
        out = []
        for (params, _, state, t), value in zip(jobs, self.session.batch(calls), strict=True):
            if not isinstance(value, list) or len(value) != len(params):
                raise WrongOutput(f"step() at t={t} must return a list of {len(params)} parameter arrays, got "
                                  f"{len(value) if isinstance(value, list) else type(value).__name__}")
            new = [numeric_array(v, f"step() at t={t}: parameter {i}", tuple(p.shape), xp)
                   for i, (v, p) in enumerate(zip(value, params, strict=True))]
            out.append((new, state))
        return out

    def state_sizes(self) -> list[list[int]]:
        """Element counts of the arrays in each job's final state (the candidate's own description of it)."""
        sizes = self.session.batch([RemoteCall("@sizes", (key,)) for key in self.keys])
        self.session.batch([RemoteCall("@release", (key,)) for key in self.keys])
        return [[int(n) for n in s if type(n) is int and 0 <= n < 1 << 40] if isinstance(s, list) else []
                for s in sizes]


def run_suite(candidate: Candidate, suite_name: str, suite: tuple[TaskSpec, ...]) \
        -> tuple[dict[str, float], list[TrainResult], list[str]]:
    source_check(candidate)
    session = ArraySession(candidate)
    jobs = jobs_for(suite_name, suite, candidate.seed)
    with evaluator_code():
        instances = [make_instance(spec, job_seed) for spec, job_seed in jobs]
    rule = RemoteRule(session, [f"job{i}" for i in range(len(jobs))])
    start = time.monotonic()
    with np.errstate(all="ignore"):
        runs = train_many(session.xp, instances, rule, RECORD_EVERY)
    seconds = time.monotonic() - start
    metrics, table = score_suite(suite_name, suite, candidate.seed,
                                 [{"params": [_host(p) for p in run.params]} for run in runs], instances)
    buffers = [state_buffers(sizes, instance.params)
               for sizes, instance in zip(rule.state_sizes(), instances, strict=True)]
    metrics["state_buffers"] = min(1e6, statistics.median(buffers)) if buffers else 0.0
    metrics["train_seconds"] = seconds  # trusted wall time of the whole training, both processes' work
    return metrics, runs, table


def _host(array: Any) -> np.ndarray:
    return array.get() if hasattr(array, "get") and not isinstance(array, np.ndarray) else np.asarray(array)


def evaluate(candidate: Candidate) -> StageReport:
    """Stage "train": the score the evolution sees."""
    metrics, runs, table = run_suite(candidate, "train", TRAIN_SUITE)
    curves = []
    for r, ((spec, _), run) in enumerate(zip(jobs_for("train", TRAIN_SUITE, candidate.seed), runs, strict=True)):
        if r % REPEATS["train"] == 0:  # the first seed of each task is enough
            curves.append(f"{spec.name}: " + ", ".join(f"{v:.3g}" for v in run.losses[:8]))
    header = f"loss at steps 1, {RECORD_EVERY}, {2 * RECORD_EVERY}, ... (computed by the evaluator):"
    artifacts = {
        "tasks": "\n".join(table) + "\n(score per task: log10(Adam's excess loss / yours), 0 = tuned Adam)",
        "loss_curves": header + "\n" + "\n".join(curves),
        "array_module": str(candidate.startup_values.get("open", "?")),
    }
    return StageReport(metrics, artifacts)


def heldout(candidate: Candidate) -> dict[str, float]:
    """Stage "heldout" (``role = "heldout"``): other tasks, reported as ``heldout_*`` metrics. It runs only to check a
    program before it counts as best, on a seed of its own, and what it returns is stored apart from the program's
    row (``evolve.oversight``): no prompt can show it."""
    metrics, _, _ = run_suite(candidate, "heldout", HELDOUT_SUITE)
    return {f"heldout_{k}" if not k.startswith("heldout") else k: v for k, v in metrics.items()
            if k in ("score", "diverged") or k.startswith("task_")}
