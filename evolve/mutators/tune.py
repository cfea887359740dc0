"""An offline operator that tunes numeric literals inside the evolve blocks (no LLM), and learns which ones pay.

Each proposal moves one literal (half the time) or several, by a Gaussian step of standard deviation
``max(scale * |value|, floor)`` times a log-uniform boldness factor (mostly small steps, now and then a bold one), so
steps follow the literal's magnitude and an exact zero can still move. Integers stay integers and move by at least 1;
a literal written after ``/`` or ``%`` never becomes zero; a bracketed list of integers (``ROWS = [5, 5, 6, 5, 5]``)
can also move a unit from one entry to another, keeping its sum. The answer is SEARCH/REPLACE text, so it takes the
same parsing path as an LLM's.

Learning (``observe``, called by the loop with each child's outcome): every literal (a key that survives changes of
the numbers, see ``evolve.mutators.literals``) keeps how often changing it gave a valid child and an improvement.
Literals are picked with probability ``prior * P(valid) * (0.1 + P(improvement | valid) * size)`` (Laplace estimates;
``size``: the literal's mean gain against the typical one, so big payers are tried more than crumb-adders), the prior
preferring floats and named constants over structural integers, so literals whose changes break the program fade out
within a few tries. Each literal's step size adapts too (wider after an improvement, narrower after a
failure) and drifts toward the direction that improved. Everything is a function of the observed outcomes in the
order they arrive, and of ``request.seed``: with ``--deterministic`` (outcomes integrated in iteration order) a run
is reproducible. Each answer names the literals it changed on a ``Literals changed:`` line (short ids of their keys,
with the direction), so an outcome is credited from the answer alone: a resumed run replays the archive's answers
and outcomes in iteration order and continues with exactly what it had learned, even after a kill.
"""

from __future__ import annotations

import hashlib
import math
import re
import threading
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from evolve.blocks import BlockError
from evolve.edit_render import render_search_replace
from evolve.mutators.base import MutationOutcome, MutationRequest, Proposal
from evolve.mutators.literals import Literal, LiteralSite, find_literals, literal_sites
from evolve.types import Status

__all__ = ["ArmStats", "Literal", "TuneMutator", "find_literals", "perturb"]

# How appealing a kind of literal is before any outcome is known ("prefer floats").
FLOAT_PRIOR = 1.0
NAMED_INT_PRIOR = 0.5  # RATE = 3, #define TILE 16
TRANSFER_PRIOR = 0.5  # move a unit between the entries of an integer list (sum kept)
INT_PRIOR = 0.2  # any other integer: exponents, indices, sizes
LIST_ENTRY_PRIOR = 0.1  # one entry of an integer list alone (changes its sum)

# Outcomes that say nothing about the literals changed: not evaluated, or not the candidate's fault.
_UNINFORMATIVE = frozenset({Status.DUPLICATE.value, Status.NOT_NOVEL.value, Status.INVALID_EDIT.value,
                            Status.EVALUATOR_ERROR.value, Status.SYSTEM_ERROR.value})
_MOVES_LINE = "Literals changed:"
_MOVES = re.compile(r"^" + re.escape(_MOVES_LINE) + r"((?: [0-9a-f]{12}[-+=])+)\s*$", re.M)
_SIGNS = {"+": 1, "-": -1, "=": 0}


def arm_id(key: str) -> str:
    """A short, stable id of a literal's key (what an answer names and the statistics are kept under)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:12]


def moves_of(response: str) -> tuple[tuple[str, int], ...]:
    """The (arm id, direction) pairs an answer of this mutator names; empty for any other text."""
    found = _MOVES.search(response)
    if found is None:
        return ()
    return tuple((token[:12], _SIGNS[token[12]]) for token in found.group(1).split())


def _format_float(value: float, step: float) -> str:
    # Enough decimals to show the step with about three significant digits, no more.
    digits = int(min(max(2 - math.floor(math.log10(step)), 0), 16))
    rounded = round(value, digits)
    return repr(rounded if rounded != 0 else 0.0)  # never "-0.0"


def _number(text: str, lit: Literal) -> float:
    body = text[: len(text) - len(lit.suffix)] if lit.suffix else text
    return float(body) if lit.is_float else float(int(body))


def perturb(lit: Literal, rng: np.random.Generator, scale: float, floor: float, *, step: float = 1.0,
            bias: float = 0.0, nonzero: bool = False) -> str:
    """New text for one literal (never equal in value to the old one).

    ``step`` multiplies the spread; ``bias`` in [-1, 1] tilts the direction (+1: mostly up); ``nonzero`` keeps the
    literal away from zero (a divisor).
    """
    boldness = 10 ** rng.uniform(-1.0, 0.5) * step
    up = rng.random() < 0.5 + 0.3 * max(-1.0, min(1.0, bias))
    unsigned = lit.suffix[:1] in ("u", "U")
    if not lit.is_float:
        old = int(lit.value)
        spread = max(scale * abs(old), 1.0) * boldness
        delta = max(1, int(round(abs(rng.normal(0.0, spread)))))
        new = old + (delta if up else -delta)
        if unsigned:
            new = abs(new) if abs(new) != old else old + 1
        if nonzero and new == 0:
            new = (1 if old > 0 else -1) if abs(old) != 1 else 2 * old
        return str(new) + lit.suffix
    spread = max(scale * abs(lit.value), floor) * boldness
    for _ in range(8):
        moved = abs(rng.normal(0.0, spread))
        value = lit.value + (moved if up else -moved)
        text = _format_float(abs(value) if unsigned else value, spread) + lit.suffix
        new_value = _number(text, lit)
        if new_value != lit.value and not (nonzero and new_value == 0):
            return text
    fallback = lit.value + spread if lit.value >= 0 or not nonzero else lit.value - spread
    return _format_float(fallback, spread) + lit.suffix


def _splice(line: str, lit: Literal, new: str) -> str:
    before = line[: lit.col]
    if before and (before[-1] == "-" and new.startswith("-") or (before[-1].isalnum() or before[-1] in "_.")):
        new = " " + new  # never write "--" (C decrement) or glue a number to a name ("return-1" -> "return0.5")
    return before + new + line[lit.col + len(lit.text) :]


@dataclass
class ArmStats:
    """What changing one literal (or moving units within one integer list) has given so far."""

    tries: int = 0
    valid: int = 0
    improved: int = 0
    gain: float = 0.0  # sum of the relative fitness gains of its improvements
    step: float = 1.0  # multiplies the literal's spread
    direction: float = 0.0  # -1..1: which way its improvements went lately

    def appeal(self, typical_gain: float | None = None) -> float:
        """``P(valid) * (0.1 + P(improvement | valid) * size)``, ``size`` its mean gain over ``typical_gain`` (the
        mean over every literal; shrunk towards it, within 1/4..4): a literal whose changes pay a lot is tried
        more than one that adds crumbs."""
        p_valid = (self.valid + 1) / (self.tries + 2)
        p_improve = (self.improved + 0.5) / (self.valid + 2)
        size = 1.0
        if typical_gain:
            size = min(4.0, max(0.25, (self.gain + typical_gain) / (self.improved + 1) / typical_gain))
        return p_valid * (0.1 + p_improve * size)

    def update(self, valid: bool, improved: bool, sign: int, gain: float = 0.0) -> None:
        self.tries += 1
        if improved:
            self.valid += 1
            self.improved += 1
            self.gain += gain
            self.step = min(self.step * 1.25, 8.0)
            self.direction = 0.6 * self.direction + 0.4 * sign
        elif valid:
            self.valid += 1
            self.step = max(self.step * 0.95, 0.05)  # with the 1.25 above: steady at ~1 improvement in 5
            self.direction = max(-1.0, min(1.0, self.direction - 0.1 * sign))
        else:
            self.step = max(self.step * 0.6, 0.05)
            self.direction = max(-1.0, min(1.0, self.direction - 0.2 * sign))


@dataclass(frozen=True)
class _Arm:
    key: str
    prior: float
    sites: tuple[LiteralSite, ...]  # one literal, or the entries of an integer list (a transfer)
    transfer: bool = False


@dataclass(frozen=True)
class _Move:
    arm: str
    sign: int  # +1 the literal went up, -1 down, 0 a transfer


def _arms(sites: list[LiteralSite], learn: bool) -> list[_Arm]:
    """What a proposal can change: each literal, and each integer list as a whole (a transfer).

    Without learning: every literal alike and no transfers (the operator as it was before it learned).
    """
    if not learn:
        return [_Arm(site.key, 1.0, (site,)) for site in sites]
    arms: list[_Arm] = []
    groups: dict[int, list[LiteralSite]] = {}
    for site in sites:
        lit = site.literal
        if site.group >= 0:
            groups.setdefault(site.group, []).append(site)
            prior = LIST_ENTRY_PRIOR
        elif lit.is_float:
            prior = FLOAT_PRIOR
        else:
            prior = NAMED_INT_PRIOR if site.named else INT_PRIOR
        arms.append(_Arm(site.key, prior, (site,)))
    for members in groups.values():
        if all(m.literal.value >= 0 for m in members):
            arms.append(_Arm(members[0].key + " sum", TRANSFER_PRIOR, tuple(members), transfer=True))
    return arms


@dataclass(eq=False)
class TuneMutator:
    """Perturbs ``1..literals_per_edit`` numeric literals per proposal by steps of relative size ~``scale``
    (at least ``floor`` for floats, 1 for integers).

    ``learn=False`` picks every literal alike and ignores outcomes (divisors still never become zero): the operator
    before it learned, kept for comparison (``bench/tune_demo.py --plain``).
    """

    scale: float = 0.1
    literals_per_edit: int = 3
    floor: float = 1e-3
    name: str = "tune"
    learn: bool = True
    _stats: dict[str, ArmStats] = field(default_factory=dict, init=False, repr=False)  # by ``arm_id``
    _names: dict[str, str] = field(default_factory=dict, init=False, repr=False)  # arm id -> key, for reports
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _observed: int = field(default=0, init=False, repr=False)
    # Sums over ``_stats`` of ``improved`` and ``gain``, kept by ``observe``: a proposal's typical gain without a
    # pass over every literal ever credited.
    _improved: int = field(default=0, init=False, repr=False)
    _gain: float = field(default=0.0, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.scale > 0 or not self.floor > 0:
            raise ValueError("scale and floor must be positive")
        if self.literals_per_edit < 1:
            raise ValueError("literals_per_edit must be at least 1")

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def propose(self, request: MutationRequest) -> Proposal:
        return Proposal(response=self.answer(request.parent.code, request.language, request.seed), mutator=self.name)

    def answer(self, code: str, language: str, seed: int) -> str:
        """The SEARCH/REPLACE answer for one proposal (a refusal in prose when there is nothing to tune)."""
        try:
            sites = literal_sites(code, language)
        except BlockError as exc:
            return f"Cannot tune this program: {exc}"
        if not sites:
            return "There is no numeric literal inside the evolve blocks to tune."
        arms = _arms(sites, self.learn)
        rng = np.random.default_rng(seed)
        count = 1 if rng.random() < 0.5 or self.literals_per_edit == 1 else int(
            rng.integers(2, self.literals_per_edit + 1))
        with self._lock:
            stats = [replace(self._stats.get(arm_id(arm.key)) or ArmStats()) for arm in arms]  # a snapshot
            typical = self._gain / self._improved if self._improved else None
        weights = np.array([arm.prior * (st.appeal(typical) if self.learn else 1.0)
                            for arm, st in zip(arms, stats, strict=True)])
        order = rng.choice(len(arms), size=min(count, len(arms)), replace=False, p=weights / weights.sum())
        changes: dict[tuple[int, int], tuple[Literal, str]] = {}
        moves: list[_Move] = []
        for index in order:
            arm, arm_stats = arms[int(index)], stats[int(index)]
            # ``literals_per_edit`` bounds the literals changed; a transfer changes two.
            if len(changes) + (2 if arm.transfer else 1) > self.literals_per_edit:
                continue
            if any((s.literal.line, s.literal.col) in changes for s in arm.sites):
                continue
            if arm.transfer:
                if self._transfer(arm, rng, changes):
                    moves.append(_Move(arm.key, 0))
                continue
            site = arm.sites[0]
            new = perturb(site.literal, rng, self.scale, self.floor, step=arm_stats.step if self.learn else 1.0,
                          bias=arm_stats.direction if self.learn else 0.0, nonzero=site.divisor)
            changes[(site.literal.line, site.literal.col)] = (site.literal, new)
            moves.append(_Move(arm.key, 1 if _number(new, site.literal) > site.literal.value else -1))
        if not changes:  # only transfers were drawn, and none was possible: move the first literal
            site = sites[0]
            new = perturb(site.literal, rng, self.scale, self.floor, nonzero=site.divisor)
            changes[(site.literal.line, site.literal.col)] = (site.literal, new)
            moves.append(_Move(site.key, 1 if _number(new, site.literal) > site.literal.value else -1))
        lines = code.replace("\r\n", "\n").split("\n")
        notes = []
        for lit, new in sorted(changes.values(), key=lambda c: (c[0].line, c[0].col), reverse=True):
            lines[lit.line] = _splice(lines[lit.line], lit, new)  # right to left: earlier columns stay valid
            notes.append(f"line {lit.line + 1}: {lit.text} -> {new}")
        moved = " ".join(f"{arm_id(m.arm)}{'+' if m.sign > 0 else '-' if m.sign < 0 else '='}" for m in moves)
        response = ("Tuning constants: " + "; ".join(reversed(notes)) + f"\n{_MOVES_LINE} {moved}\n\n"
                    + render_search_replace(code, "\n".join(lines)))
        if self.learn:
            with self._lock:
                for m in moves:
                    self._names.setdefault(arm_id(m.arm), m.arm)
        return response

    @staticmethod
    def _transfer(arm: _Arm, rng: np.random.Generator,
                  changes: dict[tuple[int, int], tuple[Literal, str]]) -> bool:
        """Move one unit (now and then two) from one entry of an integer list to another: the sum is kept."""
        values = [int(site.literal.value) for site in arm.sites]
        donors = [i for i, v in enumerate(values) if v > 1]
        if not donors:
            return False
        donor = int(rng.choice(donors))
        receiver = int(rng.choice([i for i in range(len(values)) if i != donor]))
        amount = 2 if values[donor] > 2 and rng.random() < 0.2 else 1
        for i, delta in ((donor, -amount), (receiver, amount)):
            lit = arm.sites[i].literal
            changes[(lit.line, lit.col)] = (lit, str(values[i] + delta) + lit.suffix)
        return True

    def observe(self, proposal: Proposal, outcome: MutationOutcome) -> None:
        """Credit every literal the proposal changed with the child's outcome."""
        if not self.learn:
            return
        moves = moves_of(proposal.response)
        if not moves:
            return
        with self._lock:
            if outcome.status in _UNINFORMATIVE:
                return
            self._observed += 1
            valid = outcome.status == Status.OK.value
            parent, child = outcome.parent_fitness, outcome.child_fitness
            # A relative margin: float noise (+4e-16) is not an improvement.
            scale = max(1.0, abs(parent)) if parent is not None else 1.0
            improved = valid and parent is not None and child is not None and child > parent + 1e-9 * scale
            gain = (child - parent) / scale if improved and child is not None and parent is not None else 0.0
            for arm, sign in moves:
                self._stats.setdefault(arm, ArmStats()).update(valid, improved, sign, gain)
            if improved:
                self._improved += len(moves)
                self._gain += gain * len(moves)

    def stats(self) -> dict[str, Any]:
        """What was learned: outcomes observed, and per literal (most tried first) tries, valid, improved, step."""
        with self._lock:
            items = sorted(self._stats.items(), key=lambda kv: (-kv[1].tries, kv[0]))
            tries = sum(s.tries for _, s in items)
            return {
                "learning": self.learn,
                "observed": self._observed,
                "literals": [{"literal": self._names.get(key, key)[:80], "tries": s.tries, "valid": s.valid, "improved": s.improved,
                              "step": round(s.step, 3)} for key, s in items[:20]],
                "valid_share": round(sum(s.valid for _, s in items) / tries, 4) if tries else None,
            }
