"""Iterations per second of LLM-bound runs: `evolve run --mutator llm` against the peer benchmark's mock endpoint with
a fixed answer delay, at several concurrencies, next to OpenEvolve on the same folder and the same mock.

    python bench/llm_throughput.py                                   # delays 0.5 and 5 s, 60 iterations
    python bench/llm_throughput.py --delays 0.5 --iterations 60 --concurrency 4 16
    python bench/llm_throughput.py --openevolve /work/oe-venv/bin/openevolve-run

For each delay a fresh `mock_llm_server.py --delay D --vary` is started (127.0.0.1, a free port). evolve runs the
OpenEvolve-format folder `openevolve_toy` (its evaluator never runs the program, so the figures measure LLM
concurrency, not evaluation) as a subprocess, attached to one local Ray instance this script starts (so Ray's own
start-up is paid once, not per row), with `[llm] max_concurrency` set through a user config file: 4 (the old
default: at most 4 calls in flight whatever the run's concurrency) and the adaptive limit up to 32. OpenEvolve, when
its `openevolve-run` is found, runs the same folder with `parallel_evaluations` set to the concurrency.

Reported per row: wall seconds of the whole command, seconds of evolve's loop (`stats.json`: seed evaluation and
shutdown included), seconds from the seed's archive row to the last child's (the steady state), iterations per
second over the wall time (start-up included: comparable across engines) and over the children's seconds (evolve), the most connections open to the mock at once (the peak of calls in flight), and the calls made. The ideal for an LLM-bound
run is `iterations x delay / calls in flight`. Mutation concurrency apart from evaluation concurrency needs the
driver to ask the mutator how many proposals to keep in flight (``desired_in_flight``); the script says whether the
loop it runs does.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The peer benchmark sits in ../shared/peer-bench next to the project's checkout (or where EVOLVE_PEER_BENCH says).
PEER = Path(os.environ.get("EVOLVE_PEER_BENCH") or next(
    (p for p in (REPO.parent / "shared" / "peer-bench", REPO.parent.parent / "shared" / "peer-bench") if p.exists()),
    REPO.parent / "shared" / "peer-bench"))
MOCK = PEER / "mock_llm_server.py"
TOY = PEER / "openevolve_toy"
OPENEVOLVE_CANDIDATES = (Path("/work/oe-venv/bin/openevolve-run"), Path("/tmp/oe-venv/bin/openevolve-run"))


@dataclass
class Row:
    engine: str
    delay: float
    concurrency: int
    max_llm: int | None
    wall: float
    loop: float | None  # evolve's loop, seed evaluation and shutdown included (stats.json)
    children: float | None  # from the seed's row to the last child's row: the steady state
    done: int
    calls: int
    peak: int

    def line(self) -> str:
        def fmt(x: float | None) -> str:
            return f"{x:.1f}" if x is not None else "-"

        steady = f"{self.done / self.children:.2f}" if self.children else "-"
        llm = str(self.max_llm) if self.max_llm is not None else "-"
        return (f"| {self.engine} | {self.delay:g} | {self.concurrency} | {llm} | {self.wall:.1f} | "
                f"{self.done / self.wall:.2f} | {fmt(self.loop)} | {fmt(self.children)} | {steady} | {self.peak} | "
                f"{self.calls} |")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Mock:
    """The peer benchmark's mock endpoint in a subprocess, with a sampler of its requests in flight."""

    def __init__(self, delay: float):
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, str(MOCK), "--port", str(self.port), "--delay", str(delay),
                                      "--vary"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                self.requests()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("the mock LLM server did not start")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def requests(self) -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/stats", timeout=5) as answer:
            return int(json.loads(answer.read())["requests"])

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


class PeakSampler:
    """The most TCP connections open to the mock's port at once (``ss``, every 50 ms): clients keep idle connections
    open and open a new one only when every open one is busy, so this is the peak of calls in flight."""

    def __init__(self, port: int):
        self.port = port
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        if shutil.which("ss") is None:
            return
        while not self._stop.wait(0.05):
            out = subprocess.run(["ss", "-tn", "state", "established", f"( sport = :{self.port} )"],
                                 capture_output=True, text=True).stdout
            self.peak = max(self.peak, max(0, len(out.strip().splitlines()) - 1))

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)


def run_evolve(mock: Mock, delay: float, concurrency: int, max_llm: int, iterations: int, address: str,
               work: Path) -> Row:
    work.mkdir(parents=True, exist_ok=True)
    config = work / f"config-{max_llm}.toml"
    config.write_text(f"[llm]\nmax_concurrency = {max_llm}\ntimeout = {max(30.0, 4 * delay)}\n")
    run_dir = work / f"evolve-{delay:g}-{concurrency}-{max_llm}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env.update({"EVOLVE_CONFIG": str(config), "PYTHONPATH": str(REPO)})
    before = mock.requests()
    started = time.monotonic()
    with PeakSampler(mock.port) as sampler:
        result = subprocess.run([sys.executable, "-m", "evolve.cli", "run", str(TOY), "--mutator", "llm",
                                 "--api-base", mock.url, "--api-key", "bench", "--model", "mock-model",
                                 "--iterations", str(iterations), "--concurrency", str(concurrency),
                                 "--run-dir", str(run_dir), "--address", address, "--quiet"],
                                env=env, capture_output=True, text=True)
    wall = time.monotonic() - started
    if result.returncode != 0:
        raise RuntimeError(f"evolve run failed ({result.returncode}):\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    stats = json.loads((run_dir / "stats.json").read_text())
    return Row("evolve", delay, concurrency, max_llm, wall, stats["elapsed_seconds_this_session"],
               children_seconds(run_dir), stats["done"], mock.requests() - before, sampler.peak)


def children_seconds(run_dir: Path) -> float:
    from evolve.archive import read_programs

    table = read_programs(run_dir).table
    times = sorted(zip(table.column("iteration").to_pylist(), table.column("created_at").to_pylist(), strict=True),
                   key=lambda pair: pair[1])
    seed = next(t for it, t in times if it == 0)
    return (times[-1][1] - seed).total_seconds()


def run_openevolve(binary: Path, mock: Mock, delay: float, concurrency: int, iterations: int, work: Path) -> Row:
    source = (TOY / "config.yaml").read_text()
    config = re.sub(r'api_base: "[^"]*"', f'api_base: "{mock.url}"', source)
    config = re.sub(r"parallel_evaluations: \d+", f"parallel_evaluations: {concurrency}", config)
    config = re.sub(r"max_iterations: \d+", f"max_iterations: {iterations}", config)
    config = re.sub(r"timeout: \d+", f"timeout: {int(max(30, 4 * delay))}", config)
    path = work / f"oe-{delay:g}-{concurrency}.yaml"
    path.write_text(config)
    out = work / f"oe-out-{delay:g}-{concurrency}"
    before = mock.requests()
    started = time.monotonic()
    with PeakSampler(mock.port) as sampler:
        result = subprocess.run([str(binary), str(TOY / "initial_program.py"), str(TOY / "evaluator.py"),
                                 "--config", str(path), "--iterations", str(iterations), "--output", str(out)],
                                capture_output=True, text=True, cwd=work)
    wall = time.monotonic() - started
    if result.returncode != 0:
        raise RuntimeError(f"openevolve-run failed ({result.returncode}):\n{result.stderr[-2000:]}")
    calls = mock.requests() - before
    return Row("OpenEvolve 0.4", delay, concurrency, None, wall, None, None, iterations, calls, sampler.peak)


def loop_sizes_mutations_apart() -> bool:
    from evolve.loop import Evolution

    return hasattr(Evolution, "_mutation_limit")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--delays", type=float, nargs="+", default=[0.5, 5.0])
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--max-llm", type=int, nargs="+", default=[4, 32],
                        help="[llm] max_concurrency values to compare (4 was the old fixed default)")
    parser.add_argument("--openevolve", type=Path, default=next((p for p in OPENEVOLVE_CANDIDATES if p.exists()), None),
                        help="openevolve-run to compare with (default: found in the usual places)")
    parser.add_argument("--no-openevolve", action="store_true")
    args = parser.parse_args()
    if not MOCK.exists():
        sys.exit(f"no mock server at {MOCK} (set EVOLVE_PEER_BENCH to the peer-bench folder)")

    import ray

    ray.init(address="local", include_dashboard=False, log_to_driver=False, configure_logging=False)
    address = ray.get_runtime_context().gcs_address
    print(f"loop sizes mutation concurrency apart from evaluation: {'yes' if loop_sizes_mutations_apart() else 'no'}")
    print("| engine | delay s | concurrency | [llm] max_concurrency | wall s | it/s (wall) | loop s | children s "
          "| it/s (children) | peak calls in flight | calls |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    try:
        with tempfile.TemporaryDirectory(prefix="llm-throughput-") as tmp:
            work = Path(tmp)
            for delay in args.delays:
                mock = Mock(delay)
                try:
                    # Warm up Ray's worker processes (started on demand, slow on a loaded machine) outside the rows.
                    run_evolve(mock, delay, max(args.concurrency), max(args.max_llm), 8, address, work / "warm")
                    for concurrency in args.concurrency:
                        for max_llm in args.max_llm:
                            row = run_evolve(mock, delay, concurrency, max_llm, args.iterations, address, work)
                            print(row.line(), flush=True)
                        if args.openevolve is not None and not args.no_openevolve:
                            row = run_openevolve(args.openevolve, mock, delay, concurrency, args.iterations, work)
                            print(row.line(), flush=True)
                finally:
                    mock.close()
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
