"""The warm runner's process (``python -m evolve.runner_process STATE``, started by ``evolve ray start``): warm up,
then serve runs on a unix socket, one at a time, in the main thread (where Python delivers interrupts). What it is
for and what it refuses: ``evolve.runner``; the caller's side: ``evolve.launch``.

Per run it swaps in the caller's standard streams, working directory and environment, runs ``evolve ARGS`` as the
command line would, and swaps its own back (again after any interrupt that came as the run ended). A caller's
signal, or its death, becomes a SIGINT sent to the main thread while the run is in progress, and nothing otherwise.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import json
import os
import queue
import signal
import socket
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evolve.launch import HEADER, RUNNER_ENV, RUNNER_SOCKET, peer_is_me
from evolve.runner import READY_TIMEOUT, code_fingerprint, process_wide_difference

ORPHAN_GRACE = 15.0  # seconds a run whose caller died may take to stop before the runner exits
KEEP_WARM_EVERY = 5.0  # seconds between checks, while idle, that a worker per CPU is still warm
LEFTOVER_TIMEOUT = 600.0  # seconds to wait for what a stopped run left in flight (each is bounded by its stage)
MAX_RSS = 2 << 30  # bytes: past this after a run, the runner exits (later runs start their own drivers)


class _Refused(Exception):
    pass


@dataclass
class _Request:
    conn: socket.socket
    fds: list[int]
    argv: list[str]
    cwd: str
    env: dict[str, str]


class Runner:
    def __init__(self, state: Path):
        from evolve.ray_local import read_cluster

        self.environ = dict(os.environ)  # as started, before joining Ray sets anything: what callers must match
        cluster = read_cluster(state)
        if cluster is None:
            raise SystemExit(f"evolve runner: no local Ray recorded in {state}")
        self.cluster = cluster
        self.socket_path = Path(cluster.temp_dir) / RUNNER_SOCKET
        self.requests: queue.Queue[_Request] = queue.Queue()
        self.slot = threading.Lock()  # held from a run's admission until its leftovers are done
        self.running = False  # a run is between its start and its settling: interrupts go to it
        self.running_lock = threading.Lock()
        self.pending = False  # an interrupt came before the run began
        self.finishing = False
        self.stopping = False
        self.runs = 0
        self.main_thread = threading.main_thread().ident or 0
        self.fingerprint: dict[str, tuple[int, int]] = {}
        self.baseline: dict[str, str] = {}
        self.warm_task: Any = None
        self.warming: list[Any] = []
        self.next_warm = 0.0

    def warm_up(self) -> None:
        """Import what a run imports, join the recorded Ray, warm this process's sandbox and a worker per CPU."""
        import importlib

        from evolve.ray_local import TargetKind, choose_target, init_kwargs, prepare_environment
        from evolve.startup import LOOP_MODULES

        target = choose_target(None)
        if target.kind is not TargetKind.EVOLVE:
            raise SystemExit(f"evolve runner: the local Ray of `evolve ray start` is not running ({target.note})")
        prepare_environment(target)
        for name in ("evolve.cli", "evolve.run_setup", "evolve.mutators", "evolve.mutators.llm",
                     "evolve.mutators.tune", "evolve.mutators.scripted", "evolve.cluster", *LOOP_MODULES):
            importlib.import_module(name)  # what a run imports (the llm mutator: the openai package)
        import ray

        from evolve.sandbox import SandboxConfig, host_probe
        from evolve.startup import _warm_worker

        ray.init(**init_kwargs(target, None))
        host_probe(SandboxConfig())
        self.warm_task = ray.remote(_warm_worker).options(num_cpus=1, scheduling_strategy="SPREAD", max_retries=0)
        ray.get(self._warm_workers(self.cluster.num_cpus), timeout=READY_TIMEOUT)
        _rehearse()
        self.fingerprint = code_fingerprint()
        self.baseline = dict(os.environ)  # what the environment is swapped back to after each run

    def serve(self) -> None:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        staging = self.socket_path.with_name(self.socket_path.name + ".new")
        with contextlib.suppress(FileNotFoundError):
            staging.unlink()
        listener.bind(str(staging))
        os.chmod(staging, 0o600)
        listener.listen(16)
        os.replace(staging, self.socket_path)  # the socket appears once it answers: `evolve ray start` waits for it
        signal.signal(signal.SIGTERM, self._terminate)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # only a run's interrupt is a KeyboardInterrupt
        threading.Thread(target=self._accept, args=(listener,), name="evolve-runner-accept", daemon=True).start()
        print(f"evolve runner {os.getpid()}: ready on {self.socket_path}", flush=True)
        try:
            while not self.stopping:
                try:
                    request = self.requests.get(timeout=0.5)
                except queue.Empty:
                    self._keep_warm()
                    continue
                self._serve(request)
        finally:
            with contextlib.suppress(OSError):
                self.socket_path.unlink()
            print(f"evolve runner {os.getpid()}: exiting", flush=True)

    def _warm_workers(self, count: int) -> list[Any]:
        from evolve.sandbox import SandboxConfig

        preload = SandboxConfig().preload
        return [self.warm_task.remote(preload) for _ in range(max(1, count))]

    def _keep_warm(self) -> None:
        """While idle and the cluster too, see that a worker per CPU is warm: another job's workers make Ray end
        this job's idle ones (measured: after a run with a driver of its own, none were left)."""
        import ray

        if time.monotonic() < self.next_warm:
            return
        self.next_warm = time.monotonic() + KEEP_WARM_EVERY
        try:
            if self.warming and ray.wait(self.warming, num_returns=len(self.warming), timeout=0)[1]:
                return  # the last check's tasks are still starting workers
            total = ray.cluster_resources().get("CPU", 0.0)
            if ray.available_resources().get("CPU", 0.0) < total:
                return  # someone else's work: never take workers from it
            self.warming = self._warm_workers(int(total))
        except Exception as exc:  # noqa: BLE001 - only a head start for the next run
            print(f"evolve runner: keeping workers warm failed: {exc!r}", flush=True)

    def _terminate(self, _signum: int, _frame: Any) -> None:
        # A signal handler runs in the main thread, which may hold running_lock: it never takes it.
        self.stopping = True
        if self.running:
            signal.pthread_kill(self.main_thread, signal.SIGINT)  # the run stops as on Ctrl-C

    # -- admission (the accepting thread) ------------------------------------------------------------------------

    def _accept(self, listener: socket.socket) -> None:
        while not self.stopping:
            try:
                conn, _ = listener.accept()
            except OSError as exc:  # out of descriptors, a connection aborted: the next one may do
                print(f"evolve runner: accept failed: {exc}", flush=True)
                threading.Event().wait(0.5)
                continue
            try:
                self._admit(conn)
            except Exception as exc:  # noqa: BLE001 - a bad request never ends the runner
                print(f"evolve runner: request dropped: {exc!r}", flush=True)
                conn.close()

    def _admit(self, conn: socket.socket) -> None:
        conn.settimeout(10.0)
        data, fds, _flags, _addr = socket.recv_fds(conn, HEADER.size, 3)
        admitted = False
        try:
            for fd in fds:
                os.set_inheritable(fd, False)
            if not peer_is_me(conn):
                raise _Refused("another user's run")
            if len(data) != HEADER.size:
                raise _Refused("an incomplete request")
            message = json.loads(_read_exactly(conn, HEADER.unpack(data)[0]))
            if not isinstance(message, dict):
                raise _Refused("a malformed request")
            if message.get("query") == "status":
                _send(conn, {"pid": os.getpid(), "busy": self.slot.locked(), "finishing": self.finishing,
                             "runs": self.runs})
                conn.close()
                return
            request = _Request(conn, list(fds), [str(a) for a in message["argv"]], str(message["cwd"]),
                               {str(k): str(v) for k, v in dict(message["env"]).items()})
            if len(fds) != 3:
                raise _Refused("an incomplete request")
            reason = self._refusal(message)
            if reason:
                raise _Refused(reason)
            if not self.slot.acquire(blocking=False):
                raise _Refused("its last run's evaluations are still finishing" if self.finishing
                               else "another run is in it")
            conn.settimeout(None)
            self.requests.put(request)
            admitted = True
        except (_Refused, KeyError, TypeError, ValueError) as refused:
            with contextlib.suppress(OSError):
                _send(conn, {"refused": str(refused) if isinstance(refused, _Refused) else "a malformed request"})
        finally:
            if not admitted:
                for fd in fds:
                    with contextlib.suppress(OSError):
                        os.close(fd)
                conn.close()

    def _refusal(self, message: dict[str, Any]) -> str:
        from evolve.ray_local import is_running

        if self.stopping:
            return "it is stopping"
        if not is_running(self.cluster):
            self.stopping = True
            return "its Ray is gone"
        with contextlib.suppress(OSError):
            if not os.path.samefile(str(message.get("python", "")), sys.executable):
                return f"it runs {sys.executable}"
        differ = process_wide_difference(self.environ, dict(message.get("env") or {}))
        if differ:
            return "these environment variables differ from its own: " + ", ".join(differ)
        if code_fingerprint() != self.fingerprint:
            self.stopping = True
            return "evolve's code changed since it started; it exits"
        return ""

    # -- a run (the main thread) ---------------------------------------------------------------------------------

    def _serve(self, request: _Request) -> None:
        conn, released = request.conn, False
        done = threading.Event()
        try:
            _send(conn, {"accepted": True})
            self.pending = False
            threading.Thread(target=self._watch, args=(conn, done), name="evolve-runner-watch", daemon=True).start()
            code = self._execute(request)
            done.set()
            self.runs += 1
            leftovers = _leftovers()
            if not leftovers:  # free before the caller hears the end: its next run finds the runner idle
                self.slot.release()
                released = True
            if self._should_retire():
                self.stopping = True
            with contextlib.suppress(OSError):
                _send(conn, {"exit": code})
            if leftovers:
                self.finishing = True
                _wait_for(leftovers, LEFTOVER_TIMEOUT)
        except KeyboardInterrupt:
            pass  # one that came as the run ended
        except OSError:
            pass  # the caller went before it was answered
        finally:
            done.set()
            self._settle()
            self.finishing = False
            for fd in request.fds:  # not taken over by the run's streams when it never began
                with contextlib.suppress(OSError):
                    os.close(fd)
            conn.close()
            if not released:
                self.slot.release()

    def _watch(self, conn: socket.socket, done: threading.Event) -> None:
        """The caller's forwarded signals, and its end: each stops the run as Ctrl-C does."""
        with contextlib.suppress(OSError):
            for line in conn.makefile("rb"):
                if done.is_set():
                    return
                with contextlib.suppress(ValueError):
                    if "signal" in json.loads(line):
                        self._interrupt()
        if done.is_set():
            return
        self._interrupt()  # the caller is gone
        if not done.wait(ORPHAN_GRACE):
            print("evolve runner: a run whose caller died did not stop in time; exiting", flush=True)
            os._exit(1)

    def _interrupt(self) -> None:
        with self.running_lock:
            self.pending = True
            if self.running:
                signal.pthread_kill(self.main_thread, signal.SIGINT)  # wakes a blocking call too

    def _execute(self, request: _Request) -> int:
        streams = _streams(request.fds)
        request.fds = []  # the streams own them now
        code = 1
        try:
            _swap_environment(request.env | {RUNNER_ENV: str(os.getpid())}
                              | {k: v for k, v in self.baseline.items() if k.startswith("RAY_")})
            sys.stdin, sys.stdout, sys.stderr = streams
            os.chdir(request.cwd)
            with self.running_lock:
                self.running = True
                signal.signal(signal.SIGINT, signal.default_int_handler)
                if self.pending:  # the caller was interrupted before the run began
                    signal.pthread_kill(self.main_thread, signal.SIGINT)
            code = _invoke(request.argv)
        except KeyboardInterrupt:  # before the command began
            code = 130
        except OSError as exc:  # the caller's working directory is gone
            with contextlib.suppress(OSError, ValueError):
                print(f"error: {exc}", file=sys.stderr)
        finally:
            self._settle()
            for stream in streams:
                with contextlib.suppress(OSError, ValueError):
                    stream.flush()
                with contextlib.suppress(OSError, ValueError):
                    stream.close()
        return code

    def _settle(self) -> None:
        """No interrupt reaches the run any more (one delivered as it ended is absorbed here); the runner's own
        streams, directory and environment are back. Idempotent: called again if an interrupt cut it short."""
        while True:
            try:
                with self.running_lock:
                    self.running = False
                    signal.signal(signal.SIGINT, signal.SIG_IGN)  # one still pending is dropped
                sys.stdin, sys.stdout, sys.stderr = sys.__stdin__, sys.__stdout__, sys.__stderr__
                os.chdir("/")
                _swap_environment(self.baseline)
                return
            except KeyboardInterrupt:
                continue

    def _should_retire(self) -> bool:
        rss = _rss()
        if rss > MAX_RSS:
            print(f"evolve runner: {rss >> 20} MiB resident after a run; exiting (runs start their own drivers)",
                  flush=True)
            return True
        if code_fingerprint() != self.fingerprint:
            print("evolve runner: evolve's code changed; exiting", flush=True)
            return True
        return False


_REHEARSAL = {
    "problem.toml": 'name = "runner_warm_up"\nseed = "seed.py"\nevaluator = "evaluator.py"\n[score]\n'
                    'metric = "score"\n[[stages]]\nname = "main"\nfunction = "evaluate"\n',
    "seed.py": "A = 1.0\n\n\ndef solve():\n    return A\n",
    "evaluator.py": "def evaluate(candidate):\n    return {'score': -abs(float(candidate.call('solve')) - 3.0)}\n",
}


def _rehearse() -> None:
    """A few iterations of a throwaway problem through the real command, and the LLM client's lazily loaded parts:
    the first real run then finds its code paths warm (without this it took ~1 s longer than the next ones)."""
    import tempfile

    import openai

    with tempfile.TemporaryDirectory(prefix="evolve-runner-") as tmp:
        problem = Path(tmp) / "problem"
        problem.mkdir()
        for name, text in _REHEARSAL.items():
            (problem / name).write_text(text)
        with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), contextlib.redirect_stderr(null):
            code = _invoke(["run", str(problem), "--mutator", "tune", "--iterations", "4", "--run-dir",
                            str(Path(tmp) / "run"), "--quiet"])
    if code:
        print(f"evolve runner: the warm-up run ended with status {code}", flush=True)
    from evolve.llm.client import tls_context

    client = openai.OpenAI(api_key="warm-up", base_url="http://127.0.0.1:9/v1",
                           http_client=openai.DefaultHttpxClient(verify=tls_context()))
    _ = client.chat.completions, client.embeddings  # resources are imported on first use
    client.close()


def _send(conn: socket.socket, message: dict[str, Any]) -> None:
    conn.sendall(json.dumps(message).encode() + b"\n")


def _read_exactly(conn: socket.socket, size: int) -> bytes:
    if size > 64 << 20:
        raise _Refused("an oversized request")
    parts, left = [], size
    while left:
        part = conn.recv(min(left, 1 << 16))
        if not part:
            raise _Refused("an incomplete request")
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def _swap_environment(target: dict[str, str]) -> None:
    """Make ``os.environ`` equal ``target``, touching only what differs (other threads may read it meanwhile)."""
    for key in [k for k in os.environ if k not in target]:
        del os.environ[key]
    for key, value in target.items():
        if os.environ.get(key) != value:
            os.environ[key] = value


def _streams(fds: list[int]) -> tuple[Any, Any, Any]:
    """The caller's standard streams, buffered as Python buffers its own: line by line on a terminal."""
    encoding = sys.__stdout__.encoding if sys.__stdout__ else "utf-8"
    stdin = open(fds[0], encoding=encoding, errors="strict")  # noqa: SIM115 - closed after the run
    stdout = open(fds[1], "w", encoding=encoding, errors="strict",  # noqa: SIM115
                  buffering=1 if os.isatty(fds[1]) else -1)
    stderr = open(fds[2], "w", encoding=encoding, errors="backslashreplace", buffering=1)  # noqa: SIM115
    return stdin, stdout, stderr


def _invoke(argv: list[str]) -> int:
    """Run ``evolve ARGV`` as the command line would; its exit status. Output to a caller that is gone (a closed
    terminal, a pipe nobody reads) is dropped: it never ends the runner."""
    from evolve.cli import main

    try:
        main.main(args=argv, prog_name="evolve", standalone_mode=True)
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        with contextlib.suppress(OSError, ValueError):
            print(exc.code, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BaseException:  # noqa: BLE001 - what an uncaught error prints, then the next run
        with contextlib.suppress(OSError, ValueError):
            traceback.print_exc()
        return 1
    return 0


def _leftovers() -> list[Any]:
    """Evaluations the last run left in flight (Ray tasks and this process's own), still going."""
    import ray

    from evolve.startup import take_local_uncollected
    from evolve.worker import take_uncollected

    refs = take_uncollected()
    running = ray.wait(refs, num_returns=len(refs), timeout=0)[1] if refs else []
    return [*running, *take_local_uncollected()]


def _wait_for(leftovers: list[Any], timeout: float) -> None:
    import ray

    refs = [x for x in leftovers if not isinstance(x, cf.Future)]
    futures = [x for x in leftovers if isinstance(x, cf.Future)]
    if refs:
        ray.wait(refs, num_returns=len(refs), timeout=timeout)
    if futures:
        cf.wait(futures, timeout=timeout)


def _rss() -> int:
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return 0


def main(argv: list[str]) -> None:
    os.chdir("/")  # between runs: never keep a user's directory busy
    runner = Runner(Path(argv[0]))
    runner.warm_up()
    runner.serve()
    sys.stdout.flush()
    os._exit(0)  # Ray's exit hooks would wait for a cluster that may be stopping


if __name__ == "__main__":
    main(sys.argv[1:])
