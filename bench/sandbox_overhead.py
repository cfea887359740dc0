"""Sandbox overhead per evaluation, for each isolation level, against a bare subprocess.

One "evaluation" is what a stage does with a Python candidate: make a scratch dir, write the program, start the
harness, import the program, call one function, stop everything, remove the scratch dir. The baseline does the same
with a plain ``subprocess.Popen`` of the harness (no session, no limits, no namespaces). Levels add layers one at a
time with a fresh interpreter per candidate ("cold"), then the full level forked from the warm server ("warm").
Configurations are interleaved round by round, so background load affects them alike; medians are reported.
Wall time suffers from other load on a shared machine; CPU time (this process, its children, and the fork server
with everything it forked) is the cost the sandbox adds, and is reported next to it.

    python bench/sandbox_overhead.py                 # trivial program
    python bench/sandbox_overhead.py --numpy         # the program imports numpy (the warm server preloaded it)
    python bench/sandbox_overhead.py --rounds 40 --json results.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from evolve.candidate import Candidate
from evolve.problem import Limits
from evolve.sandbox import Layer, SandboxConfig, format_level, make_sandbox
from evolve.sandbox.forkserver import HARNESS_PATH
from evolve.sandbox.policy import thread_env

TRIVIAL = "def f(x):\n    return x + 1\n"
WITH_NUMPY = "import numpy as np\n\ndef f(x):\n    return int(np.arange(x + 2).sum() - np.arange(x + 1).sum())\n"

CUMULATIVE = ("session+rlimits", "subreaper", "pidns", "netns", "mntns", "landlock", "seccomp", "uid", "cgroup",
              "scratchfs")
RESOURCE_LAYERS = {Layer.CGROUP, Layer.SCRATCHFS}  # the warm path is also measured without them


def _server_cpu() -> float:
    """CPU seconds used by every fork server of this process and all the processes they reaped."""
    from evolve.sandbox.forkserver import _servers

    total = 0.0
    for server in list(_servers.values()):
        try:
            fields = Path(f"/proc/{server.hello.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    return total


def cpu_seconds() -> float:
    """CPU used so far by this process, its reaped children and the fork servers' trees."""
    own = os.times()
    return own.user + own.system + own.children_user + own.children_system + _server_cpu()


def bare_evaluation(code: str) -> None:
    """The baseline: the same harness and protocol, started by a plain subprocess (same one-thread BLAS setting)."""
    scratch = Path(tempfile.mkdtemp(prefix="evolve-bench-"))
    try:
        path = scratch / "program.py"
        path.write_text(code)
        read_fd, write_fd = os.pipe()
        proc = subprocess.Popen([sys.executable, "-s", "-P", str(HARNESS_PATH), str(write_fd)],  # noqa: S603
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, cwd=scratch,
                                pass_fds=(write_fd,), env={**os.environ, **thread_env()})
        os.close(write_fd)
        replies = os.fdopen(read_fd, "rb")
        assert proc.stdin is not None
        for request in ({"op": "load", "path": str(path), "id": 1},
                        {"op": "call", "entry": "f", "args": [1], "kwargs": {}, "id": 2}):
            proc.stdin.write((json.dumps(request) + "\n").encode())
            proc.stdin.flush()
            reply = json.loads(replies.readline())
            assert reply["ok"], reply
        proc.kill()
        proc.wait()
        replies.close()
        proc.stdin.close()
    finally:
        shutil.rmtree(scratch)


def sandboxed_evaluation(sandbox, code: str) -> None:
    with Candidate(code, "bench", "bench", 60.0, 0, sandbox) as candidate:
        assert candidate.call("f", 1) == 2


def configurations(limits: Limits) -> dict[str, Callable[[str], None]]:
    configs: dict[str, Callable[[str], None]] = {"bare subprocess": bare_evaluation}
    probe = make_sandbox(limits).probe
    layers: list[str] = []
    for layer in CUMULATIVE:
        layers.append(layer)
        if layer != "session+rlimits" and Layer(layer) not in probe.available():
            continue
        sandbox = make_sandbox(limits, SandboxConfig(layers="+".join(layers), warm=False))
        label = f"cold {sandbox.level}"
        if label not in (f"cold {k.split(' ', 1)[-1]}" for k in configs):
            configs[label] = lambda code, sb=sandbox: sandboxed_evaluation(sb, code)
    full = make_sandbox(limits, SandboxConfig(warm=True))
    basic = make_sandbox(limits, SandboxConfig(layers="basic", warm=True))
    isolation = make_sandbox(limits, SandboxConfig(layers=format_level(full.layers - RESOURCE_LAYERS), warm=True))
    for sandbox in (basic, isolation, full):
        configs[f"warm {sandbox.level}"] = lambda code, sb=sandbox: sandboxed_evaluation(sb, code)
    return configs


def resource_layer_costs(limits: Limits, rounds: int) -> dict[str, float]:
    """Median microseconds of what the resource layers add per candidate, each step timed alone (small against the
    load noise of whole evaluations): leases, the scratch tmpfs, the cgroup, one CPU reading."""
    from evolve.sandbox import cgroups, leases
    from evolve.sandbox.scratch import mount_scratch, unmount_scratch

    sandbox = make_sandbox(limits)
    steps: dict[str, Callable[[], None]] = {}
    directory = leases.lease_dir()

    def lease() -> None:
        taken = leases.Lease()
        leases.take_uid(taken, directory, 1_900_000_000, 65536)
        leases.take_cores(taken, directory, 1, sorted(os.sched_getaffinity(0)))
        taken.release()

    steps["uid and core leases, taken and released"] = lease
    if Layer.SCRATCHFS in sandbox.layers:
        work = Path(tempfile.mkdtemp(prefix="evolve-bench-"))

        def tmpfs() -> None:
            mount_scratch(work, 512, 0)
            (work / "program.py").write_text(TRIVIAL)
            unmount_scratch(work)

        steps["scratch tmpfs mounted, written, unmounted"] = tmpfs
    if sandbox.cgroup is not None:
        def cgroup() -> None:
            group = cgroups.CandidateCgroup.create(sandbox.cgroup, os.getpid(), (0,), 1.0)
            group.usage()
            group.remove()

        steps["cgroup created (acct + cpuset), read, removed"] = cgroup
        reading = cgroups.CandidateCgroup.create(sandbox.cgroup, os.getpid())
        steps["cpu_seconds() reading"] = reading.usage
    results = {}
    for name, step in steps.items():
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            step()
            times.append((time.perf_counter() - start) * 1e6)
        results[name] = statistics.median(times)
    if sandbox.cgroup is not None:
        reading.remove()
    if Layer.SCRATCHFS in sandbox.layers:
        work.rmdir()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--numpy", action="store_true", help="the candidate imports numpy")
    parser.add_argument("--json", type=Path, help="also write the medians here")
    args = parser.parse_args()
    code = WITH_NUMPY if args.numpy else TRIVIAL
    limits = Limits(memory_mb=2048)
    configs = configurations(limits)
    for run in configs.values():  # warm-up: fork server start, page cache, imports
        run(code)
    samples: dict[str, list[float]] = {name: [] for name in configs}
    cpu: dict[str, float] = dict.fromkeys(configs, 0.0)
    for _ in range(args.rounds):
        for name, run in configs.items():
            cpu_start, start = cpu_seconds(), time.perf_counter()
            run(code)
            samples[name].append((time.perf_counter() - start) * 1000)
            cpu[name] += cpu_seconds() - cpu_start
    base = statistics.median(samples["bare subprocess"])
    base_cpu = cpu["bare subprocess"] / args.rounds * 1000
    load = os.getloadavg()
    print(f"{len(os.sched_getaffinity(0))} CPUs, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}; "
          f"{args.rounds} rounds; program: {'imports numpy' if args.numpy else 'trivial'}")
    print(f"{'configuration':86} {'wall ms':>8} {'p90':>6} {'overhead':>9} {'CPU ms':>7} {'overhead':>9}")
    results = {}
    for name, values in samples.items():
        median = statistics.median(values)
        p90 = statistics.quantiles(values, n=10)[-1] if len(values) >= 2 else median
        cpu_ms = cpu[name] / args.rounds * 1000
        results[name] = {"median_ms": median, "p90_ms": p90, "overhead_ms": median - base, "cpu_ms": cpu_ms,
                         "cpu_overhead_ms": cpu_ms - base_cpu}
        print(f"{name:86} {median:8.1f} {p90:6.1f} {median - base:+9.1f} {cpu_ms:7.1f} {cpu_ms - base_cpu:+9.1f}")
    parts = resource_layer_costs(limits, 4 * args.rounds)
    print("per-candidate steps of the resource layers (median us):")
    for name, micros in parts.items():
        print(f"  {name:60} {micros:8.0f}")
    if args.json:
        args.json.write_text(json.dumps({"load": load, "rounds": args.rounds, "numpy": args.numpy,
                                         "results": results, "resource_steps_us": parts}, indent=2))


if __name__ == "__main__":
    main()
