"""Per-step cost of the trusted/candidate array channel (``evaluators/array_session.py``, ``evolve/channel.py``).

One step = the trusted side sends the parameters and gradients of every job to the candidate's sandboxed process,
which runs ``step`` (here a no-op that returns the parameters) and sends the new parameters back, checked on
arrival. This is the overhead the optimizer problem pays per training step on top of the actual computation.

    python bench/array_channel.py                 # default cases
    python bench/array_channel.py --steps 600 --json results.json

Cases: one job with 20 parameters (one small task), the optimizer's 12 training jobs in lockstep (its real
parameter shapes), and one job with 10^5 parameters (the bytes themselves). Reported: wall, trusted-side CPU and
candidate-side CPU (the kernel's count for its process tree) microseconds per step, medians of ``--rounds``
rounds, and the wall overhead of a 300-step task. CPU figures hardly move with the machine's load; wall does.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "problems" / "optimizer"))

from evaluators.array_session import XP, ArraySession, Held, RemoteCall, numeric_array  # noqa: E402
from evolve.candidate import Candidate  # noqa: E402
from evolve.problem import Limits  # noqa: E402
from evolve.sandbox import make_sandbox  # noqa: E402

NO_OP = """
def init_state(params, total_steps, xp):
    return None


def step(params, grads, state, t, xp):
    return params, state
"""


def optimizer_shapes() -> list[list[tuple[int, ...]]]:
    from evaluator import REPEATS, TRAIN_SUITE
    from optimizer_tasks import make_instance

    return [[p.shape for p in make_instance(spec, 0).params] for spec in TRAIN_SUITE
            for _ in range(REPEATS["train"])]


def measure(shapes: list[list[tuple[int, ...]]], steps: int) -> tuple[float, float, float]:
    """Wall, trusted CPU and candidate CPU seconds per step for jobs of these parameter shapes."""
    rng = np.random.default_rng(0)
    params = [[rng.standard_normal(s) for s in job] for job in shapes]
    grads = [[rng.standard_normal(s) for s in job] for job in shapes]
    keys = [f"job{i}" for i in range(len(shapes))]
    with Candidate(NO_OP, "bench", "bench", 600.0, 0, make_sandbox(Limits(memory_mb=2048))) as candidate:
        session = ArraySession(candidate)
        candidate.cpu_seconds()  # count the candidate's CPU from its import on
        session.batch([RemoteCall("init_state", (p, steps, XP), keep=k) for p, k in zip(params, keys, strict=True)])
        wall, cpu, remote = time.perf_counter(), time.process_time(), candidate.cpu_seconds()
        for t in range(1, steps + 1):
            calls = [RemoteCall("step", (p, g, Held(k), t, XP), keep=k, split=True)
                     for p, g, k in zip(params, grads, keys, strict=True)]
            out = session.batch(calls)
            params = [[numeric_array(v, "p", s.shape) for v, s in zip(new, old, strict=True)]
                      for new, old in zip(out, params, strict=True)]
        return ((time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps,
                (candidate.cpu_seconds() - remote) / steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    cases = {
        "1 job, 20 parameters": [[(20,)]],
        "optimizer train suite, 12 jobs in lockstep": optimizer_shapes(),
        "1 job, 100000 parameters": [[(100_000,)]],
    }
    results = {}
    print("| case | wall us / step | trusted CPU us / step | candidate CPU us / step | 300-step task, wall |")
    print("|---|---:|---:|---:|---:|")
    for name, shapes in cases.items():
        runs = [measure(shapes, args.steps) for _ in range(args.rounds)]
        wall, cpu, remote = (statistics.median(r[i] for r in runs) for i in range(3))
        results[name] = {"wall_us": wall * 1e6, "cpu_us": cpu * 1e6, "candidate_cpu_us": remote * 1e6}
        print(f"| {name} | {wall * 1e6:.0f} | {cpu * 1e6:.0f} | {remote * 1e6:.0f} | {300 * wall:.3f} s |",
              flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
