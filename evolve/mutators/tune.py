"""An offline operator that tunes numeric literals inside the evolve blocks (no LLM).

Each proposal moves one literal (half the time) or several, by a Gaussian step of standard deviation
``max(scale * |value|, floor)`` times a log-uniform boldness factor (mostly small steps, now and then a bold one), so
steps follow the literal's magnitude and an exact zero can still move. Integers stay integers and move by at least 1.
A unary minus in front of a literal (``B = -2.0``, ``a[:-1]``, ``return -1``) belongs to it, so values can cross zero
both ways; a literal with an unsigned C suffix (``8u``) stays non-negative. Literals are found with ``tokenize`` for
Python (so digits in names, strings and comments are never touched) and a small scanner that skips identifiers,
strings and comments for C-like and other languages. The answer is SEARCH/REPLACE text, so it takes the same parsing
path as an LLM's.
"""

from __future__ import annotations

import io
import math
import re
import tokenize
from dataclasses import dataclass

import numpy as np

from evolve.edits import (
    BlockError,
    comment_prefix,
    find_blocks,
    render_search_replace,
)
from evolve.mutators.base import MutationRequest, Proposal

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


def _format_float(value: float, step: float) -> str:
    # Enough decimals to show the step with about three significant digits, no more.
    digits = int(min(max(2 - math.floor(math.log10(step)), 0), 16))
    rounded = round(value, digits)
    return repr(rounded if rounded != 0 else 0.0)  # never "-0.0"


def perturb(lit: Literal, rng: np.random.Generator, scale: float, floor: float) -> str:
    """New text for one literal (never equal in value to the old one)."""
    boldness = 10 ** rng.uniform(-1.0, 0.5)
    unsigned = lit.suffix[:1] in ("u", "U")
    if not lit.is_float:
        old = int(lit.value)
        spread = max(scale * abs(old), 1.0) * boldness
        new = old + (int(round(rng.normal(0.0, spread))) or int(rng.choice([-1, 1])))
        if unsigned:
            new = abs(new) if abs(new) != old else old + 1
        return str(new) + lit.suffix
    spread = max(scale * abs(lit.value), floor) * boldness
    for _ in range(8):
        value = lit.value + rng.normal(0.0, spread)
        text = _format_float(abs(value) if unsigned else value, spread) + lit.suffix
        if float(text.rstrip("fFlL")) != lit.value:
            return text
    return _format_float(lit.value + spread, spread) + lit.suffix


def _splice(line: str, lit: Literal, new: str) -> str:
    before = line[: lit.col]
    if before and (before[-1] == "-" and new.startswith("-") or (before[-1].isalnum() or before[-1] in "_.")):
        new = " " + new  # never write "--" (C decrement) or glue a number to a name ("return-1" -> "return0.5")
    return before + new + line[lit.col + len(lit.text) :]


@dataclass(frozen=True)
class TuneMutator:
    """Perturbs ``1..literals_per_edit`` numeric literals per proposal by steps of relative size ~``scale``
    (at least ``floor`` for floats, 1 for integers)."""

    scale: float = 0.1
    literals_per_edit: int = 3
    floor: float = 1e-3
    name: str = "tune"

    def __post_init__(self) -> None:
        if not self.scale > 0 or not self.floor > 0:
            raise ValueError("scale and floor must be positive")
        if self.literals_per_edit < 1:
            raise ValueError("literals_per_edit must be at least 1")

    def propose(self, request: MutationRequest) -> Proposal:
        return Proposal(response=self.answer(request.parent.code, request.language, request.seed), mutator=self.name)

    def answer(self, code: str, language: str, seed: int) -> str:
        """The SEARCH/REPLACE answer for one proposal (a refusal in prose when there is nothing to tune)."""
        try:
            literals = find_literals(code, language)
        except BlockError as exc:
            return f"Cannot tune this program: {exc}"
        if not literals:
            return "There is no numeric literal inside the evolve blocks to tune."
        rng = np.random.default_rng(seed)
        count = 1 if rng.random() < 0.5 or self.literals_per_edit == 1 else int(
            rng.integers(2, self.literals_per_edit + 1))
        count = min(count, len(literals))
        chosen = sorted((literals[k] for k in rng.choice(len(literals), size=count, replace=False)),
                        key=lambda lit: (lit.line, lit.col))
        lines = code.replace("\r\n", "\n").split("\n")
        notes = []
        for lit in reversed(chosen):  # right to left, so earlier columns on a line stay valid
            new = perturb(lit, rng, self.scale, self.floor)
            lines[lit.line] = _splice(lines[lit.line], lit, new)
            notes.append(f"line {lit.line + 1}: {lit.text} -> {new}")
        blocks = render_search_replace(code, "\n".join(lines))
        return "Tuning constants: " + "; ".join(reversed(notes)) + "\n\n" + blocks
