"""Which headers a kernel really includes, as the preprocessor resolves them, not as its text reads.

A text check is fooled by line splices (``#inc\\<newline>lude``), digraphs (``%:include``), macro-built names
(``#define H <stdio.h>`` / ``#include H``) and anything that makes a comment or a literal start somewhere else than
where the compiler starts it. So the host preprocessor runs over the kernel (in the sandbox) with the device
compile's macros, no system include folders at all (``-nostdinc``) and one folder holding an empty file per allowed
header: every header it opens is printed (``-H``), every other one fails to resolve. What it opened must be an
allowed header in that folder; anything else is named in the rejection.

Known gap: ``__has_include`` sees the allowlist folder here and the real folders in the device compile; the source
policy rejects ``__has_include`` in kernel text.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from evolve.sandbox.launcher import RunResult

ALLOWED_FOLDER = "allowed-headers"
DEFINES_FILE = "device_defines.h"
_OPENED_RE = re.compile(r"^(\.+) (.+)$")
_MISSING_RE = re.compile(r"fatal error: (.+?): No such file or directory")
_NESTED_RE = re.compile(r"#include nested (?:depth|too deeply)")
_MALFORMED_RE = re.compile(r'#include expects "FILENAME" or <FILENAME>|empty filename in #include')


def prepare(harness: Path, allowed: frozenset[str], defines: str) -> Path:
    """Write the allowlist folder (empty files) and the device defines into the staged ``harness`` folder."""
    folder = harness / ALLOWED_FOLDER
    folder.mkdir(mode=0o755, exist_ok=True)
    for name in sorted(allowed):
        if "/" in name or name.startswith("."):
            raise ValueError(f"allowed header names are plain file names, not {name!r}")
        target = folder / name
        target.unlink(missing_ok=True)
        target.write_text("")
        target.chmod(0o444)
    target = harness / DEFINES_FILE
    target.unlink(missing_ok=True)
    target.write_text(defines)
    target.chmod(0o444)
    return folder


def preprocess_argv(compiler: str, unit: str, harness: Path) -> list[str]:
    """Preprocess ``unit`` (its output discarded) listing each header opened, searching the allowlist folder only."""
    return [compiler, "-std=c++17", "-E", "-H", "-nostdinc", "-nostdinc++", "-x", "c++", "-include",
            str(harness / DEFINES_FILE), f"-I{harness / ALLOWED_FOLDER}", unit, "-o", "/dev/null"]


def violations(result: RunResult, harness: Path, allowed: frozenset[str]) -> list[str]:
    """Every include the preprocessor run shows beyond the allowlist (empty when the kernel is clean)."""
    allowed_text = ", ".join(f"<{h}>" for h in sorted(allowed))
    folder = os.path.normpath(harness / ALLOWED_FOLDER)
    defines = os.path.normpath(harness / DEFINES_FILE)
    problems: list[str] = []
    for line in result.stderr.splitlines():
        if match := _OPENED_RE.match(line):
            path = os.path.normpath(match.group(2).strip())
            if path == defines or (os.path.dirname(path) == folder and os.path.basename(path) in allowed):
                continue
            problems.append(f"includes {match.group(2).strip()!r}, which is not an allowed header ({allowed_text})")
        elif match := _MISSING_RE.search(line):
            problems.append(f"forbidden include {match.group(1)!r} (allowed: {allowed_text})")
        elif _NESTED_RE.search(line):
            problems.append("the kernel includes itself (or nests includes without end)")
        elif _MALFORMED_RE.search(line):
            problems.append(f"an #include whose header name is not a plain <name> after macro expansion "
                            f"(allowed: {allowed_text})")
    if not problems and result.returncode != 0 and result.timed_out:
        problems.append("the preprocessor did not finish")
    return list(dict.fromkeys(problems))
