"""Honest ablations: one problem under several search configurations and seeds, best score against iterations.

    python bench/ablation.py --problem problems/circle_packing --iterations 120 --seeds 0 1 2
    python bench/ablation.py --problem problems/optimizer --iterations 40 --seeds 0 1 --configs baseline weighted
    python bench/ablation.py --mutator llm --model MODEL --api-base URL --configs baseline strategies scratchpad
    python bench/ablation.py overhead                     # driver CPU per iteration, search features off and on

Each configuration is a ``[search]`` table (``evolve.search``; the presets are printed by ``--list``, or give your
own with ``--config-file FILE.toml``, one ``[name]`` table per configuration). Every (configuration, seed) is a full
run through ``evolve.run`` with ``--deterministic`` (same seed, same archive), all against one local Ray instance.
Printed per configuration: the best score after 25/50/75/100% of the iterations, as the mean over seeds with the
min–max spread, and the share of children that were valid, duplicates and not novel. ``--plot FILE.png`` draws the
mean best-so-far curve of each configuration with its min–max band. The offline mutators (``tune``, the default,
and ``scripted``) need no endpoint; ``llm`` uses any configured one (the same flags as ``evolve run``).

``overhead`` runs ``bench/engine_overhead.py``'s measurement (an archive pre-loaded with N programs, the scripted
mutator, an instant evaluator) with the search features off and on.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PRESETS: dict[str, dict[str, Any]] = {
    "baseline": {},  # rank/uniform parents at [evolution] exploitation, the mutator's own edits
    "weighted": {"parent_selection": "weighted"},
    "power2": {"parent_selection": "power", "power_alpha": 2.0},
    "crossover": {"mutation_mix": {"diff": 0.8, "crossover": 0.2}},
    "adaptive": {"mutation_mix": {"diff": 0.8, "crossover": 0.2},
                 "adaptive": {"enabled": True, "exploitation": [0.4, 0.95]}},
    "novelty": {"novelty": {"enabled": True, "threshold": 0.98}},
    # These need the llm mutator.
    "strategies": {"strategies": {"enabled": True, "every": 10}},
    "scratchpad": {"scratchpad": {"every": 15}},
    "full_mix": {"mutation_mix": {"diff": 0.6, "full": 0.3, "crossover": 0.1}},
}


@dataclasses.dataclass
class RunResult:
    config: str
    seed: int
    curve: list[float | None]  # best score after each iteration (0: the seed)
    statuses: dict[str, int]
    wall: float


def best_curve(run_dir: Path, iterations: int, maximize: bool) -> tuple[list[float | None], dict[str, int]]:
    from evolve.archive import read_programs

    rows = read_programs(run_dir, columns=["iteration", "status", "score"]).table.to_pylist()
    at: dict[int, float] = {}
    statuses: dict[str, int] = {}
    for row in rows:
        if row["iteration"] > 0:
            statuses[row["status"]] = statuses.get(row["status"], 0) + 1
        if row["status"] == "ok" and row["score"] is not None and math.isfinite(row["score"]):
            it = int(row["iteration"])
            better = at.get(it) is None or (row["score"] > at[it] if maximize else row["score"] < at[it])
            if better:
                at[it] = float(row["score"])
    curve: list[float | None] = []
    best: float | None = None
    for it in range(iterations + 1):
        score = at.get(it)
        if score is not None and (best is None or (score > best if maximize else score < best)):
            best = score
        curve.append(best)
    return curve, statuses


def run_one(problem: Any, config: str, table: dict[str, Any], seed: int, args: argparse.Namespace,
            workdir: Path) -> RunResult:
    import evolve
    from evolve.mutators import build_mutator

    run_dir = workdir / f"{config}-seed{seed}"
    configured = dataclasses.replace(problem, sections={**problem.sections, "search": table})
    options = {"models": tuple(args.model), "api_base": args.api_base, "api_key": args.api_key,
               "max_llm_calls": None, "max_tokens": None, "max_cost": None}
    mutator = build_mutator(args.mutator, configured, options)
    start = time.monotonic()
    evolve.run(configured, mutator=mutator, seed=seed, iterations=args.iterations, run_dir=run_dir,
               concurrency=args.concurrency, deterministic=True)
    wall = time.monotonic() - start
    curve, statuses = best_curve(run_dir, args.iterations, configured.score.direction != "minimize")
    return RunResult(config, seed, curve, statuses, wall)


def _fmt(values: list[float]) -> str:
    if not values:
        return "-"
    mean = statistics.fmean(values)
    return f"{mean:.4f} ({min(values):.4f}–{max(values):.4f})"


def report(results: list[RunResult], iterations: int) -> list[str]:
    marks = [max(1, round(iterations * q)) for q in (0.25, 0.5, 0.75, 1.0)]
    lines = ["| configuration | " + " | ".join(f"best @ {m}" for m in marks)
             + " | valid | duplicate | not novel | wall s / run |",
             "|---|" + "---:|" * (len(marks) + 4)]
    for config in dict.fromkeys(r.config for r in results):
        runs = [r for r in results if r.config == config]
        cells = [_fmt([r.curve[m] for r in runs if r.curve[m] is not None]) for m in marks]
        total = sum(sum(r.statuses.values()) for r in runs) or 1
        share = {k: sum(r.statuses.get(k, 0) for r in runs) / total for k in ("ok", "duplicate", "not_novel")}
        lines.append(f"| {config} | " + " | ".join(cells)
                     + f" | {share['ok']:.0%} | {share['duplicate']:.0%} | {share['not_novel']:.0%} | "
                       f"{statistics.fmean(r.wall for r in runs):.0f} |")
    return lines


def plot(results: list[RunResult], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    for config in dict.fromkeys(r.config for r in results):
        runs = [r for r in results if r.config == config]
        curves = np.array([[np.nan if v is None else v for v in r.curve] for r in runs], dtype=float)
        x = np.arange(curves.shape[1])
        mean = np.nanmean(curves, axis=0)
        (line,) = ax.plot(x, mean, label=f"{config} ({len(runs)} seeds)")
        ax.fill_between(x, np.nanmin(curves, axis=0), np.nanmax(curves, axis=0), color=line.get_color(), alpha=0.15)
    ax.set_xlabel("iteration")
    ax.set_ylabel("best score so far (mean, min–max band)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def overhead(args: argparse.Namespace) -> None:
    """``bench/engine_overhead.py``'s measurement with the search features off and on."""
    import ray

    sys.path.insert(0, str(ROOT / "bench"))
    import engine_overhead as eo  # type: ignore[import-not-found]

    from evolve import problem as problem_module

    table = {"parent_selection": "weighted", "mutation_mix": {"diff": 0.8, "crossover": 0.2},
             "adaptive": {"enabled": True}, "novelty": {"enabled": True, "threshold": 0.98}}
    real_load = problem_module.load_problem
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, logging_level="WARNING",
             log_to_driver=False)
    print(f"{'archive size':>12}  {'search':>7}  {'driver CPU ms/iter':>18}  {'iter/s':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        instant = eo.make_problem(work / "instant", eo.INSTANT)
        for size in args.sizes:
            for label, search in (("off", None), ("on", table)):
                def load(path: Any, search: Any = search) -> Any:
                    loaded = real_load(path)
                    if search is None:
                        return loaded
                    return dataclasses.replace(loaded, sections={**loaded.sections, "search": search})

                eo.load_problem = load
                cpu_ms, rate = eo.measure(instant, size, args.iterations, args.concurrency, work / label)
                print(f"{size:>12}  {label:>7}  {cpu_ms:>18.3f}  {rate:>8.1f}", flush=True)
    eo.load_problem = real_load
    ray.shutdown()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "overhead":
        parser = argparse.ArgumentParser(prog="ablation.py overhead")
        parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 100_000])
        parser.add_argument("--iterations", type=int, default=400)
        parser.add_argument("--concurrency", type=int, default=8)
        overhead(parser.parse_args(sys.argv[2:]))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problem", type=Path, default=ROOT / "problems" / "circle_packing")
    parser.add_argument("--configs", nargs="+", default=["baseline", "weighted", "power2", "crossover", "adaptive",
                                                          "novelty"])
    parser.add_argument("--config-file", type=Path, help="TOML with one [name] table ([search] contents) per config")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--iterations", type=int, default=120)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--mutator", choices=["tune", "scripted", "llm"], default="tune")
    parser.add_argument("--model", action="append", default=[], help="LLM model (repeatable), with --mutator llm")
    parser.add_argument("--api-base")
    parser.add_argument("--api-key")
    parser.add_argument("--plot", type=Path, help="write the curves to this PNG")
    parser.add_argument("--json", type=Path, help="write every run's curve and outcome counts to this file")
    parser.add_argument("--keep", type=Path, help="keep the runs in this folder")
    parser.add_argument("--list", action="store_true", help="print the preset configurations and exit")
    args = parser.parse_args()
    configs = dict(PRESETS)
    if args.config_file is not None:
        configs.update(tomllib.loads(args.config_file.read_text()))
    if args.list:
        for name, table in configs.items():
            print(f"{name}: {json.dumps(table)}")
        return
    unknown = [c for c in args.configs if c not in configs]
    if unknown:
        raise SystemExit(f"unknown configuration(s) {', '.join(unknown)}; --list shows them")

    import ray

    from evolve.problem import load_problem
    from evolve.search.settings import resolve_search_settings

    problem = load_problem(args.problem)
    for name in args.configs:
        resolve_search_settings(configs[name])  # every mistake before the first run
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR",
             log_to_driver=False)
    results: list[RunResult] = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.keep or Path(tmp)
        for name in args.configs:
            for seed in args.seeds:
                result = run_one(problem, name, configs[name], seed, args, workdir)
                results.append(result)
                print(f"{name} seed {seed}: best {result.curve[-1]} ({result.wall:.0f} s; {result.statuses})",
                      flush=True)
    ray.shutdown()
    print(f"\n{problem.name}, mutator {args.mutator}, {args.iterations} iterations, seeds "
          f"{' '.join(map(str, args.seeds))} (deterministic runs); best score: mean over seeds (min–max)\n")
    print("\n".join(report(results, args.iterations)))
    if args.plot is not None:
        plot(results, args.plot, f"{problem.name}: best score vs iterations ({args.mutator})")
        print(f"\nplot: {args.plot}")
    if args.json is not None:
        args.json.write_text(json.dumps([dataclasses.asdict(r) for r in results]))


if __name__ == "__main__":
    main()
