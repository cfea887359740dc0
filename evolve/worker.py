"""Evaluation as Ray tasks: one task per (program, stage), with the resources the stage declares.

Untrusted evaluations are tasks, not actor methods: a task lost with its worker or node is retried elsewhere, and
no long-lived process accumulates state from candidates. Candidate failures come back as results; only
infrastructure failures surface as Ray errors, which the driver resubmits.
"""

from __future__ import annotations

import hashlib
import socket
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayError, RayTaskError

from evolve.cluster import localize
from evolve.evaluation import run_stage
from evolve.problem import Problem, StageSpec
from evolve.sandbox import ForkServerError, Sandbox, SandboxConfig, SandboxUnavailable, sandbox_for_problem
from evolve.types import StageOutcome, Status


def evaluation_seed(run_seed: int, program_id: str) -> int:
    """Seed for the trusted side's random inputs; derived from data the candidate never sees."""
    digest = hashlib.sha256(f"{run_seed}:{program_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def heldout_seed(run_seed: int, program_id: str) -> int:
    """Seed of a program's held-out stages: another stream than its visible evaluation's (fresh inputs)."""
    return evaluation_seed(run_seed, f"heldout:{program_id}")


def reevaluation_seed(run_seed: int, program_id: str, index: int) -> int:
    """Seed of a program's ``index``-th re-evaluation of the visible cascade (the flaky check)."""
    return evaluation_seed(run_seed, f"reevaluation:{index}:{program_id}")


def make_stage_sandbox(problem: Problem, stage: StageSpec, sandbox_settings: SandboxConfig | None) -> Sandbox:
    """The sandbox a stage's candidates run in (GPU stages get GPU-aware limits)."""
    return sandbox_for_problem(problem, sandbox_settings, stage)


def _evaluate_stage(problem: Problem, stage_name: str, code: str, program_id: str, seed: int,
                    sandbox_settings: Any) -> dict[str, Any]:
    problem = localize(problem)
    try:
        sandbox = make_stage_sandbox(problem, problem.stage(stage_name), sandbox_settings)
    except (SandboxUnavailable, ForkServerError) as exc:
        # A node below the run's sandbox floor (one that joined after the start-up check, or lost a layer): the
        # infrastructure's fault, never the candidate's or the evaluator's, and said with the node's name.
        outcome = StageOutcome(stage=stage_name, status=Status.SYSTEM_ERROR,
                               message=f"node {socket.gethostname()} cannot run candidates: {exc}"[:2000])
    else:
        outcome = run_stage(problem, stage_name, code, program_id, seed, sandbox=sandbox)
    data = outcome.to_dict()
    try:
        data["node"] = ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - outside Ray (tests calling directly)
        data["node"] = ""
    return data


_remote_stage = ray.remote(_evaluate_stage)
# Stage tasks submitted and not yet collected. A run's driver abandons what is in flight when it stops (the tasks end
# with its Ray job); in the warm runner (evolve.runner_process) the job outlives the run, which waits for them.
_uncollected: set[Any] = set()


def take_uncollected() -> list[Any]:
    """The stage tasks submitted in this process and never collected; forgotten from now on."""
    refs = list(_uncollected)
    _uncollected.clear()
    return refs


def stage_options(stage: StageSpec) -> dict[str, Any]:
    """Ray resource request for a stage; GPU stages only land on nodes that declare GPUs."""
    # SPREAD keeps every node busy as a cluster grows (measured: 94% vs 92% scaling efficiency at 8 nodes).
    options: dict[str, Any] = {"num_cpus": stage.cpus, "max_retries": 3, "retry_exceptions": False,
                               "scheduling_strategy": "SPREAD"}
    if stage.gpus:
        options["num_gpus"] = stage.gpus
    if stage.resources:
        options["resources"] = dict(stage.resources)
    return options


class RayStageExecutor:
    """Submits stage tasks and collects finished ones; the problem object is shipped once through the store."""

    def __init__(self, problem: Problem, sandbox_settings: Any = None):
        self.problem = problem
        self.problem_ref = ray.put(problem)
        self.sandbox_settings = sandbox_settings
        # Every stage of either role (held-out stages are submitted by evolve.oversight, never by the cascade).
        self._tasks = {stage.name: _remote_stage.options(**stage_options(stage)) for stage in problem.all_stages}

    def submit(self, stage_index: int, code: str, program_id: str, seed: int) -> Any:
        """Submit the visible cascade's stage ``stage_index``."""
        return self.submit_stage(self.problem.stages[stage_index], code, program_id, seed)

    def submit_stage(self, stage: StageSpec, code: str, program_id: str, seed: int) -> Any:
        ref = self._tasks[stage.name].remote(self.problem_ref, stage.name, code, program_id, seed,
                                             self.sandbox_settings)
        _uncollected.add(ref)
        return ref

    @staticmethod
    def wait(refs: list[Any], timeout: float) -> list[Any]:
        """Refs that are done now (at least one unless ``timeout`` passes)."""
        if not refs:
            return []
        ready, _ = ray.wait(refs, num_returns=1, timeout=timeout)
        if ready:
            more, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
            return more or ready
        return []

    def result(self, ref: Any, stage_index: int) -> StageOutcome | None:
        """The stage outcome, or ``None`` when the task was lost to the system and should be resubmitted."""
        return self.stage_result(ref, self.problem.stages[stage_index])

    @staticmethod
    def stage_result(ref: Any, stage: StageSpec) -> StageOutcome | None:
        _uncollected.discard(ref)
        try:
            return StageOutcome.from_dict(ray.get(ref, timeout=30))
        except RayTaskError as exc:
            # Our task code does not raise for candidate behaviour, so this is a bug in trusted code.
            return StageOutcome(stage=stage.name, status=Status.EVALUATOR_ERROR,
                                message=f"evaluation task raised: {exc.cause!r}"[:2000])
        except (RayError, GetTimeoutError):
            return None


def system_error(stage: StageSpec, attempts: int) -> StageOutcome:
    return StageOutcome(stage=stage.name, status=Status.SYSTEM_ERROR,
                        message=f"evaluation lost to infrastructure failures {attempts} times (worker or node died)")
