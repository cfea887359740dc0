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
    "program_id_for",
]
__version__ = "0.1.0"
