"""Numeric literals inside a program's evolve blocks, and the role each plays (what ``tune`` may change, and how).

Literals are found with ``tokenize`` for Python (so digits in names, strings and comments are never touched) and a
small scanner that skips identifiers, strings and comments for C-like and other languages. A unary minus in front of
a literal (``B = -2.0``, ``a[:-1]``, ``return -1``) belongs to it. ``literal_sites`` adds what a mutator needs to
treat a literal with care: a key that survives changes of the numbers themselves (the line with every number masked),
whether the literal is a named constant, a divisor, or one of a list of integers (row counts whose sum matters).
"""

from __future__ import annotations

import io
import math
import re
import tokenize
from dataclasses import dataclass

import numpy as np

from evolve.blocks import comment_prefix, find_blocks

_DECIMAL_RE = re.compile(r"(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)(?:[eE][+-]?\d[\d_]*)?")
_SUFFIX_RE = re.compile(r"[A-Za-z_]\w*")
_C_SUFFIXES = frozenset({"f", "F", "l", "L", "u", "U", "ul", "UL", "uL", "Ul", "ull", "ULL", "lu", "LU", "ll", "LL"})


@dataclass(frozen=True)
class Literal:
    """One numeric literal: ``text`` starts at column ``col`` of line ``line`` (0-based, ``code.split("\\n")``)."""

    line: int
    col: int
    text: str
    value: float
    is_float: bool
    suffix: str = ""


def _parse_number(body: str, suffix: str) -> Literal | None:
    if body[:2].lower() in ("0x", "0b", "0o"):
        return None
    if suffix and suffix not in _C_SUFFIXES:
        return None
    is_float = any(c in body for c in ".eE") or suffix in ("f", "F")
    try:
        value = float(body) if is_float else float(int(body.replace("_", "")))
    except ValueError:
        return None
    if not math.isfinite(value):
        return None
    return Literal(0, 0, body + suffix, value, is_float, suffix)


def _python_literals(code: str) -> list[Literal] | None:
    found = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(code).readline):
            if tok.type != tokenize.NUMBER or tok.string[-1] in "jJ":
                continue
            lit = _parse_number(tok.string, "")
            if lit is not None:
                found.append(Literal(tok.start[0] - 1, tok.start[1], lit.text, lit.value, lit.is_float))
    except (tokenize.TokenError, SyntaxError):
        return None
    return found


def _scan_literals(code: str, language: str) -> list[Literal]:
    """Numbers in code text, skipping identifiers, strings, character literals and comments."""
    comment = comment_prefix(language)
    python_like = comment == "#"
    block_comments = comment == "//"
    found: list[Literal] = []
    lines = code.split("\n")
    starts = np.cumsum([0] + [len(line) + 1 for line in lines]).tolist()
    i, n = 0, len(code)
    while i < n:
        c = code[i]
        if code.startswith(comment, i) or (block_comments and code.startswith("#include", i)):
            end = code.find("\n", i)
            i = n if end < 0 else end
        elif block_comments and code.startswith("/*", i):
            end = code.find("*/", i + 2)
            i = n if end < 0 else end + 2
        elif c in "\"'":
            quote = code[i : i + 3] if python_like and code[i : i + 3] in ('"""', "'''") else c
            j = i + len(quote)
            while j < n and not code.startswith(quote, j):
                j += 2 if code[j] == "\\" else 1
            i = j + len(quote)
        elif c.isalpha() or c == "_":
            j = i + 1
            while j < n and (code[j].isalnum() or code[j] == "_"):
                j += 1
            i = j
        elif c.isdigit() or (c == "." and i + 1 < n and code[i + 1].isdigit()):
            match = _DECIMAL_RE.match(code, i)
            assert match is not None
            body = match.group(0)
            j = match.end()
            suffix_match = _SUFFIX_RE.match(code, j)
            suffix = suffix_match.group(0) if suffix_match else ""
            end = j + len(suffix)
            lit = None if body.startswith("0") and suffix[:1].lower() in ("x", "b", "o") else _parse_number(body, suffix)
            if lit is not None:
                line = int(np.searchsorted(starts, i, side="right")) - 1
                found.append(Literal(line, i - starts[line], lit.text, lit.value, lit.is_float, lit.suffix))
            i = end
        else:
            i += 1
    return found


_UNARY_AFTER = frozenset("=([{,:;?!&|^~<>*/%+-")
_UNARY_KEYWORDS = frozenset({"return", "case", "else", "yield", "in", "and", "or", "not", "if", "elif", "while",
                             "lambda", "assert", "await"})


def _with_sign(lines: list[str], lit: Literal) -> Literal:
    """Extend a literal over a unary minus written in front of it on the same line."""
    line = lines[lit.line]
    i = lit.col - 1
    while i >= 0 and line[i] in " \t":
        i -= 1
    if i < 0 or line[i] != "-" or lit.suffix[:1] in ("u", "U"):
        return lit
    minus = i
    i -= 1
    while i >= 0 and line[i] in " \t":
        i -= 1
    if i < 0:
        return lit  # a line starting with '-' may continue an expression: binary, keep it unsigned
    if line[i] in _UNARY_AFTER:
        unary = True
    elif line[i].isalnum() or line[i] == "_":
        j = i
        while j >= 0 and (line[j].isalnum() or line[j] == "_"):
            j -= 1
        unary = line[j + 1 : i + 1] in _UNARY_KEYWORDS
    else:
        unary = False
    if not unary:
        return lit
    return Literal(lit.line, minus, line[minus : lit.col + len(lit.text)], -lit.value, lit.is_float, lit.suffix)


def find_literals(code: str, language: str = "python") -> list[Literal]:
    """The numeric literals inside the evolve blocks of ``code`` (``BlockError`` on broken markers).

    A literal's ``text`` and ``value`` include a unary minus in front of it.
    """
    text = code.replace("\r\n", "\n")
    blocks = find_blocks(text)
    literals = _python_literals(text) if language.strip().lower() in ("python", "py", "python3") else None
    if literals is None:
        literals = _scan_literals(text, language)
    lines = text.split("\n")
    return [_with_sign(lines, lit) for lit in literals if any(b.start <= lit.line < b.end for b in blocks)]


@dataclass(frozen=True)
class LiteralSite:
    """A literal of the evolve blocks and its role.

    ``key`` names the literal across generations: its line with every number masked, and its rank on that line.
    ``named``: the literal is the whole value of a named constant (``RATE = 0.1``, ``#define TILE 16``).
    ``divisor``: written right after ``/`` or ``%`` (must never become zero).
    ``group``: index of the bracketed list of integers it belongs to (``[5, 5, 6, 5, 5]``), or -1.
    """

    literal: Literal
    key: str
    named: bool
    divisor: bool
    group: int = -1


_NAMED_BEFORE = re.compile(r"^\s*(?:#\s*define\s+\w+\s+|(?:[\w\[\]*&<>]+\s+)*\**[\w.]+\s*(?::[^=]*)?=\s*)$")
_NAMED_AFTER = re.compile(r"^\s*[;,]?\s*(?:(?:#|//).*)?$")
_SEPARATOR = re.compile(r"^\s*,\s*$")


def literal_sites(code: str, language: str = "python") -> list[LiteralSite]:
    """Every literal of ``find_literals`` with its role (``BlockError`` on broken markers)."""
    literals = find_literals(code, language)
    lines = code.replace("\r\n", "\n").split("\n")
    by_line: dict[int, list[Literal]] = {}
    for lit in literals:
        by_line.setdefault(lit.line, []).append(lit)
    sites: list[LiteralSite] = []
    groups = 0
    for number, found in by_line.items():
        line = lines[number]
        masked, last = [], 0
        for lit in found:
            masked.append(line[last:lit.col])
            last = lit.col + len(lit.text)
        masked.append(line[last:])
        mask = " ".join("#".join(masked).split())
        group_of = _int_lists(line, found, groups)
        groups += len(set(group_of.values()))
        for rank, lit in enumerate(found):
            before, after = line[:lit.col], line[lit.col + len(lit.text):]
            sites.append(LiteralSite(
                literal=lit,
                key=f"{mask} @{rank}",
                named=bool(_NAMED_BEFORE.match(before) and _NAMED_AFTER.match(after)),
                divisor=before.rstrip().endswith(("/", "%", "/=", "%=")),
                group=group_of.get(rank, -1),
            ))
    return sites


def _int_lists(line: str, found: list[Literal], first_group: int) -> dict[int, int]:
    """Ranks of the integer literals written as ``[a, b, ...]`` or ``{a, b, ...}`` on ``line``, with a group index."""
    groups: dict[int, int] = {}
    run: list[int] = []

    def close(end: int) -> None:
        nonlocal first_group
        if len(run) >= 2:
            opened = line[:found[run[0]].col].rstrip().endswith(("[", "{"))
            closed = line[end:].lstrip().startswith(("]", "}"))
            if opened and closed:
                for rank in run:
                    groups[rank] = first_group
                first_group += 1
        run.clear()

    for rank, lit in enumerate(found):
        if lit.is_float:
            if run:
                close(found[run[-1]].col + len(found[run[-1]].text))
            continue
        if run:
            prev = found[run[-1]]
            if not _SEPARATOR.match(line[prev.col + len(prev.text):lit.col]):
                close(prev.col + len(prev.text))
        run.append(rank)
    if run:
        close(found[run[-1]].col + len(found[run[-1]].text))
    return groups
