"""evolve: AlphaEvolve-style algorithm discovery with sandboxed evaluation and a Parquet MAP-Elites archive.

Every public name is loaded on first use, so ``import evolve`` (and the ``evolve`` command's start) stays light: no
Ray, DuckDB, NumPy or sandbox until something needs them.

::

    import evolve
    result = evolve.run("problems/circle_packing", iterations=50)    # a run (starts or joins Ray)
    archive = evolve.open_archive("archive/circle_packing")           # the one reading API (evolve.query.RunArchive)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from evolve.lazy import lazy_exports as _lazy_exports

if TYPE_CHECKING:
    from evolve.api import RunResult, open_archive, run
    from evolve.candidate import Candidate, CandidateFailure, CompileError, WrongOutput
    from evolve.evaluation import StageReport
    from evolve.problem import Problem, ProblemError, load_problem
    from evolve.query import RunArchive
    from evolve.types import StageOutcome, Status, program_id_for

# public name -> module that defines it
_EXPORTS = {
    "Candidate": "evolve.candidate",
    "CandidateFailure": "evolve.candidate",
    "CompileError": "evolve.candidate",
    "EvaluatorError": "evolve.candidate",
    "WrongOutput": "evolve.candidate",
    "StageReport": "evolve.evaluation",
    "Problem": "evolve.problem",
    "ProblemError": "evolve.problem",
    "load_problem": "evolve.problem",
    "StageOutcome": "evolve.types",
    "Status": "evolve.types",
    "program_id_for": "evolve.types",
    "run": "evolve.api",
    "open_archive": "evolve.api",
    "RunResult": "evolve.api",
    "RunArchive": "evolve.query",
    "read_events": "evolve.archive",
    "read_programs": "evolve.archive",
}

__all__ = [
    "Candidate",
    "CandidateFailure",
    "CompileError",
    "EvaluatorError",
    "Problem",
    "ProblemError",
    "RunArchive",
    "RunResult",
    "StageOutcome",
    "StageReport",
    "Status",
    "WrongOutput",
    "load_problem",
    "open_archive",
    "program_id_for",
    "read_events",
    "read_programs",
    "run",
]
__version__ = "0.1.0"


__getattr__ = _lazy_exports(__name__, _EXPORTS, globals())


def __dir__() -> list[str]:
    return [*__all__, "__version__"]
