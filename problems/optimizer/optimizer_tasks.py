"""The optimizer problem's task suite and training loop, written once for any array module ``xp``.

Trusted code only: the task data, losses, gradients and the loop never enter the candidate's process. ``train_many``
runs several task instances in lockstep with an update rule given as a ``BatchRule``: the candidate's rule is a
remote one (the evaluator's ``RemoteRule``: one round trip to the candidate's process per step for all jobs), the
tuned Adam reference a ``LocalRule`` around plain functions. Both see the same arrays in the same order, so a rule
scores the same whichever side runs it.

Task data is always generated with NumPy on the host from a seed (``numpy.random.Generator``) and then moved to
``xp``, so a CPU run and a GPU run of the same seed see identical tasks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

import numpy as np

SHIFT = 1.0  # Rosenbrock: each coordinate of the optimum moves by up to this much, per instance


class TaskKind(StrEnum):
    QUADRATIC = "quadratic"  # 0.5 (x - x*)^T A (x - x*), A with a log-spaced spectrum in a random basis
    ROSENBROCK = "rosenbrock"  # chained Rosenbrock valley, minimum 0 at (1, ..., 1) + a per-instance shift
    LOGISTIC = "logistic"  # L2-regularised logistic regression on badly scaled synthetic features
    MLP = "mlp"  # one-hidden-layer tanh network, softmax cross-entropy, minibatches


@dataclass(frozen=True)
class TaskSpec:
    """One task family member: its size and difficulty. Instances differ by seed (data, start point, batches)."""

    name: str
    kind: TaskKind
    dim: int  # parameters (quadratic, rosenbrock) or input features (logistic, mlp)
    steps: int
    spectrum: tuple[float, float] = (1.0, 1.0)  # quadratic eigenvalues / logistic feature scales (log-spaced)
    samples: int = 0
    hidden: int = 0
    classes: int = 0
    batch: int = 0  # minibatch size; 0 means full batch
    l2: float = 0.0
    start: tuple[float, float] = (-1.2, 1.0)  # rosenbrock: the start pattern, repeated, before the shift


@dataclass(frozen=True)
class Instance:
    """A concrete task: host data, initial parameters and (for minibatch tasks) the batch index sequence."""

    spec: TaskSpec
    data: dict[str, np.ndarray]
    params: tuple[np.ndarray, ...]
    batches: np.ndarray | None = None  # (steps, batch) row indices

    def __post_init__(self) -> None:
        # Read-only: the evaluator trains on an instance and then scores the result against it, so nothing on the
        # way (the loop hands these very arrays to NumPy code) may write to it.
        for array in (*self.data.values(), *self.params, *(() if self.batches is None else (self.batches,))):
            array.flags.writeable = False


@dataclass
class TrainResult:
    params: list[Any]
    state: Any
    losses: list[float] = field(default_factory=list)  # (step, loss) samples seen during training
    steps_done: int = 0
    diverged: bool = False


def make_instance(spec: TaskSpec, seed: int) -> Instance:
    """Build the instance of ``spec`` for ``seed``; identical on every machine for a given NumPy version."""
    rng = np.random.default_rng(seed)
    d = spec.dim
    if spec.kind is TaskKind.QUADRATIC:
        q, _ = np.linalg.qr(rng.standard_normal((d, d)))
        eig = np.logspace(math.log10(spec.spectrum[0]), math.log10(spec.spectrum[1]), d)
        a = (q * eig) @ q.T
        optimum = rng.standard_normal(d)
        x0 = optimum + rng.standard_normal(d)
        return Instance(spec, {"a": a, "optimum": optimum}, (x0,))
    if spec.kind is TaskKind.ROSENBROCK:
        # The start pattern plus noise, then the whole valley moved by a shift only this side knows: a rule that
        # recognised the task used to jump to the optimum at (1, ..., 1) and learn nothing.
        x0 = np.tile(spec.start, (d + 1) // 2)[:d] + 0.1 * rng.standard_normal(d)
        shift = rng.uniform(-SHIFT, SHIFT, d)
        return Instance(spec, {"shift": shift}, (x0 + shift,))
    if spec.kind is TaskKind.LOGISTIC:
        # Badly scaled *and* correlated features: a random rotation keeps per-coordinate scaling from fixing it.
        scales = np.logspace(math.log10(spec.spectrum[0]), math.log10(spec.spectrum[1]), d)
        basis, _ = np.linalg.qr(rng.standard_normal((d, d)))
        x = (rng.standard_normal((spec.samples, d)) * scales) @ basis.T
        w_true = basis @ (rng.standard_normal(d) / scales)
        p = 1.0 / (1.0 + np.exp(-(x @ w_true + 0.5)))
        y = (rng.random(spec.samples) < p).astype(np.float64)
        return Instance(spec, {"x": x, "y": y}, (np.zeros(d), np.zeros(1)))
    if spec.kind is TaskKind.MLP:
        # Two Gaussian clusters per class: classes are not linearly separable, so the hidden layer matters.
        centers = rng.standard_normal((2 * spec.classes, d)) * 1.5
        owner = np.arange(2 * spec.classes) % spec.classes
        pick = rng.integers(0, 2 * spec.classes, spec.samples)
        x = centers[pick] + 0.6 * rng.standard_normal((spec.samples, d))
        labels = owner[pick]
        onehot = np.eye(spec.classes)[labels]
        h = spec.hidden
        params = (
            rng.standard_normal((d, h)) / math.sqrt(d),
            np.zeros(h),
            rng.standard_normal((h, spec.classes)) / math.sqrt(h),
            np.zeros(spec.classes),
        )
        batches = rng.integers(0, spec.samples, (spec.steps, spec.batch)) if spec.batch else None
        return Instance(spec, {"x": x, "onehot": onehot}, params, batches)
    raise ValueError(f"unknown task kind {spec.kind!r}")


# ------------------------------------------------------------------------------------------ losses and grads


def loss_and_grads(xp: Any, spec: TaskSpec, data: dict[str, Any], params: Sequence[Any],
                   rows: Any = None) -> tuple[Any, list[Any]]:
    """Loss (a 0-d array of ``xp``) and gradients with respect to ``params``; ``rows`` selects a minibatch."""
    kind = spec.kind
    if kind is TaskKind.QUADRATIC:
        diff = params[0] - data["optimum"]
        g = data["a"] @ diff
        return 0.5 * (diff @ g), [g]
    if kind is TaskKind.ROSENBROCK:
        x = params[0] - data["shift"]
        head, tail = x[:-1], x[1:]
        valley = tail - head * head
        loss = xp.sum(100.0 * valley * valley + (1.0 - head) ** 2)
        g = xp.zeros_like(x)
        g[:-1] += -400.0 * head * valley - 2.0 * (1.0 - head)
        g[1:] += 200.0 * valley
        return loss, [g]
    if kind is TaskKind.LOGISTIC:
        w, b = params
        x, y = data["x"], data["y"]
        z = x @ w + b[0]
        # logaddexp(0, z) - y z is the stable form of the log loss; 0.5 (1 + tanh(z/2)) the stable sigmoid.
        loss = xp.mean(xp.logaddexp(0.0, z) - y * z) + 0.5 * spec.l2 * (w @ w)
        residual = (0.5 * (1.0 + xp.tanh(0.5 * z)) - y) / x.shape[0]
        return loss, [x.T @ residual + spec.l2 * w, xp.sum(residual, keepdims=True)]
    if kind is TaskKind.MLP:
        w1, b1, w2, b2 = params
        x, onehot = data["x"], data["onehot"]
        if rows is not None:
            x, onehot = x[rows], onehot[rows]
        hidden = xp.tanh(x @ w1 + b1)
        logits = hidden @ w2 + b2
        logits = logits - xp.max(logits, axis=1, keepdims=True)
        log_norm = xp.log(xp.sum(xp.exp(logits), axis=1, keepdims=True))
        log_probs = logits - log_norm
        n = x.shape[0]
        loss = -xp.sum(onehot * log_probs) / n
        d_logits = (xp.exp(log_probs) - onehot) / n
        d_hidden = (d_logits @ w2.T) * (1.0 - hidden * hidden)
        return loss, [x.T @ d_hidden, xp.sum(d_hidden, axis=0), hidden.T @ d_logits, xp.sum(d_logits, axis=0)]
    raise ValueError(f"unknown task kind {kind!r}")


def full_loss(instance: Instance, params: Sequence[np.ndarray]) -> float:
    """The loss of ``params`` on the whole task, in NumPy float64 (what the trusted side scores)."""
    host = [np.asarray(p, dtype=np.float64) for p in params]
    loss, _ = loss_and_grads(np, instance.spec, instance.data, host)
    return float(loss)


def optimum_loss(instance: Instance) -> float:
    """The task's minimum loss where it is known or cheaply exact (Newton's method for the convex logistic task)."""
    spec = instance.spec
    if spec.kind in (TaskKind.QUADRATIC, TaskKind.ROSENBROCK):
        return 0.0
    if spec.kind is TaskKind.LOGISTIC:
        x, y = instance.data["x"], instance.data["y"]
        design = np.hstack([x, np.ones((x.shape[0], 1))])
        reg = np.full(design.shape[1], spec.l2)
        reg[-1] = 0.0
        theta = np.zeros(design.shape[1])
        for _ in range(100):
            z = design @ theta
            p = 0.5 * (1.0 + np.tanh(0.5 * z))
            grad = design.T @ (p - y) / len(y) + reg * theta
            hess = (design * (p * (1 - p))[:, None]).T @ design / len(y) + np.diag(reg)
            delta = np.linalg.solve(hess, grad)
            theta -= delta
            if np.abs(delta).max() < 1e-13:
                break
        return full_loss(instance, [theta[:-1], theta[-1:]])
    return 0.0  # the MLP: cross-entropy is bounded below by 0 and training drives it there


# ---------------------------------------------------------------------------------------------- training


InitFn = Callable[[list[Any], int, Any], Any]
StepFn = Callable[[list[Any], list[Any], Any, int, Any], tuple[Any, Any]]


class BatchRule(Protocol):
    """An update rule applied to several jobs at once (a job = one task instance being trained)."""

    def init(self, params: list[list[Any]], total_steps: list[int], xp: Any) -> list[Any]:
        """One initial state per job."""

    def step(self, jobs: list[tuple[list[Any], list[Any], Any, int]], xp: Any) -> list[tuple[list[Any], Any]]:
        """For each job ``(params, grads, state, t)``: ``(new_params, new_state)``."""


@dataclass(frozen=True)
class LocalRule:
    """``init_state``/``step`` functions run in this process (trusted rules: the Adam reference)."""

    init_state: InitFn
    step_fn: StepFn

    def init(self, params: list[list[Any]], total_steps: list[int], xp: Any) -> list[Any]:
        return [self.init_state(p, n, xp) for p, n in zip(params, total_steps, strict=True)]

    def step(self, jobs: list[tuple[list[Any], list[Any], Any, int]], xp: Any) -> list[tuple[list[Any], Any]]:
        out = []
        for params, grads, state, t in jobs:
            result = self.step_fn(params, grads, state, t, xp)
            if not isinstance(result, tuple | list) or len(result) != 2:
                raise TypeError("step() must return (new_params, new_state)")
            out.append((result[0], result[1]))
        return out


@dataclass
class _Job:
    instance: Instance
    data: dict[str, Any]
    batches: Any
    shapes: list[tuple[int, ...]]
    result: TrainResult
    done: bool = False


def train_many(xp: Any, instances: Sequence[Instance], rule: BatchRule, record_every: int = 0) -> list[TrainResult]:
    """Train every instance for its ``steps`` with ``rule``, in lockstep; a job whose loss stops being finite stops
    there (it cannot come back). Losses and gradients are computed here, by the caller's process."""
    jobs = []
    for instance in instances:
        params = [xp.asarray(p) for p in instance.params]
        batches = xp.asarray(instance.batches) if instance.batches is not None else None
        jobs.append(_Job(instance, {k: xp.asarray(v) for k, v in instance.data.items()}, batches,
                         [p.shape for p in params], TrainResult(params=params, state=None)))
    states = rule.init([job.result.params for job in jobs], [job.instance.spec.steps for job in jobs], xp)
    for job, state in zip(jobs, states, strict=True):
        job.result.state = state
    t = 0
    while True:
        t += 1
        active = [job for job in jobs if not job.done and t <= job.instance.spec.steps]
        stepping: list[tuple[_Job, list[Any]]] = []
        for job in active:
            rows = job.batches[t - 1] if job.batches is not None else None
            loss, grads = loss_and_grads(xp, job.instance.spec, job.data, job.result.params, rows)
            value = float(loss)
            if record_every and (t == 1 or t % record_every == 0):
                job.result.losses.append(value)
            if not math.isfinite(value):
                job.result.diverged = job.done = True
                continue
            stepping.append((job, grads))
        if not stepping:
            return [job.result for job in jobs]
        outputs = rule.step([(job.result.params, grads, job.result.state, t) for job, grads in stepping], xp)
        for (job, _), (new_params, state) in zip(stepping, outputs, strict=True):
            if not isinstance(new_params, list | tuple) or len(new_params) != len(job.shapes):
                raise TypeError(f"step() must return a list of {len(job.shapes)} parameter arrays")
            for i, (p, shape) in enumerate(zip(new_params, job.shapes, strict=True)):
                if getattr(p, "shape", None) != shape:
                    raise ValueError(f"step() returned parameter {i} with shape {getattr(p, 'shape', None)}, "
                                     f"expected {shape}")
            job.result.params, job.result.state = list(new_params), state
            job.result.steps_done = t


def train(xp: Any, instance: Instance, init_state: InitFn, step: StepFn, record_every: int = 0) -> TrainResult:
    """Run ``steps`` optimizer steps of plain functions on one instance (``train_many`` with a ``LocalRule``)."""
    return train_many(xp, [instance], LocalRule(init_state, step), record_every)[0]


def state_buffers(sizes: Sequence[int], params: Sequence[Any]) -> float:
    """Optimizer memory in parameter copies: array elements held in a state / parameter elements."""
    total = sum(int(getattr(p, "size", 1)) for p in params)
    return sum(int(n) for n in sizes) / max(total, 1)


def instance_seed(evaluation_seed: int, suite: str, task_index: int, repeat: int) -> int:
    """Seed of one task instance, derived from the trusted per-evaluation seed."""
    tag = sum(ord(c) << (8 * (i % 4)) for i, c in enumerate(suite))
    return int(np.random.SeedSequence([evaluation_seed % 2**63, tag, task_index, repeat]).generate_state(1)[0])
