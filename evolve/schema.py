"""The archive's row: one per iteration outcome (evaluated programs and rejected edits alike).

This module is the single definition of the Parquet schema; ``archive/README.md`` documents it for users.
Nested, open-ended data (metrics, features, stage outcomes, artifacts) is stored as JSON text so that the schema
never changes between problems and any Parquet reader (DuckDB, pandas, Polars) can read every run.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from typing import Any

import pyarrow as pa

SCHEMA_VERSION = 1

ARCHIVE_SCHEMA = pa.schema(
    [
        pa.field("program_id", pa.string(), nullable=False),  # sha256(code)[:16]; for invalid edits, of the answer
        pa.field("parent_ids", pa.list_(pa.string())),  # first is the parent; the rest are inspirations used
        pa.field("island", pa.int32()),
        pa.field("iteration", pa.int64()),  # 0 is the seed; submission order of the child in this run
        pa.field("generation", pa.int32()),  # parent's generation + 1
        pa.field("code", pa.string()),
        pa.field("edit", pa.string()),  # the mutator's raw answer (SEARCH/REPLACE blocks or rewrite)
        pa.field("edit_error", pa.string()),  # why the edit was rejected ("" when it applied)
        pa.field("mutator", pa.string()),  # "seed", "tune", "scripted", "llm:<model>", ...
        pa.field("status", pa.string()),  # evolve.types.Status value
        pa.field("score", pa.float64()),  # the declared score metric; null when unavailable
        pa.field("fitness", pa.float64()),  # score * direction sign (bigger is better); null when not eligible
        pa.field("metrics", pa.string()),  # JSON object {metric: float}
        pa.field("features", pa.string()),  # JSON object {feature: float}
        pa.field("cell", pa.int64()),  # flat MAP-Elites cell index; null when not placeable
        pa.field("stages", pa.string()),  # JSON list of StageOutcome.to_dict()
        pa.field("artifacts", pa.string()),  # JSON object {name: text}, each truncated
        pa.field("isolation", pa.string()),  # sandbox level the candidate ran under
        pa.field("in_process", pa.bool_()),  # evaluator ran the candidate in its own process
        pa.field("prompt", pa.string()),  # LLM prompt (JSON list of messages) when an LLM produced the edit
        pa.field("llm", pa.string()),  # JSON object: model, tokens, cost, latency
        pa.field("mutate_seconds", pa.float64()),
        pa.field("eval_seconds", pa.float64()),
        pa.field("created_at", pa.timestamp("ms", tz="UTC")),
        pa.field("run_id", pa.string()),
    ],
    metadata={"evolve_schema_version": str(SCHEMA_VERSION)},
)

ARTIFACT_LIMIT = 8192  # characters kept per artifact; the tail is kept since errors end there


def truncate_artifact(text: str, limit: int = ARTIFACT_LIMIT) -> str:
    if len(text) <= limit:
        return text
    head = limit // 4
    return f"{text[:head]}\n... [{len(text) - limit} characters cut] ...\n{text[-(limit - head):]}"


def _finite_or_none(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(value)


@dataclass(frozen=True)
class ProgramRecord:
    """One archive row in Python form. JSON-text columns are held decoded."""

    program_id: str
    parent_ids: tuple[str, ...]
    island: int
    iteration: int
    generation: int
    code: str
    status: str
    edit: str = ""
    edit_error: str = ""
    mutator: str = ""
    score: float | None = None
    fitness: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    features: dict[str, float] = field(default_factory=dict)
    cell: int | None = None
    stages: list[dict[str, Any]] = field(default_factory=list)
    artifacts: dict[str, str] = field(default_factory=dict)
    isolation: str = ""
    in_process: bool = False
    prompt: str = ""
    llm: dict[str, Any] = field(default_factory=dict)
    mutate_seconds: float = 0.0
    eval_seconds: float = 0.0
    created_at: float = 0.0  # unix seconds
    run_id: str = ""

    @property
    def parent_id(self) -> str | None:
        return self.parent_ids[0] if self.parent_ids else None

    def to_row(self) -> dict[str, Any]:
        """A dict matching ``ARCHIVE_SCHEMA`` (JSON columns encoded, non-finite numbers nulled)."""
        row: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        row["parent_ids"] = list(self.parent_ids)
        row["score"] = _finite_or_none(self.score)
        row["fitness"] = _finite_or_none(self.fitness)
        for key in ("metrics", "features", "artifacts", "llm"):
            row[key] = json.dumps(row[key], sort_keys=True, allow_nan=True)
        row["stages"] = json.dumps(self.stages, allow_nan=True)
        row["artifacts"] = json.dumps({k: truncate_artifact(v) for k, v in self.artifacts.items()}, sort_keys=True)
        row["created_at"] = int(self.created_at * 1000)
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ProgramRecord:
        created = row.get("created_at")
        if hasattr(created, "timestamp"):
            created = created.timestamp()
        elif isinstance(created, int):
            created = created / 1000.0
        return cls(
            program_id=row["program_id"],
            parent_ids=tuple(row.get("parent_ids") or ()),
            island=int(row.get("island") or 0),
            iteration=int(row.get("iteration") or 0),
            generation=int(row.get("generation") or 0),
            code=row.get("code") or "",
            status=row.get("status") or "",
            edit=row.get("edit") or "",
            edit_error=row.get("edit_error") or "",
            mutator=row.get("mutator") or "",
            score=row.get("score"),
            fitness=row.get("fitness"),
            metrics=json.loads(row.get("metrics") or "{}"),
            features=json.loads(row.get("features") or "{}"),
            cell=row.get("cell"),
            stages=json.loads(row.get("stages") or "[]"),
            artifacts=json.loads(row.get("artifacts") or "{}"),
            isolation=row.get("isolation") or "",
            in_process=bool(row.get("in_process")),
            prompt=row.get("prompt") or "",
            llm=json.loads(row.get("llm") or "{}"),
            mutate_seconds=float(row.get("mutate_seconds") or 0.0),
            eval_seconds=float(row.get("eval_seconds") or 0.0),
            created_at=float(created or 0.0),
            run_id=row.get("run_id") or "",
        )
