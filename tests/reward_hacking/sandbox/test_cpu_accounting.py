"""CPU time is measured on the trusted side, for the candidate's whole process tree, whatever the candidate does to
its own clocks: import-time work, patched clocks, waited-for, orphaned and auto-reaped helpers."""

from __future__ import annotations

import os

import pytest

from evolve.sandbox import Layer, SandboxConfig, format_level, make_sandbox

from .hostile import assert_host_unharmed, run_program

BURN = 0.3  # CPU seconds per piece of work in programs/hidden_cpu.py (import + three helpers)
MARGIN = 0.7  # the figure must show at least this share of the work (rounding, a loaded machine)


@pytest.fixture(scope="module")
def sandbox():
    return make_sandbox(config=SandboxConfig(layers=os.environ.get("EVOLVE_TEST_SANDBOX_LAYERS", "")))


@pytest.fixture(scope="module")
def proc_sandbox(sandbox):
    """The fallback meter: the same layers without the cgroup."""
    return make_sandbox(config=SandboxConfig(layers=format_level(sandbox.layers - {Layer.CGROUP})))


def test_cgroup_accounting_sees_every_helper_and_import_time(sandbox):
    if Layer.CGROUP not in sandbox.layers:
        pytest.skip(f"no cgroup layer here: {sandbox.probe.why(Layer.CGROUP)}")
    outcome = run_program(sandbox, "hidden_cpu.py")
    assert outcome.accounting == "cgroup"
    assert outcome.replies[-1]["ok"], outcome
    assert outcome.value["helpers_done"] == 3
    assert outcome.value["cpu_seconds"] == 0.0  # what the candidate claims
    assert outcome.cpu_after_import >= MARGIN * BURN
    assert outcome.cpu_before_close >= MARGIN * 4 * BURN
    assert outcome.cpu_final >= outcome.cpu_before_close
    assert_host_unharmed(sandbox)


def test_proc_fallback_sees_all_but_an_unsampled_auto_reaped_helper(proc_sandbox):
    outcome = run_program(proc_sandbox, "hidden_cpu.py")
    assert outcome.accounting == "proc"
    assert outcome.replies[-1]["ok"], outcome
    assert outcome.value["helpers_done"] == 3
    assert outcome.cpu_after_import >= MARGIN * BURN
    # import + waited-for + orphaned helper: the auto-reaped one is the fallback's documented blind spot
    assert outcome.cpu_final >= MARGIN * 3 * BURN
    assert_host_unharmed(proc_sandbox)
