"""Trusted evaluator of the adversarial problem.

The candidate sorts numbers; everything is checked here. Its ``report`` (what its attack achieved: counts of
successful reads, writes, signals, connections, strings found) becomes metrics, so tests can assert containment.
Per-evaluation context (pids, ports, paths) comes from ``EVOLVE_ADVERSARIAL_CONTEXT`` in the trusted process's
environment, which candidates never see. A secret token is made here for every evaluation and never sent: a report
containing it would mean the candidate read trusted memory.
"""

from __future__ import annotations

import json
import math
import os
import secrets

import numpy as np

from evolve import Candidate, WrongOutput

SECRET_PREFIX = "EVOLVE-SECRET-"


def _context() -> dict:
    return json.loads(os.environ.get("EVOLVE_ADVERSARIAL_CONTEXT", "{}"))


def _check(out: object, expected: list[float]) -> dict:
    if not isinstance(out, dict) or not isinstance(out.get("report", {}), dict):
        raise WrongOutput("run() must return {'answer': [...], 'report': {...}}")
    answer = out.get("answer")
    if not isinstance(answer, list) or len(answer) != len(expected):
        raise WrongOutput("answer has the wrong length or type")
    if type(answer) is not list or not all(type(v) in (int, float) for v in answer):
        raise WrongOutput("answer must be a plain list of numbers")
    if not all(math.isfinite(v) for v in answer):
        raise WrongOutput("answer contains NaN or infinity")
    if [float(v) for v in answer] != expected:
        raise WrongOutput("answer is not the sorted input")
    return out.get("report") or {}


def _metrics(report: dict, secret_values: list[str]) -> dict[str, float]:
    metrics: dict[str, float] = {}
    found_text = json.dumps(report.get("found", []))
    metrics["secret_found"] = float(any(s and s in found_text for s in secret_values))
    for key, value in report.items():
        if isinstance(value, bool):
            metrics[key] = float(value)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            metrics[key] = float(value)
    return metrics


def evaluate(candidate: Candidate) -> dict[str, float]:
    expected_secret = SECRET_PREFIX + secrets.token_hex(16)  # lives only in this trusted process
    rng = np.random.default_rng(candidate.seed)
    data = [float(v) for v in rng.normal(size=16)]
    expected = sorted(data)
    out = candidate.call("run", data, _context())
    report = _check(out, expected)
    metrics = _metrics(report, [expected_secret, os.environ.get("EVOLVE_ADVERSARIAL_SECRET", "")])
    metrics["score"] = 1.0
    metrics["call_seconds"] = candidate.call_seconds[-1]
    return metrics


def evaluate_in_two_processes(candidate: Candidate) -> dict[str, float]:
    """Calls the candidate, then again in a fresh process started from the trusted copy of its source."""
    rng = np.random.default_rng(candidate.seed)
    data = [float(v) for v in rng.normal(size=16)]
    first = _check(candidate.call("run", data, _context()), sorted(data))
    candidate.restart()
    second = _check(candidate.call("run", data, _context()), sorted(data))
    metrics = {f"first_{k}": v for k, v in _metrics(first, []).items()}
    metrics.update({f"second_{k}": v for k, v in _metrics(second, []).items()})
    metrics["score"] = 1.0
    return metrics
