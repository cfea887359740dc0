"""Co-evolved search strategies, bounded: short texts in one slot of the user prompt, selected by the progress they
bring.

**What a strategy is.** Plain text (at most ``max_chars``) that ``evolve.llm.prompts`` puts in the "Search strategy"
section of the user message, and optionally parameters. The bounds are structural, not requests to the model: the
text goes into that one slot and is read by nothing else, so it cannot change the evaluator, the problem, the
budgets, the sandbox, the model choice (drawn from the request's seed by the ensemble's weights or bandit), the edit
format (the system message and the parser are fixed by the run) or held-out data (prompts never show ``heldout_``
metrics). Parameters are honoured only for the adaptive search's own knobs (``exploitation`` and ``mix``) with
``[search.adaptive]`` on, clamped into its declared range and kinds; any other key is dropped and the drop recorded.

**Credit.** A child made with a strategy is a success when it is valid and beats its parent (``credit``). A strategy's
fitness is its success share shrunk toward the run's: ``(improved + k * base) / (children + k)`` with ``k`` the
``prior`` strength and ``base = (all improved + 1) / (all children + 2)``, so a young strategy starts at the run's
rate instead of at 0 or 1. Each child draws its strategy by Thompson sampling from the same Beta posteriors
(``Beta(improved + k * base, failed + k * (1 - base))``), so fitter strategies are chosen more often without starving
young ones.

**Lineage.** Every ``every`` iterations the LLM is shown the fittest strategies with their statistics and the
recent outcomes and writes a new one; its parent is the fittest strategy then. When the population is full the least
fit active strategy retires (it stays archived). Every strategy, with its parent, the prompt and answer that made
it and the fitness snapshot at each generation, goes to the run's events table.
"""

from __future__ import annotations

import json
import re
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from evolve.llm.prompts import fmt_number
from evolve.types import Status

PARAM_KEYS = ("exploitation", "mix")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_PARAMS_LINE = re.compile(r"^\s*PARAMS\s*:\s*(\{.*\})\s*$", re.M | re.S)
_STRATEGY_HEAD = re.compile(r"^\s*STRATEGY\s*:\s*", re.M)


def credit(status: str, parent_fitness: float | None, child_fitness: float | None) -> bool:
    """Whether a child counts as a success for the strategy it was made with: valid and better than its parent."""
    return (status == Status.OK.value and parent_fitness is not None and child_fitness is not None
            and child_fitness > parent_fitness)


def base_rate(improved: int, children: int) -> float:
    """The run's share of improving children, smoothed (one success and one failure added): what a strategy with
    no children of its own is credited with."""
    return (improved + 1) / (children + 2)


def shrunk_fitness(improved: int, children: int, prior: float, base: float) -> float:
    """A strategy's share of improving children, shrunk toward ``base`` with the weight of ``prior`` children."""
    return (improved + prior * base) / (children + prior) if children + prior > 0 else base


@dataclass(frozen=True)
class Strategy:
    """One strategy, as archived (event kind ``strategy``)."""

    id: str
    text: str
    iteration: int  # when it was made (0: a seed)
    parent: str | None = None
    origin: str = "seed"  # "seed" or "llm"
    params: dict[str, Any] = field(default_factory=dict)  # honoured parameters, inside the declared ranges
    ignored: tuple[str, ...] = ()  # what the answer asked for and was dropped, with why
    prompt: str = ""  # JSON of the messages that asked for it
    answer: str = ""  # the LLM's answer it was parsed from
    model: str = ""
    calls: tuple[dict[str, Any], ...] = ()  # the call's audit (tokens, cost): counted in the budgets on resume

    def to_data(self, active: list[str]) -> dict[str, Any]:
        return {"id": self.id, "text": self.text, "iteration": self.iteration, "parent": self.parent,
                "origin": self.origin, "params": self.params, "ignored": list(self.ignored), "prompt": self.prompt,
                "answer": self.answer, "model": self.model, "calls": list(self.calls), "active_after": active}

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Strategy:
        return cls(id=str(data["id"]), text=str(data.get("text", "")), iteration=int(data.get("iteration", 0)),
                   parent=data.get("parent"), origin=str(data.get("origin", "llm")),
                   params=dict(data.get("params") or {}), ignored=tuple(data.get("ignored") or ()),
                   prompt=str(data.get("prompt", "")), answer=str(data.get("answer", "")),
                   model=str(data.get("model", "")), calls=tuple(data.get("calls") or ()))


@dataclass
class StrategyStats:
    children: int = 0
    improved: int = 0
    statuses: Counter[str] = field(default_factory=Counter)


def clean_text(text: str, max_chars: int) -> str:
    """A strategy's text as it may enter the slot: no control characters, no runs of blank lines, capped."""
    text = _CONTROL.sub("", text.replace("\r\n", "\n")).strip()
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text if len(text) <= max_chars else text[: max_chars - 3].rstrip() + "..."


class StrategyPool:
    """The run's strategies, their statistics, and the Thompson draw. Driver-side (not thread-safe)."""

    def __init__(self, population: int, prior: float):
        self.population = population
        self.prior = prior
        self.all: dict[str, Strategy] = {}
        self.active: list[str] = []
        self.stats: dict[str, StrategyStats] = {}
        self.children = 0
        self.improved = 0
        self.recent: deque[dict[str, Any]] = deque(maxlen=12)

    def stat(self, strategy_id: str) -> StrategyStats:
        found = self.stats.get(strategy_id)
        if found is None:
            found = self.stats[strategy_id] = StrategyStats()
        return found

    @property
    def base(self) -> float:
        return base_rate(self.improved, self.children)

    def fitness(self, strategy_id: str) -> float:
        s = self.stats.get(strategy_id) or StrategyStats()
        return shrunk_fitness(s.improved, s.children, self.prior, self.base)

    def ranked(self, ids: list[str] | None = None) -> list[str]:
        """Best first (ties: the older first)."""
        ids = list(self.active if ids is None else ids)
        return sorted(ids, key=lambda i: (-self.fitness(i), self.all[i].iteration if i in self.all else 0, i))

    def add(self, strategy: Strategy) -> str | None:
        """Add and activate ``strategy``; return the id retired to make room, if any."""
        self.all[strategy.id] = strategy
        retired = None
        if len(self.active) >= self.population:
            retired = self.ranked()[-1]
            self.active.remove(retired)
        self.active.append(strategy.id)
        return retired

    def restore(self, strategy: Strategy, active_after: list[str]) -> None:
        self.all[strategy.id] = strategy
        self.active = [i for i in active_after if i in self.all]

    def choose(self, rng: np.random.Generator) -> Strategy | None:
        if not self.active:
            return None
        base = self.base
        draws = []
        for sid in self.active:
            s = self.stats.get(sid) or StrategyStats()
            a = s.improved + self.prior * base
            b = (s.children - s.improved) + self.prior * (1.0 - base)
            draws.append(rng.beta(max(a, 1e-3), max(b, 1e-3)))
        return self.all[self.active[int(np.argmax(draws))]]

    def observe(self, strategy_id: str, status: str, improved: bool, summary: dict[str, Any]) -> None:
        s = self.stat(strategy_id)
        s.children += 1
        s.improved += improved
        s.statuses[status] += 1
        self.children += 1
        self.improved += improved
        self.recent.append(summary)

    def snapshot(self) -> dict[str, Any]:
        """Every strategy's statistics and fitness now (event kind ``strategy_fitness``)."""
        return {"base": round(self.base, 4), "active": list(self.active), "strategies": {
            sid: {"children": self.stat(sid).children, "improved": self.stat(sid).improved,
                  "fitness": round(self.fitness(sid), 4)} for sid in self.all}}


# ---------------------------------------------------------------------------------------------------------------
# Asking for a new strategy


SYSTEM = """You improve the search strategy of an automated evolutionary search over programs. A strategy is short advice \
(at most {max_chars} characters) that is inserted into the prompt asking a model to change a program; programs are \
then scored by a fixed, trusted evaluator. A strategy can only advise what kind of change to try. It cannot change \
the evaluator, the problem, the budgets, the models, the answer format, or the data the programs are scored on: \
asking for any of these has no effect.

Answer in exactly this form:
STRATEGY:
<the advice, plain text>
{params_help}"""

PARAMS_HELP = """PARAMS: {{"exploitation": <number in [{low:g}, {high:g}]>, "mix": {{{kinds}}}}}   (optional line: \
exploitation is the share of parents picked among the best programs, mix the shares of mutation kinds)"""


def generation_messages(pool: StrategyPool, *, description: str, metric: str, direction: str, max_chars: int,
                        exploitation_range: tuple[float, float] | None, kinds: tuple[str, ...],
                        notes: str = "") -> list[dict[str, str]]:
    """The prompt asking for a new strategy from the fittest ones, their statistics and the recent outcomes."""
    params_help = ""
    if exploitation_range is not None:
        kinds_text = ", ".join(f'"{k}": <share>' for k in kinds)
        params_help = PARAMS_HELP.format(low=exploitation_range[0], high=exploitation_range[1], kinds=kinds_text)
    system = SYSTEM.format(max_chars=max_chars, params_help=params_help).strip() + "\n"
    lines = [f"# Problem\n{description.strip() or '(no description given)'}\n",
             f"Objective: {direction} `{metric}`.\n", "# Strategies so far (fittest first)\n"]
    for sid in pool.ranked()[:4]:
        s, strategy = pool.stat(sid), pool.all[sid]
        params = f" params {json.dumps(strategy.params, sort_keys=True)}" if strategy.params else ""
        lines.append(f"## {sid} (parent {strategy.parent or 'none'}): fitness {pool.fitness(sid):.3f}, "
                     f"{s.children} children, {s.improved} beat their parent{params}\n{strategy.text}\n")
    if pool.recent:
        lines.append("# Recent outcomes (oldest first)\n")
        for r in pool.recent:
            lines.append(f"- iteration {r['iteration']}, strategy {r['strategy']}, {r['kind'] or 'edit'}: "
                         f"{r['status']}{', ' + metric + ' ' + fmt_number(r['score']) if r['score'] is not None else ''}"
                         f"{' (beat its parent)' if r['improved'] else ''}{' - ' + r['why'] if r['why'] else ''}\n")
    if notes:
        lines.append(f"# Notes from the search so far\n{notes.strip()}\n")
    lines.append("# Task\nWrite one new strategy: a variation of the fittest one, or a new idea the outcomes suggest.")
    return [{"role": "system", "content": system}, {"role": "user", "content": "\n".join(lines)}]


def parse_strategy(answer: str, max_chars: int, exploitation_range: tuple[float, float] | None,
                   kinds: tuple[str, ...], min_share: float) -> tuple[str, dict[str, Any], tuple[str, ...]]:
    """``(text, honoured params, ignored)`` from an answer. Parameters are kept only for the adaptive search's knobs
    with a declared range (``exploitation_range`` None: adaptive search is off, every parameter is dropped)."""
    from evolve.search.adaptive import clamp_mix

    body = answer.strip()
    params_text = None
    found = _PARAMS_LINE.search(body)
    if found is not None:
        params_text = found.group(1)
        body = (body[: found.start()] + body[found.end():]).strip()
    head = _STRATEGY_HEAD.search(body)
    if head is not None:
        body = body[head.end():]
    body = body.strip().strip("`").strip()
    text = clean_text(body, max_chars)
    params: dict[str, Any] = {}
    ignored: list[str] = []
    if params_text is None:
        return text, params, ()
    try:
        asked = json.loads(params_text)
    except ValueError:
        return text, params, ("PARAMS: not a JSON object",)
    if not isinstance(asked, dict):
        return text, params, ("PARAMS: not a JSON object",)
    for key, value in asked.items():
        if key not in PARAM_KEYS:
            ignored.append(f"{key}: not a search parameter a strategy may set")
        elif exploitation_range is None:
            ignored.append(f"{key}: adaptive search is off")
        elif key == "exploitation":
            if isinstance(value, bool) or not isinstance(value, int | float):
                ignored.append("exploitation: not a number")
                continue
            low, high = exploitation_range
            clamped = min(high, max(low, float(value)))
            params["exploitation"] = clamped
            if clamped != value:
                ignored.append(f"exploitation: {value} clamped to {clamped:g} (declared range [{low:g}, {high:g}])")
        elif key == "mix":
            if not isinstance(value, dict) or not kinds:
                ignored.append("mix: no declared mutation mix to adapt" if not kinds else "mix: not an object")
                continue
            extra = sorted(k for k in value if k not in kinds)
            if extra:
                ignored.append(f"mix: kinds not declared dropped ({', '.join(map(str, extra))})")
            numbers = {k: float(v) for k, v in value.items() if k in kinds and isinstance(v, int | float)
                       and not isinstance(v, bool)}
            if numbers and sum(numbers.values()) > 0:
                params["mix"] = {k: round(v, 4) for k, v in clamp_mix(numbers, dict.fromkeys(kinds, 1.0),
                                                                      min_share).items()}
    return text, params, tuple(ignored)
