"""The fast start's pieces (``evolve.startup``, ``evolve.ray_local.init_kwargs``) without starting Ray."""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import threading

import pytest

from evolve.ray_local import AUTH_ENV, RayTarget, TargetKind, init_kwargs, prepare_environment
from evolve.startup import Background, preload_modules


def test_background_returns_its_value_or_raises_its_error() -> None:
    started = threading.Event()

    def work() -> int:
        started.set()
        return 42

    task = Background(work)
    assert task.result() == 42 and started.is_set() and task.done()
    failing = Background(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        failing.result()


def test_preloading_imports_and_ignores_what_it_cannot() -> None:
    preload_modules(("json", "no_such_module_here")).result()
    import sys

    assert "json" in sys.modules


def test_a_private_instance_is_quiet_unless_verbose(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(AUTH_ENV, raising=False)
    prepare_environment(RayTarget(TargetKind.PRIVATE), verbose=True)
    loud = init_kwargs(RayTarget(TargetKind.PRIVATE), 3, verbose=True)
    assert AUTH_ENV not in __import__("os").environ  # Ray then warns, as it does for anyone
    assert loud["logging_level"] == "INFO" and loud["log_to_driver"] is True
    prepare_environment(RayTarget(TargetKind.PRIVATE))
    quiet = init_kwargs(RayTarget(TargetKind.PRIVATE), 3)
    # The mode Ray picks for a new local instance anyway, set explicitly: no WARNING on every start.
    assert __import__("os").environ[AUTH_ENV] == "token"
    assert quiet == {"logging_level": "WARNING", "log_to_driver": False, "address": "local", "num_cpus": 3,
                     "include_dashboard": False}
    assert init_kwargs(RayTarget(TargetKind.PRIVATE), 3, dashboard=True)["include_dashboard"] is True


def test_a_users_auth_mode_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(AUTH_ENV, "disabled")
    prepare_environment(RayTarget(TargetKind.PRIVATE))
    assert __import__("os").environ[AUTH_ENV] == "disabled"
    given = init_kwargs(RayTarget(TargetKind.GIVEN, address="10.1.2.3:6379"), None)
    assert given["address"] == "10.1.2.3:6379" and "num_cpus" not in given and "include_dashboard" not in given


def test_local_first_answers_every_call_the_ray_executor_answers() -> None:
    """The loop and oversight call the executor they are given; LocalFirst stands in for RayStageExecutor, so it
    must take every call (oversight's held-out stages go through ``submit_stage``/``stage_result``)."""
    from evolve.startup import LocalFirst
    from evolve.worker import RayStageExecutor

    public = {name for name in vars(RayStageExecutor) if not name.startswith("_") and callable(
        getattr(RayStageExecutor, name))}
    assert public and public <= {name for name in dir(LocalFirst) if not name.startswith("_")}


def test_local_first_hands_stages_outside_the_cascade_to_ray_once_warm() -> None:
    from evolve.startup import LocalFirst

    calls: list[tuple[str, object]] = []

    class FakeRay:
        def submit_stage(self, stage: object, code: str, program_id: str, seed: int) -> str:
            calls.append(("submit_stage", stage))
            return "ref"

        def stage_result(self, ref: object, stage: object) -> str:
            calls.append(("stage_result", ref))
            return "outcome"

    from evolve.problem import StageSpec

    local = LocalFirst.__new__(LocalFirst)
    busy: cf.Future[object] = cf.Future()  # this process's own slot is taken
    local._ray, local._warm, local._local = FakeRay(), True, [busy]
    heldout = StageSpec(name="heldout", function="heldout", role="heldout")
    assert local.submit_stage(heldout, "code", "p", 1) == "ref"
    assert local.stage_result("ref", heldout) == "outcome"
    assert calls == [("submit_stage", heldout), ("stage_result", "ref")]
    local._warm = False  # before a worker is warm, a CPU stage is evaluated here; a GPU stage still goes to Ray
    assert local.submit_stage(dataclasses.replace(heldout, gpus=1.0), "code", "p", 1) == "ref"


def test_local_first_keeps_its_own_slot_busy_and_hands_the_rest_to_ray() -> None:
    """Once a worker is warm, a child is evaluated here whenever this process's slot is free, else on Ray."""
    from evolve.problem import StageSpec
    from evolve.startup import LocalFirst, _LocalRef
    from evolve.types import StageOutcome, Status

    class FakeRay:
        def submit_stage(self, stage: object, code: str, program_id: str, seed: int) -> str:
            return f"ray:{program_id}"

    release = threading.Event()
    here: list[str] = []

    def evaluate(problem: object, config: object, stage: str, code: str, program_id: str, seed: int) -> StageOutcome:
        here.append(program_id)
        release.wait(10)
        return StageOutcome(stage=stage, status=Status.OK)

    local = LocalFirst.__new__(LocalFirst)
    local._ray, local._warm, local._local, local._node = FakeRay(), True, [], "node-1"
    local._pool, local._problem, local._config = cf.ThreadPoolExecutor(max_workers=1), None, None
    local._evaluate = evaluate  # type: ignore[method-assign]
    stage = StageSpec(name="score", function="score")
    first = local.submit_stage(stage, "code", "a", 1)
    assert isinstance(first, _LocalRef)
    assert local.submit_stage(stage, "code", "b", 1) == "ray:b"  # the slot is busy
    release.set()
    outcome = local.stage_result(first, stage)
    assert outcome.status is Status.OK and outcome.node == "node-1" and here == ["a"]
    assert isinstance(local.submit_stage(stage, "code", "c", 1), _LocalRef)  # free again: evaluated here
    local._pool.shutdown(wait=True)
    assert here == ["a", "c"]


def test_local_evaluations_still_running_are_handed_to_whoever_waits_for_them() -> None:
    """The warm runner waits for what a stopped run left in flight before its next run (evolve.runner_process)."""
    from evolve.problem import StageSpec
    from evolve.startup import LocalFirst, take_local_uncollected
    from evolve.types import StageOutcome, Status

    release = threading.Event()

    def evaluate(problem: object, config: object, stage: str, code: str, program_id: str, seed: int) -> StageOutcome:
        release.wait(10)
        return StageOutcome(stage=stage, status=Status.OK)

    take_local_uncollected()
    local = LocalFirst.__new__(LocalFirst)
    local._warm, local._local, local._node = True, [], "node-1"
    local._pool, local._problem, local._config = cf.ThreadPoolExecutor(max_workers=1), None, None
    local._evaluate = evaluate  # type: ignore[method-assign]
    local.submit_stage(StageSpec(name="score", function="score"), "code", "a", 1)
    left = take_local_uncollected()
    assert len(left) == 1 and not left[0].done()
    assert take_local_uncollected() == []  # handed over once
    release.set()
    assert cf.wait(left, timeout=10).not_done == set()
    local.submit_stage(StageSpec(name="score", function="score"), "code", "b", 1)
    local._pool.shutdown(wait=True)
    assert take_local_uncollected() == []  # a finished one is not left over


def test_the_loop_does_not_import_the_llm_client() -> None:
    """A run with an offline mutator never pays for the openai package (most of a second to import)."""
    import subprocess
    import sys

    code = "import sys, evolve.loop, evolve.llm; assert 'openai' not in sys.modules, 'openai imported'; " \
           "from evolve.llm import ChatClient; assert 'openai' in sys.modules"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
