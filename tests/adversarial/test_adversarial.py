"""Hostile candidates run through the real launcher (``run_stage`` with the full sandbox), one file per attack.

Each test asserts the specific containment of one attack. Tests needing a layer skip, printing the probe's reason,
when the host lacks it; the two that would harm the host without their layers (``kill(-1)`` and the fork bomb)
only run inside a PID namespace under an unprivileged uid, and the programs re-check that themselves.
After the module: no stray processes, and the problem's and the archive's files are unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from evolve.evaluation import run_stage
from evolve.problem import load_problem
from evolve.sandbox import Layer, SandboxConfig, sandbox_for_problem
from evolve.types import Status, program_id_for

HERE = Path(__file__).resolve().parent
PROGRAMS = HERE / "programs"
PROBLEM = HERE / "problem"


def _hash_tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _proc_table() -> dict[int, tuple[int, str, bytes]]:
    """pid -> (ppid, state, cmdline) for every live process."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_bytes()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()
        table[int(entry)] = (int(fields[1]), fields[0].decode(), cmdline)
    return table


def stray_processes(server_pid: int, marker: str) -> list[str]:
    """Live descendants of the fork server (monitors, inits, candidates) and anything carrying ``marker``."""
    table = _proc_table()
    strays = []
    for pid, (ppid, state, cmdline) in table.items():
        if state == "Z":
            continue
        ancestor, hops = ppid, 0
        while ancestor not in (0, 1, server_pid) and ancestor in table and hops < 64:
            ancestor, hops = table[ancestor][0], hops + 1
        if ancestor == server_pid or marker.encode() in cmdline:
            text = cmdline.replace(b"\0", b" ").decode(errors="replace")[:120]
            strays.append(f"{pid} ({state}): {text}")
    return strays


def wait_no_strays(server_pid: int, marker: str, timeout: float = 2.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        strays = stray_processes(server_pid, marker)
        if not strays or time.monotonic() > deadline:
            return strays
        time.sleep(0.05)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory):
    """A copy of the problem (in a 0700 pytest dir, as real runs often are) and a fake archive next to it."""
    root = tmp_path_factory.mktemp("adversarial")
    problem_dir = root / "problem"
    shutil.copytree(PROBLEM, problem_dir)
    archive = root / "archive"
    archive.mkdir()
    (archive / "segment-0.parquet").write_bytes(b"PAR1" + os.urandom(256) + b"PAR1")
    before = {"problem": _hash_tree(problem_dir), "archive": _hash_tree(archive)}
    yield {"problem": load_problem(problem_dir), "archive": archive, "root": root}
    assert _hash_tree(problem_dir) == before["problem"], "a candidate changed the problem's files"
    assert _hash_tree(archive) == before["archive"], "a candidate changed the archive"
    assert sorted(p.name for p in archive.iterdir()) == ["segment-0.parquet"]


@pytest.fixture(scope="module")
def sandbox(workspace):
    # EVOLVE_TEST_SANDBOX_LAYERS runs the suite under fewer layers, e.g. as a host without namespaces would.
    return sandbox_for_problem(workspace["problem"], SandboxConfig(layers=os.environ.get("EVOLVE_TEST_SANDBOX_LAYERS",
                                                                                        "")))


@pytest.fixture(scope="module")
def listeners():
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(8)
    tcp.settimeout(0.3)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(0.3)
    yield tcp, udp
    tcp.close()
    udp.close()


@pytest.fixture(scope="module")
def marker() -> str:
    return str(900000 + secrets.randbelow(99999))


@pytest.fixture
def context(workspace, sandbox, listeners, marker, monkeypatch):
    problem = workspace["problem"]
    tcp, udp = listeners
    ctx = {
        "trusted_pid": os.getpid(),
        "server_pid": sandbox.server.hello.pid,
        "tcp_port": tcp.getsockname()[1],
        "udp_port": udp.getsockname()[1],
        "archive": str(workspace["archive"]),
        "evaluator": str(problem.evaluator_path),
        "reference": str(problem.root / "reference.txt"),
        "public": str(problem.root / "public_data.txt"),
        "leak_marker": f"evolve-adversarial-leak-{marker}",
        "daemon_marker": marker,
    }
    monkeypatch.setenv("EVOLVE_ADVERSARIAL_CONTEXT", json.dumps(ctx))
    monkeypatch.setenv("EVOLVE_ADVERSARIAL_SECRET", "EVOLVE-SECRET-ENV-" + secrets.token_hex(12))
    yield ctx
    strays = wait_no_strays(sandbox.server.hello.pid, marker)
    assert not strays, f"processes left behind: {strays}"


def evaluate(workspace, sandbox, name: str, stage: str = "evaluate", seed: int = 7):
    code = (PROGRAMS / name).read_text()
    if name == "setsid_daemon.py":
        code = code.replace("987654", json.loads(os.environ["EVOLVE_ADVERSARIAL_CONTEXT"])["daemon_marker"])
    return run_stage(workspace["problem"], stage, code, program_id_for(code), seed, sandbox=sandbox)


def requires(sandbox, *layers: Layer) -> None:
    for layer in layers:
        if layer not in sandbox.layers:
            pytest.skip(f"needs the {layer.value} layer, unavailable here: {sandbox.probe.why(layer)}")


def requires_any(sandbox, *layers: Layer) -> None:
    """Skip unless at least one of ``layers`` contains the attack (without any, it would hit the test process)."""
    if not any(layer in sandbox.layers for layer in layers):
        names = ", ".join(layer.value for layer in layers)
        pytest.skip(f"needs one of the layers {names}; none is available here")


def test_program_files_are_present():
    assert len([p for p in PROGRAMS.glob("*.py") if p.name != "check_tmp_files.py"]) >= 25


def test_honest_candidate_scores(workspace, sandbox, context):
    outcome = evaluate(workspace, sandbox, "../problem/seed.py")
    assert outcome.status is Status.OK, outcome
    assert outcome.metrics["score"] == 1.0
    assert outcome.isolation == sandbox.level


def test_isolation_level_recorded(workspace, sandbox, context):
    outcome = evaluate(workspace, sandbox, "../problem/seed.py")
    layers = set(outcome.isolation.split("+"))
    assert {"session", "rlimits"} <= layers
    assert layers == {layer.value for layer in sandbox.layers}
    for layer in (Layer.PIDNS, Layer.NETNS, Layer.MNTNS, Layer.LANDLOCK, Layer.SECCOMP, Layer.UID, Layer.CGROUP,
                  Layer.SCRATCHFS):
        assert (layer.value in layers) == (layer in sandbox.probe.available() and layer in sandbox.layers)
    print(f"isolation level on this host: {outcome.isolation}")


@pytest.mark.parametrize("program", ["loop_at_import.py", "loop_in_call.py", "long_sleep.py"])
def test_runaway_is_killed_at_the_deadline(workspace, sandbox, context, program):
    timeout = workspace["problem"].stage("quick").timeout
    start = time.monotonic()
    outcome = evaluate(workspace, sandbox, program, stage="quick")
    assert outcome.status is Status.TIMEOUT, outcome
    assert time.monotonic() - start <= timeout + 1.0
    assert not wait_no_strays(sandbox.server.hello.pid, context["daemon_marker"], timeout=0.5)


def test_memory_bomb_is_a_memory_failure(workspace, sandbox, context):
    outcome = evaluate(workspace, sandbox, "memory_bomb.py")
    assert outcome.status is Status.MEMORY, outcome


def test_fork_bomb_is_bounded_by_the_process_limit(workspace, sandbox, context):
    requires(sandbox, Layer.PIDNS, Layer.UID)
    outcome = evaluate(workspace, sandbox, "fork_bomb.py")
    assert outcome.status is Status.OK, outcome
    assert outcome.metrics.get("skipped", 0) == 0
    assert outcome.metrics["blocked"] == 1
    assert outcome.metrics["forks"] < workspace["problem"].limits.processes


def test_thread_bomb_is_bounded(workspace, sandbox, context):
    outcome = evaluate(workspace, sandbox, "thread_bomb.py")
    assert outcome.status is Status.OK, outcome
    assert outcome.metrics["blocked"] == 1
    if Layer.UID in sandbox.layers:
        assert outcome.metrics["threads"] < workspace["problem"].limits.processes


def test_huge_stdout_is_capped(workspace, sandbox, context):
    outcome = evaluate(workspace, sandbox, "huge_stdout.py")
    assert outcome.status is Status.OK, outcome
    assert outcome.metrics["efbig"] == 1
    assert outcome.metrics["written"] <= workspace["problem"].limits.file_size_mb * 1024 * 1024


def test_huge_file_is_capped(workspace, sandbox, context):
    outcome = evaluate(workspace, sandbox, "huge_file.py")
    assert outcome.status is Status.OK, outcome
    assert outcome.metrics["efbig"] == 1
    assert outcome.metrics["size"] <= workspace["problem"].limits.file_size_mb * 1024 * 1024


def test_fake_score_on_stdout_changes_nothing(workspace, sandbox, context):
    outcome = evaluate(workspace, sandbox, "fake_score_stdout.py")
    assert outcome.status is Status.OK, outcome
    assert outcome.metrics["score"] == 1.0
    assert max(outcome.metrics.values()) < 1e9


def test_forged_reply_before_any_request_is_rejected(workspace, sandbox, context):
    outcome = evaluate(workspace, sandbox, "forged_reply_at_import.py")
    assert outcome.status is Status.WRONG_OUTPUT, outcome
    assert "forged" in outcome.message
    assert not outcome.metrics


def test_forged_reply_during_the_call_gains_nothing(workspace, sandbox, context):
    outcome = evaluate(workspace, sandbox, "forged_reply_in_call.py")
    assert outcome.status is Status.WRONG_OUTPUT, outcome
    assert not outcome.metrics


def test_patched_clocks_do_not_fool_trusted_timing(workspace, sandbox, context):
    outcome = evaluate(workspace, sandbox, "patched_clocks.py")
    assert outcome.status is Status.OK, outcome
    assert outcome.metrics["claimed_seconds"] == 0.0
    assert outcome.metrics["call_seconds"] >= 0.5


def test_always_equal_objects_do_not_cross_the_boundary(workspace, sandbox, context):
    outcome = evaluate(workspace, sandbox, "always_equal.py")
    assert outcome.status is Status.WRONG_OUTPUT, outcome


def test_frame_walking_finds_no_secret(workspace, sandbox, context):
    outcome = evaluate(workspace, sandbox, "frame_walk.py")
    assert outcome.status is Status.OK, outcome
    assert outcome.metrics["frames"] >= 2  # it did walk the harness's frames
    assert outcome.metrics["secret_found"] == 0


def test_evaluator_cannot_be_modified(workspace, sandbox, context):
    if not {Layer.UID, Layer.LANDLOCK} & set(sandbox.layers):
        pytest.skip("needs the uid or landlock layer: " + sandbox.probe.why(Layer.LANDLOCK))
    before = _hash_tree(workspace["problem"].root)
    outcome = evaluate(workspace, sandbox, "write_evaluator.py")
    assert outcome.status is Status.OK, outcome
    assert outcome.metrics["written"] == 0
    assert _hash_tree(workspace["problem"].root) == before
    if (sandbox.probe.root and Layer.UID in sandbox.layers) or Layer.MNTNS in sandbox.layers:
        assert outcome.metrics["metadata"] == 0  # its own uid, or a read-only view of the host's files


def test_archive_cannot_be_touched(workspace, sandbox, context):
    requires(sandbox, Layer.LANDLOCK)
    outcome = evaluate(workspace, sandbox, "write_archive.py")
    assert outcome.status is Status.OK, outcome
    assert outcome.metrics["succeeded"] == 0


def test_rewriting_own_source_does_not_reach_the_next_process(workspace, sandbox, context):
    outcome = evaluate(workspace, sandbox, "rewrite_own_source.py", stage="fresh_process")
    assert outcome.status is Status.OK, outcome  # the tampered version would answer "TAMPERED"
    assert outcome.metrics["second_tampered"] == 0


def test_reference_file_is_unreadable(workspace, sandbox, context):
    requires(sandbox, Layer.LANDLOCK)
    outcome = evaluate(workspace, sandbox, "read_reference.py")
    assert outcome.status is Status.OK, outcome
    assert outcome.metrics["public_read"] == 1  # what read_paths lists stays readable
    assert outcome.metrics["read"] == 0
    assert outcome.metrics["listed"] == 0  # the real folder's files never show


def test_parent_memory_is_unreadable(workspace, sandbox, context):
    requires_any(sandbox, Layer.PIDNS, Layer.UID, Layer.SECCOMP)  # without them, ptrace would stop pytest itself
    outcome = evaluate(workspace, sandbox, "read_parent_memory.py")
    assert outcome.status is Status.OK, outcome
    assert outcome.metrics["succeeded"] == 0


def test_parent_and_server_cannot_be_killed(workspace, sandbox, context):
    requires_any(sandbox, Layer.PIDNS, Layer.UID)  # without them, the candidate could kill pytest itself
    server_pid = sandbox.server.hello.pid
    outcome = evaluate(workspace, sandbox, "kill_parent.py")
    assert outcome.status is Status.OK, outcome
    assert outcome.metrics["succeeded"] == 0
    assert sandbox.server.hello.pid == server_pid and sandbox.server.alive


@pytest.fixture
def sentinel():
    """A root-owned process outside the sandbox that kill(-1) must not reach."""
    proc = subprocess.Popen(["sleep", "60"])  # noqa: S607
    yield proc
    proc.kill()
    proc.wait()


def test_kill_minus_one_reaches_only_the_candidate(workspace, sandbox, context, sentinel):
    requires(sandbox, Layer.PIDNS, Layer.UID)
    server_pid = sandbox.server.hello.pid
    outcome = evaluate(workspace, sandbox, "kill_all.py")
    assert outcome.status is Status.OK, outcome
    assert outcome.metrics.get("skipped", 0) == 0
    if Layer.SECCOMP in sandbox.layers:
        assert outcome.metrics["fired"] == 0  # seccomp refuses kill(-1) outright
    else:
        assert outcome.metrics["fired"] == 1 and outcome.metrics["child_killed"] == 1  # only its own child
    assert sentinel.poll() is None
    assert sandbox.server.hello.pid == server_pid and sandbox.server.alive
    assert evaluate(workspace, sandbox, "../problem/seed.py").status is Status.OK


def test_setsid_daemon_dies_with_the_evaluation(workspace, sandbox, context):
    outcome = evaluate(workspace, sandbox, "setsid_daemon.py")
    assert outcome.status is Status.OK, outcome
    assert outcome.metrics["daemonized"] == 1
    assert not wait_no_strays(sandbox.server.hello.pid, context["daemon_marker"], timeout=1.0)


def test_tcp_connection_is_impossible(workspace, sandbox, context, listeners):
    outcome = evaluate(workspace, sandbox, "tcp_connect.py")
    assert outcome.status is Status.OK, outcome
    assert outcome.metrics["connected"] == 0
    with pytest.raises(TimeoutError):
        listeners[0].accept()


def test_udp_datagrams_go_nowhere(workspace, sandbox, context, listeners):
    outcome = evaluate(workspace, sandbox, "udp_send.py")
    assert outcome.status is Status.OK, outcome
    assert outcome.metrics["sent"] == 0
    with pytest.raises(TimeoutError):
        listeners[1].recvfrom(4096)


def test_environment_secrets_stay_outside(workspace, sandbox, context):
    outcome = evaluate(workspace, sandbox, "env_secrets.py")
    assert outcome.status is Status.OK, outcome
    assert outcome.metrics["secret_found"] == 0
    assert outcome.metrics["foreign_environs"] == 0


def test_tmp_files_do_not_reach_the_next_candidate(workspace, sandbox, context):
    first = evaluate(workspace, sandbox, "leave_tmp_files.py")
    assert first.status is Status.OK, first
    second = evaluate(workspace, sandbox, "check_tmp_files.py")
    assert second.status is Status.OK, second
    assert second.metrics["leaked"] == 0
    for directory in ("/tmp", "/var/tmp", "/dev/shm"):
        assert not os.path.exists(os.path.join(directory, context["leak_marker"]))
    if Layer.MNTNS in sandbox.layers:
        assert first.metrics["written"] >= 1  # /dev/shm is private and writable, and gone afterwards


def test_exit_at_import_fails_the_evaluation(workspace, sandbox, context):
    outcome = evaluate(workspace, sandbox, "exit_at_import.py")
    assert outcome.status in (Status.RUNTIME_ERROR, Status.COMPILE_ERROR), outcome
    assert not outcome.metrics


def test_segfault_is_a_runtime_error(workspace, sandbox, context):
    outcome = evaluate(workspace, sandbox, "ctypes_segfault.py")
    assert outcome.status is Status.RUNTIME_ERROR, outcome
    assert f"signal {int(signal.SIGSEGV)}" in outcome.message


def test_nan_output_is_wrong_output(workspace, sandbox, context):
    outcome = evaluate(workspace, sandbox, "nan_output.py")
    assert outcome.status is Status.WRONG_OUTPUT, outcome


def test_namespace_and_kernel_games_are_denied(workspace, sandbox, context):
    requires(sandbox, Layer.SECCOMP)
    outcome = evaluate(workspace, sandbox, "namespace_games.py")
    assert outcome.status is Status.OK, outcome
    assert outcome.metrics["succeeded"] == 0, outcome.artifacts


def test_no_descriptor_leaks_into_the_sandbox(workspace, sandbox, context):
    outcome = evaluate(workspace, sandbox, "inherited_fds.py")
    assert outcome.status is Status.OK, outcome
    assert outcome.metrics["sockets"] == 0
    assert outcome.metrics["files"] == 0
    assert outcome.metrics["pipes"] <= 1  # the harness's own request pipe


@pytest.mark.parametrize("program", ["oversized_reply.py", "deep_json.py"])
def test_hostile_replies_are_protocol_violations(workspace, sandbox, context, program):
    outcome = evaluate(workspace, sandbox, program)
    assert outcome.status is Status.WRONG_OUTPUT, outcome


def test_symlinks_and_hard_links_do_not_escape(workspace, sandbox, context):
    requires(sandbox, Layer.LANDLOCK, Layer.UID)  # a root candidate may read /etc/shadow, which Landlock lets through
    outcome = evaluate(workspace, sandbox, "symlink_escape.py")
    assert outcome.status is Status.OK, outcome
    assert outcome.metrics["succeeded"] == 0


# --------------------------------------------------------------------- the same attacks without a PID namespace


@pytest.fixture(scope="module")
def subreaper_sandbox(workspace, sandbox):
    """No PID namespace: the monitor is a child subreaper that sweeps every descendant."""
    if Layer.SUBREAPER not in sandbox.probe.available():
        pytest.skip(f"needs the subreaper layer: {sandbox.probe.why(Layer.SUBREAPER)}")
    config = SandboxConfig(layers="session+rlimits+subreaper+netns+landlock+seccomp+uid")
    return sandbox_for_problem(workspace["problem"], config)


def test_subreaper_sweeps_a_setsid_daemon(workspace, subreaper_sandbox, context):
    assert Layer.PIDNS not in subreaper_sandbox.layers
    outcome = evaluate(workspace, subreaper_sandbox, "setsid_daemon.py")
    assert outcome.status is Status.OK, outcome
    assert outcome.isolation == subreaper_sandbox.level and "subreaper" in outcome.isolation
    assert not wait_no_strays(subreaper_sandbox.server.hello.pid, context["daemon_marker"], timeout=1.0)


def test_subreaper_kills_a_runaway_tree_at_the_deadline(workspace, subreaper_sandbox, context):
    timeout = workspace["problem"].stage("quick").timeout
    start = time.monotonic()
    outcome = evaluate(workspace, subreaper_sandbox, "loop_in_call.py", stage="quick")
    assert outcome.status is Status.TIMEOUT, outcome
    assert time.monotonic() - start <= timeout + 1.0


def test_zz_still_healthy_after_the_hostile_programs(workspace, sandbox, context):
    """Last in the module: after every hostile program, an honest candidate still evaluates normally."""
    outcome = evaluate(workspace, sandbox, "../problem/seed.py")
    assert outcome.status is Status.OK, outcome
    assert outcome.metrics["score"] == 1.0
