"""Which Ray a run uses, and a local Ray that outlives runs (``evolve ray start`` / ``evolve ray stop``).

Starting Ray takes seconds (its processes boot, then a worker per CPU); a run of a few hundred iterations is over
in less. ``evolve ray start`` starts one Ray head on this machine (``ray start --head --block``, detached, with its
own temp dir) and records it in a small state file; every later ``evolve run`` without ``--address`` joins it
instead of booting a private instance, until ``evolve ray stop``.

What decides (``choose_target``):

* ``--address local``: a private instance, always.
* ``--address ADDR`` (or ``auto``, Ray's meaning: ``RAY_ADDRESS`` or the last ``ray start``): that cluster.
* no address: the cluster ``evolve ray start`` recorded, when its process is alive, still the same process (its
  command line names the recorded temp dir) and runs this Python; otherwise a private instance. A stale record is
  removed. Ray's own ``/tmp/ray/ray_current_cluster`` is never read here, so a cluster left over by someone else's
  ``ray start`` cannot capture an ordinary run.

The record lives in ``$EVOLVE_RAY_STATE`` (default ``$XDG_CACHE_HOME/evolve/local-ray.json``); pointing that
variable at a missing file makes every run private (what test suites should do).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

STATE_ENV = "EVOLVE_RAY_STATE"
AUTH_ENV = "RAY_AUTH_MODE"
START_TIMEOUT = 90.0  # seconds for `ray start` to come up on a loaded machine
STOP_TIMEOUT = 60.0


class RayLocalError(RuntimeError):
    """``evolve ray start``/``stop`` could not do what was asked; the message says why."""


class TargetKind(StrEnum):
    PRIVATE = "private"  # a fresh instance owned by this process
    EVOLVE = "evolve"  # the cluster `evolve ray start` recorded
    GIVEN = "given"  # --address


@dataclass(frozen=True)
class LocalCluster:
    """What ``evolve ray start`` recorded about the head it started."""

    pid: int  # the `ray start --head --block` process: SIGTERM stops the whole cluster
    address: str  # GCS address, host:port
    temp_dir: str
    python: str
    num_cpus: int
    dashboard: str = ""  # URL when started with --dashboard
    auth_mode: str = ""  # RAY_AUTH_MODE the cluster runs with ("token", "disabled"; empty: Ray's default)
    started_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LocalCluster:
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class RayTarget:
    """The Ray a run will use."""

    kind: TargetKind
    address: str | None = None  # None: a private instance
    cluster: LocalCluster | None = None
    note: str = ""  # said once before starting (a stale record removed, a cluster skipped and why)

    @property
    def on_this_machine(self) -> bool:
        """Whether workers see this machine's files (no need to ship the problem folder)."""
        return self.kind is not TargetKind.GIVEN

    def describe(self) -> str:
        if self.kind is TargetKind.EVOLVE and self.cluster is not None:
            return (f"the local Ray from `evolve ray start` ({self.cluster.address}; `evolve ray stop` ends it, "
                    "--address local runs without it)")
        if self.kind is TargetKind.GIVEN:
            return f"the Ray cluster at {self.address}"
        return "a private local Ray instance"


def state_path() -> Path:
    given = os.environ.get(STATE_ENV)
    if given:
        return Path(given)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "evolve" / "local-ray.json"


def default_temp_dir() -> Path:
    # Short: Ray's unix socket paths live under it (at most 107 bytes each).
    return Path("/tmp") / f"evolve-ray-{os.getuid()}"


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]


def is_running(cluster: LocalCluster) -> bool:
    """The recorded process is alive and is still our ``ray start`` (pids are reused)."""
    args = _cmdline(cluster.pid)
    return bool(args) and "start" in args and "--head" in args and f"--temp-dir={cluster.temp_dir}" in args


def read_cluster(path: Path | None = None) -> LocalCluster | None:
    """The recorded cluster, running or not; None without a readable record."""
    path = path or state_path()
    try:
        return LocalCluster.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _same_python(recorded: str) -> bool:
    with contextlib.suppress(OSError):
        return os.path.samefile(recorded, sys.executable)
    return False


def choose_target(address: str | None, path: Path | None = None) -> RayTarget:
    """See the module docstring. Cheap: reads one small file and ``/proc``; never touches Ray."""
    if address == "local":
        return RayTarget(TargetKind.PRIVATE)
    if address:
        return RayTarget(TargetKind.GIVEN, address=address)
    path = path or state_path()
    cluster = read_cluster(path)
    if cluster is None:
        return RayTarget(TargetKind.PRIVATE)
    if not is_running(cluster):
        with contextlib.suppress(OSError):
            path.unlink()
        return RayTarget(TargetKind.PRIVATE, note=f"the local Ray recorded by `evolve ray start` ({cluster.address}) "
                                                  "is gone; its record was removed and a private instance is used")
    if not _same_python(cluster.python):
        return RayTarget(TargetKind.PRIVATE, note=f"the local Ray from `evolve ray start` runs {cluster.python}, not "
                                                  f"{sys.executable}; a private instance is used")
    return RayTarget(TargetKind.EVOLVE, address=cluster.address, cluster=cluster)


def init_kwargs(target: RayTarget, num_cpus: int | None, *, dashboard: bool = False,
                verbose: bool = False) -> dict[str, Any]:
    """``ray.init`` arguments for ``target`` (call ``prepare_environment`` first)."""
    kwargs: dict[str, Any] = {"logging_level": "INFO" if verbose else "WARNING", "log_to_driver": verbose}
    if target.kind is TargetKind.PRIVATE:
        kwargs.update(address="local", num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=dashboard)
    else:
        kwargs["address"] = target.address
    return kwargs


def prepare_environment(target: RayTarget, verbose: bool = False) -> None:
    """Set ``RAY_AUTH_MODE`` where Ray would otherwise warn (a new local instance: the mode Ray picks anyway) or
    fail (joining our own token-protected cluster: an explicit address never enables token auth, and Ray retries
    for a minute). Before anything imports Ray: it reads the variable then."""
    if target.kind is TargetKind.PRIVATE and not verbose:
        # Ray 2.5x+ enables token auth for a new local instance anyway, and says so in a WARNING on every start
        # unless the mode is set explicitly.
        _set_auth_mode("token")
    elif target.cluster is not None and target.cluster.auth_mode:
        _set_auth_mode(target.cluster.auth_mode)


def _set_auth_mode(mode: str) -> None:
    """``RAY_AUTH_MODE`` unless the user chose one; Ray reads it into its config when ``ray`` is imported, so an
    already imported Ray re-reads it."""
    if os.environ.get(AUTH_ENV):
        return
    os.environ[AUTH_ENV] = mode
    if "ray._raylet" in sys.modules:
        with contextlib.suppress(Exception):
            sys.modules["ray._raylet"].Config.initialize("")


# ---------------------------------------------------------------------------------------------------------------
# evolve ray start / stop


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


def _ensure_token() -> str:
    """The auth mode for a new cluster: token (a token created if this user has none), as ``ray.init`` does for
    its own instances; empty on a Ray without token auth."""
    try:
        from ray._private.authentication.authentication_token_setup import generate_and_save_token
        from ray._raylet import AuthenticationTokenLoader
    except ImportError:
        return ""
    if not AuthenticationTokenLoader.instance().has_token(ignore_auth_mode=True):
        generate_and_save_token()
        AuthenticationTokenLoader.instance().reset_cache()
    return "token"


def start_command(num_cpus: int, temp_dir: Path, port: int, *, dashboard_port: int | None = None) -> list[str]:
    """``ray start`` for a head that blocks (SIGTERM to it stops the cluster), on free ports: Ray's fixed defaults
    (10001 for the client server, 52365 for the agent) collide with other instances on a shared machine."""
    command = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", f"--port={port}",
               f"--num-cpus={num_cpus}", f"--temp-dir={temp_dir}",
               f"--include-dashboard={'true' if dashboard_port else 'false'}",
               f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
               "--disable-usage-stats"]
    if dashboard_port:
        command.append(f"--dashboard-port={dashboard_port}")
    return command


def start_cluster(num_cpus: int | None = None, *, dashboard: bool = False, temp_dir: Path | None = None,
                  path: Path | None = None, timeout: float = START_TIMEOUT) -> LocalCluster:
    """Start a detached Ray head and record it; refuse if a recorded one still runs."""
    path = path or state_path()
    running = read_cluster(path)
    if running is not None and is_running(running):
        raise RayLocalError(f"a local Ray from `evolve ray start` already runs ({running.address}, pid "
                            f"{running.pid}); `evolve ray stop` ends it")
    temp_dir = temp_dir or default_temp_dir()
    temp_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    address_file = temp_dir / "ray_current_cluster"  # ray start writes it once the head is up
    with contextlib.suppress(FileNotFoundError):
        address_file.unlink()
    cpus = num_cpus or os.cpu_count() or 1
    dashboard_port = free_port() if dashboard else None
    command = start_command(cpus, temp_dir, free_port(), dashboard_port=dashboard_port)
    env = dict(os.environ)
    auth = env.get(AUTH_ENV) or _ensure_token()
    if auth:
        env[AUTH_ENV] = auth
    log_path = temp_dir / "evolve-ray-start.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                   start_new_session=True)  # not tied to this terminal: it outlives the command
    deadline = time.monotonic() + timeout
    while not address_file.exists():
        if process.poll() is not None:
            raise RayLocalError(f"`ray start` exited with status {process.returncode}:\n{_tail(log_path)}")
        if time.monotonic() > deadline:
            _terminate(process.pid, STOP_TIMEOUT)
            raise RayLocalError(f"`ray start` did not come up within {timeout:g} s:\n{_tail(log_path)}")
        time.sleep(0.1)
    address = address_file.read_text().strip()
    url = f"http://127.0.0.1:{dashboard_port}" if dashboard_port else ""
    cluster = LocalCluster(pid=process.pid, address=address, temp_dir=str(temp_dir), python=sys.executable,
                           num_cpus=cpus, dashboard=url, auth_mode=auth, started_at=time.time())
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(cluster.to_dict(), indent=1))
    temporary.replace(path)
    return cluster


def stop_cluster(path: Path | None = None, timeout: float = STOP_TIMEOUT) -> LocalCluster | None:
    """Stop the recorded cluster (only that one: its own process, never every Ray on the machine, which is what
    ``ray stop`` does); forget the record. None when nothing was recorded."""
    path = path or state_path()
    cluster = read_cluster(path)
    if cluster is None:
        return None
    if is_running(cluster):
        _terminate(cluster.pid, timeout)
    with contextlib.suppress(OSError):
        path.unlink()
    return cluster


def _terminate(pid: int, timeout: float) -> None:
    """SIGTERM (``ray start --block`` then stops every process of its cluster), SIGKILL after ``timeout``."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)  # its children die with it (Ray's fate sharing)


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        finished, _ = os.waitpid(pid, os.WNOHANG)  # reap it when it is our own child
        if finished:
            return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _tail(path: Path, lines: int = 15) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""
