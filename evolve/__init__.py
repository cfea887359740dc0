"""evolve: AlphaEvolve-style algorithm discovery with sandboxed evaluation and a Parquet MAP-Elites archive."""

from evolve.candidate import Candidate, CandidateFailure, CompileError, WrongOutput
from evolve.evaluation import StageReport
from evolve.problem import Problem, ProblemError, load_problem
from evolve.types import StageOutcome, Status, program_id_for

__all__ = [
    "Candidate",
    "CandidateFailure",
    "CompileError",
    "Problem",
    "ProblemError",
    "StageOutcome",
    "StageReport",
    "Status",
    "WrongOutput",
    "load_problem",
    "open_archive",
    "run",
    "program_id_for",
]
__version__ = "0.1.0"


def __getattr__(name: str):  # noqa: ANN202 - lazy exports keep `import evolve` light (no Ray, DuckDB)
    if name in ("run", "open_archive"):
        from evolve import api

        return getattr(api, name)
    raise AttributeError(f"module 'evolve' has no attribute {name!r}")
