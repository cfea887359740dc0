"""The sandbox: settings, layer choice, the plan for one process (GPU included), the layers themselves, the launcher."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import re
import resource
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

import evolve.sandbox as sandbox_api
from evolve.problem import Limits
from evolve.sandbox import (
    Layer,
    SandboxConfig,
    SandboxConfigError,
    SandboxSetupError,
    SandboxUnavailable,
    cgroups,
    check_requirement,
    describe_isolation,
    format_level,
    host_probe,
    landlock,
    make_sandbox,
    parse_layers,
    policy,
    seccomp,
    tinyinit,
)
from evolve.sandbox.config import level_satisfies
from evolve.sandbox.launcher import choose_layers, missing_layers
from evolve.sandbox.policy import (
    PlanInput,
    _ancestors,
    candidate_env,
    missing_for_uid,
    plan_covers,
    plan_spawn,
)
from evolve.sandbox.probe import HostProbe, LayerStatus
from evolve.sandbox.scratch import remove_tree

from .conftest import live_descendants

ALL = tuple(Layer)


def fake_probe(ok: set[Layer], root: bool = True, uid_needs_mntns: bool = False) -> HostProbe:
    layers = {layer.value: LayerStatus(layer in ok, "works" if layer in ok else f"{layer.value} refused: EPERM")
              for layer in Layer}
    return HostProbe(layers=layers, root=root, landlock_abi=7, python_roots=("/usr",),
                     uid_needs_mntns=uid_needs_mntns)


def in_child(action) -> int:
    """Run ``action`` in a forked child (layers are irreversible); return its exit code."""
    pid = os.fork()
    if pid == 0:
        try:
            os._exit(action())
        except BaseException:  # noqa: BLE001
            os._exit(99)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


# ------------------------------------------------------------------------------------------------ settings


def test_levels_parse_in_canonical_order_and_aliases_expand():
    assert format_level(parse_layers("uid+session+PIDNS")) == "session+pidns+uid"
    assert format_level(parse_layers("full")) == "session+rlimits+pidns+netns+mntns+landlock+seccomp+uid+cgroup+scratchfs"
    assert parse_layers("basic") == (Layer.SESSION, Layer.RLIMITS)
    assert parse_layers("") == ()
    assert level_satisfies("session+rlimits+pidns", "pidns+landlock") == [Layer.LANDLOCK]


def test_unknown_layer_is_rejected():
    with pytest.raises(SandboxConfigError, match="unknown sandbox layer 'chroot'"):
        parse_layers("session+chroot")
    with pytest.raises(SandboxConfigError):
        SandboxConfig(require="pidns+magic")


def test_config_from_table_checks_keys_and_types():
    config = SandboxConfig.from_table({"require": "full", "preload": ["numpy", "math"], "allow_in_process": True})
    assert config.required_layers == parse_layers("full")
    assert config.preload == ("numpy", "math")
    assert SandboxConfig.from_table(None, require="pidns").require == "pidns"
    for table, message in (({"bogus": 1}, "unknown key"), ({"warm": "yes"}, "true or false"),
                           ({"tmpfs_mb": 0}, "> 0"), ({"preload": "numpy"}, "list"),
                           ({"unprivileged_uid": 0}, "not root"), ({"require": 3}, "string")):
        with pytest.raises(SandboxConfigError, match=message):
            SandboxConfig.from_table(table)


# ------------------------------------------------------------------------------------------------ layer choice


def test_full_root_host_uses_every_layer():
    chosen = choose_layers(fake_probe(set(ALL)), SandboxConfig())
    assert format_level(chosen) == "session+rlimits+pidns+netns+mntns+landlock+seccomp+uid+cgroup+scratchfs"


def test_container_without_namespaces_falls_back_to_subreaper_and_seccomp_network_filter():
    ok = {Layer.SESSION, Layer.RLIMITS, Layer.SUBREAPER, Layer.LANDLOCK, Layer.SECCOMP, Layer.NONET, Layer.UID}
    chosen = choose_layers(fake_probe(ok), SandboxConfig())
    assert format_level(chosen) == "session+rlimits+subreaper+nonet+landlock+seccomp+uid"


def test_scratch_is_capped_by_a_filesystem_or_watched():
    assert Layer.SCRATCHFS in choose_layers(fake_probe(set(ALL)), SandboxConfig())
    watched = choose_layers(fake_probe(set(ALL) - {Layer.SCRATCHFS}), SandboxConfig())
    assert Layer.DISKWATCH in watched and Layer.SCRATCHFS not in watched
    assert Layer.DISKWATCH not in choose_layers(fake_probe(set(ALL)), SandboxConfig(layers="basic"))


def test_non_root_launcher_needs_a_user_namespace_for_namespaces():
    with_userns = choose_layers(fake_probe(set(ALL), root=False), SandboxConfig())
    assert {Layer.USERNS, Layer.PIDNS, Layer.NETNS, Layer.MNTNS, Layer.UID} <= with_userns
    without = choose_layers(fake_probe(set(ALL) - {Layer.USERNS}, root=False), SandboxConfig())
    assert not {Layer.USERNS, Layer.PIDNS, Layer.NETNS, Layer.MNTNS} & without
    assert Layer.SUBREAPER in without


def test_uid_layer_needs_the_mount_namespace_when_python_is_unreachable():
    probe = fake_probe(set(ALL), uid_needs_mntns=True)
    config = SandboxConfig(layers="session+rlimits+pidns+landlock+uid", require="uid")
    assert Layer.UID not in choose_layers(probe, config)
    (layer, why), = missing_layers(probe, config)
    assert layer is Layer.UID and "mntns" in why


def test_missing_required_layer_names_the_layer_and_the_reason():
    probe = fake_probe(set(ALL) - {Layer.LANDLOCK})
    (layer, why), = missing_layers(probe, SandboxConfig(require="full"))
    assert layer is Layer.LANDLOCK and "landlock refused" in why


def test_require_refuses_to_start_with_a_clear_message(monkeypatch):
    monkeypatch.setattr(sandbox_api, "host_probe", lambda config=None: fake_probe(set(ALL) - {Layer.SECCOMP}))
    with pytest.raises(SandboxUnavailable, match=r"missing seccomp \(seccomp refused"):
        check_requirement(SandboxConfig(require="full"))
    assert check_requirement(SandboxConfig(require="pidns+landlock")).startswith("session+rlimits+pidns")


def test_sandbox_refuses_a_requirement_its_own_layers_exclude():
    with pytest.raises(SandboxUnavailable, match="pidns"):
        make_sandbox(config=SandboxConfig(layers="basic", require="pidns"))


def test_probe_runs_once_per_process_and_describes_itself():
    assert host_probe() is host_probe()
    line = describe_isolation()
    assert line.startswith("sandbox: session+rlimits") and "\n" not in line
    print(line)


# ------------------------------------------------------------------------------------------------ the plan


def plan(tmp_path: Path, gpu: bool = False, env: dict[str, str] | None = None, **kw) -> policy.SpawnSpec:
    scratch = tmp_path / "work"
    scratch.mkdir(exist_ok=True)
    return plan_spawn(PlanInput(mode="exec", argv=("true",), scratch=scratch, timeout=10.0,
                                limits=Limits(memory_mb=512, processes=16), layers=frozenset(ALL) - {Layer.USERNS},
                                env=env or candidate_env(scratch, gpu=gpu), gpu=gpu, uid=1_900_000_123,
                                launcher_uid=0, **kw))


def test_cpu_process_limits_address_space(tmp_path):
    spec = plan(tmp_path)
    limits = {r[0]: r[1:] for r in spec.rlimits}
    assert limits[resource.RLIMIT_AS] == (512 << 20, 512 << 20)
    assert resource.RLIMIT_DATA not in limits
    assert limits[resource.RLIMIT_NPROC] == (16, 16)  # binds: the candidate has its own uid
    assert limits[resource.RLIMIT_CORE] == (0, 0)
    assert spec.uid == 1_900_000_123 and spec.gid == 1_900_000_123
    assert not any("nvidia" in path for path, _ in spec.landlock_rules)
    assert (str(tmp_path / "work"), landlock.WRITE) in spec.landlock_rules


def test_gpu_process_settings(tmp_path, monkeypatch):
    dev = tmp_path / "dev"
    dev.mkdir()
    for name in ("nvidiactl", "nvidia-uvm", "nvidia0", "nvidia1", "nvidia2"):
        (dev / name).touch()
    monkeypatch.setattr(policy, "DEV_DIR", str(dev))
    source = {"CUDA_VISIBLE_DEVICES": "1,2", "CUDA_DEVICE_ORDER": "PCI_BUS_ID", "PATH": "/usr/bin",
              "OPENAI_API_KEY": "sk-secret"}
    scratch = tmp_path / "work"
    env = candidate_env(scratch, gpu=True, source=source)
    assert env["CUDA_VISIBLE_DEVICES"] == "1,2"
    assert env["CUPY_CACHE_DIR"].startswith(str(scratch)) and env["CUDA_CACHE_PATH"].startswith(str(scratch))
    assert "OPENAI_API_KEY" not in env
    spec = plan(tmp_path, gpu=True, env=env)
    limits = {r[0]: r[1:] for r in spec.rlimits}
    assert resource.RLIMIT_DATA in limits and resource.RLIMIT_AS not in limits  # RLIMIT_AS breaks CUDA
    device_rules = {os.path.basename(p): access for p, access in spec.landlock_rules if p.startswith(str(dev))}
    assert set(device_rules) == {"nvidiactl", "nvidia-uvm", "nvidia1", "nvidia2"}  # only the assigned GPUs
    assert all(access & landlock.IOCTL_DEV and access & landlock.WRITE_FILE for access in device_rules.values())
    assert ("/sys", landlock.READ) in spec.landlock_rules
    # without PCI_BUS_ID ordering, CUDA ordinals are not minor numbers: every GPU node opens, CUDA selects
    spec = plan(tmp_path, gpu=True, env={**env, "CUDA_DEVICE_ORDER": "FASTEST_FIRST"})
    assert sum("nvidia" in os.path.basename(p) for p, _ in spec.landlock_rules if p.startswith(str(dev))) == 5


def test_environment_is_an_allowlist():
    env = candidate_env(Path("/s"), extra={"EXTRA": "1"}, source={"PATH": "/bin", "AWS_SECRET_ACCESS_KEY": "x",
                                                                  "HOME": "/root", "LANG": "C.UTF-8"})
    assert env["HOME"] == env["TMPDIR"] == "/s"
    assert env["LANG"] == "C.UTF-8" and env["EXTRA"] == "1" and env["OMP_NUM_THREADS"] == "1"
    assert "AWS_SECRET_ACCESS_KEY" not in env


def test_unreachable_directories_are_covered_and_needed_paths_exposed(tmp_path):
    private = tmp_path / "private"
    (private / "python" / "lib").mkdir(parents=True)
    (private / "secret").mkdir()
    private.chmod(0o700)
    needed = [(str(private / "python"), False), (str(tmp_path / "scratch"), True)]
    covers = plan_covers(needed, private=False, other_uid=True)
    # the outermost unsearchable directory (pytest's own 0700 dir, or ours) is covered; only the need is exposed
    cover = next(c for c in covers if str(private).startswith(c.path))
    assert cover.mode == 0o755
    assert (str(private / "python"), False) in cover.expose
    assert not any("secret" in path for c in covers for path, _ in c.expose)
    # A needed directory that is itself closed (a venv made in `mktemp -d`): covered, and its entries bound back.
    closed = tmp_path / "venv"
    (closed / "lib").mkdir(parents=True)
    (closed / "pyvenv.cfg").write_text("home = /usr\n")
    closed.chmod(0o700)
    exposed = {e for c in plan_covers([(str(closed), False)], private=False, other_uid=True) for e in c.expose}
    assert exposed == {(str(closed / "lib"), False), (str(closed / "pyvenv.cfg"), False)}  # below a 0755 cover
    assert missing_for_uid([str(closed)]) == [str(closed)]
    private_tmp = {c.path: c for c in plan_covers([("/tmp/x", True)], private=True, other_uid=False)}
    assert private_tmp["/tmp"].mode == 0o1777


@pytest.mark.parametrize("path", ["/a/b/c", "/a", "/", "/a/b/", "/a/./b//c/", "//a//b/./c", "///a/b", "rel/a/b",
                                  "/a/../b"])
def test_ancestors_are_the_ones_pathlib_gives(path):
    parts = Path(path).parts
    assert _ancestors(path) == [str(Path(*parts[:i])) for i in range(2, len(parts))]


def test_remove_tree_takes_flat_areas_and_whatever_a_candidate_left(tmp_path):
    flat = tmp_path / "flat"
    (flat / "work").mkdir(parents=True)  # an unmounted scratch tmpfs leaves an empty dir
    (flat / "1.stdout").write_text("out")
    (flat / "2.stderr").symlink_to("/etc/passwd")
    remove_tree(flat)
    assert not flat.exists() and Path("/etc/passwd").exists()
    deep = tmp_path / "deep"
    (deep / "work" / "a" / "b").mkdir(parents=True)
    (deep / "work" / "a" / "b" / "f").write_text("x")
    (deep / "work" / "a" / "b").chmod(0o500)  # hard to remove for a non-root launcher
    (deep / "1.stdout").write_text("out")
    remove_tree(deep)
    assert not deep.exists()


def test_the_flat_removal_never_follows_a_path_swapped_for_a_symlink(tmp_path):
    """The orphan sweep works in the shared temp dir: a scratch path replaced by a symlink after its check must not
    lead the removal into the link's target."""
    from evolve.sandbox.scratch import _remove_flat

    target = tmp_path / "elsewhere"
    (target / "empty").mkdir(parents=True)
    (target / "precious").write_text("keep")
    link = tmp_path / "evolve-scratch-1-x"
    link.symlink_to(target)
    assert not _remove_flat(link)
    assert (target / "precious").read_text() == "keep" and (target / "empty").is_dir() and link.is_symlink()


def test_making_a_tree_removable_never_changes_a_symlinks_target(tmp_path):
    """The slow path's chmod goes through descriptors opened without following links: a directory swapped for a
    symlink (to anything the launcher may change) keeps its target's mode."""
    from evolve.sandbox.scratch import _make_removable

    target = tmp_path / "elsewhere"
    target.mkdir()
    target.chmod(0o755)
    tree = tmp_path / "evolve-scratch-1-x"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "a" / "b").chmod(0)
    (tree / "a").chmod(0o500)
    (tree / "link").symlink_to(target)
    _make_removable(tree)
    assert stat.S_IMODE((tree / "a").stat().st_mode) == 0o700
    assert stat.S_IMODE((tree / "a" / "b").stat().st_mode) == 0o700
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    _make_removable(tree / "link")  # the top itself a symlink: left alone
    assert stat.S_IMODE(target.stat().st_mode) == 0o755


def test_spec_round_trips_through_json(tmp_path):
    import json

    spec = plan(tmp_path, cores=(1,), scratch_cap=(1 << 20, 1024))
    spec = dataclasses.replace(spec, cgroup=("/sys/fs/cgroup/x/cgroup.procs",), cgroup_leave=("/sys/fs/cgroup/p",))
    assert spec.cores == (1,) and spec.scratch_cap == (1 << 20, 1024)  # ALL includes diskwatch
    assert policy.SpawnSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


# ------------------------------------------------------------------------------------------------ single layers


@pytest.mark.skipif(not seccomp.supported(), reason="seccomp filter table only for x86-64")
def test_seccomp_filter_denies_ptrace_namespaces_and_inet_sockets():
    import ctypes

    program = seccomp.build_filter(deny_network=True)
    assert len(program) % 8 == 0 and len(program) // 8 < 256

    def attack() -> int:
        seccomp.install(deny_network=True)
        libc = ctypes.CDLL(None, use_errno=True)
        failures = 0
        failures += libc.ptrace(0, 0, 0, 0) == -1
        failures += libc.unshare(0x10000000) == -1
        try:
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        except PermissionError:
            failures += 1
        socket.socket(socket.AF_UNIX).close()  # still allowed
        pid = os.fork()  # plain fork and threads still work (clone without namespace flags)
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        return 10 + failures

    assert in_child(attack) == 13


@pytest.mark.skipif(not seccomp.supported(), reason="seccomp filter table only for x86-64")
@pytest.mark.parametrize("deny_network", [False, True])
def test_seccomp_allows_few_socket_families_and_keeps_the_cores(deny_network):
    def attack() -> int:
        seccomp.install(deny_network=deny_network)
        for family in (socket.AF_VSOCK, socket.AF_NETLINK, socket.AF_PACKET, 30):  # 30: AF_TIPC
            try:
                socket.socket(family, socket.SOCK_DGRAM).close()
                return 1
            except OSError as exc:
                if exc.errno != errno.EAFNOSUPPORT:
                    return 2
        try:
            socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).close()
            inet = 0
        except PermissionError:
            inet = 1
        for end in socket.socketpair(socket.AF_UNIX):
            end.close()
        try:
            os.sched_setaffinity(0, os.sched_getaffinity(0))
            return 3
        except PermissionError:
            pass
        return 10 + inet

    assert in_child(attack) == 10 + deny_network


@pytest.mark.skipif(landlock.abi_version() < 1, reason="Landlock unavailable in this kernel")
def test_landlock_confines_reads_and_writes(tmp_path):
    allowed, forbidden = tmp_path / "allowed", tmp_path / "forbidden"
    allowed.mkdir()
    forbidden.mkdir()
    (forbidden / "secret").write_text("s")

    def confined() -> int:
        ruleset = landlock.Ruleset(landlock.abi_version())
        ruleset.allow(str(allowed), landlock.WRITE)
        ruleset.restrict_self()
        (allowed / "ok").write_text("fine")
        for attempt in (lambda: (forbidden / "secret").read_text(), lambda: (forbidden / "new").write_text("x")):
            try:
                attempt()
                return 1
            except PermissionError:
                pass
        return 0

    assert in_child(confined) == 0
    assert (allowed / "ok").exists() and not (forbidden / "new").exists()


# ------------------------------------------------------------------------------------------------ the launcher


@pytest.fixture(scope="module")
def sandbox():
    return make_sandbox(Limits(memory_mb=1024, processes=32, output_kb=16))


@pytest.fixture
def scratch(sandbox):
    path = sandbox.make_scratch()
    yield path
    sandbox.remove_scratch(path)
    assert not path.exists() and not path.parent.exists()


def descendants(root_pid: int, settle: float = 0.0) -> list[int]:
    """Live (non-zombie) descendants; waits up to ``settle`` seconds for exiting monitors to finish."""
    deadline = time.monotonic() + settle
    while (found := live_descendants(root_pid)) and time.monotonic() < deadline:
        time.sleep(0.02)
    return found


def test_run_captures_output_and_exit_code(sandbox, scratch):
    result = sandbox.run(["sh", "-c", "echo out; echo err >&2; exit 3"], scratch, timeout=10)
    assert (result.returncode, result.stdout, result.stderr, result.timed_out) == (3, "out\n", "err\n", False)
    assert sandbox.run(["cat"], scratch, timeout=10, input=b"piped").stdout == "piped"
    missing = sandbox.run(["no-such-command-here"], scratch, timeout=10)
    assert missing.returncode == 127 and "cannot execute" in missing.stderr


def test_run_reports_the_killing_signal(sandbox, scratch):
    result = sandbox.run(["sh", "-c", "kill -SEGV $$"], scratch, timeout=10)
    assert result.signal == signal.SIGSEGV and result.returncode == -signal.SIGSEGV


def test_timeout_kills_the_whole_tree_within_a_second(sandbox, scratch):
    start = time.monotonic()
    result = sandbox.run(["sh", "-c", "sleep 300 & (setsid sleep 301 &) ; sleep 302"], scratch, timeout=1.0)
    assert result.timed_out and result.returncode is None
    assert descendants(sandbox.server.hello.pid, settle=2.0 - (time.monotonic() - start)) == []
    assert time.monotonic() - start < 2.0


BURN_CHILDREN = """
import os, resource
def burn(seconds):
    while resource.getrusage(resource.RUSAGE_SELF).ru_utime < seconds:
        pass
for _ in range(2):
    if os.fork() == 0:
        os.setsid()
        burn(0.2)
        os._exit(0)
"""  # two daemons the command never waits for: they still burn when it exits


def test_run_reports_the_cpu_time_of_the_whole_tree(sandbox, scratch):
    result = sandbox.run([sys.executable, "-c", BURN_CHILDREN + "import time; time.sleep(1.5)"], scratch, timeout=30)
    assert result.ok and result.cpu_accounting == ("cgroup" if Layer.CGROUP in sandbox.layers else "proc")
    assert result.cpu_seconds is not None and result.cpu_seconds >= 0.7 * 0.4


def test_cpu_seconds_is_cheap_and_final_after_close(sandbox, scratch):
    process = sandbox.spawn_python(scratch, 30)
    process.cpu_seconds()  # the first call may wait for the tree's pids (fallback meter)
    start = time.perf_counter()
    for _ in range(100):
        process.cpu_seconds()
    per_call = (time.perf_counter() - start) / 100
    process.close()
    final = process.cpu_seconds()
    assert final == process.cpu_seconds() and final > 0
    print(f"cpu_seconds() costs {per_call * 1e6:.0f} us ({process.cpu_accounting})")
    assert per_call < 0.05  # generous: a loaded machine; measured ~20 us with a cgroup


def test_output_is_capped_to_a_tail(sandbox, scratch):
    result = sandbox.run([sys.executable, "-c", "print('a' * 100000 + 'END')"], scratch, timeout=30)
    assert len(result.stdout) == 16 * 1024 and result.stdout.endswith("END\n")


def test_candidate_runs_unprivileged_in_its_scratch_dir(sandbox, scratch):
    result = sandbox.run([sys.executable, "-c", "import os; print(os.getuid(), os.getcwd(), os.environ['HOME'])"],
                         scratch, timeout=30)
    uid, cwd, home = result.stdout.split()
    assert cwd == home == str(scratch)
    if Layer.UID in sandbox.layers:
        assert int(uid) != 0


def test_launcher_secrets_do_not_reach_the_sandbox(sandbox, scratch, monkeypatch):
    monkeypatch.setenv("EVOLVE_TEST_TOKEN", "tok-123456")
    result = sandbox.run(["env"], scratch, timeout=10)
    assert result.ok and "tok-123456" not in result.stdout and "PATH=" in result.stdout


def test_scratch_removal_survives_hostile_permissions(sandbox):
    path = sandbox.make_scratch()
    result = sandbox.run(["sh", "-c", "mkdir -p a/b && touch a/b/f && chmod 000 a/b a"], path, timeout=10)
    assert result.ok, result
    sandbox.remove_scratch(path)
    assert not path.parent.exists()


@pytest.mark.parametrize("warm", [True, False])
def test_python_harness_warm_and_cold(sandbox, scratch, warm):
    (scratch / "prog.py").write_text("import sys\ndef f(x):\n    return [x * 2, 'numpy' in sys.modules]\n")
    process = sandbox.spawn_python(scratch, timeout=30, warm=warm)
    try:
        deadline = time.monotonic() + 30
        assert process.request({"op": "load", "path": str(scratch / "prog.py")}, deadline)["ok"]
        reply = process.request({"op": "call", "entry": "f", "args": [21], "kwargs": {}}, deadline)
        assert reply["ok"] and reply["value"][0] == 42
        if warm and sandbox.warm:
            assert reply["value"][1] is True  # preloaded by the fork server
    finally:
        process.close()
    assert process.exit_info() is not None


def test_gpu_mode_runs_on_a_cpu_host(sandbox, scratch):
    result = sandbox.run([sys.executable, "-c", "import os, resource; "
                          "print(os.environ['CUPY_CACHE_DIR'], resource.getrlimit(resource.RLIMIT_AS)[0])"],
                         scratch, timeout=30, gpu=True)
    cache, address_limit = result.stdout.split()
    assert cache.startswith(str(scratch)) and int(address_limit) == resource.RLIM_INFINITY


def test_a_failing_layer_is_a_setup_error_not_a_candidate_failure(scratch):
    broken = make_sandbox(Limits(open_files=1 << 40))  # more than the kernel allows: setrlimit fails
    with pytest.raises(SandboxSetupError, match="rlimits"):
        broken.run(["true"], scratch, timeout=10)


def test_a_dead_fork_server_is_replaced(scratch):
    first = make_sandbox()
    old = first.server
    os.kill(old.hello.pid, signal.SIGKILL)
    old.proc.wait()
    assert first.run(["true"], scratch, timeout=10).ok
    assert first.server.hello.pid != old.hello.pid


def test_works_with_more_than_1024_open_descriptors(sandbox, scratch):
    """Ray workers hold many descriptors; select(2) would fail beyond 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1300:
        pytest.skip(f"hard descriptor limit {hard} too low")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1300), hard))
    ballast = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        assert sandbox.run(["true"], scratch, timeout=10).ok
        (scratch / "p.py").write_text("def f():\n    return 5\n")
        process = sandbox.spawn_python(scratch, timeout=30)
        try:
            deadline = time.monotonic() + 30
            assert process.replies > 1024
            assert process.request({"op": "load", "path": str(scratch / "p.py")}, deadline)["ok"]
            assert process.request({"op": "call", "entry": "f", "args": [], "kwargs": {}}, deadline)["value"] == 5
        finally:
            process.close()
    finally:
        for fd in ballast:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_server_cleans_up_when_the_trusted_process_dies(tmp_path):
    """A Ray worker killed mid-evaluation: its fork server kills the candidate's tree and removes the scratch dirs,
    including one that no process ever ran in."""
    script = tmp_path / "client.py"
    script.write_text(
        "import sys, time\n"
        "from evolve.sandbox import make_sandbox\n"
        "sb = make_sandbox()\n"
        "scratch = sb.make_scratch()\n"
        "(scratch / 'p.py').write_text('import time\\ndef f():\\n    time.sleep(600)\\n')\n"
        "idle = sb.make_scratch()\n"
        "proc = sb.spawn_python(scratch, 600)\n"
        "proc.request({'op': 'load', 'path': str(scratch / 'p.py')}, time.monotonic() + 60)\n"
        "import os\n"
        "os.write(proc.requests, b'{\"op\": \"call\", \"entry\": \"f\", \"args\": [], \"kwargs\": {}, \"id\": 1}\\n')\n"
        "print(sb.server.hello.pid, scratch, idle, flush=True)\n"
        "time.sleep(600)\n")
    client = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    assert client.stdout is not None
    server_pid, scratch, idle = client.stdout.readline().split()
    sandboxed = descendants(int(server_pid))
    assert Path(scratch).exists() and sandboxed
    client.kill()
    client.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (Path(f"/proc/{server_pid}").exists() or Path(scratch).exists()):
        time.sleep(0.05)
    assert not Path(scratch).parent.exists() and not Path(idle).parent.exists()
    for pid in [int(server_pid), *sandboxed]:
        status = Path(f"/proc/{pid}/stat")
        with contextlib.suppress(OSError):
            assert status.read_text().rsplit(")", 1)[1].split()[0] == "Z", f"process {pid} survived its launcher"


def test_scratch_of_a_killed_server_is_swept(tmp_path):
    from evolve.sandbox.launcher import sweep_orphaned_scratch

    dead = subprocess.Popen(["true"])
    dead.wait()
    orphan = tmp_path / f"evolve-sbx-{dead.pid}-abc"
    (orphan / "work").mkdir(parents=True)
    (orphan / "work" / "program.py").write_text("x = 1\n")
    live = tmp_path / f"evolve-sbx-{os.getpid()}-def"
    young = tmp_path / f"evolve-sbx-{dead.pid}-young"
    live.mkdir()
    young.mkdir()
    old = time.time() - 3600
    for path in (orphan, live):
        os.utime(path, (old, old))
    assert sweep_orphaned_scratch(str(tmp_path)) == 1
    assert not orphan.exists() and live.exists() and young.exists()


# ------------------------------------------------------------------------------------------------ Docker profile

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "evolve" / "sandbox" / "docker-seccomp.json"
DOCKER_DEFAULT_CAPS = {"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
                       "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
                       "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"}
# Calls Docker's own default profile refuses too, which their callers treat as optional (NUMA placement hints).
DOCKER_TOLERATED = {"mbind"}
CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWNET, CLONE_NEWPID, CLONE_NEWUSER = (0x20000, 0x8000000, 0x40000000, 0x20000000,
                                                                         0x10000000)
CLONE_NEWCGROUP, CLONE_NEWUTS, SIGCHLD = 0x2000000, 0x4000000, 17


def cluster_docker_options() -> list[str]:
    import yaml

    return yaml.safe_load((REPO / "cluster.yaml").read_text())["docker"]["run_options"]


def container_caps() -> set[str]:
    added = {o.split("=", 1)[1] for o in cluster_docker_options() if o.startswith("--cap-add=")}
    return DOCKER_DEFAULT_CAPS | {f"CAP_{c}" for c in added}


def _condition(arg: dict, args: tuple[int, ...]) -> bool:
    value, op, two = arg["value"], arg["op"], arg.get("valueTwo", 0)
    actual = args[arg["index"]] if arg["index"] < len(args) else 0
    return {"SCMP_CMP_EQ": actual == value, "SCMP_CMP_NE": actual != value, "SCMP_CMP_LT": actual < value,
            "SCMP_CMP_LE": actual <= value, "SCMP_CMP_GT": actual > value, "SCMP_CMP_GE": actual >= value,
            "SCMP_CMP_MASKED_EQ": actual & value == two}[op]


def docker_action(profile: dict, name: str, args: tuple[int, ...] = (), caps: set[str] | None = None,
                  arch: str = "amd64") -> tuple[str, int]:
    """What Docker does with a call under ``profile`` (as moby applies it: includes/excludes by caps and arch, all
    argument conditions of a rule at once, an allowing rule wins): (action, errno)."""
    caps = container_caps() if caps is None else caps
    matched = []
    for rule in profile["syscalls"]:
        if name not in rule["names"]:
            continue
        includes, excludes = rule.get("includes", {}), rule.get("excludes", {})
        if not set(includes.get("caps", [])) <= caps or arch not in includes.get("arches", [arch]):
            continue
        if (excludes.get("caps") and set(excludes["caps"]) <= caps) or arch in excludes.get("arches", []):
            continue
        if all(_condition(a, args) for a in rule.get("args") or []):
            matched.append((rule["action"], rule.get("errnoRet", profile.get("defaultErrnoRet", 1))))
    if any(action == "SCMP_ACT_ALLOW" for action, _ in matched):
        return "SCMP_ACT_ALLOW", 0
    return matched[0] if matched else (profile["defaultAction"], profile.get("defaultErrnoRet", 1))


@pytest.fixture(scope="module")
def profile() -> dict:
    import json

    return json.loads(PROFILE.read_text())


def allowed(profile: dict, name: str, *args: int) -> bool:
    return docker_action(profile, name, args)[0] == "SCMP_ACT_ALLOW"


def test_docker_profile_allows_exactly_the_namespace_calls_the_sandbox_makes(profile):
    for flags in (CLONE_NEWPID, CLONE_NEWPID | CLONE_NEWIPC, CLONE_NEWNET, CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC,
                  CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWIPC):
        assert allowed(profile, "unshare", flags), hex(flags)
    for flags in (CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWPID | CLONE_NEWUTS, 0x80):  # 0x80: CLONE_NEWTIME
        assert not allowed(profile, "unshare", flags), hex(flags)
    assert allowed(profile, "setns", 5, CLONE_NEWPID) and not allowed(profile, "setns", 5, 0)
    assert not allowed(profile, "setns", 5, CLONE_NEWNET)
    for name in ("mount", "umount2", "mount_setattr", "landlock_create_ruleset", "landlock_add_rule",
                 "landlock_restrict_self", "seccomp", "prctl", "pidfd_open", "wait4", "waitid", "sched_setaffinity",
                 "setresuid", "setresgid", "setgroups", "capset", "flock", "socketpair", "close_range", "vfork"):
        assert allowed(profile, name), name
    assert allowed(profile, "clone", SIGCHLD) and not allowed(profile, "clone", SIGCHLD | CLONE_NEWPID)
    assert docker_action(profile, "clone3") == ("SCMP_ACT_ERRNO", errno.ENOSYS)  # glibc then falls back to clone
    assert allowed(profile, "socket", socket.AF_UNIX) and not allowed(profile, "socket", socket.AF_VSOCK)
    # Nothing that Docker's default grants only with CAP_SYS_ADMIN beyond what the sandbox needs.
    for name in ("bpf", "perf_event_open", "fanotify_init", "syslog", "quotactl", "sethostname", "setdomainname",
                 "open_tree", "move_mount", "fsopen", "keyctl", "add_key", "kexec_load", "init_module", "chroot"):
        if name == "chroot":  # CAP_SYS_CHROOT is one of Docker's default capabilities
            continue
        assert not allowed(profile, name), name


def test_cluster_yaml_runs_the_sandbox_with_the_profile(profile):
    import yaml
    from ray.autoscaler.sdk import get_docker_host_mount_location

    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    target = next(dst for dst, src in config["file_mounts"].items() if src == "./evolve/sandbox/docker-seccomp.json")
    host_path = f"{get_docker_host_mount_location(config['cluster_name'])}/{target}"
    options = cluster_docker_options()
    assert f"--security-opt=seccomp={host_path}" in options
    assert "--cap-add=SYS_ADMIN" in options and "--user=root" in options
    assert not any("privileged" in o or "seccomp=unconfined" in o for o in options)


@pytest.mark.slow  # ~2 s alone, but every traced call waits for strace: minutes under nice on a loaded machine
@pytest.mark.skipif(not shutil.which("strace"), reason="needs strace to record the sandbox's system calls")
def test_docker_profile_allows_every_call_the_sandbox_makes(profile, tmp_path):
    """Record every system call of a run here (fork server start and probe, a warm harness that imports numpy,
    threads, a subprocess, a cold exec) and check each successful one against the profile."""
    script = tmp_path / "trace_me.py"
    script.write_text(TRACED_RUN)
    trace = tmp_path / "trace.txt"
    subprocess.run(["strace", "-f", "-qq", "-e", "raw=all", "-o", str(trace), sys.executable, str(script)],
                   check=True, timeout=240, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                   stdout=subprocess.DEVNULL)
    calls: dict[str, set[tuple[int, ...]]] = {}
    for line in trace.read_text().splitlines():
        match = re.match(r"\d+\s+(\w+)\((.*)\)\s+=\s+(\S+)", line)
        if not match or match[3] == "-1":
            continue
        name, raw_args = match[1], match[2]
        args = tuple(int(a, 16) if a.startswith("0x") else int(a) if a.lstrip("-").isdigit() else 0
                     for a in raw_args.split(", ") if a)
        calls.setdefault(name, set()).add(args)
    assert {"unshare", "mount", "mount_setattr", "landlock_restrict_self", "setresuid"} <= set(calls)
    fallback = ("SCMP_ACT_ERRNO", errno.ENOSYS)  # clone3: glibc falls back to clone
    refused = sorted(f"{name}{args}" for name, variants in calls.items() if name not in DOCKER_TOLERATED
                     for args in variants
                     if docker_action(profile, name, args) not in (("SCMP_ACT_ALLOW", 0), fallback))
    assert not refused, f"the Docker profile refuses calls the sandbox made here: {refused}"


TRACED_RUN = """
import sys, time
from evolve.sandbox import make_sandbox
sandbox = make_sandbox()
work = sandbox.make_scratch()
(work / "program.py").write_text(
    "import numpy, threading, subprocess, socket\\n"
    "def run():\\n"
    "    thread = threading.Thread(target=lambda: numpy.ones(10).sum()); thread.start(); thread.join()\\n"
    "    a, b = socket.socketpair(); a.close(); b.close()\\n"
    "    return subprocess.run(['true']).returncode + int(numpy.arange(4).sum())\\n")
process = sandbox.spawn_python(work, 120)
deadline = time.monotonic() + 120
assert process.request({"op": "load", "path": str(work / "program.py")}, deadline)["ok"]
assert process.request({"op": "call", "entry": "run", "args": [], "kwargs": {}}, deadline)["value"] == 6
process.close()
assert sandbox.run([sys.executable, "-c", "import numpy"], work, 120).returncode == 0
sandbox.remove_scratch(work)
"""


def test_slow_cgroup_joins_are_reported_with_the_remedy():
    acct = cgroups.Hierarchy(1, "/sys/fs/cgroup/cpuacct/evolve-sandbox", "/sys/fs/cgroup/cpuacct/cgroup.procs",
                             frozenset({cgroups.ACCT}))
    cpuset = dataclasses.replace(acct, base="/sys/fs/cgroup/cpuset/evolve-sandbox", roles=frozenset({cgroups.CPUSET}))
    slow = cgroups.CgroupLayout((acct, cpuset), join_ms=14.0)
    assert "~28 ms" in slow.slow_joins() and "favordynmods" in slow.slow_joins()
    assert cgroups.CgroupLayout.from_dict(slow.to_dict()) == slow
    assert cgroups.CgroupLayout((acct,), join_ms=0.2).slow_joins() == ""
    assert cgroups.CgroupLayout.from_dict({"hierarchies": [acct.to_dict()]}).join_ms == 0.0  # an older probe's
    probe = host_probe()
    if probe.cgroup is not None:
        assert probe.cgroup.join_ms > 0  # measured when the layer was probed


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the tiny init is built for x86-64 only")
def test_tiny_init_waits_for_the_lifeline_and_leaves_at_its_end(tmp_path):
    program = tinyinit.elf_x86_64()
    assert len(program) < 200
    path = tmp_path / "init"
    path.write_bytes(program)
    path.chmod(0o700)
    assert tinyinit.works(str(path))  # leaves at end of input, exit status 0
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen([str(path)], stdin=read_fd)
    os.close(read_fd)
    os.write(write_fd, b"x" * 1000)  # data does not end it: only the end of the pipe does
    time.sleep(0.2)
    assert proc.poll() is None
    os.close(write_fd)
    assert proc.wait(timeout=10) == 0
    argv = tinyinit.init_argv()
    assert argv is None or tinyinit.works(argv[0])  # None where memfds cannot be executed (cat is used there)
