"""Evolve blocks: the regions of a program that evolution may change.

Evolvable regions are the lines between ``EVOLVE-BLOCK-START`` and ``EVOLVE-BLOCK-END`` markers, written in any
comment style (``#``, ``//``, ``/* */``, ``--``, ``;``...); a marker is recognised by its token anywhere on a line.
A program may hold several blocks; nested or unbalanced markers are an error. **A program with no markers at all is
entirely evolvable**: small single-purpose programs need no ceremony, and any marker an edit then introduces counts
as breaking the program's structure.

Everything here is a pure function of its inputs: no I/O, no randomness.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

START_MARKER = "EVOLVE-BLOCK-START"
END_MARKER = "EVOLVE-BLOCK-END"


class BlockError(ValueError):
    """The EVOLVE-BLOCK markers of a program are nested, unbalanced or garbled."""


@dataclass(frozen=True)
class Block:
    """One evolvable region as line indices into ``code.split("\\n")``: contents are ``lines[start:end]``.

    For a marked block, ``start - 1`` is the START marker's line and ``end`` the END marker's line.
    """

    start: int
    end: int
    marked: bool = True


def normalize_newlines(text: str) -> str:
    """``text`` with Windows line endings made ``\\n`` (line indices of blocks refer to this form)."""
    return text.replace("\r\n", "\n")


def _marker_kind(line: str) -> str | None:
    has_start, has_end = START_MARKER in line, END_MARKER in line
    if has_start and has_end:
        raise BlockError(f"one line holds both markers: {line.strip()!r}")
    return "start" if has_start else "end" if has_end else None


def blocks_of_lines(lines: Sequence[str]) -> list[Block]:
    """``find_blocks`` for a program already split into lines."""
    blocks: list[Block] = []
    open_at: int | None = None
    for i, line in enumerate(lines):
        kind = _marker_kind(line)
        if kind == "start":
            if open_at is not None:
                raise BlockError(f"line {i + 1}: {START_MARKER} inside the block opened at line {open_at + 1}")
            open_at = i
        elif kind == "end":
            if open_at is None:
                raise BlockError(f"line {i + 1}: {END_MARKER} without a matching {START_MARKER}")
            blocks.append(Block(open_at + 1, i))
            open_at = None
    if open_at is not None:
        raise BlockError(f"line {open_at + 1}: {START_MARKER} is never closed")
    if not blocks:
        return [Block(0, len(lines), marked=False)]
    return blocks


def find_blocks(code: str) -> list[Block]:
    """The evolve blocks of ``code`` in order; the whole program (one unmarked block) when it has no markers.

    Raises ``BlockError`` on nested, unbalanced or unterminated markers.
    """
    return blocks_of_lines(normalize_newlines(code).split("\n"))


def extract_block_text(code: str) -> str:
    """The evolve blocks' contents, concatenated (blank line between blocks): what a prompt shows as evolvable."""
    lines = normalize_newlines(code).split("\n")
    parts = ["\n".join(lines[b.start : b.end]) for b in blocks_of_lines(lines)]
    return "\n\n".join(part.strip("\n") for part in parts)


def evolvable_text(code: str) -> str:
    """``extract_block_text``, or the whole ``code`` when its markers are broken: what a prompt, a similarity
    measure or a judge looks at, for any program (a broken one included)."""
    try:
        return extract_block_text(code)
    except BlockError:
        return code


def comment_prefix(language: str) -> str:
    """The line-comment syntax of a language name (``python``, ``c``, ``cuda``, ``lua``...); ``#`` if unknown."""
    lang = language.strip().lower()
    if lang in _SLASH_LANGUAGES:
        return "//"
    if lang in ("lua", "sql", "haskell", "ada", "elm"):
        return "--"
    if lang in ("lisp", "scheme", "clojure", "racket", "asm", "nasm"):
        return ";"
    return "#"


_SLASH_LANGUAGES = frozenset(
    {"c", "c++", "cpp", "cuda", "cu", "h", "hpp", "java", "javascript", "js", "typescript", "ts", "rust", "go",
     "swift", "kotlin", "scala", "csharp", "c#", "opencl", "glsl", "hlsl", "metal", "triton-c", "zig", "dart"}
)
