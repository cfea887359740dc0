"""``evolve init``: a new problem folder that runs as generated, and the list of shipped problems.

The generated problem is small but complete: a seed program with EVOLVE-BLOCK markers, a trusted evaluator that
draws its own secret test inputs from the evaluation seed and checks every answer the candidate returns (through
``Candidate.call``, so the candidate only ever runs in the sandbox), a ``problem.toml`` with a score, two
MAP-Elites features and one cascade stage, and a README saying what to change. The task (approximate ``sin`` on
``[-pi, pi]`` with a polynomial) is one the offline ``tune`` mutator improves within a few iterations, so
``evolve init demo && evolve run demo --mutator tune --iterations 20`` shows evolution working before any LLM is
set up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROBLEM_TOML = '''\
name = "{{name}}"
description = """
Approximate sin(x) on [-pi, pi] as closely as possible. The program defines `approximate(xs)`, which receives a
list of floats and returns a list of the same length with its approximation of sin at each point. The evaluator
draws fresh random points for every evaluation and scores the root-mean-square error (smaller is better).
"""
seed = "initial_program.py"
evaluator = "evaluator.py"

[score]
metric = "rmse"
direction = "minimize"

# MAP-Elites axes with fixed ranges: programs are kept per cell, so different kinds of solutions survive.
[[features]]
name = "code_length"      # built in: characters of the program
min = 0
max = 3000
bins = 6

[[features]]
name = "max_error"        # a metric returned by the evaluator
min = 0.0
max = 1.0
bins = 5

# The evaluation cascade: one stage here. Add cheaper stages before it (with a threshold) to reject bad programs
# early.
[[stages]]
name = "accuracy"
function = "evaluate"
timeout = 20
cpus = 1

[limits]
memory_mb = 1024

[evolution]
iterations = 100
islands = 2
migration_interval = 20
mutator = "tune"
'''

SEED = '''\
"""{{name}}: approximate sin(x) on [-pi, pi] with a polynomial. Evolution edits the code between the markers."""

# EVOLVE-BLOCK-START
COEFFICIENTS = [0.0, 0.9, 0.0, -0.12, 0.0, 0.0]  # c0 + c1*x + c2*x**2 + ...


def approximate(xs):
    """The approximation of sin(x) at each x of ``xs`` (a list of floats), as a list of floats."""
    result = []
    for x in xs:
        value = 0.0
        for c in reversed(COEFFICIENTS):
            value = value * x + c
        result.append(value)
    return result
# EVOLVE-BLOCK-END
'''

EVALUATOR = '''\
"""Trusted evaluator for {{name}}.

It runs outside the sandbox and never imports the candidate: ``candidate.call`` runs the candidate's function in a
sandboxed process and returns plain data, which is checked here before anything is computed from it.
"""

from __future__ import annotations

import math

import numpy as np

from evolve import Candidate, WrongOutput

POINTS = 256


def evaluate(candidate: Candidate) -> dict[str, float]:
    # Fresh inputs from the trusted per-evaluation seed: a candidate cannot memorize the test.
    rng = np.random.default_rng(candidate.seed)
    xs = rng.uniform(-math.pi, math.pi, size=POINTS)
    answer = candidate.call("approximate", xs.tolist())
    try:
        ys = np.asarray(answer, dtype=np.float64)
    except (TypeError, ValueError):
        raise WrongOutput("approximate() must return a list of numbers") from None
    if ys.shape != xs.shape:
        raise WrongOutput(f"approximate() returned shape {ys.shape}, expected {xs.shape}")
    if not np.isfinite(ys).all():
        raise WrongOutput("approximate() returned NaN or infinity")
    error = np.abs(ys - np.sin(xs))
    return {
        "rmse": float(np.sqrt(np.mean(error**2))),
        "max_error": float(error.max()),
        "call_seconds": candidate.call_seconds[-1],
    }
'''

README = '''\
# {{name}}

A problem for evolve. Files:

| file | role |
|---|---|
| `problem.toml` | the definition: score metric and direction, MAP-Elites features, evaluation stages, limits, defaults |
| `initial_program.py` | the seed program; evolution edits only the code between `EVOLVE-BLOCK-START` and `EVOLVE-BLOCK-END` |
| `evaluator.py` | the trusted evaluator: draws test inputs, calls the candidate in the sandbox, checks and scores |

Try it:

```
evolve eval {{folder}} {{folder}}/initial_program.py      # evaluate the seed once, no Ray
evolve run {{folder}} --mutator tune --iterations 20       # evolve without an LLM
evolve run {{folder}} --mutator llm --model gpt-4o-mini    # with any OpenAI-compatible endpoint
evolve archive top archive/{{name}}                         # the best programs of the latest run
evolve archive report archive/{{name}} -o report.html      # plots, best programs, diffs, lineage
```

To make it your problem: describe the task in `description` (the LLM reads it), write the seed, and make
`evaluate(candidate)` return a dict of metrics that includes the `[score]` metric. Raise `WrongOutput` when the
candidate's answer is wrong; exceptions and timeouts of the candidate are recorded for you. Never import or `exec`
the candidate in the evaluator: use `candidate.call(...)` (its function, in the sandbox) or `candidate.run([...])`
(any command, in the sandbox).
'''

FILES = {
    "problem.toml": PROBLEM_TOML,
    "initial_program.py": SEED,
    "evaluator.py": EVALUATOR,
    "README.md": README,
}

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")


class ScaffoldError(ValueError):
    """The folder cannot be created (bad name, or it exists and is not empty)."""


def problem_name(folder: Path) -> str:
    name = folder.name
    if not _NAME.match(name):
        raise ScaffoldError(f"problem name {name!r} must start with a letter and use only letters, digits, '_' and "
                            "'-' (at most 64 characters)")
    return name


def scaffold(folder: str | Path, force: bool = False) -> list[Path]:
    """Create a runnable problem folder; return the files written."""
    folder = Path(folder)
    name = problem_name(folder.resolve())
    if folder.exists() and not folder.is_dir():
        raise ScaffoldError(f"{folder} exists and is not a folder")
    if folder.is_dir() and any(folder.iterdir()) and not force:
        raise ScaffoldError(f"{folder} already exists and is not empty (use --force to overwrite its files)")
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for filename, template in FILES.items():
        path = folder / filename
        path.write_text(template.replace("{{name}}", name).replace("{{folder}}", str(folder)), encoding="utf-8")
        written.append(path)
    return written


@dataclass(frozen=True)
class ProblemInfo:
    """One line of ``evolve problems``."""

    path: Path
    name: str
    kind: str  # "evolve" (problem.toml) or "openevolve"
    language: str
    score: str
    stages: int
    summary: str
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "name": self.name, "kind": self.kind, "language": self.language,
                "score": self.score, "stages": self.stages, "summary": self.summary, "error": self.error}


def shipped_problems_dir() -> Path | None:
    """The repository's ``problems/`` folder next to the installed package (editable installs and checkouts)."""
    candidate = Path(__file__).resolve().parents[1] / "problems"
    return candidate if candidate.is_dir() else None


def _summary(description: str) -> str:
    text = " ".join(description.split())
    sentence = re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0]
    return sentence if len(sentence) <= 80 else sentence[:77] + "..."


def list_problems(root: str | Path) -> list[ProblemInfo]:
    """Every problem folder directly under ``root`` (evolve or OpenEvolve format), valid or not."""
    from evolve.openevolve import is_openevolve_folder, load_any_problem
    from evolve.problem import PROBLEM_FILE, ProblemError

    root = Path(root)
    found = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
        kind = "openevolve" if is_openevolve_folder(folder) else "evolve"
        if kind == "evolve" and not (folder / PROBLEM_FILE).is_file():
            continue
        try:
            problem, _ = load_any_problem(folder)
        except ProblemError as exc:
            first = exc.errors[0] if exc.errors else ("", str(exc))
            more = f" (+{len(exc.errors) - 1} more)" if len(exc.errors) > 1 else ""
            found.append(ProblemInfo(folder, folder.name, kind, "", "", 0, "", error=f"{first[0]}: {first[1]}{more}"))
            continue
        found.append(ProblemInfo(folder, problem.name, kind, problem.language,
                                 f"{problem.score.metric} ({problem.score.direction})", len(problem.stages),
                                 _summary(problem.description)))
    return found
