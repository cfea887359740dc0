"""Evolve blocks: finding them, their text, comment syntax (evolve.blocks)."""

from __future__ import annotations

import pytest

from evolve.blocks import Block, BlockError, comment_prefix, evolvable_text, extract_block_text, find_blocks

from .test_edits import PROGRAM, TWO_BLOCKS


def test_find_single_block_line_spans():
    lines = PROGRAM.split("\n")
    [block] = find_blocks(PROGRAM)
    assert "EVOLVE-BLOCK-START" in lines[block.start - 1]
    assert "EVOLVE-BLOCK-END" in lines[block.end]
    assert lines[block.start] == "STEP = 0.5"
    assert block.marked


@pytest.mark.parametrize("style", [("#", ""), ("//", ""), ("/*", " */"), ("--", ""), (";", ""), ("<!--", " -->")])
def test_markers_in_any_comment_style(style):
    open_, close = style
    code = f"a\n{open_} EVOLVE-BLOCK-START{close}\nb\nc\n{open_} EVOLVE-BLOCK-END{close}\nd\n"
    assert find_blocks(code) == [Block(2, 4)]


def test_several_blocks():
    blocks = find_blocks(TWO_BLOCKS)
    assert blocks == [Block(1, 2), Block(5, 6)]
    assert extract_block_text(TWO_BLOCKS) == "const int TILE = 16;\n\nfloat scale = 0.5f;"


def test_no_markers_means_whole_program_is_evolvable():
    code = "x = 1\ny = 2\n"
    assert find_blocks(code) == [Block(0, 3, marked=False)]
    assert extract_block_text(code) == code.strip("\n")


@pytest.mark.parametrize(
    ("code", "needle"),
    [
        ("# EVOLVE-BLOCK-START\n# EVOLVE-BLOCK-START\n# EVOLVE-BLOCK-END\n", "inside the block"),
        ("x\n# EVOLVE-BLOCK-END\n", "without a matching"),
        ("# EVOLVE-BLOCK-START\nx\n", "never closed"),
        ("# EVOLVE-BLOCK-END\n# EVOLVE-BLOCK-START\n", "without a matching"),
        ("# EVOLVE-BLOCK-START EVOLVE-BLOCK-END\n", "both markers"),
    ],
)
def test_broken_markers_are_errors(code, needle):
    with pytest.raises(BlockError, match=needle):
        find_blocks(code)


def test_evolvable_text_is_the_blocks_or_the_whole_broken_program():
    assert evolvable_text(TWO_BLOCKS) == extract_block_text(TWO_BLOCKS)
    broken = "x = 1\n# EVOLVE-BLOCK-START\ny = 2\n"
    assert evolvable_text(broken) == broken


def test_comment_prefix_by_language():
    assert comment_prefix("python") == "#"
    assert comment_prefix("CUDA") == "//"
    assert comment_prefix("lua") == "--"
    assert comment_prefix("scheme") == ";"
