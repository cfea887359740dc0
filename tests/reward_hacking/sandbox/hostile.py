"""Running a hostile program file through the real launcher, and checking afterwards that the host is unharmed."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evolve.sandbox import Sandbox, SandboxProcess

from ...conftest import live_descendants

PROGRAMS = Path(__file__).resolve().parent / "programs"


@dataclass
class Outcome:
    """What the trusted side saw of one hostile run."""

    replies: list[dict[str, Any]] = field(default_factory=list)
    cpu_after_import: float = 0.0
    cpu_before_close: float = 0.0
    cpu_final: float = 0.0
    accounting: str = ""
    stderr: str = ""

    @property
    def value(self) -> Any:
        return self.replies[-1].get("value")


def run_program(sandbox: Sandbox, name: str, entry: str = "run", timeout: float = 60.0,
                kwargs: dict[str, Any] | None = None) -> Outcome:
    """Load ``programs/<name>`` in a sandboxed harness, call ``entry``, close; the trusted CPU figures included."""
    work = sandbox.make_scratch()
    try:
        path = work / "program.py"
        path.write_text((PROGRAMS / name).read_text())
        path.chmod(0o444)
        process: SandboxProcess = sandbox.spawn_python(work, timeout)
        outcome = Outcome(accounting=process.cpu_accounting)
        deadline = time.monotonic() + timeout
        try:
            outcome.replies.append(process.request({"op": "load", "path": str(path)}, deadline))
            outcome.cpu_after_import = process.cpu_seconds()
            if outcome.replies[-1].get("ok"):
                outcome.replies.append(process.request({"op": "call", "entry": entry, "args": [],
                                                        "kwargs": kwargs or {}}, deadline))
            outcome.cpu_before_close = process.cpu_seconds()
        finally:
            process.close()
            outcome.stderr = process.stderr()
        outcome.cpu_final = process.cpu_seconds()
        return outcome
    finally:
        sandbox.remove_scratch(work)


def assert_host_unharmed(sandbox: Sandbox) -> None:
    """No process left below the fork server, no cgroup or scratch dir of ours left behind, /tmp not filled."""
    deadline = time.monotonic() + 2.0
    while (left := live_descendants(sandbox.server.hello.pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"processes left behind: {left}"
    if sandbox.cgroup is not None:
        prefix = f"{sandbox.server.hello.pid}-"
        leftover = [e for e in os.listdir(sandbox.cgroup.base) if e.startswith(prefix)]
        assert not leftover, f"cgroups left behind: {leftover}"
    assert shutil.disk_usage("/tmp").free > 256 * 1024 * 1024
