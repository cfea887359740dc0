"""How fast do ``evolve archive top`` and ``evolve archive map`` answer on a run of 1,000,000 programs?

Generates a synthetic run folder with the archive's real layout and schema (segments of 1024 rows, as the writer
flushes them; zstd; migrations; run.json; problem.toml snapshot), then times each command two ways:

* in-process: open the run and answer (``RunArchive(...).top()`` / ``.grid()``), a fresh DuckDB each time;
* end to end: the ``evolve archive ...`` command in a new Python process (interpreter start and imports included).

Usage::

    python bench/archive_scale.py                       # 1,000,000 programs under /tmp/evolve-archive-scale
    python bench/archive_scale.py --programs 200000 --repeat 3
    python bench/archive_scale.py --reuse               # keep an existing generated run

Rows are synthetic but shaped like real ones: ~700-character programs differing in their constants, a status mix
of a real run (about 60% ok), scores that improve with iteration, two features on a 10x10 grid, four islands.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from evolve.archive import MIGRATION_SCHEMA, write_run_info
from evolve.schema import ARCHIVE_SCHEMA

PROBLEM_TOML = """\
name = "scale"
description = "Synthetic archive for the archive query benchmark."
seed = "initial_program.py"
[score]
metric = "score"
direction = "maximize"
[[features]]
name = "code_length"
min = 0
max = 2000
bins = 10
[[features]]
name = "spread"
min = 0.0
max = 1.0
bins = 10
[[stages]]
name = "evaluate"
"""

CODE = """\
\"\"\"Synthetic candidate {i}.\"\"\"
{notes}
import math

# EVOLVE-BLOCK-START
ALPHA = {a:.6f}
BETA = {b:.6f}
STEPS = {steps}


def step(x):
    \"\"\"One update of the iteration; the constants above are what evolution tunes.\"\"\"
    return x - ALPHA * math.sin(x) + BETA * math.cos(x) / (1 + x * x)


def solve():
    x = 1.0
    for _ in range(STEPS):
        x = step(x)
    return x
# EVOLVE-BLOCK-END
"""

NOTE = "# a note the model left while trying a variant of the update rule\n"
STATUSES = np.array(["ok", "invalid_edit", "wrong_output", "runtime_error", "timeout", "compile_error", "rejected"])
STATUS_P = np.array([0.60, 0.14, 0.10, 0.08, 0.03, 0.03, 0.02])


def _hex_ids(rng: np.random.Generator, n: int) -> np.ndarray:
    raw = rng.integers(0, 2**63 - 1, size=n, dtype=np.int64)
    return np.array([f"{v:016x}" for v in raw], dtype=object)


def generate(run_dir: Path, programs: int, islands: int, segment_rows: int, seed: int) -> float:
    """Write the synthetic run; return seconds taken."""
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    if run_dir.exists():
        shutil.rmtree(run_dir)
    (run_dir / "segments").mkdir(parents=True)
    (run_dir / "migrations").mkdir()
    (run_dir / "journal").mkdir()
    (run_dir / "problem.toml").write_text(PROBLEM_TOML)
    session = f"{time.time_ns():019d}-{os.getpid()}"
    ids = _hex_ids(rng, programs)
    base_ms = int(time.time() * 1000) - programs * 50
    best_score = -np.inf
    best_id = ""
    for seq, lo in enumerate(range(0, programs, segment_rows)):
        hi = min(programs, lo + segment_rows)
        n = hi - lo
        it = np.arange(lo, hi, dtype=np.int64)
        status = STATUSES[rng.choice(len(STATUSES), size=n, p=STATUS_P)]
        status[it == 0] = "ok"
        progress = np.log1p(it) / np.log1p(programs)
        score = 1.0 + 1.5 * progress + rng.normal(0, 0.15, size=n)
        ok = status == "ok"
        a = rng.uniform(0, 2, size=n)
        b = rng.uniform(-1, 1, size=n)
        steps = rng.integers(1, 400, size=n)
        notes = rng.integers(0, 16, size=n)
        code = [CODE.format(i=int(i), a=x, b=y, steps=int(s), notes=NOTE * int(k))
                for i, x, y, s, k in zip(it, a, b, steps, notes, strict=True)]
        length = np.array([len(c) for c in code], dtype=np.float64)
        spread = rng.uniform(0, 1, size=n)
        cell = np.minimum(9, (length / 200).astype(np.int64)) * 10 + np.minimum(9, (spread * 10).astype(np.int64))
        parents = np.where(it > 0, ids[np.maximum(0, (it * rng.uniform(0.3, 1.0, size=n)).astype(np.int64) - 1)],
                           None)
        rows = {
            "program_id": ids[lo:hi].tolist(),
            "parent_ids": [[p] if p is not None else [] for p in parents],
            "island": (it % islands).astype(np.int32),
            "iteration": it,
            "generation": np.minimum(it, 200 + (it % 97)).astype(np.int32),
            "code": code,
            "edit": [f"<<<<<<< SEARCH\nALPHA = 1.0\n=======\nALPHA = {x:.6f}\n>>>>>>> REPLACE" for x in a],
            "edit_error": np.where(status == "invalid_edit", "search text not found in the parent", "").tolist(),
            "mutator": np.where(it == 0, "seed", "tune").tolist(),
            "status": status.tolist(),
            "score": pa.array(np.where(ok, score, np.nan), from_pandas=True),
            "fitness": pa.array(np.where(ok, score, np.nan), from_pandas=True),
            "metrics": [json.dumps({"score": float(s), "spread": float(p)}) if o else "{}"
                        for s, p, o in zip(score, spread, ok, strict=True)],
            "features": [json.dumps({"code_length": float(c), "spread": float(p)}) if o else "{}"
                         for c, p, o in zip(length, spread, ok, strict=True)],
            "cell": pa.array(np.where(ok, cell, 0), mask=~ok),
            "stages": [json.dumps([{"stage": "evaluate", "status": str(s), "seconds": 0.05}]) for s in status],
            "artifacts": np.where(ok, "{}", '{"stderr": "Traceback (most recent call last): ..."}').tolist(),
            "isolation": ["session+rlimits+pidns+netns+landlock+seccomp"] * n,
            "in_process": np.zeros(n, dtype=bool),
            "prompt": [""] * n,
            "llm": ["{}"] * n,
            "mutate_seconds": rng.uniform(0.001, 0.01, size=n),
            "eval_seconds": rng.uniform(0.02, 0.2, size=n),
            "created_at": pa.array(base_ms + it * 50, pa.timestamp("ms", tz="UTC")),
            "run_id": ["scale"] * n,
        }
        table = pa.table(rows, schema=ARCHIVE_SCHEMA)
        pq.write_table(table, run_dir / "segments" / f"{session}-{seq:06d}.parquet", compression="zstd")
        ok_scores = np.where(ok, score, -np.inf)
        if ok_scores.max() > best_score:
            best_score = float(ok_scores.max())
            best_id = str(ids[lo + int(ok_scores.argmax())])
        # As the writer does: the migrations integrated since the last flush go to a file of the same stem.
        moved = [{"program_id": ids[lo + k], "from_island": int(it[k] % islands),
                  "to_island": int((it[k] + 1) % islands), "iteration": int(it[k]),
                  "created_at": int(base_ms + it[k] * 50)} for k in np.flatnonzero(ok & (it % 50 == 0) & (it > 0))]
        if moved:
            pq.write_table(pa.Table.from_pylist(moved, schema=MIGRATION_SCHEMA),
                           run_dir / "migrations" / f"{session}-{seq:06d}.parquet", compression="zstd")
    write_run_info(run_dir, {
        "run_id": "scale", "problem": "scale", "state": "finished", "mutator": "tune", "created_at": time.time(),
        "settings": {"islands": islands, "iterations": programs - 1, "seed": seed},
    })
    (run_dir / "stats.json").write_text(json.dumps({"best_score": best_score, "best_program": best_id,
                                                    "done": programs - 1}))
    return time.perf_counter() - start


def _median_seconds(fn, repeat: int) -> tuple[float, list[float]]:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--programs", type=int, default=1_000_000)
    parser.add_argument("--islands", type=int, default=4)
    parser.add_argument("--segment-rows", type=int, default=1024)
    parser.add_argument("--out", type=Path, default=Path("/tmp/evolve-archive-scale"))
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reuse", action="store_true", help="reuse an existing generated run folder")
    args = parser.parse_args()

    from evolve.query import INDEX_DIR, RunArchive

    run_dir = args.out / "scale" / "run"
    if not (args.reuse and (run_dir / "run.json").exists()):
        seconds = generate(run_dir, args.programs, args.islands, args.segment_rows, args.seed)
        print(f"generated {args.programs:,} programs in {seconds:.1f} s")
    files = list((run_dir / "segments").glob("*.parquet"))
    size = sum(p.stat().st_size for p in files)
    results: dict[str, float] = {}

    # Cold: the first question about the run builds its index (one pass over every segment).
    shutil.rmtree(run_dir / INDEX_DIR, ignore_errors=True)
    start = time.perf_counter()
    with RunArchive(run_dir) as archive:
        archive.top(10)
        count = archive.count()
    results["first top, building the index"] = time.perf_counter() - start
    print(f"run: {run_dir}  programs: {count:,}  segments: {len(files)}  size: {size / 2**20:.0f} MiB")
    print(f"{'first top (builds index)':28s} {results['first top, building the index'] * 1000:7.0f} ms")

    def top() -> None:
        with RunArchive(run_dir) as archive:
            archive.top(10)

    def grid() -> None:
        with RunArchive(run_dir) as archive:
            archive.grids()

    for name, fn in (("top (in-process)", top), ("map, all islands (in-process)", grid)):
        median, times = _median_seconds(fn, args.repeat)
        results[name] = median
        print(f"{name:28s} median {median * 1000:7.0f} ms   runs: {', '.join(f'{t * 1000:.0f}' for t in times)}")
    for name, argv in (("evolve archive top", ["top", str(run_dir)]), ("evolve archive map", ["map", str(run_dir)])):
        cmd = [sys.executable, "-m", "evolve.cli", "archive", *argv]
        walls, cpus = [], []
        for _ in range(args.repeat):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            walls.append(time.perf_counter() - start)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        results[f"{name} (wall)"] = statistics.median(walls)
        results[f"{name} (cpu)"] = statistics.median(cpus)
        print(f"{name:28s} median {statistics.median(walls) * 1000:7.0f} ms wall, "
              f"{statistics.median(cpus) * 1000:.0f} ms CPU (interpreter start and imports included)")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import evolve.cli"], check=True)
    imports = time.perf_counter() - start
    results["interpreter start + import evolve.cli (wall)"] = imports
    print(f"{'import evolve.cli alone':28s} {imports * 1000:7.0f} ms wall")
    print(json.dumps({"programs": count, "segments": len(files), "cpus": os.cpu_count(),
                      "load_average": os.getloadavg(), "median_seconds": results}))


if __name__ == "__main__":
    main()
