"""What one sandboxed process gets: a ``SpawnSpec`` computed on the trusted side, applied by the trampoline.

Pure planning, no side effects, so the settings a GPU stage produces can be unit-tested on a machine without a GPU.

GPU processes (a stage with ``gpus > 0`` or ``sandbox.gpu = true``):
  * memory is limited with RLIMIT_DATA, not RLIMIT_AS: the CUDA driver reserves tens of GiB of address space up
    front, so an address-space limit makes every CUDA context fail;
  * the device nodes ``/dev/nvidiactl``, ``/dev/nvidia-uvm``, ``/dev/nvidia-uvm-tools``, ``/dev/nvidia-modeset`` and
    the assigned ``/dev/nvidiaN`` are readable, writable and accept ioctls through Landlock (a GPU is driven by
    ioctls); ``/sys`` and ``/proc/driver/nvidia`` are readable for the driver's topology queries;
  * ``CUDA_VISIBLE_DEVICES`` (set by Ray for the task) is passed through; when it lists plain indices and
    ``CUDA_DEVICE_ORDER=PCI_BUS_ID``, only those ``/dev/nvidiaN`` nodes are opened up, otherwise all of them are
    (CUDA's default ordinal order is not the driver's minor-number order) and ``CUDA_VISIBLE_DEVICES`` alone selects;
  * CuPy's kernel cache (``CUPY_CACHE_DIR``) and the CUDA JIT cache (``CUDA_CACHE_PATH``) live in the scratch dir,
    the only writable place;
  * GPU processes are never forked from a server that initialised CUDA: the fork server never imports CuPy.
"""

from __future__ import annotations

import functools
import glob
import os
import resource
import stat
import sys
import sysconfig
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from evolve.problem import Limits
from evolve.sandbox import landlock
from evolve.sandbox.config import Layer

ENV_ALLOWLIST = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES",
                 "CUDA_DEVICE_ORDER")
GPU_ENV_PASSTHROUGH = ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "CUDA_HOME",
                       "CUDA_PATH", "LD_LIBRARY_PATH")
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")
SYSTEM_READ_EXEC = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
DEVICE_FILES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
DEV_DIR = "/dev"
NVIDIA_CONTROL_NODES = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset")
PRIVATE_DIRS = ("/tmp", "/var/tmp", "/dev/shm")
FILES_PER_MB = 64  # inode cap of a capped filesystem: 32768 files for the default 512 MB scratch


def files_for(mb: int) -> int:
    return max(1024, FILES_PER_MB * mb)
HARNESS_FD = 3  # the result channel's descriptor number inside the sandbox


class SpawnError(RuntimeError):
    """The sandbox cannot be set up as planned (a trusted-side or host problem, never the candidate's fault)."""


@dataclass(frozen=True)
class Cover:
    """A tmpfs mounted over ``path`` inside the candidate's mount namespace, with ``expose`` bind-mounted back."""

    path: str
    mode: int
    expose: tuple[tuple[str, bool], ...] = ()  # (path, writable)


@dataclass(frozen=True)
class SpawnSpec:
    """Everything the trampoline applies to one sandboxed process. JSON-serialisable (it crosses a socket)."""

    mode: str  # "exec" (execve argv) or "harness" (run the preloaded Python harness in the forked child)
    argv: tuple[str, ...]
    env: dict[str, str]
    cwd: str
    layers: tuple[str, ...]
    rlimits: tuple[tuple[int, int, int], ...]
    uid: int | None = None  # setresuid target (root launcher)
    gid: int | None = None
    landlock_rules: tuple[tuple[str, int], ...] = ()
    deny_network: bool = False  # seccomp socket filter (no network namespace)
    covers: tuple[Cover, ...] = ()
    tmpfs_mb: int = 64
    harness_argv: tuple[str, ...] = ()
    cgroup: tuple[str, ...] = ()  # cgroup.procs files of the candidate's cgroup, joined before any candidate code
    cgroup_leave: tuple[str, ...] = ()  # the launcher's own cgroup.procs: where a monitor goes back at the end
    cores: tuple[int, ...] = ()  # CPU affinity of the whole tree (the cores leased for the stage's ``cpus``)
    scratch_cap: tuple[int, int] = (0, 0)  # (bytes, files) the diskwatch monitor allows in the scratch dir

    def has(self, layer: Layer) -> bool:
        return layer.value in self.layers

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["covers"] = [{"path": c.path, "mode": c.mode, "expose": [list(e) for e in c.expose]} for c in self.covers]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SpawnSpec:
        data = dict(data)
        data["covers"] = tuple(Cover(c["path"], c["mode"], tuple((p, bool(w)) for p, w in c["expose"]))
                               for c in data.get("covers", ()))
        for key in ("argv", "layers", "harness_argv", "cgroup", "cgroup_leave", "cores", "scratch_cap"):
            if key in data:
                data[key] = tuple(data[key])
        data["rlimits"] = tuple(tuple(r) for r in data.get("rlimits", ()))
        data["landlock_rules"] = tuple((p, int(a)) for p, a in data.get("landlock_rules", ()))
        return cls(**data)


@functools.lru_cache(maxsize=1)
def python_roots() -> tuple[str, ...]:
    """Directories holding the running Python and its packages (never the current dir or PYTHONPATH entries)."""
    roots: list[str] = []
    candidates = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
                  str(Path(os.path.realpath(sys.executable)).parent.parent)]
    paths = sysconfig.get_paths()
    candidates += [paths.get(k, "") for k in ("stdlib", "platstdlib", "purelib", "platlib")]
    for path in candidates:
        if not path:
            continue
        real = os.path.realpath(path)
        if os.path.isdir(real) and not any(real == r or real.startswith(r + os.sep) for r in roots):
            roots = [r for r in roots if not r.startswith(real + os.sep)] + [real]
    return tuple(roots)


def thread_env() -> dict[str, str]:
    """One BLAS/OpenMP thread per candidate: evaluations share the machine, and a warm server must stay threadless."""
    return {name: "1" for name in THREAD_ENV}


def candidate_env(scratch: Path, extra: dict[str, str] | None = None, gpu: bool = False,
                  source: dict[str, str] | None = None) -> dict[str, str]:
    """The candidate's whole environment: an allowlist of the launcher's, never its secrets."""
    source = os.environ if source is None else source
    names = ENV_ALLOWLIST + (GPU_ENV_PASSTHROUGH if gpu else ())
    env = {k: source[k] for k in names if k in source}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update(HOME=str(scratch), TMPDIR=str(scratch), PYTHONDONTWRITEBYTECODE="1", PYTHONHASHSEED="0")
    env.update(thread_env())
    if gpu:
        env.update(CUPY_CACHE_DIR=str(scratch / ".cupy"), CUDA_CACHE_PATH=str(scratch / ".nv"))
    env.update(extra or {})
    return env


def nvidia_device_nodes(env: dict[str, str], dev_dir: str | None = None) -> tuple[str, ...]:
    """Device nodes a GPU process may open (see the module docstring for the ordinal caveat)."""
    dev_dir = dev_dir or DEV_DIR
    nodes = [p for n in NVIDIA_CONTROL_NODES if os.path.exists(p := os.path.join(dev_dir, n))]
    numbered = sorted(glob.glob(os.path.join(dev_dir, "nvidia[0-9]*")))
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and env.get("CUDA_DEVICE_ORDER") == "PCI_BUS_ID":
        wanted = [v.strip() for v in visible.split(",") if v.strip()]
        if wanted and all(v.isdigit() for v in wanted):
            numbered = [n for n in numbered if os.path.basename(n)[len("nvidia"):] in wanted]
    return tuple(nodes + numbered)


def rlimits_for(limits: Limits, timeout: float, gpu: bool, nproc: int | None) -> tuple[tuple[int, int, int], ...]:
    mem = limits.memory_mb * 1024 * 1024
    cpu = max(1, int(timeout) + 1)
    out = [
        (resource.RLIMIT_CPU, cpu, cpu + 1),
        (resource.RLIMIT_DATA if gpu else resource.RLIMIT_AS, mem, mem),
        (resource.RLIMIT_FSIZE, limits.file_size_mb * 1024 * 1024, limits.file_size_mb * 1024 * 1024),
        (resource.RLIMIT_NOFILE, limits.open_files, limits.open_files),
        (resource.RLIMIT_CORE, 0, 0),
    ]
    if nproc is not None:
        out.append((resource.RLIMIT_NPROC, nproc, nproc))
    return tuple(out)


def user_process_count(uid: int) -> int:
    """Processes (threads included, as RLIMIT_NPROC counts them) that ``uid`` runs now."""
    count = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid == uid:
                count += len(os.listdir(f"/proc/{entry.name}/task"))
        except OSError:
            continue
    return count


def landlock_rules(scratch: Path, read_paths: tuple[str, ...], gpu: bool, private_dirs: bool,
                   harness: str | None, env: dict[str, str]) -> tuple[tuple[str, int], ...]:
    rules: list[tuple[str, int]] = [(p, landlock.READ_EXEC) for p in SYSTEM_READ_EXEC + python_roots()]
    rules += [(p, landlock.READ) for p in read_paths]
    if harness:
        rules.append((harness, landlock.READ_FILE))
    rules += [(p, landlock.DEVICE) for p in DEVICE_FILES]
    rules.append(("/sys/devices/system/cpu", landlock.READ))
    if not private_dirs:  # the host's /proc: its global facts only (the trampoline adds the process's own dir)
        rules += [("/proc/cpuinfo", landlock.READ_FILE), ("/proc/meminfo", landlock.READ_FILE)]
    if private_dirs:  # private to this process tree, discarded with it
        rules.append(("/proc", landlock.READ))
        # Only /dev/shm is writable (POSIX semaphores live there): /tmp holds the bind-mounted scratch and read paths,
        # and a write rule on /tmp would reach through to them. TMPDIR points at the scratch dir anyway.
        rules.append(("/dev/shm", landlock.WRITE))
    rules.append((str(scratch), landlock.WRITE))
    if gpu:
        rules += [(n, landlock.DEVICE) for n in nvidia_device_nodes(env)]
        rules += [("/sys", landlock.READ), ("/proc/driver/nvidia", landlock.READ)]
    return tuple(rules)


def _traversable_by_others(path: str) -> bool:
    try:
        return bool(os.stat(path).st_mode & stat.S_IXOTH)
    except OSError:
        return True  # missing paths are skipped later, not covered


def _ancestors(path: str) -> list[str]:
    """The directories between the root and ``path`` (both excluded): ``/a/b/c`` -> ``/a``, ``/a/b``."""
    if not path.startswith(os.sep) or path.startswith(os.sep * 2):  # relative, or POSIX's special "//"
        parts = Path(path).parts
        return [str(Path(*parts[:i])) for i in range(2, len(parts))]
    parts = [part for part in path.split(os.sep) if part and part != "."]  # as pathlib normalises them
    return [os.sep + os.sep.join(parts[:i]) for i in range(1, len(parts))]


def plan_covers(needed: list[tuple[str, bool]], private: bool, other_uid: bool) -> tuple[Cover, ...]:
    """tmpfs covers for a mount namespace.

    ``private``: /tmp, /var/tmp and /dev/shm become empty private tmpfs. ``other_uid``: any directory that the
    candidate's uid could not traverse (``/root`` holding a pyenv Python, a 0700 pytest tmp dir) is covered by a 0755
    tmpfs. In both cases the ``needed`` paths below a cover are bind-mounted back at the same place.
    """
    covers: dict[str, int] = {}
    if private:
        covers.update({d: 0o1777 for d in PRIVATE_DIRS if os.path.isdir(d)})
    if other_uid:
        needed = _expand_closed(needed)
        for path, _ in needed:
            for ancestor in _ancestors(path):
                if any(ancestor == c or ancestor.startswith(c + os.sep) for c in covers):
                    break
                if not _traversable_by_others(ancestor):
                    covers[ancestor] = 0o755
                    break
    out = []
    for cover, mode in sorted(covers.items(), key=lambda kv: kv[0].count(os.sep)):
        expose = tuple((p, w) for p, w in needed if p.startswith(cover + os.sep) and os.path.exists(p))
        out.append(Cover(cover, mode, expose))
    return tuple(out)


def _expand_closed(needed: list[tuple[str, bool]], depth: int = 2) -> list[tuple[str, bool]]:
    """A read-only needed directory that others cannot search itself (a venv made in ``mktemp -d``'s 0700 dir) is
    replaced by its entries: the directory then becomes a cover of its own, and its entries are bound back below."""
    out: list[tuple[str, bool]] = []
    for path, writable in needed:
        if writable or depth == 0 or not os.path.isdir(path) or _traversable_by_others(path):
            out.append((path, writable))
            continue
        try:
            entries = sorted(entry.path for entry in os.scandir(path))
        except OSError:
            out.append((path, writable))
            continue
        out += _expand_closed([(entry, False) for entry in entries], depth - 1)
    return out


def missing_for_uid(needed: list[str]) -> list[str]:
    """Paths an unprivileged uid could not reach without a mount namespace (the path itself included)."""
    return [p for p in needed
            if not all(_traversable_by_others(a) for a in _ancestors(p))
            or (os.path.isdir(p) and not _traversable_by_others(p))]


@dataclass(frozen=True)
class PlanInput:
    """The trusted side's request for one sandboxed process."""

    mode: str
    argv: tuple[str, ...]
    scratch: Path
    timeout: float
    limits: Limits
    layers: frozenset[Layer]
    env: dict[str, str]
    read_paths: tuple[str, ...] = ()
    gpu: bool = False
    uid: int | None = None  # unprivileged uid (root launcher with the uid layer)
    harness: str | None = None
    tmpfs_mb: int = 64
    cores: tuple[int, ...] = ()
    scratch_cap: tuple[int, int] = (0, 0)
    launcher_uid: int = field(default_factory=os.getuid)


def plan_spawn(req: PlanInput) -> SpawnSpec:
    """Turn a request into the exact settings the trampoline applies."""
    layers = set(req.layers)
    other_uid = Layer.UID in layers and req.uid is not None and req.uid != req.launcher_uid
    if Layer.UID in layers and req.launcher_uid == 0 and req.uid is None:
        raise SpawnError("the uid layer needs an unprivileged uid")
    nproc: int | None = None  # root ignores RLIMIT_NPROC: set it only where it binds
    if other_uid:
        nproc = req.limits.processes
    elif req.launcher_uid != 0:
        # same uid as the launcher: the limit counts all of the launcher's processes too
        nproc = user_process_count(req.launcher_uid) + req.limits.processes
    rlimits = rlimits_for(req.limits, req.timeout, req.gpu, nproc) if Layer.RLIMITS in layers else ()

    scratch = str(req.scratch)
    read_paths = tuple(os.path.realpath(p) for p in req.read_paths)
    needed: list[tuple[str, bool]] = [(scratch, True)]
    needed += [(p, False) for p in python_roots() + read_paths]
    if req.harness:
        needed.append((req.harness, False))
    covers: tuple[Cover, ...] = ()
    if Layer.MNTNS in layers:
        covers = plan_covers(needed, private=True, other_uid=other_uid)
    elif other_uid and (blocked := missing_for_uid([p for p, _ in needed])):
        raise SpawnError(f"uid {req.uid} cannot reach {', '.join(blocked)} without a mount namespace; make the "
                         "parent directories world-searchable or enable the mntns layer")
    rules: tuple[tuple[str, int], ...] = ()
    if Layer.LANDLOCK in layers:
        rules = landlock_rules(req.scratch, read_paths, req.gpu, Layer.MNTNS in layers, req.harness, req.env)
    return SpawnSpec(
        mode=req.mode,
        argv=req.argv,
        env=dict(req.env),
        cwd=scratch,
        layers=tuple(layer.value for layer in Layer if layer in layers),
        rlimits=rlimits,
        uid=req.uid if other_uid else None,
        gid=req.uid if other_uid else None,
        landlock_rules=rules,
        deny_network=Layer.NONET in layers,
        covers=covers,
        tmpfs_mb=req.tmpfs_mb,
        harness_argv=(req.harness, str(HARNESS_FD)) if req.harness else (),
        cores=req.cores,
        scratch_cap=req.scratch_cap if Layer.DISKWATCH in layers else (0, 0),
    )
