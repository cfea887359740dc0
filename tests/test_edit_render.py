"""Producing SEARCH/REPLACE answers and the edit-format help of prompts (evolve.edit_render)."""

from __future__ import annotations

import numpy as np
import pytest

from evolve.blocks import comment_prefix
from evolve.edit_render import render_diff_format_help, render_search_replace
from evolve.edits import apply_response, parse_search_replace

from .test_edits import PROGRAM


def test_render_round_trip_on_random_line_edits():
    """Random insertions, deletions and changes (in a program full of repeated lines) always round-trip."""
    base = ["x = 0", "", "y = 1", "x = 0", "    pass", "", "x = 0", "z = 2", "    pass", "w = 3"]
    rng = np.random.default_rng(7)
    for _ in range(300):
        child = list(base)
        for _ in range(int(rng.integers(1, 4))):
            i = int(rng.integers(len(child) + 1))
            op = rng.integers(3)
            if op == 0 or not child:
                child.insert(i, f"new_{int(rng.integers(5))} = 1")
            elif op == 1:
                del child[min(i, len(child) - 1)]
            else:
                child[min(i, len(child) - 1)] += "  # changed"
        if child == base:
            continue
        parent_code, child_code = "\n".join(base) + "\n", "\n".join(child) + "\n"
        answer = render_search_replace(parent_code, child_code)
        assert apply_response(parent_code, answer).child == child_code, answer


def test_render_refuses_equal_programs():
    with pytest.raises(ValueError):
        render_search_replace(PROGRAM, PROGRAM)


@pytest.mark.parametrize("language", ["python", "cuda", "lua"])
def test_format_help_shows_a_valid_example(language):
    text = render_diff_format_help(language)
    assert "EVOLVE-BLOCK-START" in text and "<<<<<<< SEARCH" in text
    example = text[text.index("Example:") :]
    [edit] = parse_search_replace(example)
    assert edit.search != edit.replace
    assert f"```{language}" in example
    assert comment_prefix(language) in "\n".join(edit.replace)


def test_format_help_full_mode():
    text = render_diff_format_help("cuda", mode="full")
    assert "// EVOLVE-BLOCK-START" in text and "SEARCH" not in text
