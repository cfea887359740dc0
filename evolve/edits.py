"""Turning a mutator's answer (LLM-style text) into a child program, or a precise reason why not.

The child may change only the evolve blocks of its parent (``evolve.blocks``: a program without markers is entirely
evolvable). Producing answers and describing their format for a prompt is ``evolve.edit_render``.

Answers come in two forms, parsed with the tolerance real models need:

* SEARCH/REPLACE blocks (5 to 9 ``<``/``=``/``>``, trailing spaces allowed, inside or outside ``` fences, several per
  answer, applied in order). Matching is on whole lines: exact first, then ignoring trailing whitespace, then with
  the search text's indentation shifted uniformly (the replacement is re-indented by the same shift); a search
  padded with blank lines is retried without them. Only matches reaching into an evolve block (or its marker lines)
  count, so a line repeated in the fixed code around the block is not ambiguous. Lines outside the blocks (markers
  included) may be quoted as anchors but must come out unchanged; the child keeps the parent's outside text byte for
  byte. Partial-line search text never matches (it would edit ``x = 10`` when asked for ``x = 1``).
* A full rewrite: a fenced code block with no SEARCH markers. If it holds markers, each block's contents replace the
  parent's block contents (text outside its markers is ignored); if it is bare code, it replaces the single evolve
  block (ambiguous, hence rejected, when the parent has several blocks). A bare program that repeats the parent's
  fixed text around the block keeps only its middle. Fences marked ``diff``/``text`` and unified diffs are not code.

Everything here is a pure function of its inputs: no I/O, no randomness.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from evolve.blocks import START_MARKER, Block, BlockError, blocks_of_lines, normalize_newlines

_SEARCH_RE = re.compile(r"^\s*<{5,9}\s*SEARCH\s*$")
_DIVIDER_RE = re.compile(r"^\s*={5,9}\s*$")
_REPLACE_RE = re.compile(r"^\s*>{5,9}\s*REPLACE\s*$")
_FENCE_RE = re.compile(r"^\s*(```+|~~~+)\s*([\w+#.-]*)\s*$")
_THINK_RE = re.compile(r"<(think|thinking|reasoning)>.*?</\1>", re.DOTALL | re.IGNORECASE)


class EditMode(StrEnum):
    DIFF = "diff"
    FULL = "full"


class EditKind(StrEnum):
    """How a successful answer was applied."""

    DIFF = "diff"
    FULL = "full"


class EditRejection(StrEnum):
    """Why an answer could not become a child. Stored as its value next to the ``invalid_edit`` status."""

    NO_EDIT_FOUND = "no_edit_found"  # empty or prose-only answer
    SEARCH_NOT_FOUND = "search_not_found"
    SEARCH_AMBIGUOUS = "search_ambiguous"  # the search text matches more than once
    OUTSIDE_BLOCK = "outside_block"  # a match, or a changed line, outside the evolve blocks
    MARKERS_BROKEN = "markers_broken"  # the child's markers are missing, duplicated or reordered
    AMBIGUOUS_REWRITE = "ambiguous_rewrite"  # bare code for a parent with several blocks: no place to put it
    UNCHANGED = "unchanged"  # child == parent
    MALFORMED = "malformed"  # unterminated SEARCH block, unclosed fence (a truncated answer)...


class EditRejected(Exception):
    """Raised by ``EditResult.unwrap`` on a rejected answer."""

    def __init__(self, reason: EditRejection, message: str):
        super().__init__(f"{reason.value}: {message}")
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class EditResult:
    """Success: ``child`` and a short ``summary``. Failure: ``reason`` and ``message`` (``child`` is None)."""

    child: str | None
    summary: str = ""
    kind: EditKind | None = None
    blocks_applied: int = 0
    reason: EditRejection | None = None
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.child is not None

    @property
    def code(self) -> str | None:
        """Alias of ``child`` (the loop reads ``.code``)."""
        return self.child

    @property
    def error(self) -> str:
        """Why there is no child, as the archive's ``edit_error`` words it (``"reason: message"``); "" on success."""
        if self.child is not None:
            return ""
        return f"{self.reason.value if self.reason else 'rejected'}: {self.message}"

    def unwrap(self) -> str:
        if self.child is None:
            assert self.reason is not None
            raise EditRejected(self.reason, self.message)
        return self.child


@dataclass(frozen=True)
class SearchReplace:
    """One parsed SEARCH/REPLACE block (lines without newlines)."""

    search: tuple[str, ...]
    replace: tuple[str, ...]


@dataclass(frozen=True)
class _Fence:
    lines: tuple[str, ...]
    language: str


# ---------------------------------------------------------------------------------------------------------------
# Parsing answers


def _strip_fence_wrapping(lines: list[str]) -> list[str]:
    """Some models wrap a SEARCH or REPLACE section itself in a fence; drop that wrapping."""
    if len(lines) >= 2 and _FENCE_RE.match(lines[0]) and lines[-1].strip() in ("```", "~~~"):
        return lines[1:-1]
    return lines


def parse_search_replace(response: str) -> list[SearchReplace]:
    """All SEARCH/REPLACE blocks of an answer, in order. Raises ``EditRejected`` (``MALFORMED``) on a broken one."""
    blocks: list[SearchReplace] = []
    state = "outside"
    search: list[str] = []
    replace: list[str] = []
    for number, line in enumerate(normalize_newlines(response).split("\n"), start=1):
        if state == "outside":
            if _SEARCH_RE.match(line):
                state, search, replace = "search", [], []
            elif _REPLACE_RE.match(line):
                raise EditRejected(EditRejection.MALFORMED, f"answer line {number}: REPLACE marker without SEARCH")
        elif state == "search":
            if _DIVIDER_RE.match(line):
                state = "replace"
            elif _SEARCH_RE.match(line) or _REPLACE_RE.match(line):
                raise EditRejected(EditRejection.MALFORMED,
                              f"answer line {number}: SEARCH section not closed by a ======= divider")
            else:
                search.append(line)
        else:  # replace
            if _REPLACE_RE.match(line):
                search_lines = _strip_fence_wrapping(search)
                if not any(s.strip() for s in search_lines):
                    raise EditRejected(EditRejection.MALFORMED,
                                  f"answer line {number}: SEARCH/REPLACE block {len(blocks) + 1} has an empty "
                                  "SEARCH section")
                blocks.append(SearchReplace(tuple(search_lines), tuple(_strip_fence_wrapping(replace))))
                state = "outside"
            elif _SEARCH_RE.match(line) or _DIVIDER_RE.match(line):
                raise EditRejected(EditRejection.MALFORMED,
                              f"answer line {number}: REPLACE section not closed by >>>>>>> REPLACE")
            else:
                replace.append(line)
    if state != "outside":
        raise EditRejected(EditRejection.MALFORMED,
                      f"SEARCH/REPLACE block {len(blocks) + 1} is unterminated (answer truncated?)")
    return blocks


def _has_search_markers(text: str) -> bool:
    return any(_SEARCH_RE.match(line) for line in text.split("\n"))


def _parse_fences(response: str) -> tuple[list[_Fence], bool]:
    """Fenced code blocks of an answer, and whether a fence was left open (a truncated answer)."""
    fences: list[_Fence] = []
    opener: str | None = None
    language = ""
    body: list[str] = []
    for line in normalize_newlines(response).split("\n"):
        match = _FENCE_RE.match(line)
        if opener is None:
            if match:
                opener, language, body = match.group(1), match.group(2), []
        elif match and not match.group(2) and match.group(1).startswith(opener[0]) and len(match.group(1)) >= len(
            opener
        ):
            fences.append(_Fence(tuple(body), language))
            opener = None
        else:
            body.append(line)
    return fences, opener is not None


# ---------------------------------------------------------------------------------------------------------------
# Matching


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def _indent_shift(search: Sequence[str], window: Sequence[str]) -> tuple[str, str] | None:
    """(remove, add) prefixes that turn every search line's indentation into the window's, if one pair does."""
    shift: tuple[str, str] | None = None
    for s, w in zip(search, window, strict=True):
        if not s.strip():
            if w.strip():
                return None
            continue
        if s.strip() != w.strip():
            return None
        si, wi = _indent(s), _indent(w)
        if wi.endswith(si):
            candidate = ("", wi[: len(wi) - len(si)])
        elif si.endswith(wi):
            candidate = (si[: len(si) - len(wi)], "")
        else:
            return None
        if shift is not None and candidate != shift:
            return None
        shift = candidate
    return shift or ("", "")


def _reindent(lines: Sequence[str], remove: str, add: str) -> list[str]:
    out = []
    for line in lines:
        if not line.strip():
            out.append(line)
            continue
        if remove and line.startswith(remove):
            line = line[len(remove) :]
        elif remove:
            line = line.lstrip(" \t") if len(_indent(line)) <= len(remove) else line[len(remove) :]
        out.append(add + line)
    return out


_MATCH_LEVELS = ("exact", "trailing whitespace", "indentation")


def _find_matches(code: Sequence[str], search: Sequence[str], level: str) -> list[tuple[int, tuple[str, str]]]:
    n = len(search)
    found = []
    stripped = [s.rstrip() for s in search]
    for i in range(len(code) - n + 1):
        window = code[i : i + n]
        if level == "exact":
            if list(window) == list(search):
                found.append((i, ("", "")))
        elif level == "trailing whitespace":
            if [w.rstrip() for w in window] == stripped:
                found.append((i, ("", "")))
        else:
            shift = _indent_shift(stripped, [w.rstrip() for w in window])
            if shift is not None and shift != ("", ""):
                found.append((i, shift))
    return found


def _trim_blank_edges(edit: SearchReplace) -> SearchReplace | None:
    search, replace = list(edit.search), list(edit.replace)
    changed = False
    while search and not search[0].strip():
        search.pop(0)
        if replace and not replace[0].strip():
            replace.pop(0)
        changed = True
    while search and not search[-1].strip():
        search.pop()
        if replace and not replace[-1].strip():
            replace.pop()
        changed = True
    return SearchReplace(tuple(search), tuple(replace)) if changed and search else None


def _locate(code: Sequence[str], edit: SearchReplace, number: int,
            blocks: Sequence[Block] | None = None) -> tuple[int, int, list[str], str]:
    """(first line, line count, replacement lines, match level) of one block in the current code.

    With ``blocks``, only matches reaching into an evolve block count: a line quoted from the block that also
    appears in the fixed code around it is not ambiguous, since only one of its copies may be edited.
    """
    attempts = [edit]
    trimmed = _trim_blank_edges(edit)
    if trimmed is not None:
        attempts.append(trimmed)
    outside: list[int] = []
    for attempt in attempts:
        for level in _MATCH_LEVELS:
            found = _find_matches(code, attempt.search, level)
            matches = [m for m in found if blocks is None or _touches_blocks(blocks, m[0], len(attempt.search))]
            outside.extend(m[0] for m in found if m not in matches)
            if len(matches) > 1:
                lines = ", ".join(str(i + 1) for i, _ in matches[:6])
                raise EditRejected(EditRejection.SEARCH_AMBIGUOUS,
                              f"block {number}: SEARCH text matches {len(matches)} places (lines {lines}); "
                              "include more surrounding lines")
            if matches:
                start, (remove, add) = matches[0]
                replacement = _reindent(attempt.replace, remove, add) if (remove or add) else list(attempt.replace)
                return start, len(attempt.search), replacement, level
    if outside:
        raise EditRejected(EditRejection.OUTSIDE_BLOCK,
                      f"block {number}: SEARCH text matches only outside the evolve blocks (line {outside[0] + 1})")
    first = next((s.strip() for s in edit.search if s.strip()), "")
    raise EditRejected(EditRejection.SEARCH_NOT_FOUND,
                  f"block {number}: SEARCH text not found in the program (first line: {first[:80]!r})")


def _current_blocks(lines: Sequence[str], context: str) -> list[Block]:
    try:
        return blocks_of_lines(lines)
    except BlockError as exc:
        raise EditRejected(EditRejection.MARKERS_BROKEN, f"{context}: {exc}") from None


def _touches_blocks(blocks: Sequence[Block], start: int, count: int) -> bool:
    """A match may quote marker lines as anchors, but it must reach into a block or its markers."""
    stop = start + count
    for b in blocks:
        lo, hi = (b.start - 1, b.end + 1) if b.marked else (b.start, b.end)
        if start < hi and stop > lo:
            return True
    return False


# ---------------------------------------------------------------------------------------------------------------
# Assembling and checking the child


def _skeleton(lines: Sequence[str], blocks: Sequence[Block]) -> list[list[str]]:
    """Outside segments: before the first block's contents, between blocks (markers included), after the last."""
    segments, cursor = [], 0
    for b in blocks:
        segments.append(list(lines[cursor : b.start]))
        cursor = b.end
    segments.append(list(lines[cursor:]))
    return segments


def _assemble(skeleton: Sequence[Sequence[str]], contents: Sequence[Sequence[str]]) -> list[str]:
    out: list[str] = list(skeleton[0])
    for body, after in zip(contents, skeleton[1:], strict=True):
        out.extend(body)
        out.extend(after)
    return out


def _rebuild_child(parent_lines: list[str], parent_blocks: list[Block], child_lines: list[str]) -> list[str]:
    """Check the child's markers and outside text against the parent; keep the parent's outside text verbatim."""
    child_blocks = _current_blocks(child_lines, "child program")
    parent_marked = parent_blocks[0].marked
    child_marked = child_blocks[0].marked
    if parent_marked != child_marked or len(child_blocks) != len(parent_blocks):
        raise EditRejected(EditRejection.MARKERS_BROKEN, f"the parent has {_marked_count(parent_blocks)} evolve blocks "
                      f"but the child has {_marked_count(child_blocks)}")
    parent_outside = _skeleton(parent_lines, parent_blocks)
    child_outside = _skeleton(child_lines, child_blocks)
    for k, (p_seg, c_seg) in enumerate(zip(parent_outside, child_outside, strict=True)):
        if [s.rstrip() for s in p_seg] != [s.rstrip() for s in c_seg]:
            where = "before the first block" if k == 0 else (
                "after the last block" if k == len(parent_outside) - 1 else f"between blocks {k} and {k + 1}")
            changed = _first_difference(p_seg, c_seg)
            raise EditRejected(EditRejection.OUTSIDE_BLOCK, f"the edit changes lines {where}: {changed}")
    contents = [child_lines[b.start : b.end] for b in child_blocks]
    return _assemble(parent_outside, contents)


def _marked_count(blocks: Sequence[Block]) -> int:
    return len(blocks) if blocks[0].marked else 0


def _first_difference(old: Sequence[str], new: Sequence[str]) -> str:
    for a, b in zip(old, new, strict=False):
        if a.rstrip() != b.rstrip():
            return f"{a.strip()[:60]!r} became {b.strip()[:60]!r}"
    if len(old) > len(new):
        return f"{old[len(new)].strip()[:60]!r} was removed"
    return f"{new[len(old)].strip()[:60]!r} was added"


def _apply_diff(parent_lines: list[str], parent_blocks: list[Block], edits: Sequence[SearchReplace]) -> EditResult:
    lines = list(parent_lines)
    levels = []
    for number, edit in enumerate(edits, start=1):
        blocks = _current_blocks(lines, f"after block {number - 1}")
        start, count, replacement, level = _locate(lines, edit, number, blocks)
        lines[start : start + count] = replacement
        levels.append(level)
    child = _rebuild_child(parent_lines, parent_blocks, lines)
    tolerated = sorted({lv for lv in levels if lv != "exact"})
    note = f" (tolerated {', '.join(tolerated)})" if tolerated else ""
    plural = "s" if len(edits) != 1 else ""
    return EditResult(child="\n".join(child), summary=f"applied {len(edits)} SEARCH/REPLACE block{plural}{note}",
                      kind=EditKind.DIFF, blocks_applied=len(edits))


def replace_in_lines(lines: Sequence[str], edits: Sequence[SearchReplace]) -> list[str]:
    """``lines`` with ``edits`` applied in order, each matched as ``apply_response`` matches it but anywhere (no
    evolve-block rule, no check of the result). Raises ``EditRejected`` when one matches nowhere or several times."""
    out = list(lines)
    for number, edit in enumerate(edits, start=1):
        start, count, replacement, _ = _locate(out, edit, number)
        out[start : start + count] = replacement
    return out


def _common_indent(lines: Sequence[str]) -> str:
    indents = [_indent(line) for line in lines if line.strip()]
    if not indents:
        return ""
    prefix = indents[0]
    for ind in indents[1:]:
        while not ind.startswith(prefix):
            prefix = prefix[:-1]
    return prefix


def _fit_indent(new: Sequence[str], old: Sequence[str]) -> list[str]:
    want, have = _common_indent(old), _common_indent(new)
    return list(new) if want == have else _reindent(new, have, want)


def _strip_blank_edges(lines: Sequence[str]) -> list[str]:
    out = list(lines)
    while out and not out[0].strip():
        out.pop(0)
    while out and not out[-1].strip():
        out.pop()
    return out


def _frame_length(code: Sequence[str], frame: Sequence[str]) -> int | None:
    """How many leading lines of ``code`` repeat ``frame``'s non-blank lines (blank lines and indentation aside)."""
    i = 0
    for want in (f.strip() for f in frame if f.strip()):
        while i < len(code) and not code[i].strip():
            i += 1
        if i >= len(code) or code[i].strip() != want:
            return None
        i += 1
    return i


def _without_parent_frame(code: list[str], before: list[str], after: list[str]) -> list[str]:
    """Bare code that repeats the parent's text around the block (a whole program minus markers): keep the middle."""
    head = _frame_length(code, before) if any(s.strip() for s in before) else None
    tail = _frame_length(code[::-1], after[::-1]) if any(s.strip() for s in after) else None
    start = head or 0
    stop = len(code) - (tail or 0)
    return code[start:stop] if start < stop else code


def _apply_full(parent_lines: list[str], parent_blocks: list[Block], code: list[str]) -> EditResult:
    try:
        new_blocks = blocks_of_lines(code)
    except BlockError as exc:
        raise EditRejected(EditRejection.MARKERS_BROKEN, f"rewritten code: {exc}") from None
    parent_marked = parent_blocks[0].marked
    if new_blocks[0].marked and parent_marked:
        if len(new_blocks) != len(parent_blocks):
            raise EditRejected(EditRejection.MARKERS_BROKEN,
                          f"the rewrite has {len(new_blocks)} evolve blocks, the program has {len(parent_blocks)}")
        contents = [_fit_indent(_strip_blank_edges(code[nb.start : nb.end]), parent_lines[pb.start : pb.end])
                    for nb, pb in zip(new_blocks, parent_blocks, strict=True)]
        child = _assemble(_skeleton(parent_lines, parent_blocks), contents)
        summary = f"full rewrite of {len(contents)} evolve block{'s' if len(contents) != 1 else ''}"
    elif not parent_marked:
        # The whole program is evolvable: the answer is the new program (markers in it break its structure).
        body = _strip_blank_edges(code)
        child = _rebuild_child(parent_lines, parent_blocks, body + [""] if parent_lines[-1] == "" else body)
        summary = "full rewrite of the program"
    elif len(parent_blocks) > 1:
        raise EditRejected(EditRejection.AMBIGUOUS_REWRITE,
                      f"the program has {len(parent_blocks)} evolve blocks and the rewrite has no markers to say "
                      "which is which")
    else:
        block = parent_blocks[0]
        body = _without_parent_frame(code, parent_lines[: block.start - 1], parent_lines[block.end + 1 :])
        body = _fit_indent(_strip_blank_edges(body), parent_lines[block.start : block.end])
        child = _assemble(_skeleton(parent_lines, parent_blocks), [body])
        summary = "full rewrite of the evolve block"
    return EditResult(child="\n".join(child), summary=summary, kind=EditKind.FULL, blocks_applied=1)


_NOT_CODE = frozenset({"diff", "patch", "udiff", "text", "txt", "plaintext", "markdown", "md", "console", "output",
                       "log"})


def _looks_like_unified_diff(fence: _Fence) -> bool:
    if fence.language.lower() in ("diff", "patch", "udiff"):
        return True
    return any(line.startswith("@@ ") for line in fence.lines) and any(
        line.startswith(("--- ", "+++ ")) for line in fence.lines)


def _is_code(fence: _Fence) -> bool:
    """A fence that can be a rewrite: has code, no SEARCH markers, is not a patch, a log or prose."""
    if not any(line.strip() for line in fence.lines) or fence.language.lower() in _NOT_CODE:
        return False
    return not _has_search_markers("\n".join(fence.lines)) and not _looks_like_unified_diff(fence)


def _pick_fence(fences: Sequence[_Fence], parent_marked: bool) -> _Fence:
    if parent_marked:
        marked = [f for f in fences if any(START_MARKER in line for line in f.lines)]
        if marked:
            return max(marked, key=lambda f: len(f.lines))
    return max(fences, key=lambda f: sum(len(line) for line in f.lines))


def apply_response(parent_code: str, response: str, mode: EditMode | str = EditMode.DIFF) -> EditResult:
    """Turn an answer into a child of ``parent_code``; never raises on a bad answer (see ``EditResult``).

    ``mode`` says what the mutator was asked for: ``diff`` tries SEARCH/REPLACE blocks first and falls back to a
    fenced full rewrite; ``full`` prefers a fenced rewrite (or unfenced code that carries the markers) and falls back
    to SEARCH/REPLACE blocks. Windows line endings in the parent are kept.
    """
    mode = EditMode(mode)
    crlf = "\r\n" in parent_code
    parent_lines = normalize_newlines(parent_code).split("\n")
    text = _THINK_RE.sub("", normalize_newlines(response))
    try:
        try:
            parent_blocks = blocks_of_lines(parent_lines)
        except BlockError as exc:
            raise EditRejected(EditRejection.MARKERS_BROKEN, f"parent program: {exc}") from None
        result = _dispatch(parent_lines, parent_blocks, text, mode)
    except EditRejected as rej:
        return EditResult(child=None, reason=rej.reason, message=rej.message)
    assert result.child is not None
    child = result.child.replace("\n", "\r\n") if crlf else result.child
    if child == parent_code:
        return EditResult(child=None, reason=EditRejection.UNCHANGED, message="the edit leaves the program unchanged")
    return EditResult(child=child, summary=result.summary, kind=result.kind, blocks_applied=result.blocks_applied)


def _dispatch(parent_lines: list[str], parent_blocks: list[Block], text: str, mode: EditMode) -> EditResult:
    fences, open_fence = _parse_fences(text)
    rewrites = [f for f in fences if _is_code(f)]
    patches = [f for f in fences if f.lines and _looks_like_unified_diff(f)]
    if mode is EditMode.FULL:
        if rewrites:
            return _apply_full(parent_lines, parent_blocks, list(_pick_fence(rewrites, parent_blocks[0].marked).lines))
        if not fences and not open_fence and START_MARKER in text and not _has_search_markers(text):
            return _apply_full(parent_lines, parent_blocks, text.split("\n"))
    if _has_search_markers(text) or any(_REPLACE_RE.match(line) for line in text.split("\n")):
        edits = parse_search_replace(text)
        return _apply_diff(parent_lines, parent_blocks, edits)
    if rewrites:
        return _apply_full(parent_lines, parent_blocks, list(_pick_fence(rewrites, parent_blocks[0].marked).lines))
    if patches:
        raise EditRejected(EditRejection.NO_EDIT_FOUND,
                      "unified diffs are not a supported edit format: use SEARCH/REPLACE blocks")
    if open_fence:
        raise EditRejected(EditRejection.MALFORMED, "a code fence is never closed (answer truncated?)")
    if not text.strip():
        raise EditRejected(EditRejection.NO_EDIT_FOUND, "the answer is empty")
    raise EditRejected(EditRejection.NO_EDIT_FOUND, "the answer holds no SEARCH/REPLACE block and no fenced code")
