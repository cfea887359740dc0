"""The exec trampoline: what runs between ``fork`` and ``exec`` (or the warm harness) in the fork server's children.

With a root launcher and a PID namespace (the common case) one sandboxed process costs one fork and one spawn::

    fork server (single-threaded)   unshare(CLONE_NEWPID): its next children land in a fresh namespace
      ├─ init        PID 1: a 150-byte program (``tinyinit``; else ``cat``) reading the server's lifeline pipe,
      │              spawned (not forked: no copy of the server).
      │              Killing it makes the kernel kill everything left in the namespace, setsid daemons included;
      │              it exits by itself when the server dies (its stdin reads EOF).
      └─ candidate   PID 2, forked from the warm server: joins its cgroup (CPU accounting, cores), unshares
                     network, mount and IPC namespaces, mounts a private /proc, /tmp, /var/tmp, /dev/shm, then
                     setsid, CPU affinity, rlimits, uid, no_new_privs, Landlock, seccomp, and exec or the preloaded
                     harness.

The server reaps both and reports ``ready``/``exit`` to the trusted side. A non-root launcher must create a user
namespace first, which the server cannot do per child without moving itself into it; without a PID namespace,
orphans must be swept; without a capped scratch filesystem (``diskwatch``), the scratch dir must be measured. In
these cases a monitor process takes the server's watching role (and joins the candidate's cgroup itself)::

    fork server
      └─ monitor     unshare(USER|PID|NET|NS|IPC) or PR_SET_CHILD_SUBREAPER; reports ready/exit; kills on request;
           │         without a PID namespace, sweeps every descendant before reporting the exit; with diskwatch,
           │         kills the tree when its scratch dir is over the cap
           └─ init (a forked Python init, with a PID namespace) └─ candidate

The candidate is never PID 1 itself: a namespace's init ignores signals it sends itself and must reap orphans, which
would change how ordinary programs behave. Its parent lives outside its namespace, so ``os.getppid()`` is 0 (as for
``docker exec``). Nothing here runs in a multi-threaded process, which is why it may run Python between fork and exec
(``preexec_fn`` in a Ray worker could deadlock on a lock another thread held at fork time).
"""

from __future__ import annotations

import _signal
import contextlib
import errno
import fcntl
import io
import json
import os
import resource
import signal
import socket
import sys
import tempfile
import traceback
from dataclasses import dataclass
from typing import Any, NoReturn

from evolve.sandbox import cgroups, diskwatch, landlock, seccomp, syscalls
from evolve.sandbox.config import Layer
from evolve.sandbox.policy import HARNESS_FD, SpawnSpec, files_for

SETUP_FAILED = 126
EXEC_FAILED = 127
HARNESS_MODULE = "evolve_python_harness"
_SERVER_ONLY_PATHS: set[str] = set()


@dataclass(frozen=True)
class ChildFds:
    """Descriptors (in the forked child) that become 0, 1, 2 and 3 of the sandboxed process; -1 = absent."""

    stdin: int
    stdout: int
    stderr: int
    result: int = -1

    def all(self) -> list[int]:
        return [fd for fd in (self.stdin, self.stdout, self.stderr, self.result) if fd >= 0]


def register_server_paths(paths: list[str]) -> None:
    """sys.path entries the server added for itself, removed again in candidates."""
    _SERVER_ONLY_PATHS.update(paths)


def prepare() -> None:
    """Work every child would repeat, done once in the fork server before it forks: the seccomp programs."""
    if seccomp.supported():
        for deny_network in (False, True):
            seccomp.build_filter(deny_network)


def uses_monitor(spec: SpawnSpec) -> bool:
    """Whether a monitor process sits between the server and the candidate (see the module docstring)."""
    return spec.has(Layer.USERNS) or not spec.has(Layer.PIDNS) or spec.has(Layer.DISKWATCH)


def close_fds_except(keep: set[int]) -> None:
    previous = -1
    for fd in sorted(keep) + [resource.getrlimit(resource.RLIMIT_NOFILE)[0] + 1]:
        if fd > previous + 1:
            os.closerange(previous + 1, fd)
        previous = max(previous, fd)


def reset_signals() -> None:
    # ``_signal``'s plain ints: ``signal``'s wrappers convert through enums, whose objects a forked child would touch,
    # and every page of the server's memory a child writes (a reference count is enough) is copied for it.
    with contextlib.suppress(ValueError):
        _signal.set_wakeup_fd(-1)
    for sig in (_signal.SIGCHLD, _signal.SIGTERM, _signal.SIGHUP, _signal.SIGUSR1, _signal.SIGUSR2, _signal.SIGALRM):
        _signal.signal(sig, _signal.SIG_DFL)
    _signal.signal(_signal.SIGINT, _signal.default_int_handler)
    _signal.pthread_sigmask(_signal.SIG_SETMASK, ())


def exit_message(raw: int | None, killed: bool, error: str, cpu: float | None = None) -> dict[str, Any]:
    """The ``exit`` event for a wait status (None: the process vanished without one). ``cpu``: user + system
    seconds of the reaped tree as ``wait4`` reported them (what the ``proc`` CPU meter ends with)."""
    if raw is None:
        returncode, sig = None, int(signal.SIGKILL)
    elif os.WIFSIGNALED(raw):
        returncode, sig = -os.WTERMSIG(raw), os.WTERMSIG(raw)
    else:
        returncode, sig = os.waitstatus_to_exitcode(raw), None
    message = {"event": "exit", "returncode": returncode, "signal": sig, "killed": killed, "error": error}
    if cpu is not None:
        message["cpu"] = cpu
    return message


def _send(sock: socket.socket, message: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):  # the trusted side may be gone; cleanup goes on
        sock.send(json.dumps(message).encode())


def _server_gone(lifeline: int) -> bool:
    """True when the server died before our death signal was armed (its lifeline pipe reads EOF)."""
    return lifeline >= 0 and bool(syscalls.readable([lifeline], 0))


# ---------------------------------------------------------------------------------------------- direct child


def run_direct(spec: SpawnSpec, fds: ChildFds, err_w: int, lifeline: int) -> NoReturn:
    """The candidate as the server's direct child, PID 2 of a namespace the server just created. Never returns."""
    step = "setup"
    try:
        close_fds_except({*fds.all(), err_w, lifeline})
        syscalls.set_parent_death_signal(signal.SIGKILL)
        if _server_gone(lifeline):
            os._exit(1)
        os.close(lifeline)
        if spec.cgroup:  # first: everything from here on (harness start-up, the candidate's import) is charged
            step = "cgroup"
            cgroups.join(spec.cgroup)
        step = "namespaces"
        reset_signals()
        flags = syscalls.CLONE_NEWIPC
        for layer, flag in ((Layer.NETNS, syscalls.CLONE_NEWNET), (Layer.MNTNS, syscalls.CLONE_NEWNS)):
            if spec.has(layer):
                flags |= flag
        syscalls.unshare(flags)
        if spec.has(Layer.MNTNS):
            syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
            setup_mounts(spec)
    except BaseException as exc:  # noqa: BLE001
        _fail(err_w, f"{step}: {type(exc).__name__}: {exc}")
    _run_candidate(spec, fds, err_w)


def run_init(spec: SpawnSpec, fds: ChildFds, err_w: int, st_w: int, unshare_flags: int) -> NoReturn:
    """PID 1 of the candidate's namespace: finish the namespaces, fork the candidate, reap, report its status."""
    try:
        syscalls.set_parent_death_signal(signal.SIGKILL)
        syscalls.set_dumpable(False)
        if unshare_flags:
            syscalls.unshare(unshare_flags)
        if spec.has(Layer.MNTNS):
            syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
            setup_mounts(spec)
    except BaseException as exc:  # noqa: BLE001
        _fail(err_w, f"namespaces: {type(exc).__name__}: {exc}")
    child = os.fork()
    if child == 0:
        os.close(st_w)
        _run_candidate(spec, fds, err_w)
    for fd in (err_w, *fds.all()):
        os.close(fd)
    while True:
        try:
            pid, raw = os.waitpid(-1, 0)
        except ChildProcessError:
            os._exit(0)
        if pid == child:
            os.write(st_w, str(raw).encode())
            os._exit(0)


# ---------------------------------------------------------------------------------------------- monitor


def run_monitor(spec: SpawnSpec, fds: ChildFds, status: socket.socket, server_pid: int) -> NoReturn:
    """The monitor process (first child of the fork server). Never returns."""
    code = 0
    try:
        code = _monitor(spec, fds, status, server_pid)
    except BaseException as exc:  # noqa: BLE001 - report anything, then leave
        _send(status, {"event": "exit", "error": f"monitor failed: {type(exc).__name__}: {exc}",
                       "returncode": None, "signal": None, "killed": False})
        code = 1
    finally:
        os._exit(code)


def _monitor(spec: SpawnSpec, fds: ChildFds, status: socket.socket, server_pid: int) -> int:
    syscalls.set_parent_death_signal(signal.SIGKILL)
    if os.getppid() != server_pid:  # the server died before the death signal was armed
        return 1
    close_fds_except({status.fileno(), *fds.all()})
    reset_signals()
    os.setsid()
    if spec.cgroup:
        # The monitor joins (before any namespace: a user namespace could not) so that everything it forks is
        # charged; its own bookkeeping is charged too, and it moves back out when the tree is gone.
        try:
            cgroups.join(spec.cgroup)
        except OSError as exc:
            _send(status, exit_message(None, False, f"cgroup: {exc}"))
            return 1
    if spec.has(Layer.SUBREAPER):
        syscalls.set_child_subreaper()
    flags = 0
    for layer, flag in ((Layer.PIDNS, syscalls.CLONE_NEWPID | syscalls.CLONE_NEWIPC),
                        (Layer.NETNS, syscalls.CLONE_NEWNET), (Layer.MNTNS, syscalls.CLONE_NEWNS),
                        (Layer.USERNS, syscalls.CLONE_NEWUSER)):
        if spec.has(layer):
            flags |= flag
    outer_uid, outer_gid = os.getuid(), os.getgid()
    if flags:
        try:
            syscalls.unshare(flags)
            if spec.has(Layer.USERNS):
                write_id_maps(outer_uid, outer_gid)
        except OSError as exc:
            _send(status, exit_message(None, False, f"namespaces: {exc}"))
            return 1
    syscalls.set_dumpable(False)  # after the id maps: a non-dumpable process cannot write its own /proc files
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    st_r, st_w = os.pipe2(os.O_CLOEXEC)
    pidns = spec.has(Layer.PIDNS)
    watch = None
    if spec.has(Layer.DISKWATCH) and spec.scratch_cap[0] > 0:
        watch = diskwatch.Watch(spec.cwd, *spec.scratch_cap)
        watch.proc = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # before the init mounts its own
        watch.report_fd = os.dup(fds.stderr) if fds.stderr >= 0 else -1  # says why the tree was killed
    child = os.fork()
    if child == 0:
        os.close(err_r)
        os.close(st_r)
        os.close(status.detach())
        if pidns:
            run_init(spec, fds, err_w, st_w, unshare_flags=0)
        os.close(st_w)
        _run_candidate(spec, fds, err_w)
    _send(status, {"event": "spawned", "pids": [os.getpid()]})  # orphans come back to this process (subreaper)
    for fd in (err_w, st_w, *fds.all()):
        os.close(fd)
    return _supervise(child, status, err_r, st_r if pidns else -1, spec.cgroup_leave if spec.cgroup else (), watch)


def write_id_maps(uid: int, gid: int) -> None:
    """Map the launcher's own uid/gid into the new user namespace (the only mapping an unprivileged user may write)."""
    with open("/proc/self/setgroups", "w") as fh:
        fh.write("deny")
    with open("/proc/self/uid_map", "w") as fh:
        fh.write(f"{uid} {uid} 1")
    with open("/proc/self/gid_map", "w") as fh:
        fh.write(f"{gid} {gid} 1")


def read_init_status(st_r: int) -> int | None:
    """The candidate's wait status as written by its init (None if the init died first, i.e. was killed)."""
    data = b""
    with contextlib.suppress(OSError):
        while chunk := os.read(st_r, 64):
            data += chunk
    os.close(st_r)
    return int(data) if data.strip() else None


def _supervise(child: int, status: socket.socket, err_r: int, st_r: int, leave_cgroup: tuple[str, ...],
               disk: diskwatch.Watch | None) -> int:
    """Watch the child (an init when ``st_r`` >= 0, else the candidate itself) until it is gone; report."""
    pidfd = os.pidfd_open(child)
    watch = {status.fileno(), err_r, pidfd}
    setup_error = b""
    killed = False
    while pidfd in watch:
        ready = syscalls.readable(list(watch), disk.timeout() if disk and not killed else None)
        if disk and not killed and (over := disk.check(child)):
            with contextlib.suppress(OSError):
                os.write(disk.report_fd, over.encode())
            _kill(child)
            killed = True
        for fd in ready:
            if fd == err_r:
                data = os.read(err_r, 65536)
                setup_error += data
                if not data:
                    watch.discard(err_r)
                    if not setup_error:
                        _send(status, {"event": "ready"})
            elif fd == status.fileno():
                try:
                    message = status.recv(4096)
                except OSError:
                    message = b""
                if not message or message.startswith(b"kill"):
                    _kill(child)
                    killed = True
                if not message:
                    watch.discard(status.fileno())
            elif fd == pidfd:
                watch.discard(pidfd)
    _, raw = os.waitpid(child, 0)  # an init is reaped only once its namespace is empty
    if st_r >= 0:
        raw = read_init_status(st_r)
    else:
        sweep_descendants()
    with contextlib.suppress(OSError):
        setup_error += os.read(err_r, 65536)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # every process of the tree was reaped below us
    if leave_cgroup:
        with contextlib.suppress(OSError):
            cgroups.join(leave_cgroup)
    _send(status, exit_message(raw, killed, setup_error.decode("utf-8", "replace"), usage.ru_utime + usage.ru_stime))
    return 0


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _children_of(pids: set[int]) -> set[int]:
    """Every process whose parent chain reaches one of ``pids`` (one /proc scan)."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                data = fh.read()
        except OSError:
            continue
        fields = data[data.rfind(b")") + 2:].split()
        parent[int(entry)] = int(fields[1])
    found: set[int] = set()
    frontier = set(pids)
    while frontier:
        frontier = {pid for pid, ppid in parent.items() if ppid in frontier and pid not in found}
        found |= frontier
    return found


def sweep_descendants() -> None:
    """Kill everything below this subreaper until nothing is left (a fork loop cannot outrun SIGKILL for long)."""
    me = os.getpid()
    for _ in range(1000):
        try:
            os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return  # no child at all, so no descendant either: skip the /proc scan
        stray = _children_of({me})
        for pid in stray:
            _kill(pid)
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                pid = -1
            if pid <= 0:
                break
        if not stray and not _children_of({me}):
            return


# ---------------------------------------------------------------------------------------------- candidate


def setup_mounts(spec: SpawnSpec) -> None:
    """Private /proc, tmpfs covers, and the needed paths bind-mounted back below the covers."""
    os.umask(0o022)
    syscalls.mount("proc", "/proc", "proc", syscalls.MS_NOSUID | syscalls.MS_NODEV | syscalls.MS_NOEXEC)
    handles: list[tuple[str, bool, int, bool]] = []
    for cover in spec.covers:
        for path, writable in cover.expose:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            handles.append((path, writable, fd, os.path.isdir(path)))
    for cover in spec.covers:
        size = spec.tmpfs_mb if cover.mode & 0o002 else 1  # the inode cap keeps empty files from eating memory
        syscalls.mount("tmpfs", cover.path, "tmpfs", syscalls.MS_NOSUID | syscalls.MS_NODEV,
                       f"size={size}m,nr_inodes={files_for(size)},mode={cover.mode:o}")
    for path, _, fd, is_dir in handles:
        if is_dir:
            os.makedirs(path, 0o755, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(path), 0o755, exist_ok=True)
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644))
        syscalls.mount(f"/proc/self/fd/{fd}", path, None, syscalls.MS_BIND | syscalls.MS_REC)
        os.close(fd)
    # Everything read-only but the scratch dir and the private tmpfs dirs: in a user namespace the candidate has the
    # launcher's uid, so DAC alone would let it chmod or utime the launcher's files (Landlock does not cover that).
    syscalls.set_mount_read_only("/", recursive=True)
    for cover in spec.covers:
        if cover.mode & 0o002:
            syscalls.set_mount_read_only(cover.path, read_only=False)
    for path, writable, _, _ in handles:
        if writable:
            syscalls.set_mount_read_only(path, read_only=False)


def _fail(err_w: int, message: str) -> NoReturn:
    try:
        os.write(err_w, message.encode("utf-8", "replace")[:60000])
    finally:
        os._exit(SETUP_FAILED)


def _arrange_fds(fds: ChildFds, err_w: int) -> int:
    """Make the child's descriptors exactly 0, 1, 2 (and 3 = result channel); return the new error-pipe fd."""
    sources = [fds.stdin, fds.stdout, fds.stderr, fds.result]
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 64) if fd >= 0 else -1 for fd in sources]
    err_high = fcntl.fcntl(err_w, fcntl.F_DUPFD_CLOEXEC, 64)
    for target, fd in enumerate(high):
        if fd >= 0:
            os.dup2(fd, target, inheritable=True)
    keep = {target for target, fd in enumerate(high) if fd >= 0}
    err_fd = fcntl.fcntl(err_high, fcntl.F_DUPFD_CLOEXEC, HARNESS_FD + 1)
    close_fds_except(keep | {err_fd})
    return err_fd


def _run_candidate(spec: SpawnSpec, fds: ChildFds, err_w: int) -> NoReturn:
    layer = "setup"
    try:
        syscalls.set_parent_death_signal(signal.SIGKILL)
        layer = "session"
        os.setsid()
        layer = "fds"
        err_w = _arrange_fds(fds, err_w)
        if spec.cores:
            layer = "cores"
            os.sched_setaffinity(0, spec.cores)  # seccomp keeps the candidate from widening it again
        layer = "rlimits"
        for which, soft, hard in spec.rlimits:
            resource.setrlimit(which, (soft, hard))
        layer = "cwd"
        os.chdir(spec.cwd)
        os.umask(0o077)
        ruleset = None
        if spec.has(Layer.LANDLOCK):
            layer = "landlock"
            ruleset = landlock.Ruleset(landlock.abi_version())
            for path, access in spec.landlock_rules:
                ruleset.allow(path, access)
            if not spec.has(Layer.MNTNS):  # the host's /proc: this process's own entry, not everybody's
                ruleset.allow(f"/proc/{os.getpid()}", landlock.READ)
        if spec.uid is not None and spec.gid is not None:
            layer = "uid"
            os.setgroups([])
            os.setresgid(spec.gid, spec.gid, spec.gid)
            os.setresuid(spec.uid, spec.uid, spec.uid)
            if os.getuid() == 0 or os.geteuid() == 0:
                raise OSError(errno.EPERM, "still root after setresuid")
            syscalls.set_dumpable(True)  # the candidate's own /proc/self stays readable to it
        elif spec.has(Layer.USERNS):
            layer = "userns"
            syscalls.drop_all_capabilities()
        layer = "no_new_privs"
        syscalls.set_no_new_privs()
        if ruleset is not None:
            layer = "landlock"
            ruleset.restrict_self()
        if spec.has(Layer.SECCOMP):
            layer = "seccomp"
            seccomp.install(deny_network=spec.deny_network)
        elif spec.deny_network:
            raise OSError(errno.ENOSYS, "the nonet layer needs seccomp")
    except BaseException as exc:  # noqa: BLE001
        _fail(err_w, f"{layer}: {type(exc).__name__}: {exc}")
    if spec.mode == "exec":
        _exec(spec)
    _run_harness(spec, err_w)


def _exec(spec: SpawnSpec) -> NoReturn:
    for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)  # exec keeps ignored signals ignored; a fresh program expects defaults
    try:
        os.execvpe(spec.argv[0], list(spec.argv), spec.env)
    except OSError as exc:
        os.write(2, f"evolve sandbox: cannot execute {spec.argv[0]!r}: {exc}\n".encode())
    os._exit(EXEC_FAILED)


def _run_harness(spec: SpawnSpec, err_w: int) -> NoReturn:
    """Warm path: become a fresh-looking interpreter running the harness, without exec."""
    code = 0
    try:
        os.environ.clear()
        os.environ.update(spec.env)
        sys.argv = list(spec.harness_argv)
        tempfile.tempdir = None
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8", errors="backslashreplace")
        sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8", errors="backslashreplace",
                                      line_buffering=True)
        sys.stdin = io.TextIOWrapper(io.FileIO(os.open(os.devnull, os.O_RDONLY), "r"), encoding="utf-8")
        sys.path[:] = [p for p in sys.path if p not in _SERVER_ONLY_PATHS]
        _reseed()
        harness = sys.modules[HARNESS_MODULE]
        os.close(err_w)  # tells the monitor that setup succeeded
        harness.main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - a broken harness still must not fall back into the server loop
        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(BaseException):
                stream.flush()
        os._exit(code)


def _reseed() -> None:
    """A fresh interpreter seeds its RNGs from the OS; forked children would otherwise all share the server's state."""
    random = sys.modules.get("random")
    if random is not None:
        random.seed()
    np_random = sys.modules.get("numpy.random")
    if np_random is not None:
        np_random.seed()
