"""Loading and validating a problem folder (``problem.toml``).

Every mistake in a problem file is collected and reported together, each with the file, the key and the reason,
before any Ray worker or sandbox starts. The result is a tree of frozen dataclasses that the rest of the engine reads.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROBLEM_FILE = "problem.toml"
BUILTIN_FEATURES = ("code_length", "code_lines")
VISIBLE, HELDOUT = "visible", "heldout"  # stage roles
LANGUAGES = {".py": "python", ".cu": "cuda", ".cuh": "cuda", ".c": "c", ".cpp": "cpp", ".rs": "rust"}


class ProblemError(ValueError):
    """A problem folder is unusable. ``errors`` lists every ``(location, reason)`` found."""

    def __init__(self, path: Path, errors: list[tuple[str, str]]):
        self.path = path
        self.errors = errors
        if len(errors) == 1 and errors[0][0].startswith(f"{_shown(path)}:"):
            # One mistake at a line of a file (the seed does not parse): compiler style, the user's file first.
            lines = [f"{errors[0][0]}: {errors[0][1]}"]
        else:
            lines = [f"{path}: {len(errors)} problem(s) in the problem definition:"]
            lines += [f"  - {where}: {why}" for where, why in errors]
        super().__init__("\n".join(lines))


def _shown(path: Path) -> str:
    """``path`` as the user would type it: relative to the working directory when it lies below it."""
    try:
        return os.path.relpath(path) if path.resolve().is_relative_to(Path.cwd()) else str(path)
    except (OSError, ValueError):
        return str(path)


def seed_syntax_error(path: Path, language: str) -> tuple[str, str] | None:
    """``(file:line, reason with the offending line)`` when a Python seed does not compile; None otherwise.

    Only Python is parsed: other languages are compiled by their evaluators.
    """
    if language.strip().lower() not in ("python", "py", "python3"):
        return None
    try:
        source = path.read_bytes()
    except OSError as exc:
        return _shown(path), f"cannot read the seed program: {exc.strerror or exc}"
    try:
        compile(source, str(path), "exec", dont_inherit=True)
    except SyntaxError as exc:
        where = f"{_shown(path)}:{exc.lineno}" if exc.lineno else _shown(path)
        reason = f"{exc.msg} (the seed program does not parse)"
        text = (exc.text or "").rstrip("\r\n")
        if text.strip():
            indent = len(text) - len(text.lstrip())
            caret = max((exc.offset or 1) - 1 - indent, 0)
            width = max((exc.end_offset or 0) - (exc.offset or 0), 1) if exc.end_lineno == exc.lineno else 1
            reason += f"\n    {text.strip()}\n    {' ' * caret}{'^' * min(width, max(len(text.strip()) - caret, 1))}"
        return where, reason
    except ValueError as exc:  # e.g. null bytes in the source
        return _shown(path), f"the seed program cannot be compiled: {exc}"
    return None


@dataclass(frozen=True)
class ScoreSpec:
    """Which metric is the score, whether bigger is better, and the bound no honest score can pass."""

    metric: str
    direction: str = "maximize"  # or "minimize"
    bound: float | None = None  # a physical or known limit (a device's peak, a known optimum): beyond it, a tripwire

    @property
    def sign(self) -> float:
        """Multiply a score by this to get a fitness where bigger is always better."""
        return 1.0 if self.direction == "maximize" else -1.0

    def beyond_bound(self, score: float) -> bool:
        """True when ``score`` passes ``bound`` in the score's direction (better than anything honest can be)."""
        return self.bound is not None and (score - self.bound) * self.sign > 0


@dataclass(frozen=True)
class FeatureDim:
    """One MAP-Elites axis: a metric (or built-in feature) binned over a fixed range that never drifts."""

    name: str
    min: float
    max: float
    bins: int
    metric: str = ""  # metric supplying the value; defaults to ``name``

    @property
    def source(self) -> str:
        return self.metric or self.name

    def bin_of(self, value: float) -> int:
        """Bin index of ``value``; values outside the range go to the edge bins."""
        if not math.isfinite(value):
            return 0 if value < 0 or math.isnan(value) else self.bins - 1
        frac = (value - self.min) / (self.max - self.min)
        return min(self.bins - 1, max(0, int(math.floor(frac * self.bins))))


@dataclass(frozen=True)
class StageSpec:
    """One stage of the evaluation cascade."""

    name: str
    function: str  # function of the evaluator module called with a ``Candidate``
    timeout: float = 60.0  # wall-clock seconds for the whole stage, candidate processes included
    cpus: float = 1.0
    gpus: float = 0.0
    resources: dict[str, float] = field(default_factory=dict)  # extra custom Ray resources
    threshold: float | None = None  # ``threshold_metric`` must reach this (in the score's direction) to go on
    threshold_metric: str = ""  # defaults to the score metric
    role: str = "visible"  # "heldout": run only to check a program before it counts (evolve.oversight), never shown

    @property
    def heldout(self) -> bool:
        return self.role == HELDOUT


@dataclass(frozen=True)
class Limits:
    """Resource limits applied to every candidate process."""

    memory_mb: int = 2048
    output_kb: int = 256  # captured stdout/stderr cap, per stream
    file_size_mb: int = 64
    open_files: int = 256
    processes: int = 64
    scratch_mb: int = 512  # cap of a candidate's scratch dir (sandbox scratchfs tmpfs / diskwatch threshold)


@dataclass(frozen=True)
class EvolutionDefaults:
    """Run settings a problem can set; ``evolve run`` flags override them."""

    iterations: int = 200
    islands: int = 4
    migration_interval: int = 50  # iterations between ring migrations of each island's best elite
    exploitation: float = 0.7  # chance a parent is chosen by fitness rank rather than uniformly from the grid
    inspirations: int = 3
    mutator: str = "tune"
    target_score: float | None = None


@dataclass(frozen=True)
class OversightSpec:
    """The problem's ``[oversight]`` table: how a program's visible score is checked before it counts as best.

    A program that would enter the run's ``top_k`` by visible fitness runs the held-out stages (on data and seeds
    the candidate and the prompts never see) and ``reevaluations`` more runs of the visible cascade with other
    seeds. It is promoted when the held-out ``heldout_metric`` is at most the allowance behind its visible
    ``visible_metric`` and every re-evaluation reproduces its score within ``reevaluation_tolerance``. The
    allowance is ``max(tolerance, relative_tolerance * |visible|)``, in the score's direction: a held-out figure
    better than the visible one is never held against a program.
    """

    top_k: int = 1
    visible_metric: str = ""  # default: the score metric
    heldout_metric: str = ""  # a metric the held-out stages return; default: the score metric
    tolerance: float = 0.0
    relative_tolerance: float = 0.05
    reevaluations: int = 0  # 0: no flaky check
    reevaluation_tolerance: float | None = None  # default: the same allowance as the held-out comparison
    gap: float | None = None  # tripwire: |visible - held-out| beyond this quarantines the program
    jump: float | None = None  # tripwire: an improvement of the best more than this many times the recent ones
    jump_window: int = 8  # recent improvements of the run's best the jump is compared with
    jump_history: int = 3  # improvements seen before the jump tripwire can fire

    def allowance(self, visible: float) -> float:
        return max(self.tolerance, self.relative_tolerance * abs(visible))

    def reproduce_allowance(self, visible: float) -> float:
        if self.reevaluation_tolerance is not None:
            return self.reevaluation_tolerance
        return self.allowance(visible)


@dataclass(frozen=True)
class Problem:
    """A validated problem folder."""

    root: Path
    name: str
    description: str
    seed_file: str
    evaluator_file: str
    language: str
    score: ScoreSpec
    features: tuple[FeatureDim, ...]
    stages: tuple[StageSpec, ...]
    limits: Limits
    evolution: EvolutionDefaults
    read_paths: tuple[str, ...] = ()  # extra files/dirs (relative to root) a candidate may read
    sections: dict[str, Any] = field(default_factory=dict)  # raw optional tables (llm, sandbox, ...)
    heldout_stages: tuple[StageSpec, ...] = ()  # role = "heldout": never part of the visible cascade (``stages``)
    oversight: OversightSpec = field(default_factory=OversightSpec)

    @property
    def seed_path(self) -> Path:
        return self.root / self.seed_file

    @property
    def evaluator_path(self) -> Path:
        return self.root / self.evaluator_file

    def seed_code(self) -> str:
        return self.seed_path.read_text()

    def stage(self, name: str) -> StageSpec:
        """A stage of either role by name."""
        for stage in self.all_stages:
            if stage.name == name:
                return stage
        raise KeyError(name)

    @property
    def all_stages(self) -> tuple[StageSpec, ...]:
        """Visible then held-out stages: what a cluster must be able to run."""
        return self.stages + self.heldout_stages

    @property
    def visible_metric(self) -> str:
        return self.oversight.visible_metric or self.score.metric

    @property
    def heldout_metric(self) -> str:
        return self.oversight.heldout_metric or self.score.metric

    @property
    def grid_shape(self) -> tuple[int, ...]:
        return tuple(f.bins for f in self.features) or (1,)


class _Collector:
    """Reads typed keys from TOML tables while collecting every error instead of stopping at the first."""

    def __init__(self) -> None:
        self.errors: list[tuple[str, str]] = []

    def error(self, where: str, why: str) -> None:
        self.errors.append((where, why))

    def get(
        self,
        table: dict[str, Any],
        key: str,
        where: str,
        kind: type | tuple[type, ...],
        default: Any = ...,
        check: Callable[[Any], str | None] | None = None,
    ) -> Any:
        loc = f"{where}.{key}" if where else key
        if key not in table:
            if default is ...:
                self.error(loc, "required key is missing")
                return None
            return default
        value = table[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            self.error(loc, f"expected {_kind_name(kinds)}, got a boolean")
            return None
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kinds):
            self.error(loc, f"expected {_kind_name(kinds)}, got {type(value).__name__} {value!r}")
            return None
        if check is not None and (problem := check(value)):
            self.error(loc, problem)
            return None
        return value

    def unknown(self, table: dict[str, Any], allowed: set[str], where: str) -> None:
        for key in table:
            if key not in allowed:
                loc = f"{where}.{key}" if where else key
                self.error(loc, f"unknown key (allowed: {', '.join(sorted(allowed))})")


def _kind_name(kinds: tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "a boolean", list: "a list", dict: "a table"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _positive(value: float) -> str | None:
    return None if value > 0 else "must be > 0"


def _non_negative(value: float) -> str | None:
    return None if value >= 0 else "must be >= 0"


_TOP_KEYS = {
    "name", "description", "seed", "evaluator", "language", "score", "features", "stages", "limits",
    "evolution", "read_paths", "llm", "sandbox", "prompt", "ui", "oversight", "search",
}


def load_problem(path: str | Path) -> Problem:
    """Load and validate ``path`` (a problem folder or its ``problem.toml``); raise ``ProblemError`` listing all issues."""
    path = Path(path)
    root = path.parent if path.name == PROBLEM_FILE else path
    toml_path = root / PROBLEM_FILE
    if not root.is_dir():
        raise ProblemError(root, [(str(root), "not a directory")])
    if not toml_path.is_file():
        raise ProblemError(root, [(PROBLEM_FILE, "file not found in the problem folder")])
    try:
        data = tomllib.loads(toml_path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ProblemError(toml_path, [(PROBLEM_FILE, f"not valid TOML: {exc}")]) from None
    problem = parse_problem(root.resolve(), data)
    return problem


def parse_problem(root: Path, data: dict[str, Any]) -> Problem:
    """Validate an already-parsed ``problem.toml`` rooted at ``root``."""
    c = _Collector()
    c.unknown(data, _TOP_KEYS, "")
    name = c.get(data, "name", "", str, check=lambda v: None if v.strip() else "must not be empty")
    description = c.get(data, "description", "", str, default="")
    seed_file = c.get(data, "seed", "", str)
    evaluator_file = c.get(data, "evaluator", "", str, default="evaluator.py")
    for key, rel in (("seed", seed_file), ("evaluator", evaluator_file)):
        if rel is not None and not (root / rel).is_file():
            c.error(key, f"file {rel!r} not found in {root}")
    language = c.get(data, "language", "", str, default="")
    if not language and seed_file:
        language = LANGUAGES.get(Path(seed_file).suffix, "text")

    score = _parse_score(c, data)
    features = _parse_features(c, data)
    all_stages = _parse_stages(c, data, score)
    stages = tuple(s for s in all_stages if not s.heldout)
    heldout_stages = tuple(s for s in all_stages if s.heldout)
    if all_stages and not stages:
        c.error("stages", 'every stage is role = "heldout"; at least one visible stage is required')
    oversight = _parse_oversight(c, data)
    if not heldout_stages:
        for key in ("heldout_metric", "gap"):
            if key in (data.get("oversight") if isinstance(data.get("oversight"), dict) else {}):
                c.error(f"oversight.{key}", 'compares with held-out stages, but no stage has role = "heldout"')
    limits = _parse_limits(c, data)
    evolution = _parse_evolution(c, data)
    read_paths = tuple(c.get(data, "read_paths", "", list, default=[]) or [])
    for i, rel in enumerate(read_paths):
        if not isinstance(rel, str) or not (root / rel).exists():
            c.error(f"read_paths[{i}]", f"{rel!r} does not exist in {root}")
    _check_ui(c, data, root)
    sections = {k: data[k] for k in ("llm", "sandbox", "prompt", "ui", "search") if k in data}
    for key, value in sections.items():
        if not isinstance(value, dict):
            c.error(key, "expected a table")
    if isinstance(sections.get("search"), dict):
        from evolve.search.settings import SearchConfigError, resolve_search_settings

        try:
            resolve_search_settings(sections["search"])
        except SearchConfigError as exc:
            for where, message in exc.errors:  # "problem.toml [search.novelty].threshold" -> "search.novelty.threshold"
                c.error(where.removeprefix("problem.toml ").replace("[", "").replace("]", ""), message)

    if seed_file is not None and (root / seed_file).is_file():
        seed_error = seed_syntax_error(root / seed_file, language)
        if seed_error is not None:
            if not c.errors:
                raise ProblemError(root / seed_file, [seed_error])
            c.error(*seed_error)
    if c.errors:
        raise ProblemError(root / PROBLEM_FILE, c.errors)
    return Problem(
        root=root,
        name=name,
        description=description,
        seed_file=seed_file,
        evaluator_file=evaluator_file,
        language=language,
        score=score,
        features=features,
        stages=stages,
        limits=limits,
        evolution=evolution,
        read_paths=read_paths,
        sections=sections,
        heldout_stages=heldout_stages,
        oversight=oversight,
    )


def _check_ui(c: _Collector, data: dict[str, Any], root: Path) -> None:
    """``[ui] renderer``: a file of the problem folder defining render(program) -> SVG (see evolve/ui/pictures.py)."""
    table = c.get(data, "ui", "", dict, default={}) or {}
    c.unknown(table, {"renderer"}, "ui")
    renderer = c.get(table, "renderer", "ui", str, default="")
    if renderer:
        path = (root / renderer).resolve()
        if not path.is_file() or not path.is_relative_to(root.resolve()):
            c.error("ui.renderer", f"file {renderer!r} not found in {root}")


def _parse_score(c: _Collector, data: dict[str, Any]) -> ScoreSpec:
    table = c.get(data, "score", "", dict)
    if table is None:
        return ScoreSpec(metric="score")
    c.unknown(table, {"metric", "direction", "bound"}, "score")
    metric = c.get(table, "metric", "score", str) or "score"
    direction = c.get(
        table, "direction", "score", str, default="maximize",
        check=lambda v: None if v in ("maximize", "minimize") else "must be 'maximize' or 'minimize'",
    )
    bound = c.get(table, "bound", "score", float, default=None,
                  check=lambda v: None if math.isfinite(v) else "must be a finite number")
    return ScoreSpec(metric=metric, direction=direction or "maximize", bound=bound)


def _parse_features(c: _Collector, data: dict[str, Any]) -> tuple[FeatureDim, ...]:
    items = c.get(data, "features", "", list, default=[]) or []
    features: list[FeatureDim] = []
    seen: set[str] = set()
    for i, table in enumerate(items):
        where = f"features[{i}]"
        if not isinstance(table, dict):
            c.error(where, "expected a table ([[features]])")
            continue
        c.unknown(table, {"name", "min", "max", "bins", "metric"}, where)
        name = c.get(table, "name", where, str)
        lo = c.get(table, "min", where, float)
        hi = c.get(table, "max", where, float)
        bins = c.get(table, "bins", where, int, check=lambda v: None if 1 <= v <= 1000 else "must be in 1..1000")
        metric = c.get(table, "metric", where, str, default="")
        if lo is not None and hi is not None and not hi > lo:
            c.error(f"{where}.max", f"must be greater than min ({lo})")
            continue
        if name in seen:
            c.error(f"{where}.name", f"duplicate feature {name!r}")
        if None not in (name, lo, hi, bins):
            seen.add(name)
            features.append(FeatureDim(name=name, min=lo, max=hi, bins=bins, metric=metric))
    return tuple(features)


def _parse_stages(c: _Collector, data: dict[str, Any], score: ScoreSpec) -> tuple[StageSpec, ...]:
    items = c.get(data, "stages", "", list, default=[{"name": "evaluate"}])
    if items is not None and not items:
        c.error("stages", "at least one stage is required")
    stages: list[StageSpec] = []
    seen: set[str] = set()
    allowed = {"name", "function", "timeout", "cpus", "gpus", "resources", "threshold", "threshold_metric", "role"}
    for i, table in enumerate(items or []):
        where = f"stages[{i}]"
        if not isinstance(table, dict):
            c.error(where, "expected a table ([[stages]])")
            continue
        c.unknown(table, allowed, where)
        name = c.get(table, "name", where, str)
        if name in seen:
            c.error(f"{where}.name", f"duplicate stage {name!r}")
        function = c.get(table, "function", where, str, default=name or "evaluate")
        timeout = c.get(table, "timeout", where, float, default=60.0, check=_positive)
        cpus = c.get(table, "cpus", where, float, default=1.0, check=_non_negative)
        gpus = c.get(table, "gpus", where, float, default=0.0, check=_non_negative)
        resources = c.get(table, "resources", where, dict, default={})
        for key, value in (resources or {}).items():
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                c.error(f"{where}.resources.{key}", "must be a non-negative number")
        threshold = c.get(table, "threshold", where, float, default=None)
        threshold_metric = c.get(table, "threshold_metric", where, str, default="")
        role = c.get(table, "role", where, str, default=VISIBLE,
                     check=lambda v: None if v in (VISIBLE, HELDOUT) else f"must be {VISIBLE!r} or {HELDOUT!r}")
        if name is not None:
            seen.add(name)
            stages.append(
                StageSpec(
                    name=name,
                    function=function or name,
                    timeout=timeout or 60.0,
                    cpus=cpus if cpus is not None else 1.0,
                    gpus=gpus or 0.0,
                    resources={k: float(v) for k, v in (resources or {}).items()},
                    threshold=threshold,
                    threshold_metric=threshold_metric or score.metric,
                    role=role or VISIBLE,
                )
            )
    return tuple(stages)


def _parse_limits(c: _Collector, data: dict[str, Any]) -> Limits:
    table = c.get(data, "limits", "", dict, default={}) or {}
    c.unknown(table, {"memory_mb", "output_kb", "file_size_mb", "open_files", "processes", "scratch_mb"}, "limits")
    d = Limits()
    return Limits(
        memory_mb=c.get(table, "memory_mb", "limits", int, default=d.memory_mb, check=_positive) or d.memory_mb,
        output_kb=c.get(table, "output_kb", "limits", int, default=d.output_kb, check=_positive) or d.output_kb,
        file_size_mb=c.get(table, "file_size_mb", "limits", int, default=d.file_size_mb, check=_positive)
        or d.file_size_mb,
        open_files=c.get(table, "open_files", "limits", int, default=d.open_files, check=_positive) or d.open_files,
        processes=c.get(table, "processes", "limits", int, default=d.processes, check=_positive) or d.processes,
        scratch_mb=c.get(table, "scratch_mb", "limits", int, default=d.scratch_mb, check=_positive) or d.scratch_mb,
    )


def _parse_oversight(c: _Collector, data: dict[str, Any]) -> OversightSpec:
    table = c.get(data, "oversight", "", dict, default={}) or {}
    d = OversightSpec()
    c.unknown(table, set(d.__dataclass_fields__), "oversight")
    where = "oversight"

    def above_one(v: float) -> str | None:
        return None if v > 1 else "must be > 1 (a factor of the recent improvements)"

    def small(v: int) -> str | None:
        return None if 0 <= v <= 20 else "must be in 0..20"

    def at_least_one(v: int) -> str | None:
        return None if v >= 1 else "must be >= 1"

    return OversightSpec(
        top_k=_or(c.get(table, "top_k", where, int, default=d.top_k, check=at_least_one), d.top_k),
        visible_metric=c.get(table, "visible_metric", where, str, default="") or "",
        heldout_metric=c.get(table, "heldout_metric", where, str, default="") or "",
        tolerance=_or(c.get(table, "tolerance", where, float, default=d.tolerance, check=_non_negative), d.tolerance),
        relative_tolerance=_or(c.get(table, "relative_tolerance", where, float, default=d.relative_tolerance,
                                     check=_non_negative), d.relative_tolerance),
        reevaluations=_or(c.get(table, "reevaluations", where, int, default=d.reevaluations, check=small),
                          d.reevaluations),
        reevaluation_tolerance=c.get(table, "reevaluation_tolerance", where, float, default=None,
                                     check=_non_negative),
        gap=c.get(table, "gap", where, float, default=None, check=_positive),
        jump=c.get(table, "jump", where, float, default=None, check=above_one),
        jump_window=_or(c.get(table, "jump_window", where, int, default=d.jump_window, check=at_least_one),
                        d.jump_window),
        jump_history=_or(c.get(table, "jump_history", where, int, default=d.jump_history, check=at_least_one),
                         d.jump_history),
    )


def _parse_evolution(c: _Collector, data: dict[str, Any]) -> EvolutionDefaults:
    table = c.get(data, "evolution", "", dict, default={}) or {}
    d = EvolutionDefaults()
    c.unknown(table, set(d.__dataclass_fields__), "evolution")

    def fraction(v: float) -> str | None:
        return None if 0.0 <= v <= 1.0 else "must be between 0 and 1"

    return EvolutionDefaults(
        iterations=c.get(table, "iterations", "evolution", int, default=d.iterations, check=_positive) or d.iterations,
        islands=c.get(table, "islands", "evolution", int, default=d.islands, check=_positive) or d.islands,
        migration_interval=c.get(table, "migration_interval", "evolution", int, default=d.migration_interval,
                                 check=_positive) or d.migration_interval,
        exploitation=_or(c.get(table, "exploitation", "evolution", float, default=d.exploitation, check=fraction),
                         d.exploitation),
        inspirations=_or(c.get(table, "inspirations", "evolution", int, default=d.inspirations, check=_non_negative),
                         d.inspirations),
        mutator=c.get(table, "mutator", "evolution", str, default=d.mutator) or d.mutator,
        target_score=c.get(table, "target_score", "evolution", float, default=None),
    )


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value
