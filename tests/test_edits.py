"""Answer parsing and application (evolve.edits)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from evolve.blocks import extract_block_text, find_blocks
from evolve.edits import (
    EditKind,
    EditRejected,
    EditRejection,
    SearchReplace,
    apply_response,
    parse_search_replace,
)

CASES = Path(__file__).parent / "edit_cases"
CIRCLE = Path(__file__).resolve().parents[1] / "problems" / "circle_packing" / "initial_program.py"

PROGRAM = '''import math

# EVOLVE-BLOCK-START
STEP = 0.5


def minimize(f, x):
    for _ in range(100):
        if f(x - STEP) < f(x):
            x -= STEP
        elif f(x + STEP) < f(x):
            x += STEP
    return x
# EVOLVE-BLOCK-END


def run():
    return minimize(lambda x: (x - 3) ** 2, 0.0)
'''

TWO_BLOCKS = '''// EVOLVE-BLOCK-START
const int TILE = 16;
// EVOLVE-BLOCK-END
int helper(int x) { return x + 1; }
/* EVOLVE-BLOCK-START */
float scale = 0.5f;
/* EVOLVE-BLOCK-END */
'''


def sr(search: str, replace: str, arrows: int = 7) -> str:
    return f"{'<' * arrows} SEARCH\n{search}\n{'=' * arrows}\n{replace}\n{'>' * arrows} REPLACE\n"


def rejected(result, reason: EditRejection) -> None:
    assert not result.ok, f"expected {reason.value}, got a child ({result.summary})"
    assert result.reason is reason, f"expected {reason.value}, got {result.reason}: {result.message}"
    assert result.message


# --- SEARCH/REPLACE: successes and tolerance ----------------------------------------------------------------


def test_exact_edit_applies():
    result = apply_response(PROGRAM, sr("STEP = 0.5", "STEP = 0.25"))
    assert result.ok and result.kind is EditKind.DIFF and result.blocks_applied == 1
    assert result.child == PROGRAM.replace("STEP = 0.5", "STEP = 0.25")
    assert "1 SEARCH/REPLACE block" in result.summary


@pytest.mark.parametrize("arrows", [5, 6, 8, 9])
def test_marker_lengths_and_trailing_spaces(arrows):
    answer = sr("STEP = 0.5", "STEP = 0.25", arrows).replace("SEARCH\n", "SEARCH   \n").replace("REPLACE\n", "REPLACE \t\n")
    assert apply_response(PROGRAM, answer).child == PROGRAM.replace("STEP = 0.5", "STEP = 0.25")


def test_four_or_ten_arrows_are_not_markers():
    answer = "<<<< SEARCH\nSTEP = 0.5\n====\nSTEP = 0.25\n>>>> REPLACE\n"
    rejected(apply_response(PROGRAM, answer), EditRejection.NO_EDIT_FOUND)
    assert parse_search_replace(sr("a", "b", 10)) == []


def test_fenced_answer_with_prose_and_several_blocks():
    answer = (
        "Smaller steps and more iterations.\n\n```python\n"
        + sr("STEP = 0.5", "STEP = 0.1")
        + "```\nAlso:\n```python\n"
        + sr("    for _ in range(100):", "    for _ in range(300):")
        + "```\n"
    )
    result = apply_response(PROGRAM, answer)
    assert result.blocks_applied == 2
    assert result.child == PROGRAM.replace("STEP = 0.5", "STEP = 0.1").replace("range(100)", "range(300)")


def test_blocks_apply_in_order_to_the_previous_result():
    answer = sr("STEP = 0.5", "STEP = 0.4") + sr("STEP = 0.4", "STEP = 0.3")
    assert apply_response(PROGRAM, answer).child == PROGRAM.replace("STEP = 0.5", "STEP = 0.3")


def test_trailing_whitespace_is_tolerated():
    answer = sr("            x -= STEP   \n        elif f(x + STEP) < f(x):\t", "            x -= 2 * STEP\n        elif f(x + STEP) < f(x):")
    result = apply_response(PROGRAM, answer)
    assert result.child == PROGRAM.replace("x -= STEP", "x -= 2 * STEP")
    assert "trailing whitespace" in result.summary


def test_dedented_search_matches_and_replacement_is_reindented():
    search = "if f(x - STEP) < f(x):\n    x -= STEP"
    replace = "if f(x - STEP) <= f(x):\n    x -= STEP\n\n    # comment kept at depth"
    result = apply_response(PROGRAM, sr(search, replace))
    assert result.ok, result.message
    assert "        if f(x - STEP) <= f(x):\n            x -= STEP\n\n            # comment kept at depth\n" in result.child
    assert "indentation" in result.summary


def test_overindented_search_matches_and_replacement_is_dedented():
    search = "        STEP = 0.5"
    result = apply_response(PROGRAM, sr(search, "        STEP = 0.75\n        EXTRA = 1"))
    assert result.child == PROGRAM.replace("STEP = 0.5\n", "STEP = 0.75\nEXTRA = 1\n")


def test_nonuniform_indentation_is_not_forced():
    search = "if f(x - STEP) < f(x):\n  x -= STEP"  # 0 -> 8 on one line, 2 -> 12 on the next
    rejected(apply_response(PROGRAM, sr(search, "pass")), EditRejection.SEARCH_NOT_FOUND)


def test_search_padded_with_blank_lines_is_retried_without_them():
    result = apply_response(PROGRAM, sr("\nSTEP = 0.5\n\n\n\n", "\nSTEP = 0.2\n"))
    assert result.child == PROGRAM.replace("STEP = 0.5", "STEP = 0.2")


def test_markers_may_anchor_an_edit_that_keeps_them():
    search = "# EVOLVE-BLOCK-START\nSTEP = 0.5"
    replace = "# EVOLVE-BLOCK-START\nimport functools\nSTEP = 0.5"
    assert apply_response(PROGRAM, sr(search, replace)).child == PROGRAM.replace(
        "STEP = 0.5", "import functools\nSTEP = 0.5")
    append = sr("    return x\n# EVOLVE-BLOCK-END", "    return x\n\n\nLIMIT = 3\n# EVOLVE-BLOCK-END")
    assert "\nLIMIT = 3\n# EVOLVE-BLOCK-END" in apply_response(PROGRAM, append).child


def test_crlf_parent_keeps_crlf():
    parent = PROGRAM.replace("\n", "\r\n")
    result = apply_response(parent, sr("STEP = 0.5", "STEP = 0.6"))
    assert result.child == parent.replace("STEP = 0.5", "STEP = 0.6")


def test_unmarked_program_accepts_edits_anywhere():
    code = "import math\n\nK = 3\n"
    assert apply_response(code, sr("import math", "import cmath")).child == "import cmath\n\nK = 3\n"


def test_edits_in_a_c_program_with_two_blocks():
    answer = sr("const int TILE = 16;", "const int TILE = 32;") + sr("float scale = 0.5f;", "float scale = 0.25f;")
    result = apply_response(TWO_BLOCKS, answer)
    assert result.child == TWO_BLOCKS.replace("16", "32").replace("0.5f", "0.25f")


def test_reasoning_model_answer_file():
    circle = CIRCLE.read_text()
    result = apply_response(circle, (CASES / "reasoning_answer.txt").read_text())
    assert result.ok, result.message
    assert result.blocks_applied == 2  # the SEARCH block inside <think> is ignored
    assert result.child == circle.replace("SHRINK = 0.9\n", "SHRINK = 0.97\n").replace("MARGIN = 0.02", "MARGIN = 0.0")


def test_sections_wrapped_in_fences_file():
    circle = CIRCLE.read_text()
    result = apply_response(circle, (CASES / "sections_fenced.txt").read_text())
    assert result.child == circle.replace("(r + 0.5)", "(r + 0.55)")


# --- rejection reasons ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("answer", ["", "   \n", "I think the step should be smaller.", "```\n```"])
def test_no_edit_found(answer):
    rejected(apply_response(PROGRAM, answer), EditRejection.NO_EDIT_FOUND)


def test_search_not_found():
    result = apply_response(PROGRAM, sr("STEP = 0.7", "STEP = 0.1"))
    rejected(result, EditRejection.SEARCH_NOT_FOUND)
    assert "STEP = 0.7" in result.message


def test_partial_lines_never_match():
    rejected(apply_response(PROGRAM, sr("< f(x):", "<= f(x):")), EditRejection.SEARCH_NOT_FOUND)


def test_search_ambiguous():
    twice = "if f(x - STEP) < f(x):\n    x -= STEP\n" * 2
    result = apply_response(f"# EVOLVE-BLOCK-START\n{twice}# EVOLVE-BLOCK-END\n", sr("if f(x - STEP) < f(x):", "if True:"))
    rejected(result, EditRejection.SEARCH_AMBIGUOUS)
    assert "lines 2, 4" in result.message


def test_search_ambiguous_after_whitespace_tolerance():
    code = "# EVOLVE-BLOCK-START\nA = 1  \nA = 1\t\n# EVOLVE-BLOCK-END\n"
    rejected(apply_response(code, sr("A = 1", "A = 2")), EditRejection.SEARCH_AMBIGUOUS)


def test_search_ambiguous_by_indentation_shift():
    code = "# EVOLVE-BLOCK-START\ndef f():\n    a = 1\ndef g():\n        a = 1\n# EVOLVE-BLOCK-END\n"
    rejected(apply_response(code, sr("  a = 1", "  a = 2")), EditRejection.SEARCH_AMBIGUOUS)


def test_match_outside_block():
    result = apply_response(PROGRAM, sr("def run():", "def run_fast():"))
    rejected(result, EditRejection.OUTSIDE_BLOCK)
    assert "outside" in result.message


def test_changed_line_outside_block_through_an_anchor():
    search = "import math\n\n# EVOLVE-BLOCK-START\nSTEP = 0.5"
    replace = "import os\n\n# EVOLVE-BLOCK-START\nSTEP = 0.5"
    rejected(apply_response(PROGRAM, sr(search, replace)), EditRejection.OUTSIDE_BLOCK)


def test_moving_a_marker_changes_outside_text():
    search = "    return x\n# EVOLVE-BLOCK-END\n\n\ndef run():"
    replace = "    return x\n\n\ndef run():\n# EVOLVE-BLOCK-END"
    rejected(apply_response(PROGRAM, sr(search, replace)), EditRejection.OUTSIDE_BLOCK)


@pytest.mark.parametrize(
    ("search", "replace"),
    [
        ("    return x\n# EVOLVE-BLOCK-END", "    return x"),  # marker deleted
        ("STEP = 0.5", "STEP = 0.5\n# EVOLVE-BLOCK-START"),  # duplicated (nested) START
        ("STEP = 0.5", "STEP = 0.5\n# EVOLVE-BLOCK-END\n# EVOLVE-BLOCK-START"),  # an extra block
        ("STEP = 0.5", "# EVOLVE-BLOCK-END\nSTEP = 0.5"),  # END before its own START's contents: reordered
    ],
)
def test_markers_broken(search, replace):
    rejected(apply_response(PROGRAM, sr(search, replace)), EditRejection.MARKERS_BROKEN)


def test_broken_parent_markers():
    rejected(apply_response("# EVOLVE-BLOCK-START\nx = 1\n", sr("x = 1", "x = 2")), EditRejection.MARKERS_BROKEN)


def test_markers_introduced_into_an_unmarked_program():
    code = "x = 1\n"
    rejected(apply_response(code, sr("x = 1", "# EVOLVE-BLOCK-START\nx = 2\n# EVOLVE-BLOCK-END")),
             EditRejection.MARKERS_BROKEN)


def test_unchanged():
    rejected(apply_response(PROGRAM, sr("STEP = 0.5", "STEP = 0.5")), EditRejection.UNCHANGED)
    block = extract_block_text(PROGRAM)
    rejected(apply_response(PROGRAM, f"```python\n{block}\n```"), EditRejection.UNCHANGED)


@pytest.mark.parametrize(
    "answer",
    [
        "<<<<<<< SEARCH\nSTEP = 0.5\n=======\nSTEP = 0.1\n",  # no REPLACE marker
        "<<<<<<< SEARCH\nSTEP = 0.5\n>>>>>>> REPLACE\n",  # no divider
        "STEP = 0.5\n=======\nSTEP = 0.1\n>>>>>>> REPLACE\n",  # no SEARCH marker
        "<<<<<<< SEARCH\n\n=======\nSTEP = 0.1\n>>>>>>> REPLACE\n",  # empty search
        "<<<<<<< SEARCH\nSTEP = 0.5\n=======\nSTEP = 0.1\n=======\n>>>>>>> REPLACE\n",  # two dividers
        "<<<<<<< SEARCH\nSTEP = 0.5\n<<<<<<< SEARCH\n",  # a new block inside an open one
        "The new block:\n```python\nSTEP = 0.1\ndef minimize(f, x):\n",  # unclosed fence
    ],
)
def test_malformed(answer):
    rejected(apply_response(PROGRAM, answer), EditRejection.MALFORMED)


def test_truncated_answer_file():
    rejected(apply_response(CIRCLE.read_text(), (CASES / "truncated_answer.txt").read_text()), EditRejection.MALFORMED)


def test_one_bad_block_rejects_the_whole_answer():
    answer = sr("STEP = 0.5", "STEP = 0.1") + sr("nothing like this", "x")
    result = apply_response(PROGRAM, answer)
    rejected(result, EditRejection.SEARCH_NOT_FOUND)
    assert result.message.startswith("block 2")


def test_error_words_the_rejection():
    assert apply_response(PROGRAM, "no idea").error.startswith("no_edit_found: ")
    assert apply_response(PROGRAM, sr("STEP = 0.5", "STEP = 1.5")).error == ""


def test_unwrap_raises_with_reason():
    with pytest.raises(EditRejected) as info:
        apply_response(PROGRAM, "no idea").unwrap()
    assert info.value.reason is EditRejection.NO_EDIT_FOUND
    assert apply_response(PROGRAM, sr("STEP = 0.5", "STEP = 1.5")).unwrap().count("STEP = 1.5") == 1


# --- full rewrites ----------------------------------------------------------------------------------------------


def test_bare_code_replaces_the_single_block():
    new_block = "STEP = 0.1\n\n\ndef minimize(f, x):\n    return 3.0"
    result = apply_response(PROGRAM, f"A closed form:\n```python\n{new_block}\n```\n")
    assert result.kind is EditKind.FULL
    assert result.child == "import math\n\n# EVOLVE-BLOCK-START\n" + new_block + "\n# EVOLVE-BLOCK-END\n" + \
        PROGRAM.split("# EVOLVE-BLOCK-END\n")[1]


def test_whole_program_without_markers_keeps_only_the_middle():
    whole = PROGRAM.replace("# EVOLVE-BLOCK-START\n", "").replace("# EVOLVE-BLOCK-END\n", "")
    result = apply_response(PROGRAM, "```python\n" + whole.replace("range(100)", "range(50)") + "```")
    assert result.child == PROGRAM.replace("range(100)", "range(50)")


def test_rewrite_with_markers_replaces_each_block_and_ignores_outside_text():
    answer = (
        "```cpp\n#include <evil>\n// EVOLVE-BLOCK-START\nconst int TILE = 64;\n// EVOLVE-BLOCK-END\n"
        "int helper(int x) { return 0; }\n/* EVOLVE-BLOCK-START */\nfloat scale = 1.0f;\n/* EVOLVE-BLOCK-END */\n```"
    )
    result = apply_response(TWO_BLOCKS, answer, mode="full")
    assert result.child == TWO_BLOCKS.replace("16", "64").replace("0.5f", "1.0f")
    assert result.kind is EditKind.FULL


def test_rewrite_with_wrong_block_count():
    answer = "```cpp\n// EVOLVE-BLOCK-START\nconst int TILE = 64;\n// EVOLVE-BLOCK-END\n```"
    rejected(apply_response(TWO_BLOCKS, answer, mode="full"), EditRejection.MARKERS_BROKEN)


def test_rewrite_with_broken_markers():
    answer = "```python\n# EVOLVE-BLOCK-START\nSTEP = 1\n```"
    rejected(apply_response(PROGRAM, answer, mode="full"), EditRejection.MARKERS_BROKEN)


def test_bare_rewrite_is_ambiguous_with_several_blocks():
    rejected(apply_response(TWO_BLOCKS, "```cpp\nconst int TILE = 8;\n```"), EditRejection.AMBIGUOUS_REWRITE)


def test_rewrite_is_reindented_to_the_block():
    code = "class K:\n    # EVOLVE-BLOCK-START\n    def f(self):\n        return 1\n    # EVOLVE-BLOCK-END\n"
    result = apply_response(code, "```python\ndef f(self):\n    return 2\n```")
    assert result.child == code.replace("return 1", "return 2")


def test_rewrite_of_an_unmarked_program():
    code = "def f():\n    return 1\n"
    assert apply_response(code, "```python\ndef f():\n    return 2\n```").child == "def f():\n    return 2\n"


def test_full_mode_accepts_unfenced_code_with_markers():
    answer = "Here it is.\n# EVOLVE-BLOCK-START\nSTEP = 0.05\n# EVOLVE-BLOCK-END\n"
    result = apply_response(PROGRAM, answer, mode="full")
    assert result.kind is EditKind.FULL
    assert "STEP = 0.05\n# EVOLVE-BLOCK-END" in result.child
    assert "def minimize" not in result.child  # the rewrite is the whole block


def test_full_mode_falls_back_to_search_replace():
    assert apply_response(PROGRAM, sr("STEP = 0.5", "STEP = 0.6"), mode="full").kind is EditKind.DIFF


def test_diff_mode_prefers_search_replace_over_fences():
    answer = "```python\nprint('example')\n```\n" + sr("STEP = 0.5", "STEP = 0.6")
    assert apply_response(PROGRAM, answer).kind is EditKind.DIFF


def test_largest_fence_is_the_rewrite():
    answer = "Use `x`:\n```python\nx\n```\nFull block:\n```python\nSTEP = 0.9\n\ndef minimize(f, x):\n    return x\n```"
    result = apply_response(PROGRAM, answer)
    assert "STEP = 0.9\n\ndef minimize(f, x):\n    return x\n# EVOLVE-BLOCK-END" in result.child


@pytest.mark.parametrize("language", ["diff", ""])
def test_unified_diff_is_not_taken_for_code(language):
    answer = f"```{language}\n--- a/p.py\n+++ b/p.py\n@@ -4 +4 @@\n-STEP = 0.5\n+STEP = 0.1\n```\n"
    result = apply_response(PROGRAM, answer)
    rejected(result, EditRejection.NO_EDIT_FOUND)
    assert "unified diff" in result.message


def test_text_fences_are_not_rewrites():
    rejected(apply_response(PROGRAM, "The output was:\n```text\n3.0000001\n```"), EditRejection.NO_EDIT_FOUND)


def test_copy_outside_the_block_does_not_make_a_search_ambiguous():
    code = "# EVOLVE-BLOCK-START\ndef f(x):\n    return x\n# EVOLVE-BLOCK-END\n\n\ndef g(x):\n    return x\n"
    result = apply_response(code, sr("    return x", "    return 2 * x"))
    assert result.child == code.replace("    return x\n# EVOLVE", "    return 2 * x\n# EVOLVE")


def test_random_answers_never_raise_and_never_touch_outside_text():
    """Answers stitched from markers, fences, prose and program lines: every outcome is a result, and every child
    keeps the parent's text outside the block and its markers."""
    circle = CIRCLE.read_text()
    lines = circle.split("\n")
    fragments = ["<<<<<<< SEARCH", "=======", ">>>>>>> REPLACE", "```python", "```", "<<<<< SEARCH", "Some prose.",
                 "# EVOLVE-BLOCK-START", "# EVOLVE-BLOCK-END", "", "SHRINK = 0.95", "    pass"]
    [block] = find_blocks(circle)
    head, tail = lines[: block.start], lines[block.end :]
    rng = np.random.default_rng(11)
    outcomes = set()
    for _ in range(1500):
        parts = [str(rng.choice(fragments)) if rng.random() < 0.4 else lines[int(rng.integers(len(lines)))]
                 for _ in range(int(rng.integers(1, 14)))]
        for mode in ("diff", "full"):
            result = apply_response(circle, "\n".join(parts), mode=mode)
            outcomes.add(result.reason)
            if result.ok:
                child = result.child.split("\n")
                [child_block] = find_blocks(result.child)
                assert child[: child_block.start] == head and child[child_block.end :] == tail
                assert result.child != circle
    assert {None, EditRejection.MALFORMED, EditRejection.NO_EDIT_FOUND, EditRejection.SEARCH_NOT_FOUND} <= outcomes


def test_random_well_formed_edits_keep_the_program_frame():
    """SEARCH windows cut anywhere in the program (whitespace-perturbed), replacements mutated at random."""
    circle = CIRCLE.read_text()
    lines = circle.split("\n")
    [block] = find_blocks(circle)
    head, tail = lines[: block.start], lines[block.end :]
    rng = np.random.default_rng(5)
    outcomes = Counter()
    for _ in range(1500):
        start = int(rng.integers(len(lines)))
        window = lines[start : start + int(rng.integers(1, 5))]
        search = list(window)
        if rng.random() < 0.3:
            search = [s + "  " for s in search]
        if rng.random() < 0.3:
            search = [s[4:] if s.startswith("    ") else s for s in search]
        replace = list(window)
        if replace and rng.random() < 0.8:
            k = int(rng.integers(len(replace)))
            replace[k] = replace[k].replace("0", "1", 1) if rng.random() < 0.5 else replace[k] + "  # note"
        result = apply_response(circle, sr("\n".join(search), "\n".join(replace)))
        outcomes[result.reason] += 1
        if result.ok:
            child = result.child.split("\n")
            [child_block] = find_blocks(result.child)
            assert child[: child_block.start] == head and child[child_block.end :] == tail
    assert outcomes[None] > 500
    for reason in (EditRejection.OUTSIDE_BLOCK, EditRejection.UNCHANGED, EditRejection.MALFORMED):
        assert outcomes[reason] > 0, outcomes


def test_parse_search_replace_raises_the_public_error():
    with pytest.raises(EditRejected) as info:
        parse_search_replace("<<<<<<< SEARCH\nx\n")
    assert info.value.reason is EditRejection.MALFORMED
    assert parse_search_replace(sr("a", "b") + sr("  c", "")) == [
        SearchReplace(("a",), ("b",)), SearchReplace(("  c",), ("",))]
