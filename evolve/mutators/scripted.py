"""A deterministic stand-in for an LLM, for tests and dry runs.

Without a script it writes a real SEARCH/REPLACE answer for the parent: it picks lines inside the evolve blocks from
``request.seed`` and nudges a number on them (or, on lines with no number, inserts a comment), sometimes two edits
per answer, sometimes inside a code fence with prose around it, as models answer. With a script it replays the given
answers by ``request.iteration``. The answer depends only on the request: no state, safe from any thread.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from evolve.blocks import END_MARKER, START_MARKER, BlockError, comment_prefix, evolvable_text, find_blocks
from evolve.edit_render import render_search_replace
from evolve.edits import apply_response
from evolve.mutators.base import MutationRequest, MutatorStopped, Proposal

# A plain decimal number that is not part of an identifier or of a longer number.
_NUMBER_RE = re.compile(r"(?<![\w.])(\d+\.\d+|\d+)(?![\w.])")
_ATTEMPTS = 8


@dataclass(frozen=True)
class ScriptedMutator:
    """``script``: answers replayed as ``script[iteration % len(script)]`` (or stop past the end if not ``cycle``).

    Placeholders ``{parent_block}`` (the evolve blocks' text), ``{parent_code}``, ``{iteration}`` and ``{seed}`` are
    substituted literally (no ``str.format``, so braces in code are safe).
    """

    script: Sequence[str] | None = None
    name: str = "scripted"
    cycle: bool = True

    def __post_init__(self) -> None:
        if self.script is not None:
            if isinstance(self.script, str):
                raise TypeError("script must be a sequence of answers, not one string")
            if not self.script:
                raise ValueError("script must hold at least one answer")
            object.__setattr__(self, "script", tuple(self.script))  # immutable, so the mutator stays hashable

    def propose(self, request: MutationRequest) -> Proposal:
        if self.script is not None:
            return Proposal(response=self._scripted(request, self.script), mutator=self.name)
        return Proposal(response=self._generated(request), mutator=self.name)

    def _scripted(self, request: MutationRequest, script: Sequence[str]) -> str:
        if not self.cycle and request.iteration >= len(script):
            raise MutatorStopped(f"script of {len(script)} answers exhausted at iteration {request.iteration}")
        answer = script[request.iteration % len(script)]
        code = request.parent.code
        for key, value in (("{parent_block}", evolvable_text(code)), ("{parent_code}", code),
                           ("{iteration}", str(request.iteration)), ("{seed}", str(request.seed))):
            answer = answer.replace(key, value)
        return answer

    def _generated(self, request: MutationRequest) -> str:
        code = request.parent.code
        rng = np.random.default_rng(request.seed)
        lines = code.replace("\r\n", "\n").split("\n")
        try:
            blocks = find_blocks(code)
        except BlockError as exc:
            return f"I cannot edit this program: {exc}"
        editable = [i for b in blocks for i in range(b.start, b.end)
                    if lines[i].strip() and START_MARKER not in lines[i] and END_MARKER not in lines[i]]
        if not editable:
            return "The evolve block is empty; I have no edit to propose."
        comment = comment_prefix(request.language)
        answer = ""
        for _ in range(_ATTEMPTS):
            child = _mutate(lines, editable, rng, comment, request.iteration)
            if child == lines:
                continue
            answer = _dress(render_search_replace(code, "\n".join(child)), rng, request.language)
            if apply_response(code, answer).ok:
                return answer
        return answer or "No applicable edit found."


def _mutate(lines: list[str], editable: list[int], rng: np.random.Generator, comment: str, iteration: int) -> list[str]:
    child = list(lines)
    edits = 1 if rng.random() < 0.8 or len(editable) < 2 else 2
    chosen = sorted(rng.choice(len(editable), size=edits, replace=False).tolist(), reverse=True)
    for pick in chosen:  # bottom-up so insertions do not shift the other chosen line
        index = editable[pick]
        line = child[index]
        numbers = list(_NUMBER_RE.finditer(line))
        if numbers and rng.random() < 0.85:
            match = numbers[int(rng.integers(len(numbers)))]
            child[index] = line[: match.start()] + _nudge(match.group(0), rng) + line[match.end() :]
        else:
            indent = line[: len(line) - len(line.lstrip())]
            child.insert(index + 1, f"{indent}{comment} variant {iteration}.{int(rng.integers(1_000_000))}")
    return child


def _nudge(literal: str, rng: np.random.Generator) -> str:
    if "." in literal:
        value = float(literal)
        factor = float(rng.choice([0.5, 0.8, 0.9, 0.95, 1.05, 1.1, 1.25, 2.0]))
        digits = max(len(literal.split(".")[1]), 2)
        new = round(value * factor, digits + 1) if value else float(rng.choice([0.1, 0.01]))
        text = repr(new)
        return text if text != literal else repr(new + 10 ** -digits)
    value = int(literal)
    if value <= 1:
        return str(value + 1)
    return str(max(0, value + int(rng.choice([-2, -1, 1, 1, 2, 3]))))


def _dress(blocks: str, rng: np.random.Generator, language: str) -> str:
    """Wrap the blocks the way models do: sometimes bare, sometimes fenced, with a sentence of intent."""
    style = int(rng.integers(3))
    if style == 0:
        return blocks
    if style == 1:
        return f"Let me adjust a constant.\n\n```{language}\n{blocks}```\n"
    return f"I will try a small variation.\n\n{blocks}\nThis should change the behaviour slightly.\n"
