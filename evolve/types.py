"""Small value types shared by every part of the engine.

Results cross process and machine boundaries (Ray tasks, the sandbox pipe, Parquet rows), so every type here is a
frozen dataclass of plain JSON-compatible fields with explicit ``to_dict`` / ``from_dict`` round trips.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    """Outcome of one iteration for one program. Stored as its string value in the archive."""

    OK = "ok"
    INVALID_EDIT = "invalid_edit"  # the mutator's answer could not be turned into a child program
    COMPILE_ERROR = "compile_error"  # import/syntax/compile failure of the candidate
    RUNTIME_ERROR = "runtime_error"  # the candidate raised or crashed while running
    TIMEOUT = "timeout"  # the stage deadline passed; the whole process tree was killed
    MEMORY = "memory"  # the candidate hit its memory limit
    WRONG_OUTPUT = "wrong_output"  # the trusted side rejected what the candidate returned
    REJECTED = "rejected"  # ran fine but missed a cascade stage's threshold
    EVALUATOR_ERROR = "evaluator_error"  # the problem's trusted evaluator itself raised
    SYSTEM_ERROR = "system_error"  # infrastructure failure (worker/node died); never the candidate's fault
    DUPLICATE = "duplicate"  # the child's code equals a program already archived or in flight: not evaluated
    NOT_NOVEL = "not_novel"  # too similar to its parent or its island's elites (evolve.search.novelty): not evaluated

    @property
    def is_candidate_fault(self) -> bool:
        return self not in (Status.OK, Status.EVALUATOR_ERROR, Status.SYSTEM_ERROR, Status.DUPLICATE, Status.NOT_NOVEL)

    @property
    def evaluated(self) -> bool:
        """Whether a child with this status went to the evaluator (unusable answers and skipped children did not)."""
        return self not in NOT_EVALUATED


NOT_EVALUATED = frozenset({Status.INVALID_EDIT, Status.DUPLICATE, Status.NOT_NOVEL})
# Outcomes that are not failures: a valid program, or a child skipped before evaluation as a copy or a near-copy.
NOT_FAILURES = (Status.OK.value, Status.DUPLICATE.value, Status.NOT_NOVEL.value)
NOT_FAILURES_SQL = "(" + ", ".join(f"'{s}'" for s in NOT_FAILURES) + ")"  # `status NOT IN` this: a failure


def program_id_for(code: str) -> str:
    """A program's identity is the hash of its code: identical children share an id and are evaluated once."""
    return hashlib.sha256(code.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class StageOutcome:
    """What one cascade stage produced for one program."""

    stage: str
    status: Status
    metrics: dict[str, float] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    message: str = ""
    isolation: str = ""  # sandbox level the candidate ran under, e.g. "session+rlimits+userns+landlock"
    in_process: bool = False  # evaluator ran the candidate in its own process (other engines' style)
    node: str = ""  # Ray node id the stage ran on ("" outside Ray)

    @property
    def passed(self) -> bool:
        return self.status is Status.OK

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "status": self.status.value,
            "metrics": dict(self.metrics),
            "artifacts": dict(self.artifacts),
            "seconds": self.seconds,
            "message": self.message,
            "isolation": self.isolation,
            "in_process": self.in_process,
            "node": self.node,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StageOutcome:
        return cls(
            stage=data["stage"],
            status=Status(data["status"]),
            metrics={k: float(v) for k, v in data.get("metrics", {}).items()},
            artifacts={k: str(v) for k, v in data.get("artifacts", {}).items()},
            seconds=float(data.get("seconds", 0.0)),
            message=str(data.get("message", "")),
            isolation=str(data.get("isolation", "")),
            in_process=bool(data.get("in_process", False)),
            node=str(data.get("node", "")),
        )
