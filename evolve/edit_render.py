"""Producing answers and describing their format: the other side of ``evolve.edits``.

``render_search_replace`` writes the SEARCH/REPLACE answer that turns a parent into a given child (the offline
mutators and the literal crossover answer this way, so every child takes the one parsing path of
``evolve.edits.apply_response``); ``render_diff_format_help`` is the edit-format section of a system prompt.

Everything here is a pure function of its inputs: no I/O, no randomness.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

from evolve.blocks import END_MARKER, START_MARKER, comment_prefix, normalize_newlines
from evolve.edits import EditMode, EditRejected, SearchReplace, replace_in_lines


def _occurrences(lines: Sequence[str], window: Sequence[str]) -> int:
    n = len(window)
    return sum(1 for i in range(len(lines) - n + 1) if list(lines[i : i + n]) == list(window))


def render_search_replace(parent_code: str, child_code: str) -> str:
    """SEARCH/REPLACE blocks that turn ``parent_code`` into ``child_code`` under ``apply_response``.

    Each changed hunk is widened with unchanged neighbouring lines until its search text is unique and not blank;
    hunks that touch are merged. Raises ``ValueError`` if the two are equal.
    """
    old = normalize_newlines(parent_code).split("\n")
    new = normalize_newlines(child_code).split("\n")
    if old == new:
        raise ValueError("child equals parent: nothing to render")
    opcodes = difflib.SequenceMatcher(None, old, new, autojunk=False).get_opcodes()
    hunks = [[i1, i2, j1, j2] for tag, i1, i2, j1, j2 in opcodes if tag != "equal"]
    k = 0
    grow_after = True
    while k < len(hunks):
        a, b, ca, cb = hunks[k]
        window = old[a:b]
        if window and any(s.strip() for s in window) and _occurrences(old, window) == 1:
            k += 1
            continue
        prev_end = hunks[k - 1][1] if k > 0 else 0
        next_start = hunks[k + 1][0] if k + 1 < len(hunks) else len(old)
        can_after, can_before = b < next_start, a > prev_end
        if (grow_after and can_after) or (can_after and not can_before):
            hunks[k] = [a, b + 1, ca, cb + 1]
        elif can_before:
            hunks[k] = [a - 1, b, ca - 1, cb]
        elif k + 1 < len(hunks) and b == next_start:
            nxt = hunks.pop(k + 1)
            hunks[k] = [a, nxt[1], ca, nxt[3]]
        elif k > 0 and a == prev_end:
            prev = hunks.pop(k - 1)
            k -= 1
            hunks[k] = [prev[0], b, prev[2], cb]
        else:  # the whole program: unique by definition
            k += 1
        grow_after = not grow_after
    merged: list[list[int]] = []
    for h in hunks:
        if merged and h[0] <= merged[-1][1]:
            merged[-1] = [merged[-1][0], h[1], merged[-1][2], h[3]]
        else:
            merged.append(h)
    edits = [SearchReplace(tuple(old[a:b]), tuple(new[ca:cb])) for a, b, ca, cb in merged]
    if len(edits) > 1 and _simulate(old, edits) != new:
        # An earlier replacement recreated a later search text: one block spanning every change is safe.
        first, last = merged[0], merged[-1]
        edits = [SearchReplace(tuple(old[first[0] : last[1]]), tuple(new[first[2] : last[3]]))]
    parts = ["\n".join(["<<<<<<< SEARCH", *e.search, "=======", *e.replace, ">>>>>>> REPLACE"]) for e in edits]
    return "\n\n".join(parts) + "\n"


def _simulate(lines: Sequence[str], edits: Sequence[SearchReplace]) -> list[str] | None:
    try:
        return replace_in_lines(lines, edits)
    except EditRejected:
        return None


_EXAMPLES = {
    "python": ("python", ["    step = 0.5", "    for _ in range(100):"],
               ["    step = 0.25  # smaller steps converge more reliably", "    for _ in range(200):"]),
    "c": ("c", ["    const int TILE = 16;", "    float acc = 0.0f;"],
          ["    const int TILE = 32;  // wider tiles reuse each load more", "    float acc = 0.0f;"]),
}


def render_diff_format_help(language: str, mode: EditMode | str = EditMode.DIFF) -> str:
    """The edit-format instructions a system prompt shows for ``language`` in ``mode``."""
    mode = EditMode(mode)
    lang = language.strip().lower() or "python"
    fence = {"cu": "cuda", "c++": "cpp"}.get(lang, lang)
    comment = comment_prefix(lang)
    if mode is EditMode.FULL:
        return (
            "Answer with the complete new contents of the evolve block(s) in ONE fenced code block:\n\n"
            f"```{fence}\n{comment} {START_MARKER}\n<your new code for the block>\n{comment} {END_MARKER}\n```\n\n"
            "Rules:\n"
            f"- Keep the {START_MARKER} and {END_MARKER} marker lines, one pair per block, in the original order.\n"
            "- Code outside the markers is kept from the current program; do not rely on changing it.\n"
            "- Keep every function the evaluator calls, with the same name and signature.\n"
            "- Write the whole block: no placeholders such as '...' or 'rest unchanged'.\n"
        )
    _, search, replace = _EXAMPLES["c" if comment == "//" else "python"]
    if comment not in ("#", "//"):
        search = [s.replace("#", comment) for s in search]
        replace = [s.replace("#", comment) for s in replace]
    example = "\n".join([f"```{fence}", "<<<<<<< SEARCH", *search, "=======", *replace, ">>>>>>> REPLACE", "```"])
    return (
        "Answer with one or more SEARCH/REPLACE blocks that edit the current program. Each block has exactly this "
        "form:\n\n"
        "<<<<<<< SEARCH\n<lines copied exactly from the current program, with their indentation>\n=======\n"
        "<the lines that replace them>\n>>>>>>> REPLACE\n\n"
        "Rules:\n"
        "- The SEARCH part must be a run of whole lines that appears exactly once in the current program; add a "
        "neighbouring line or two if needed to make it unique.\n"
        f"- Change only lines between the {START_MARKER} and {END_MARKER} markers, and never edit, move or "
        "remove the marker lines themselves.\n"
        "- Blocks are applied in order, each to the result of the previous one; keep them small and do not "
        "let them overlap.\n"
        "- Keep every function the evaluator calls, with the same name and signature.\n"
        "- Explain your idea in a sentence or two before the blocks if you like; nothing else is needed.\n\n"
        f"Example:\n{example}\n"
    )
