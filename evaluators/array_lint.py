"""A static lint for array-programming candidates (optimizer, tensor_rank): parses the source, never runs it.

It refuses what an honest array program has no use for: importing NumPy/CuPy itself (candidates receive the array
module as ``xp``, so the same code runs on a laptop and on a GPU), modules outside a small allowlist, dynamic name
access and code execution (``eval``, ``getattr``, ``globals``...), dunder attributes, frame and traceback
attributes, NumPy's doors to files and raw memory. Evaluators run it first, as a fast early rejection with a
message a mutator can act on (status ``compile_error``).

It is a lint, not a boundary: Python offers endless ways around any such list (NumPy's own submodules reach
``os``, ``sys`` and ``inspect``). Nothing depends on it for security: the candidate's process holds only the
candidate's code and the arrays it is handed, every score is computed on the trusted side, and the tests in
``tests/reward_hacking/`` run their cheats with this check switched off.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable

# Modules a candidate may import: pure computation (``time`` is for reading one's own budget). Left out on purpose:
# ``operator`` (attrgetter reaches attributes by string), ``typing`` and ``dataclasses`` (they eval strings).
ALLOWED_IMPORTS = frozenset({
    "math", "cmath", "itertools", "functools", "collections", "time", "fractions", "heapq", "bisect",
})
ARRAY_MODULES = frozenset({"numpy", "cupy", "cupyx", "jax", "torch", "scipy", "numba"})
# Builtins that read or rebind names by string, run code, or touch files: ways around every other rule here.
FORBIDDEN_NAMES = frozenset({
    "__import__", "eval", "exec", "compile", "globals", "locals", "vars", "getattr", "setattr", "delattr",
    "open", "breakpoint", "input", "memoryview", "help", "exit", "quit", "__builtins__",
})
# Frame, code and traceback internals (walking up to the driver's frame), and NumPy's doors to raw memory and files.
FORBIDDEN_ATTRIBUTES = frozenset({
    "f_back", "f_globals", "f_locals", "f_builtins", "f_code", "gi_frame", "gi_code", "cr_frame", "cr_code",
    "ag_frame", "ag_code", "tb_frame", "tb_next", "co_code", "co_consts",
    "ctypeslib", "ctypes", "f2py", "distutils", "testing", "lib", "load", "save", "savez", "savetxt", "loadtxt",
    "genfromtxt", "fromfile", "tofile", "memmap", "dump", "dumps",
})
_DUNDER = re.compile(r"__\w+__")
# Names that a string must not spell either (format strings, attrgetter-like lookups). Ordinary words that docstrings
# use ("load", "open", "help") are left alone: strings cannot call them.
_STRING_WORDS = {"f_back", "f_globals", "f_locals", "f_builtins", "f_code", "gi_frame", "cr_frame", "ag_frame",
                 "tb_frame", "tb_next", "co_code", "ctypeslib", "getattr", "setattr", "delattr", "globals", "vars"}
_FORBIDDEN_WORD = re.compile(r"\b(?:" + "|".join(sorted(_STRING_WORDS)) + r")\b")


def check_source(code: str, allowed_imports: Iterable[str] = ALLOWED_IMPORTS) -> list[str]:
    """Reasons the candidate's source is refused (empty when it is acceptable). Pure: parses, never runs."""
    try:
        tree = ast.parse(code)
    except SyntaxError as exc:
        return [f"syntax error at line {exc.lineno}: {exc.msg}"]
    allowed = frozenset(allowed_imports)
    reasons: list[str] = []

    def refuse(node: ast.AST, why: str) -> None:
        reasons.append(f"line {getattr(node, 'lineno', '?')}: {why}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            if isinstance(node, ast.ImportFrom) and node.level:
                refuse(node, "relative imports are not allowed")
                continue
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for name in names:
                top = name.split(".")[0]
                if top in ARRAY_MODULES:
                    refuse(node, f"imports {name}: candidates must not import numpy/cupy (or another array "
                                 f"library); use the array module passed as the `xp` argument")
                elif top not in allowed:
                    refuse(node, f"imports {name}: only {', '.join(sorted(allowed))} may be imported")
        elif isinstance(node, ast.Name) and (node.id in FORBIDDEN_NAMES or _DUNDER.fullmatch(node.id)):
            refuse(node, f"uses {node.id!r}: dynamic name access and code execution are not allowed")
        elif isinstance(node, ast.Attribute) and (node.attr in FORBIDDEN_ATTRIBUTES or _DUNDER.fullmatch(node.attr)):
            refuse(node, f"accesses attribute {node.attr!r}: introspection and file/memory access are not allowed")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and (
                _DUNDER.search(node.value) or _FORBIDDEN_WORD.search(node.value)):
            # "{0.__class__}".format(x) and friends reach attributes through a string.
            refuse(node, "string constants must not name dunder attributes or any of the refused names")
    return reasons
