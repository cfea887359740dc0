"""The sandbox's resources under attack: disk and inode filling in scratch, sockets that leave the network namespace,
more cores than declared, and uid collisions between concurrent candidates. Each attack fails with the right
error (or is killed, with the reason in its stderr), and the host is unharmed."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass

import pytest

from evolve.problem import Limits
from evolve.sandbox import Layer, SandboxConfig, format_level, leases, make_sandbox
from evolve.sandbox.layers import unavailable_reason

from .hostile import assert_host_unharmed, run_program

SCRATCH_MB = 16


@dataclass(frozen=True)
class SmallScratch(Limits):
    """Limits with a small ``scratch_mb`` (the field ``[limits] scratch_mb`` parses into)."""

    scratch_mb: int = SCRATCH_MB


def _layers() -> str:
    return os.environ.get("EVOLVE_TEST_SANDBOX_LAYERS", "")


@pytest.fixture(scope="module")
def capped():
    return make_sandbox(SmallScratch(), SandboxConfig(layers=_layers()))


@pytest.fixture(scope="module")
def watched(capped):
    """The fallback where the launcher may not mount: the monitor watches the scratch dir."""
    layers = (capped.layers - {Layer.SCRATCHFS}) | {Layer.DISKWATCH}
    return make_sandbox(SmallScratch(), SandboxConfig(layers=format_level(layers)))


@pytest.fixture
def host_tmp():
    before = shutil.disk_usage(tempfile.gettempdir()).free
    yield
    # Other engineers' tests share this disk: only a drop far beyond anything they write counts.
    assert shutil.disk_usage(tempfile.gettempdir()).free > before - 256 * 1024 * 1024


# ----------------------------------------------------------------------------------------------------- disk


@pytest.mark.parametrize("hidden", [False, True], ids=["files", "unlinked-open-files"])
def test_disk_filling_stops_at_the_scratch_cap(capped, host_tmp, hidden):
    if Layer.SCRATCHFS not in capped.layers:
        pytest.skip(f"no scratchfs layer here: {unavailable_reason(capped.probe, Layer.SCRATCHFS)}")
    outcome = run_program(capped, "fill_disk.py", kwargs={"limit_mb": 4 * SCRATCH_MB, "hidden": hidden})
    assert outcome.replies[-1]["ok"], outcome
    assert outcome.value["error"] == "ENOSPC"
    assert outcome.value["written_mb"] <= SCRATCH_MB
    assert_host_unharmed(capped)


@pytest.mark.parametrize("hidden", [False, True], ids=["files", "unlinked-open-files"])
def test_disk_filling_is_killed_by_the_watch_without_scratchfs(watched, host_tmp, hidden):
    # Up to 1 GB: far past the 16 MB cap, so that the 0.25 s watch interval always falls inside the attack.
    outcome = run_program(watched, "fill_disk.py", kwargs={"limit_mb": 1024, "hidden": hidden})
    assert outcome.error == "died", outcome
    assert "over its cap" in outcome.stderr
    assert_host_unharmed(watched)


def test_inode_filling_stops_at_the_file_cap(capped, host_tmp):
    if Layer.SCRATCHFS not in capped.layers:
        pytest.skip(f"no scratchfs layer here: {unavailable_reason(capped.probe, Layer.SCRATCHFS)}")
    outcome = run_program(capped, "fill_inodes.py")
    assert outcome.replies[-1]["ok"], outcome
    assert outcome.value["error"] == "ENOSPC"
    assert outcome.value["files"] <= 1024  # files_for(16 MB): the floor of 1024 inodes
    assert_host_unharmed(capped)


def test_inode_filling_is_killed_by_the_watch_without_scratchfs(watched, host_tmp):
    outcome = run_program(watched, "fill_inodes.py")
    assert outcome.error == "died", outcome
    assert "over its cap" in outcome.stderr
    assert_host_unharmed(watched)


def test_trusted_side_reads_and_writes_the_capped_scratch(capped):
    """The evaluator writes inputs and reads results through ``candidate.scratch``: the tmpfs is the same dir."""
    work = capped.make_scratch()
    try:
        (work / "input.txt").write_text("from the evaluator")
        result = capped.run(["sh", "-c", "cat input.txt > output.txt; stat -f -c %T ."], work, timeout=30)
        assert result.ok, result
        assert (work / "output.txt").read_text() == "from the evaluator"
        if Layer.SCRATCHFS in capped.layers:
            assert result.stdout.strip() == "tmpfs" and os.path.ismount(work)
    finally:
        capped.remove_scratch(work)
    assert not work.parent.exists()


# ----------------------------------------------------------------------------------------------------- sockets


@pytest.mark.parametrize("network", ["netns", "nonet"])
def test_only_unix_and_inet_sockets_open(capped, network):
    requires = Layer.NETNS if network == "netns" else Layer.SECCOMP
    if requires not in capped.probe.available():
        pytest.skip(f"no {requires.value} layer here")
    sandbox = capped if network == "netns" else make_sandbox(SmallScratch(), SandboxConfig(
        layers=format_level((capped.layers - {Layer.NETNS}) | {Layer.NONET, Layer.SECCOMP})))
    if Layer.SECCOMP not in sandbox.layers:
        pytest.skip("no seccomp layer here: no socket-family filter")
    outcome = run_program(sandbox, "sockets.py")
    assert outcome.replies[-1]["ok"], outcome
    families = outcome.value
    assert families["unix"] == "open" and families["socketpair_unix"] == "open"
    for name in ("vsock", "netlink_route", "netlink_audit", "netlink_uevent", "packet", "bluetooth", "tipc"):
        assert families[name] == "EAFNOSUPPORT", (name, families)
    assert_host_unharmed(sandbox)


# ----------------------------------------------------------------------------------------------------- cores


def test_a_one_cpu_stage_gets_one_core_whatever_it_does(capped):
    outcome = run_program(capped, "grab_cores.py", kwargs={"seconds": 1.5})
    assert outcome.replies[-1]["ok"], outcome
    cores = outcome.value
    assert len(cores["before"]) == 1 and cores["after"] == cores["before"]
    if Layer.SECCOMP in capped.layers:
        assert cores["widened"] == "EPERM"
    # Busy processes and threads on "every core" for `wall` seconds got at most one core's worth of CPU.
    used = outcome.cpu_before_close - outcome.cpu_after_import
    assert used <= 1.2 * cores["wall"] + 0.2, (used, cores["wall"])
    assert_host_unharmed(capped)


def test_concurrent_candidates_spread_over_the_cores(tmp_path):
    allowed = [0, 1, 2]
    first, second, third, fourth = (leases.Lease() for _ in range(4))
    for lease in (first, second, third):
        leases.take_cores(lease, str(tmp_path), 1, allowed)
    assert sorted(first.cores + second.cores + third.cores) == allowed  # one each before any core is shared
    leases.take_cores(fourth, str(tmp_path), 2, allowed)
    assert len(fourth.cores) == 2
    second.release()
    again = leases.Lease()
    leases.take_cores(again, str(tmp_path), 1, allowed)
    assert again.cores == second.cores  # the freed core is the least loaded one
    for lease in (first, third, fourth, again):
        lease.release()


# ----------------------------------------------------------------------------------------------------- uids


def _take_uids(directory: str, count: int, ready, release, results) -> None:
    lease = leases.Lease()
    try:
        leases.take_uid(lease, directory, 1_700_000_000, count)
        results.put(lease.uid)
    except leases.LeaseError:
        results.put(None)
    ready.wait()
    release.wait()
    lease.release()


def test_uids_never_collide_across_processes(tmp_path):
    ctx = multiprocessing.get_context("fork")
    ready, release, results = ctx.Barrier(7), ctx.Event(), ctx.Queue()
    workers = [ctx.Process(target=_take_uids, args=(str(tmp_path), 6, ready, release, results)) for _ in range(6)]
    for worker in workers:
        worker.start()
    taken = [results.get(timeout=30) for _ in workers]
    ready.wait(timeout=30)
    assert sorted(taken) == list(range(1_700_000_000, 1_700_000_006))  # six processes, six distinct uids
    extra = leases.Lease()
    with pytest.raises(leases.LeaseError):  # all six are held: a seventh candidate gets none rather than a shared one
        leases.take_uid(extra, str(tmp_path), 1_700_000_000, 6)
    release.set()
    for worker in workers:
        worker.join(timeout=30)
    leases.take_uid(extra, str(tmp_path), 1_700_000_000, 6)  # released with the processes
    extra.release()
    assert os.listdir(tmp_path) == []  # uid lease files go with their lease


def test_concurrent_candidates_of_one_launcher_get_distinct_uids(capped):
    if Layer.UID not in capped.layers or not capped.probe.root:
        pytest.skip(f"no fresh uids here (a root launcher with the uid layer): {unavailable_reason(capped.probe, Layer.UID)}")
    sandbox = make_sandbox(SmallScratch(), SandboxConfig(layers=format_level(capped.layers),
                                                         uid_base=1_700_100_000, uid_count=4))
    dirs, lock = [], threading.Lock()

    def make() -> None:
        work = sandbox.make_scratch()
        with lock:
            dirs.append(work)

    threads = [threading.Thread(target=make) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        uids = sorted(sandbox.scratch_uid(work) for work in dirs)
        assert uids == list(range(1_700_100_000, 1_700_100_004))
        assert sorted(os.stat(work).st_uid for work in dirs) == uids
        with pytest.raises(Exception, match="in use"):
            sandbox.make_scratch()
    finally:
        for work in dirs:
            sandbox.remove_scratch(work)
    work = sandbox.make_scratch()  # free again
    sandbox.remove_scratch(work)
    assert_host_unharmed(sandbox)
