"""A fast start for ``evolve run``: what does not depend on Ray runs beside Ray's own start.

Ray's start (its processes, then a worker per CPU) takes seconds; evolve's own start-up work takes about one more:
the sandbox's host probe (a fork server started to try every isolation layer), importing the loop (Ray, PyArrow,
the LLM client), and on the Ray side a fork server per worker. So:

* ``Background`` runs the probe in a thread started before Ray is touched (it waits on a subprocess, so it costs
  this process almost nothing); its errors are raised where the caller collects it, before Ray starts.
* ``preload_modules`` imports the loop's modules in a thread while ``ray.init`` waits for Ray's processes.
* ``warm_workers`` asks every CPU slot's worker to start its fork server as soon as Ray is up, so the seed's and
  the first children's evaluations do not each pay for a worker's start in turn.
* ``connect`` starts or joins Ray (``evolve.ray_local`` decides which) without Ray's start-up chatter unless
  verbose.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

from evolve.problem import Problem
from evolve.ray_local import RayTarget, TargetKind, init_kwargs

T = TypeVar("T")

# What `evolve run` imports after Ray is up (the loop, the archive writer, the live display).
LOOP_MODULES = ("evolve.loop", "evolve.archive", "evolve.live", "evolve.worker", "evolve.records", "pyarrow.parquet")
WARM_LIMIT = 64  # warm-up tasks at most (a large cluster warms as tasks arrive)


class StartupError(RuntimeError):
    """Ray could not be started or joined; the message says which and why."""


class Background(Generic[T]):
    """``fn()`` running in a daemon thread; ``result()`` waits for it and returns its value or raises its error."""

    def __init__(self, fn: Callable[[], T], name: str = "evolve-startup"):
        self._fn = fn
        self._value: T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._value = self._fn()
        except BaseException as exc:  # noqa: BLE001 - handed to whoever collects the result
            self._error = exc

    def done(self) -> bool:
        return not self._thread.is_alive()

    def wait(self, timeout: float) -> bool:
        """Wait at most ``timeout`` seconds; whether it is done."""
        self._thread.join(max(0.0, timeout))
        return self.done()

    def result(self) -> T:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]


def preload_modules(names: Iterable[str] = LOOP_MODULES) -> Background[None]:
    """Import ``names`` in the background (an import error surfaces later, where the module is really used)."""

    def load() -> None:
        for name in names:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001, S112 - the real import reports it
                continue

    return Background(load, name="evolve-imports")


def connect(target: RayTarget, problem: Problem, num_cpus: int | None = None, *, dashboard: bool = False,
            verbose: bool = False, meanwhile: Callable[[], Any] | None = None) -> Any:
    """Start or join Ray as ``target`` says; raise ``StartupError`` with one clear message.

    ``meanwhile`` is called once Ray is imported, just before ``ray.init`` (to start work that runs beside it, such
    as ``preload_modules``); its result is returned."""
    import os
    import sys

    loaded = sys.modules.get("ray")
    if loaded is not None and loaded.is_initialized():
        return meanwhile() if meanwhile else None  # a process that already runs Ray (a notebook, a test)
    kwargs = init_kwargs(target, num_cpus, dashboard=dashboard, verbose=verbose)  # sets what Ray reads on import
    import ray

    if target.kind is TargetKind.GIVEN:
        from evolve.cluster import ShippingError, problem_runtime_env

        if "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ:
            # Under `ray job submit` the job's own runtime_env would clash with ours; the problem folder must win.
            os.environ["RAY_OVERRIDE_JOB_RUNTIME_ENV"] = "1"
        # On another machine's cluster the problem folder travels with the job; the engine is installed there.
        try:
            kwargs["runtime_env"] = problem_runtime_env(problem)
        except ShippingError as exc:
            raise StartupError(str(exc)) from None
    started = meanwhile() if meanwhile else None
    try:
        ray.init(**kwargs)
    except Exception as exc:  # noqa: BLE001 - Ray's errors are long; say what failed and where
        where = target.address or "local"
        hint = ""
        if target.kind is TargetKind.GIVEN and "RAY_AUTH_MODE" not in os.environ:
            hint = " (a cluster with token authentication needs RAY_AUTH_MODE=token and its token here)"
        raise StartupError(f"could not start or join Ray ({where}): {exc}{hint}") from None
    return started


def _warm_worker(preload: tuple[str, ...]) -> str:
    """Runs on a Ray worker: import what a stage task needs and start this worker's fork server."""
    try:
        import evolve.worker  # noqa: F401 - the stage task's module
        from evolve.sandbox import get_forkserver

        get_forkserver(preload)
    except Exception as exc:  # noqa: BLE001 - the stage task meets the same problem and reports it properly
        return f"not warmed: {exc}"
    return "warm"


def warm_workers(problem: Problem, sandbox_config: Any, concurrency: int | None = None) -> list[Any]:
    """Start a fork server on up to one worker per CPU slot of the first stage; returns the task refs (nobody needs
    to wait for them: stage tasks queue behind and find warm workers)."""
    import ray

    from evolve.cluster import cluster_view

    stage = problem.stages[0]
    if stage.gpus or stage.resources:
        return []  # special workers: leave their placement to the stage tasks
    slots = int(cluster_view().cpus // max(stage.cpus, 1e-9))
    count = max(0, min(slots, concurrency or slots, WARM_LIMIT))
    preload = tuple(getattr(sandbox_config, "preload", ("numpy",)))
    task = ray.remote(_warm_worker).options(num_cpus=stage.cpus, scheduling_strategy="SPREAD", max_retries=0)
    return [task.remote(preload) for _ in range(count)]


class _LocalRef:
    """A stage of the seed evaluated here (``SeedAhead``), standing in for a Ray object ref."""

    __slots__ = ("stage_index",)

    def __init__(self, stage_index: int):
        self.stage_index = stage_index


class SeedAhead:
    """A stage executor that has the seed's stages evaluated here, in this process's sandbox (what ``evolve eval``
    does), while Ray starts; every other evaluation goes to the Ray executor given by ``attach``.

    Only for a Ray on this machine and CPU-only stages: the seed's evaluation then runs where a worker would run it,
    under the same sandbox, with the same evaluation seed; it just does not wait for a Ray worker to start. Each
    stage is served once: a resubmission (after a lost result) goes to Ray.
    """

    def __init__(self, problem: Problem, sandbox_config: Any, run_seed: int, after: Background[Any] | None = None):
        from evolve.types import program_id_for

        code = problem.seed_code()
        self.program_id = program_id_for(code)
        self.seed: int | None = None  # the evaluation seed, derived in the thread (evolve.worker imports Ray)
        self._keyed = threading.Event()
        self._served: set[int] = set()
        self._ray: Any = None

        def evaluate() -> list[Any]:
            try:
                from evolve.worker import evaluation_seed

                self.seed = evaluation_seed(run_seed, self.program_id)
            finally:
                self._keyed.set()
            from evolve.evaluation import run_stage
            from evolve.sandbox import sandbox_for_problem

            if after is not None:
                after.result()  # the host probe: its failure is reported by whoever started it
            outcomes = []
            for stage in problem.stages:
                outcome = run_stage(problem, stage.name, code, self.program_id, self.seed,
                                    sandbox=sandbox_for_problem(problem, sandbox_config, stage))
                outcomes.append(outcome)
                if not outcome.passed:
                    break
            return outcomes

        self._outcomes = Background(evaluate, name="evolve-seed-ahead")

    @staticmethod
    def applies(problem: Problem) -> bool:
        return all(not stage.gpus and not stage.resources for stage in problem.stages)

    def attach(self, executor: Any) -> SeedAhead:
        self._ray = executor
        return self

    def _outcome(self, stage_index: int) -> Any:
        try:
            outcomes = self._outcomes.result()
        except Exception:  # noqa: BLE001 - evaluated here or not, the stage is Ray's to run then
            return None
        return outcomes[stage_index] if stage_index < len(outcomes) else None

    def submit(self, stage_index: int, code: str, program_id: str, seed: int) -> Any:
        if program_id == self.program_id and stage_index not in self._served and self._keyed.wait(60) \
                and seed == self.seed:
            self._served.add(stage_index)
            return _LocalRef(stage_index)
        return self._ray.submit(stage_index, code, program_id, seed)

    def wait(self, refs: list[Any], timeout: float) -> list[Any]:
        local = [r for r in refs if isinstance(r, _LocalRef)]
        remote = [r for r in refs if not isinstance(r, _LocalRef)]
        if not local:
            return self._ray.wait(remote, timeout)
        done = self._outcomes.wait(min(timeout, 0.05) if remote else timeout)
        ready = local if done else []
        return ready + (self._ray.wait(remote, 0.0 if ready else timeout) if remote else [])

    def result(self, ref: Any, stage_index: int) -> Any:
        """The stage outcome; ``None`` (the loop resubmits, to Ray then) if it could not be evaluated here."""
        if not isinstance(ref, _LocalRef):
            return self._ray.result(ref, stage_index)
        return self._outcome(ref.stage_index)
