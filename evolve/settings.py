"""Run settings: what one ``evolve run`` does, resolved from problem defaults and CLI flags."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evolve.problem import Problem


@dataclass(frozen=True)
class RunSettings:
    """Everything that shapes a run besides the problem itself. Stored in ``run.json`` for ``--resume``."""

    iterations: int = 200
    """Children to produce after the seed (rejected edits count; identical children are skipped and count too)."""
    concurrency: int = 0
    """Programs in flight at once (mutating or evaluating); 0 follows the cluster: 2 per CPU and GPU slot."""
    islands: int = 4
    migration_interval: int = 50
    """Every this many integrated iterations, each island's best elite is copied to the next island (a ring)."""
    exploitation: float = 0.7
    """Chance that a parent is drawn by fitness rank; otherwise uniformly over the island's occupied cells."""
    inspirations: int = 3
    mutator: str = "tune"
    seed: int = 0
    time_limit: float | None = None
    """Seconds; when reached, in-flight work is abandoned and the run stops (resumable)."""
    target_score: float | None = None
    deterministic: bool = False
    """Integrate results in submission order, in batches of ``batch_size``: same seed, same archive, any concurrency."""
    batch_size: int = 8
    segment_rows: int = 1024
    flush_seconds: float = 5.0
    max_system_retries: int = 3
    """Resubmissions of an evaluation lost to infrastructure (dead worker or node) before recording system_error."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSettings:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def for_problem(cls, problem: Problem, **overrides: Any) -> RunSettings:
        """Problem ``[evolution]`` defaults, then explicit overrides (``None`` means not given)."""
        evo = problem.evolution
        base = cls(
            iterations=evo.iterations,
            islands=evo.islands,
            migration_interval=evo.migration_interval,
            exploitation=evo.exploitation,
            inspirations=evo.inspirations,
            mutator=evo.mutator,
            target_score=evo.target_score,
        )
        given = {k: v for k, v in overrides.items() if v is not None}
        return dataclasses.replace(base, **given)


def default_run_dir(problem: Problem, run_id: str, root: Path | None = None) -> Path:
    return (root or Path("archive")) / problem.name / run_id
