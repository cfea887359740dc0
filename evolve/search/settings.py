"""The ``[search]`` table of ``problem.toml`` (and its ``evolve run`` flags): how parents are picked, which kinds of
mutation are asked for, novelty rejection, co-evolved strategies and the meta-scratchpad.

Every default is the engine's behaviour before these choices existed: parents by the rank/uniform mix of
``[evolution] exploitation``, the mutator's own edit mode, exact-duplicate detection only, no strategies, no
scratchpad. A table like this one turns the features on:

    [search]
    parent_selection = "weighted"     # "rank" (default) | "weighted" (ShinkaEvolve) | "power"
    mutation_mix = { diff = 0.6, full = 0.3, crossover = 0.1 }

    [search.adaptive]                 # a per-island bandit over the exploration rate and the mutation kind
    enabled = true
    exploitation = [0.4, 0.95]        # the declared range it (and any strategy) may choose in

    [search.novelty]
    enabled = true                    # MinHash over the evolve blocks by default; "embedding" uses the endpoint
    threshold = 0.98                  # similarity at or above which a child is `not_novel`

    [search.strategies]
    enabled = true                    # needs the llm mutator
    every = 20

    [search.scratchpad]
    every = 25                        # needs the llm mutator

Mistakes are reported together, each with its place (``problem.toml [search.novelty].threshold: ...``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

POLICIES = ("rank", "weighted", "power")
KINDS = ("diff", "full", "crossover")
NOVELTY_METHODS = ("minhash", "embedding")


class SearchConfigError(ValueError):
    """The ``[search]`` table (or a search flag) is wrong; ``errors`` lists ``(place, message)`` pairs."""

    def __init__(self, errors: list[tuple[str, str]]):
        self.errors = errors
        super().__init__("\n".join(f"{where}: {message}" for where, message in errors))


@dataclass(frozen=True)
class AdaptiveSettings:
    """``[search.adaptive]``: a discounted UCB bandit per island over exploration rates and mutation kinds."""

    enabled: bool = False
    exploitation: tuple[float, float] = (0.5, 0.9)
    """The declared range of the exploitation rate; the bandit's arms (and strategies' values) stay inside it."""
    levels: int = 3
    """Exploitation arms spread evenly over the range."""
    min_share: float = 0.05
    """Smallest share any declared mutation kind keeps (so no kind is starved of evidence)."""
    discount: float = 0.95
    """Per observation on an island: older outcomes weigh less, so the bandit follows a run that changes."""
    explore: float = 1.0
    """UCB's exploration constant."""


@dataclass(frozen=True)
class NoveltySettings:
    """``[search.novelty]``: children too similar to their parent or their island's elites are not evaluated."""

    enabled: bool = False
    method: str = "minhash"
    """"minhash" (offline: token shingles of the evolve blocks) or "embedding" (the endpoint's embeddings API)."""
    threshold: float = 0.98
    """A child whose similarity to its parent or an island elite is at least this is ``not_novel``."""
    judge_band: float = 0.0
    """Similarities in ``[threshold - judge_band, threshold)`` are asked to the LLM judge (0: no judge)."""
    shingle: int = 4
    """Tokens per shingle (minhash)."""
    permutations: int = 128
    """MinHash signature length: the similarity estimate's standard error is about sqrt(J(1-J)/permutations)."""
    embedding_model: str = ""
    """The embeddings model (method "embedding"), served by the LLM endpoint."""


@dataclass(frozen=True)
class StrategySettings:
    """``[search.strategies]``: a population of search strategies (text in one slot of the user prompt)."""

    enabled: bool = False
    every: int = 20
    """Every this many iterations the LLM writes a new strategy from the best ones and recent outcomes."""
    population: int = 6
    """Active strategies at most; a new one retires the least fit (retired ones stay archived)."""
    max_chars: int = 600
    """A strategy's text is cut to this length."""
    prior: float = 4.0
    """Strength (in children) of the prior that pulls a young strategy's fitness toward the run's success rate."""
    seeds: tuple[str, ...] = ("Make one focused change that you expect to improve the score; keep the program "
                              "correct and runnable.",)
    """The first strategies."""


@dataclass(frozen=True)
class ScratchpadSettings:
    """``[search.scratchpad]``: every ``every`` iterations the LLM summarises what works and what fails."""

    every: int = 0
    """0: off."""
    max_chars: int = 1500


@dataclass(frozen=True)
class SearchSettings:
    """The whole ``[search]`` table."""

    parent_selection: str = "rank"
    exploitation: float | None = None
    """Share of parents picked by fitness (the rest uniformly over the island's cells); None: ``[evolution]``'s."""
    weighted_lambda: float = 10.0
    """ShinkaEvolve's sharpness: weight ``sigmoid(lambda * (f - median) / MAD) / (1 + children)``."""
    power_alpha: float = 1.0
    """Power law over ranks: weight ``(rank + 1) ** -alpha`` (1.0 is the rank policy's weighting)."""
    mutation_mix: tuple[tuple[str, float], ...] = ()
    """``(kind, weight)`` pairs; empty: every child in the mutator's own edit mode."""
    adaptive: AdaptiveSettings = field(default_factory=AdaptiveSettings)
    novelty: NoveltySettings = field(default_factory=NoveltySettings)
    strategies: StrategySettings = field(default_factory=StrategySettings)
    scratchpad: ScratchpadSettings = field(default_factory=ScratchpadSettings)

    @property
    def mix(self) -> dict[str, float]:
        """The declared mutation mix, normalised (empty: the mutator's own mode)."""
        total = sum(w for _, w in self.mutation_mix)
        return {k: w / total for k, w in self.mutation_mix if w > 0} if total > 0 else {}

    @property
    def default(self) -> bool:
        """True when nothing differs from the engine's behaviour without a ``[search]`` table."""
        return self.parent_selection == "rank" and self.exploitation is None and not self.mix and not any(
            (self.adaptive.enabled, self.novelty.enabled, self.strategies.enabled, self.scratchpad.every))

    @property
    def needs_llm(self) -> tuple[str, ...]:
        """The features asked for that talk to the LLM endpoint (the llm mutator's)."""
        needs = []
        if self.strategies.enabled:
            needs.append("[search.strategies]")
        if self.scratchpad.every:
            needs.append("[search.scratchpad]")
        if self.novelty.enabled and self.novelty.method == "embedding":
            needs.append("[search.novelty] method = \"embedding\"")
        if self.novelty.enabled and self.novelty.judge_band > 0:
            needs.append("[search.novelty] judge_band")
        return tuple(needs)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["mutation_mix"] = dict(self.mutation_mix)
        return data


# ---------------------------------------------------------------------------------------------------------------
# Parsing


class _Errors:
    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, where: str, message: str) -> None:
        self.items.append((where, message))


def _where(table: str, key: str) -> str:
    return f"problem.toml [{table}].{key}"


def _number(errors: _Errors, table: str, key: str, value: Any, lo: float, hi: float, *, integer: bool = False,
            lo_open: bool = False) -> Any:
    ok_type = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok_type:
        errors.add(_where(table, key), f"expected {'an integer' if integer else 'a number'}")
        return None
    if value < lo or value > hi or (lo_open and value == lo):
        errors.add(_where(table, key), f"must be {'>' if lo_open else '>='} {lo:g} and <= {hi:g}")
        return None
    return int(value) if integer else float(value)


def _choice(errors: _Errors, table: str, key: str, value: Any, choices: tuple[str, ...]) -> str | None:
    if value not in choices:
        errors.add(_where(table, key), f"must be one of {', '.join(repr(c) for c in choices)}")
        return None
    return str(value)


def _bool(errors: _Errors, table: str, key: str, value: Any) -> bool | None:
    if not isinstance(value, bool):
        errors.add(_where(table, key), "expected true or false")
        return None
    return value


def _mix(errors: _Errors, value: Any) -> tuple[tuple[str, float], ...] | None:
    where = _where("search", "mutation_mix")
    if not isinstance(value, Mapping):
        errors.add(where, "expected a table like { diff = 0.6, full = 0.3, crossover = 0.1 }")
        return None
    out = []
    for kind, weight in value.items():
        if kind not in KINDS:
            errors.add(f"{where}.{kind}", f"unknown kind (allowed: {', '.join(KINDS)})")
        elif isinstance(weight, bool) or not isinstance(weight, int | float) or weight < 0:
            errors.add(f"{where}.{kind}", "expected a non-negative number")
        else:
            out.append((str(kind), float(weight)))
    if out and sum(w for _, w in out) <= 0:
        errors.add(where, "at least one kind needs a positive weight")
    return tuple(sorted(out, key=lambda kv: KINDS.index(kv[0])))


_SUBTABLES = ("adaptive", "novelty", "strategies", "scratchpad")


def resolve_search_settings(section: Mapping[str, Any] | None) -> SearchSettings:
    """Validate a ``[search]`` table; raise ``SearchConfigError`` listing every mistake."""
    section = dict(section or {})
    errors = _Errors()
    top: dict[str, Any] = {}
    for key, value in section.items():
        if key in _SUBTABLES:
            continue
        if key == "parent_selection":
            top[key] = _choice(errors, "search", key, value, POLICIES)
        elif key == "exploitation":
            top[key] = _number(errors, "search", key, value, 0.0, 1.0)
        elif key == "weighted_lambda":
            top[key] = _number(errors, "search", key, value, 0.0, 1000.0, lo_open=True)
        elif key == "power_alpha":
            top[key] = _number(errors, "search", key, value, 0.0, 10.0)
        elif key == "mutation_mix":
            top[key] = _mix(errors, value)
        else:
            allowed = ", ".join(sorted({"parent_selection", "exploitation", "weighted_lambda", "power_alpha",
                                        "mutation_mix", *_SUBTABLES}))
            errors.add(_where("search", key), f"unknown key (allowed: {allowed})")
    subs = {name: _sub(errors, name, section.get(name)) for name in _SUBTABLES}
    if errors.items:
        raise SearchConfigError(errors.items)
    values = {k: v for k, v in top.items() if v is not None}
    settings = SearchSettings(**values, **{k: v for k, v in subs.items() if v is not None})
    _cross_checks(settings, errors)
    if errors.items:
        raise SearchConfigError(errors.items)
    return settings


def _sub(errors: _Errors, name: str, table: Any) -> Any:
    cls = {"adaptive": AdaptiveSettings, "novelty": NoveltySettings, "strategies": StrategySettings,
           "scratchpad": ScratchpadSettings}[name]
    if table is None:
        return None
    where = f"search.{name}"
    if not isinstance(table, Mapping):
        errors.add(f"problem.toml [search].{name}", "expected a table")
        return None
    fields = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in fields:
            errors.add(_where(where, key), f"unknown key (allowed: {', '.join(sorted(fields))})")
            continue
        parsed = _field(errors, where, key, value)
        if parsed is not None:
            values[key] = parsed
    return cls(**values)


_RANGES: dict[str, tuple[float, float, bool, bool]] = {  # key: lo, hi, integer, lo_open
    "levels": (1, 9, True, False),
    "min_share": (0.0, 0.5, False, False),
    "discount": (0.5, 1.0, False, False),
    "explore": (0.0, 10.0, False, False),
    "threshold": (0.0, 1.0, False, True),
    "judge_band": (0.0, 0.5, False, False),
    "shingle": (1, 16, True, False),
    "permutations": (16, 1024, True, False),
    "every": (0, 1_000_000, True, False),
    "population": (1, 64, True, False),
    "max_chars": (40, 20_000, True, False),
    "prior": (0.0, 1000.0, False, False),
}


def _field(errors: _Errors, where: str, key: str, value: Any) -> Any:
    if key == "enabled":
        return _bool(errors, where, key, value)
    if key == "method":
        return _choice(errors, where, key, value, NOVELTY_METHODS)
    if key == "embedding_model":
        if not isinstance(value, str):
            errors.add(_where(where, key), "expected a model name")
            return None
        return value
    if key == "exploitation":
        if (not isinstance(value, list | tuple) or len(value) != 2
                or any(isinstance(v, bool) or not isinstance(v, int | float) for v in value)
                or not 0.0 <= value[0] <= value[1] <= 1.0):
            errors.add(_where(where, key), "expected [low, high] with 0 <= low <= high <= 1")
            return None
        return (float(value[0]), float(value[1]))
    if key == "seeds":
        if not isinstance(value, list | tuple) or not value or not all(isinstance(v, str) and v.strip()
                                                                        for v in value):
            errors.add(_where(where, key), "expected a non-empty list of non-empty strings")
            return None
        return tuple(value)
    lo, hi, integer, lo_open = _RANGES[key]
    if where == "search.strategies" and key == "every":
        lo = 1
    return _number(errors, where, key, value, lo, hi, integer=integer, lo_open=lo_open)


def _cross_checks(settings: SearchSettings, errors: _Errors) -> None:
    novelty = settings.novelty
    if novelty.enabled and novelty.method == "embedding" and not novelty.embedding_model:
        errors.add(_where("search.novelty", "embedding_model"), "method \"embedding\" needs an embeddings model name")
    if settings.adaptive.enabled and len(settings.mix) * settings.adaptive.min_share > 1.0:
        errors.add(_where("search.adaptive", "min_share"), "the declared kinds' minimum shares add up to more than 1")
    for seed in settings.strategies.seeds:
        if len(seed) > settings.strategies.max_chars:
            errors.add(_where("search.strategies", "seeds"), f"a seed is longer than max_chars "
                                                             f"({settings.strategies.max_chars})")


# ---------------------------------------------------------------------------------------------------------------
# Flags


def search_section_with_flags(section: Mapping[str, Any] | None, flags: Mapping[str, Any]) -> dict[str, Any]:
    """The ``[search]`` table with ``evolve run`` flags on top (a flag given wins over the table; ``None``: not
    given). Flags: ``parent_selection``, ``mutation_mix`` (``"diff=0.6,full=0.3,crossover=0.1"``), ``adaptive``
    (bool), ``novelty`` (``"off"``, ``"minhash"`` or ``"embedding"``), ``novelty_threshold``, ``strategies_every``
    (0 turns strategies off) and ``scratchpad_every`` (0 turns it off)."""
    out: dict[str, Any] = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in (section or {}).items()}

    def sub(name: str) -> dict[str, Any]:
        table = out.get(name)
        if not isinstance(table, dict):
            table = out[name] = {}
        return table

    if flags.get("parent_selection") is not None:
        out["parent_selection"] = flags["parent_selection"]
    if flags.get("mutation_mix") is not None:
        out["mutation_mix"] = parse_mix_flag(flags["mutation_mix"])
    if flags.get("adaptive") is not None:
        sub("adaptive")["enabled"] = bool(flags["adaptive"])
    if flags.get("novelty") is not None:
        if flags["novelty"] == "off":
            sub("novelty")["enabled"] = False
        else:
            sub("novelty").update(enabled=True, method=flags["novelty"])
    if flags.get("novelty_threshold") is not None:
        sub("novelty")["threshold"] = flags["novelty_threshold"]
    if flags.get("strategies_every") is not None:
        every = int(flags["strategies_every"])
        if every:
            sub("strategies").update(enabled=True, every=every)
        else:
            sub("strategies")["enabled"] = False
    if flags.get("scratchpad_every") is not None:
        sub("scratchpad")["every"] = int(flags["scratchpad_every"])
    return out


def parse_mix_flag(text: str) -> dict[str, float]:
    """``"diff=0.6,full=0.3"`` -> ``{"diff": 0.6, "full": 0.3}``; raises ``SearchConfigError``."""
    mix: dict[str, float] = {}
    for part in (p.strip() for p in str(text).split(",") if p.strip()):
        kind, _, weight = part.partition("=")
        try:
            mix[kind.strip()] = float(weight)
        except ValueError:
            raise SearchConfigError([("--mutation-mix", f"{part!r}: expected KIND=WEIGHT, e.g. diff=0.7,full=0.3")]) \
                from None
    return mix
