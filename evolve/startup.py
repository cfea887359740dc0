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

import concurrent.futures as cf
import dataclasses
import importlib
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

from evolve.problem import Problem
from evolve.ray_local import RayTarget, TargetKind, init_kwargs, prepare_environment

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

    if "ray" in sys.modules:  # imported already (maybe by another thread: this import then waits for it)
        import ray

        if ray.is_initialized():
            return meanwhile() if meanwhile else None  # a process that already runs Ray (a notebook, a test)
    prepare_environment(target, verbose)
    kwargs = init_kwargs(target, num_cpus, dashboard=dashboard, verbose=verbose)
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


def warm_workers(problem: Problem, sandbox_config: Any, concurrency: int | None = None,
                 local_slots: int = 0) -> list[Any]:
    """Start a fork server on up to one worker per CPU slot of the first stage, but for the ``local_slots`` this
    process evaluates in itself (``LocalFirst``); returns the task refs (nobody needs to wait for them: stage tasks
    queue behind and find warm workers)."""
    import ray

    from evolve.cluster import cluster_view

    stage = problem.stages[0]
    if stage.gpus or stage.resources:
        return []  # special workers: leave their placement to the stage tasks
    slots = int(cluster_view().cpus // max(stage.cpus, 1e-9))
    count = max(0, min(slots, concurrency or slots, WARM_LIMIT) - local_slots)
    preload = tuple(getattr(sandbox_config, "preload", ("numpy",)))
    task = ray.remote(_warm_worker).options(num_cpus=stage.cpus, scheduling_strategy="SPREAD", max_retries=0)
    return [task.remote(preload) for _ in range(count)]


_local_uncollected: set[cf.Future[Any]] = set()  # LocalFirst's evaluations not done (see worker.take_uncollected)


def take_local_uncollected() -> list[cf.Future[Any]]:
    """``LocalFirst`` evaluations of this process still running; forgotten from now on."""
    futures = [f for f in _local_uncollected if not f.done()]
    _local_uncollected.clear()
    return futures


def _track(future: cf.Future[Any]) -> cf.Future[Any]:
    _local_uncollected.add(future)
    future.add_done_callback(_local_uncollected.discard)
    return future


class _LocalRef:
    """An evaluation made here (``LocalFirst``), standing in for a Ray object ref."""

    __slots__ = ("future", "index")

    def __init__(self, future: cf.Future[Any], index: int | None = None):
        self.future = future
        self.index = index  # the seed's stage (its stages are evaluated together, in order); None otherwise


class LocalFirst:
    """A stage executor that evaluates here, in this process's sandbox (what ``evolve eval`` does), in one slot of
    its own, and hands what that slot cannot take to the Ray executor given by ``attach``.

    A Ray worker takes a second or more to start (an interpreter, Ray, evolve, its fork server), and a new run
    starts its own workers even on a Ray that is already running: short runs would spend much of their time
    waiting for them. Meanwhile this process (its fork server already started for the host probe) evaluates: first
    the seed, begun before Ray is even up, then the first children, one at a time, until the first warm-up task
    (``warm_workers``) is done. From then on its slot keeps taking children whenever it is free, the others going to
    Ray: the run's concurrency (the cluster's slots) is unchanged, one fewer worker is started for it
    (``warm_workers(local_slots=1)``), and the evaluations made here skip a Ray task's round trip (measured: 200
    iterations of the peer benchmark's toy problem 10-20% faster). Only for a Ray on this machine and CPU-only
    stages: an evaluation here runs where a worker would, under the same sandbox and with the same evaluation
    seed; the trusted evaluator runs in this trusted process instead of a worker's.
    """

    def __init__(self, problem: Problem, sandbox_config: Any, run_seed: int | None,
                 after: Background[Any] | None = None, slots: int = 1):
        self._pool = cf.ThreadPoolExecutor(max_workers=slots, thread_name_prefix="evolve-local-eval")
        self._ray: Any = None
        self._node = ""
        self._problem, self._config = problem, sandbox_config
        self._warm_refs: list[Any] = []
        self._warm = False
        self._seed: tuple[str, int] | None = None  # (program id, evaluation seed) of the seed evaluated ahead
        self._seed_future: cf.Future[list[Any]] | None = None
        self._local: list[cf.Future[Any]] = []  # evaluations submitted here and not done
        self._served: set[int] = set()
        self._after = after
        if run_seed is not None:
            # evolve.worker imports Ray: here, in the caller's thread, rather than beside another import of it.
            from evolve.types import program_id_for
            from evolve.worker import evaluation_seed

            code = problem.seed_code()
            program_id = program_id_for(code)
            self._seed = (program_id, evaluation_seed(run_seed, program_id))
            self._seed_future = _track(self._pool.submit(self._evaluate_seed, problem, sandbox_config, code))
            self._local.append(self._seed_future)

    @staticmethod
    def applies(problem: Problem) -> bool:
        return all(not stage.gpus and not stage.resources for stage in problem.stages)

    def _evaluate_seed(self, problem: Problem, config: Any, code: str) -> list[Any]:
        assert self._seed is not None
        if self._after is not None:
            self._after.result()  # the host probe: its failure is reported by whoever started it
        outcomes = []
        for stage in problem.stages:
            outcome = self._evaluate(problem, config, stage.name, code, *self._seed)
            outcomes.append(outcome)
            if not outcome.passed:
                break
        return outcomes

    @staticmethod
    def _evaluate(problem: Problem, config: Any, stage_name: str, code: str, program_id: str, seed: int) -> Any:
        from evolve.evaluation import run_stage
        from evolve.sandbox import sandbox_for_problem

        sandbox = sandbox_for_problem(problem, config, problem.stage(stage_name))
        return run_stage(problem, stage_name, code, program_id, seed, sandbox=sandbox)

    def attach(self, executor: Any, warm_refs: list[Any], problem: Problem, sandbox_config: Any) -> LocalFirst:
        """From now on: ``executor`` once a warm-up task in ``warm_refs`` is done (never local without them);
        ``problem`` and ``sandbox_config`` as the run has them (a resume may bring its stored tables)."""
        import ray

        self._ray, self._warm_refs = executor, list(warm_refs)
        self._problem, self._config = problem, sandbox_config
        self._node = ray.get_runtime_context().get_node_id()  # where evaluations made here ran, as Ray names it
        return self

    def _workers_warm(self) -> bool:
        if not self._warm:
            if not self._warm_refs:
                self._warm = True
            else:
                import ray

                ready, _ = ray.wait(self._warm_refs, num_returns=1, timeout=0)
                self._warm = bool(ready)
        return self._warm

    def submit(self, stage_index: int, code: str, program_id: str, seed: int) -> Any:
        if self._seed_future is not None and stage_index not in self._served and self._seed == (program_id, seed):
            self._served.add(stage_index)
            return _LocalRef(self._seed_future, stage_index)
        return self.submit_stage(self._problem.stages[stage_index], code, program_id, seed)

    def submit_stage(self, stage: Any, code: str, program_id: str, seed: int) -> Any:
        """Any stage by its spec (oversight's held-out stages and re-evaluations): here until a worker is warm (a
        short run's first check, the seed's, would otherwise wait for one); then here whenever this process's
        slot is free, else a Ray task."""
        if stage.gpus or stage.resources or (self._workers_warm() and self._local_busy()):
            return self._ray.submit_stage(stage, code, program_id, seed)
        future = _track(self._pool.submit(self._evaluate, self._problem, self._config, stage.name, code, program_id,
                                          seed))
        self._local.append(future)
        return _LocalRef(future)

    def _local_busy(self) -> bool:
        self._local = [f for f in self._local if not f.done()]
        return bool(self._local)

    def stage_result(self, ref: Any, stage: Any) -> Any:
        """The stage outcome; ``None`` (the caller resubmits) if it could not be evaluated here."""
        if not isinstance(ref, _LocalRef):
            return self._ray.stage_result(ref, stage)
        try:
            value = ref.future.result()
        except Exception:  # noqa: BLE001 - an infrastructure failure here: resubmitted
            return None
        outcome = value if ref.index is None else (value[ref.index] if ref.index < len(value) else None)
        return dataclasses.replace(outcome, node=self._node) if outcome is not None else None

    def wait(self, refs: list[Any], timeout: float) -> list[Any]:
        local = [r for r in refs if isinstance(r, _LocalRef)]
        remote = [r for r in refs if not isinstance(r, _LocalRef)]
        if not local:
            return self._ray.wait(remote, timeout)
        deadline = time.monotonic() + timeout
        while True:
            ready = [r for r in local if r.future.done()]
            ready += self._ray.wait(remote, 0) if remote else []
            left = deadline - time.monotonic()
            if ready or left <= 0:
                return ready
            cf.wait([r.future for r in local], timeout=min(left, 0.02) if remote else left,
                    return_when=cf.FIRST_COMPLETED)

    def result(self, ref: Any, stage_index: int) -> Any:
        return self.stage_result(ref, self._problem.stages[stage_index])
