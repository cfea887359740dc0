"""A run's figures from its archive: outcomes, best and seed, improvement, timing, mutators, LLM use, damage (what
``evolve archive stats`` and the report show), and the one-line listing of ``evolve archive ls``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from evolve.query_model import SCORE_ABS_TOL, SCORE_REL_TOL, RunListing
from evolve.types import NOT_EVALUATED, NOT_FAILURES

if TYPE_CHECKING:
    from evolve.query import RunArchive


def improvement(best: float | None, seed: float | None, sign: float) -> float | None:
    """How much better the best program is than the seed, in the score's units: positive when it improved, for a
    maximized and a minimized score alike."""
    if best is None or seed is None:
        return None
    return (best - seed) * sign


def run_summary(archive: RunArchive) -> dict[str, Any]:
    """Statistics of the run from its rows, plus what the loop recorded in run.json and stats.json."""
    statuses = archive.status_counts()
    total = sum(statuses.values())
    details = archive.details()
    agg = archive.rows(
        f"""
        SELECT avg(eval_seconds) AS mean_eval_seconds, avg(mutate_seconds) AS mean_mutate_seconds,
               max(iteration) AS last_iteration, epoch(min(created_at)) AS first_at,
               epoch(max(created_at)) AS last_at,
               count(*) FILTER (WHERE in_process) AS in_process,
               count(*) FILTER (WHERE has_prompt) AS llm_answers,
               sum(llm_tokens) AS llm_tokens, sum(llm_cost) AS llm_cost
        FROM {details}
        """
    )[0]
    isolation = archive.rows(f"SELECT isolation, count(*) AS n FROM {details} "
                             "WHERE isolation IS NOT NULL AND isolation <> '' GROUP BY isolation ORDER BY n DESC")
    # Improved on the parent: better by more than float noise (the same tolerance as lineage's "=").
    mutators = archive.rows(
        f"""
        SELECT c.mutator, count(*) AS children, count(*) FILTER (WHERE c.status = 'ok') AS ok,
               count(*) FILTER (WHERE c.fitness - p.fitness > greatest({SCORE_ABS_TOL!r},
                                                                     {SCORE_REL_TOL!r} * abs(p.fitness))) AS improved
        FROM {details} c LEFT JOIN {details} p ON p.program_id = c.parent_id
        WHERE c.iteration > 0
        GROUP BY c.mutator ORDER BY children DESC, c.mutator
        """
    )
    best = archive.best()
    seed = archive.seed()
    coverage = {str(g.island): g.coverage for g in archive.grids()}
    failures = sum(v for k, v in statuses.items() if k not in NOT_FAILURES)
    first, last = agg["first_at"], agg["last_at"]
    span = float(last - first) if first is not None and last is not None else None
    return {
        "run_dir": str(archive.run_dir),
        "run_id": archive.run_id,
        "problem": archive.problem.name,
        "score_metric": archive.problem.score_metric,
        "direction": archive.problem.direction,
        "state": archive.info.get("state", ""),
        "mutator": archive.info.get("mutator", ""),
        "settings": archive.info.get("settings", {}),
        "created_at": archive.info.get("created_at"),
        "programs": total,
        "evaluated": total - sum(statuses.get(s.value, 0) for s in NOT_EVALUATED),
        "statuses": statuses,
        "failure_rate": failures / total if total else 0.0,
        "best": best,
        "seed": seed,
        "improvement": improvement(best["score"] if best else None, seed["score"] if seed else None,
                                   archive.problem.sign),
        "last_iteration": agg["last_iteration"],
        "span_seconds": span,
        "mean_eval_seconds": agg["mean_eval_seconds"],
        "mean_mutate_seconds": agg["mean_mutate_seconds"],
        "in_process": int(agg["in_process"] or 0),
        "isolation": {r["isolation"]: int(r["n"]) for r in isolation},
        "coverage": coverage,
        "mutators": [
            {"mutator": r["mutator"] or "", "children": int(r["children"]), "ok": int(r["ok"]),
             "improved": int(r["improved"])} for r in mutators
        ],
        "llm": {"answers": int(agg["llm_answers"] or 0), "tokens": int(agg["llm_tokens"] or 0),
                "cost": float(agg["llm_cost"] or 0.0)},
        "loop": archive.run_stats,
        "bad_files": [str(p) for p, _ in archive.bad_files],
        "damage": [d.to_dict() | {"description": d.describe()} for d in archive.damage],
        "lost": archive.info.get("lost") or {"iterations": [], "count": 0, "unknown_rows": 0, "files": []},
    }


def run_listing(archive: RunArchive) -> RunListing:
    """A line for ``evolve archive ls``: counts rows (duplicates included) rather than deduplicating."""
    from evolve.query import ArchiveQueryError

    try:
        programs = archive.rows_stored()
    except ArchiveQueryError:
        programs = 0
    best_score = archive.run_stats.get("best_score")
    best_program = archive.run_stats.get("best_program")
    if best_score is None and programs:
        try:
            best = archive.best()
        except ArchiveQueryError:
            best = None
        if best is not None:
            best_score, best_program = best["score"], best["program_id"]
    return RunListing(run_dir=archive.run_dir, run_id=archive.run_id, problem=archive.problem.name,
                      programs=programs, best_score=best_score, best_program=best_program,
                      created_at=archive.info.get("created_at"), state=str(archive.info.get("state", "")),
                      mutator=str(archive.info.get("mutator", "")),
                      bad_files=tuple(str(p) for p, _ in archive.bad_files))


def describe_improvement(summary: dict[str, Any]) -> str:
    """The improvement for people: signed (positive is better) with the direction spelled out."""
    value = summary.get("improvement")
    if value is None:
        return "-"
    if value == 0:
        return "0 (the best is the seed's score)"
    lower = summary.get("direction") == "minimize"
    way = ("lower" if value > 0 else "higher") if lower else ("higher" if value > 0 else "lower")
    return f"{value:+.6g} (the best scores {abs(value):.6g} {way} than the seed; {summary.get('direction')})"
