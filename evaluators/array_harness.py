"""Array-module harness: runs array-programming candidates on NumPy or CuPy with the same candidate code.

This file has two users, kept apart on purpose:

* Inside the sandbox (loaded by ``python_harness.py`` through ``candidate.call("run", ..., using=HARNESS_PATH)``):
  ``run`` picks the array module ``xp`` (CuPy when the stage has a GPU and CuPy works, NumPy otherwise), compiles the
  problem's *driver* (trusted source sent by the trusted side, so it need not be readable in the sandbox) and calls
  ``driver.entry(candidate_module, xp, *args, **kwargs)``. The driver holds the loops (a training loop calling the
  candidate's ``step`` thousands of times, a search calling the candidate per target rank); results come back as
  host (NumPy) data. Nothing the sandbox returns is trusted: the problem's evaluator re-checks all of it.
* On the trusted side: ``check_source`` (a static AST check, never executes candidate code) and ``call_driver``
  (builds the ``candidate.call`` request). The trusted side imports only the standard library from this module.

Why a static check: candidates receive ``xp`` and must not import NumPy/CuPy themselves, so the same code runs on a
laptop and on a GPU. The check also refuses the introspection the training loop cannot defend against in-process
(frames, ``globals()``, dunder attributes, NumPy's ``ctypeslib``...). It is defence in depth, not the security
boundary: the sandbox bounds what the process can do, and the trusted side recomputes every score from returned data.
"""

from __future__ import annotations

import ast
import hashlib
import re
import sys
import types
from collections.abc import Iterable
from pathlib import Path
from typing import Any

HARNESS_PATH = Path(__file__).resolve()

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


# ---------------------------------------------------------------------------------------------- trusted side


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


def driver_payload(path: str | Path) -> dict[str, str]:
    """A driver module as data: the sandbox compiles it from this source (its file may be unreadable there)."""
    path = Path(path).resolve()
    return {"name": path.stem, "path": str(path), "source": path.read_text()}


def call_driver(candidate: Any, driver_path: str | Path, entry: str, *args: Any, timeout: float | None = None,
                **kwargs: Any) -> tuple[Any, str]:
    """Run ``driver.entry(candidate_module, xp, *args, **kwargs)`` in the candidate's sandboxed process.

    ``candidate`` is an ``evolve.Candidate``; CuPy is asked for when its stage has a GPU. Returns the driver's value
    (as host data) and the name of the array module that actually ran ("numpy" or "cupy").
    """
    reply = candidate.call("run", driver_payload(driver_path), entry, *args, timeout=timeout, using=HARNESS_PATH,
                           gpu=bool(getattr(candidate, "gpus", 0) > 0), **kwargs)
    if not isinstance(reply, dict) or "value" not in reply:
        raise TypeError("the array harness replied without a value")  # only a tampered process gets here
    return reply["value"], str(reply.get("array_module", "?"))


# ---------------------------------------------------------------------------------------------- sandbox side

_drivers: dict[str, types.ModuleType] = {}


def select_array_module(gpu: bool) -> tuple[Any, str]:
    """CuPy when a GPU was assigned and CuPy sees a device; NumPy otherwise (same candidate code either way)."""
    if gpu:
        try:
            import cupy  # type: ignore[import-not-found]

            if cupy.cuda.runtime.getDeviceCount() > 0:
                return cupy, "cupy"
        except Exception:  # noqa: BLE001 - no CuPy, no driver or no device: fall back to the CPU
            pass
    import numpy

    return numpy, "numpy"


def make_rng(xp: Any, seed: int) -> Any:
    """A seeded Generator of the array module (``random``, ``standard_normal``, ``integers`` exist on both)."""
    return xp.random.default_rng(seed)


def to_host(value: Any) -> Any:
    """Device arrays to NumPy, recursively; everything else unchanged."""
    if isinstance(value, list | tuple):
        return [to_host(v) for v in value]
    if isinstance(value, dict):
        return {k: to_host(v) for k, v in value.items()}
    if type(value).__module__.split(".")[0] == "cupy":
        return value.get()
    return value


def _driver_module(driver: dict[str, str]) -> types.ModuleType:
    key = hashlib.sha256(driver["source"].encode()).hexdigest()
    if key not in _drivers:
        module = types.ModuleType(f"evolve_array_driver_{driver['name']}")
        module.__file__ = driver.get("path", driver["name"])
        sys.modules[module.__name__] = module  # dataclasses and enums look their module up by name
        exec(compile(driver["source"], module.__file__, "exec"), module.__dict__)  # noqa: S102 - trusted source
        _drivers[key] = module
    return _drivers[key]


def run(candidate: Any, driver: dict[str, str], entry: str, *args: Any, gpu: bool = False, **kwargs: Any) \
        -> dict[str, Any]:
    """Entry point called by ``python_harness.py``: the driver's ``entry`` with the chosen array module."""
    xp, name = select_array_module(gpu)
    value = getattr(_driver_module(driver), entry)(candidate, xp, *args, **kwargs)
    return {"array_module": name, "value": to_host(value)}
