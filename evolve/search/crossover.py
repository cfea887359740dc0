"""Offline crossover for mutators without an LLM (``tune``, ``scripted``): a uniform crossover of numeric literals.

Two programs of one lineage usually differ only in their constants. Every literal of the first parent whose key
(``evolve.mutators.literals``: its place in the code, stable across changes of the numbers) also exists in the
second parent with another value takes the second parent's value with probability 1/2 (at least one does). The
answer is SEARCH/REPLACE text, so it takes the same parsing path as every other answer. When the parents share no
differing literal there is nothing to cross: ``None``, and the mutator's own edit is used instead.
"""

from __future__ import annotations

import numpy as np

from evolve.blocks import BlockError
from evolve.edit_render import render_search_replace
from evolve.mutators.literals import literal_sites

CROSSOVER_LINE = "Crossover of literals with program"


def literal_crossover(code: str, other: str, other_id: str, language: str, seed: int) -> str | None:
    """A SEARCH/REPLACE answer taking some of ``other``'s literal values into ``code``; None if none differ."""
    try:
        mine, theirs = literal_sites(code, language), literal_sites(other, language)
    except BlockError:
        return None
    values = {site.key: site.literal.text for site in theirs}
    differing = [site for site in mine if site.key in values and values[site.key] != site.literal.text]
    if not differing:
        return None
    rng = np.random.default_rng([seed % 2**63, 0xC055])
    take = rng.random(len(differing)) < 0.5
    if not take.any():
        take[int(rng.integers(len(differing)))] = True
    lines = code.replace("\r\n", "\n").split("\n")
    chosen = sorted((s for s, t in zip(differing, take, strict=True) if t),
                    key=lambda s: (s.literal.line, s.literal.col), reverse=True)
    notes = []
    for site in chosen:  # right to left on each line: earlier columns stay valid
        lit = site.literal
        line = lines[lit.line]
        lines[lit.line] = line[: lit.col] + values[site.key] + line[lit.col + len(lit.text):]
        notes.append(f"line {lit.line + 1}: {lit.text} -> {values[site.key]}")
    child = "\n".join(lines)
    if child == code.replace("\r\n", "\n"):
        return None
    return f"{CROSSOVER_LINE} {other_id}: " + "; ".join(reversed(notes)) + "\n\n" + render_search_replace(code, child)
