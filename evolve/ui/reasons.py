"""Why a program failed, in one line, and that line with its variable parts normalised so that failures of the
same kind group together. A small grouping of the UI's own (the CLI's ``evolve/failures.py`` may replace it)."""

from __future__ import annotations

import json
import re
from typing import Any

_HEX = re.compile(r"\b[0-9a-f]{8,64}\b")
_NUMBER = re.compile(r"(?<![A-Za-z_])[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?")
_QUOTED = re.compile(r"'[^'\n]{0,200}'|\"[^\"\n]{0,200}\"")
_PATH = re.compile(r"(?:/[\w.+-]+){2,}")
_SPACE = re.compile(r"\s+")


def normalise_message(text: str, limit: int = 160) -> str:
    """A message with its variable parts (numbers, ids, quoted values, paths) replaced, so that failures of the
    same kind share one text."""
    text = _PATH.sub("<path>", text)
    text = _QUOTED.sub("'…'", text)
    text = _HEX.sub("<id>", text)
    text = _NUMBER.sub("N", text)
    text = _SPACE.sub(" ", text).strip()
    return text[:limit] or "(no message)"


def failure_reason(status: str, edit_error: str, artifacts: dict[str, Any], stages: list[Any]) -> str:
    """The first line that says why a program failed: the edit error, the loop's message, the check that failed,
    the exception line of a traceback, the failing stage's message."""
    if edit_error:
        return edit_error
    for key in ("message", "check"):
        value = artifacts.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip().splitlines()[0]
    for key, value in artifacts.items():
        if key.endswith("traceback") and isinstance(value, str):
            lines = [line for line in value.strip().splitlines() if line.strip()]
            if lines:
                return lines[-1].strip()
    for stage in reversed(stages):
        if isinstance(stage, dict) and stage.get("message"):
            return str(stage["message"]).splitlines()[0]
    return status


def json_field(text: Any, default: Any) -> Any:
    """A column that is JSON text in older archives and a decoded map or list in newer ones, as ``default``'s type
    (a map read through pyarrow arrives as ``(key, value)`` pairs)."""
    if isinstance(default, dict) and isinstance(text, list) and all(isinstance(p, tuple) and len(p) == 2
                                                                     for p in text):
        return dict(text)
    if isinstance(text, type(default)):
        return text
    try:
        value = json.loads(text) if isinstance(text, str) and text else default
    except ValueError:
        return default
    return value if isinstance(value, type(default)) else default
