"""What the Ray cluster offers, whether a problem fits it, and how the problem folder reaches its workers."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evolve.problem import Problem

SHIPPED_ENV = "EVOLVE_PROBLEM_SHIPPED"
MAX_SHIPPED_BYTES = 100 * 1024 * 1024  # Ray's own upload limit for a working_dir package
SHIP_EXCLUDES = ["__pycache__", "*.pyc", ".git", "archive", "*.parquet"]
SLOTS_PER_CPU = 2  # programs in flight per evaluation slot: one running, one queued behind it


@dataclass(frozen=True)
class ClusterView:
    """Alive nodes and their resources, as the driver sees them."""

    nodes: int
    cpus: float
    gpus: float
    resources: dict[str, float] = field(default_factory=dict)
    node_resources: tuple[dict[str, float], ...] = ()

    def describe(self) -> str:
        return f"Ray cluster: {self.nodes} node(s), {self.cpus:g} CPUs, {self.gpus:g} GPUs"

    def default_concurrency(self) -> int:
        # A GPU node also declares CPUs; count a node's GPU slots only beyond its CPU slots.
        slots = sum(max(node.get("CPU", 0.0), node.get("GPU", 0.0)) for node in self.node_resources)
        return max(2, int(SLOTS_PER_CPU * (slots or self.cpus + self.gpus)))

    def fits(self, need: dict[str, float]) -> bool:
        """True when some single node offers every resource in ``need`` at once."""
        return any(all(node.get(k, 0.0) >= v for k, v in need.items() if v) for node in self.node_resources)


def cluster_view() -> ClusterView:
    import ray

    alive = [n for n in ray.nodes() if n.get("Alive")]
    totals: dict[str, float] = {}
    for node in alive:
        res = node.get("Resources", {})
        for key, value in res.items():
            if not key.startswith("node:") and not key.startswith("memory") and key != "object_store_memory":
                totals[key] = totals.get(key, 0.0) + float(value)
    return ClusterView(nodes=len(alive), cpus=totals.get("CPU", 0.0), gpus=totals.get("GPU", 0.0),
                       resources=totals,
                       node_resources=tuple({k: float(v) for k, v in n.get("Resources", {}).items()}
                                            for n in alive))


def unmet_requirements(problem: Problem, view: ClusterView) -> list[str]:
    """Why the problem's stages (held-out ones included) could never be scheduled on this cluster (empty when they
    can)."""
    problems: list[str] = []
    for stage in problem.all_stages:
        need = {"CPU": stage.cpus, "GPU": stage.gpus, **stage.resources}
        if view.fits(need):
            continue
        wanted = ", ".join(f"{k}={v:g}" for k, v in need.items() if v)
        reason = f"stage {stage.name!r} needs {wanted} on one node; no node of this cluster offers that"
        if stage.gpus and view.gpus == 0:
            reason += (f" (the cluster has no GPU). Check programs without one: `evolve eval {problem.root} "
                       f"{problem.seed_path}` runs the CPU stages")
        problems.append(reason)
    return problems


def folder_size(root: Path) -> int:
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in ("__pycache__", ".git", "archive")]
        for name in filenames:
            with contextlib.suppress(OSError):
                total += (Path(dirpath) / name).stat().st_size
    return total


class ShippingError(ValueError):
    pass


def problem_runtime_env(problem: Problem, limit: int = MAX_SHIPPED_BYTES) -> dict[str, Any]:
    """A runtime_env that ships the problem folder to every worker (the engine itself must be installed there)."""
    size = folder_size(problem.root)
    if size > limit:
        raise ShippingError(
            f"problem folder {problem.root} is {size / 2**20:.1f} MiB; at most {limit / 2**20:.0f} MiB can be "
            "shipped to cluster workers. Move data sets out of the folder (list them in read_paths on a shared "
            "file system) or install them on the worker image."
        )
    return {"working_dir": str(problem.root), "excludes": SHIP_EXCLUDES, "env_vars": {SHIPPED_ENV: "1"}}


def localize(problem: Problem) -> Problem:
    """On a worker that received the folder through the runtime_env, point the problem at the local copy."""
    if os.environ.get(SHIPPED_ENV) == "1" and not problem.evaluator_path.exists():
        import dataclasses

        return dataclasses.replace(problem, root=Path.cwd())
    return problem
