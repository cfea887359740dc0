"""Sets of iteration numbers as compact, sorted ``[first, last]`` ranges (for run.json, the ledger and messages)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def to_ranges(numbers: Iterable[int]) -> list[list[int]]:
    """``{1, 2, 3, 7}`` -> ``[[1, 3], [7, 7]]``."""
    ranges: list[list[int]] = []
    for n in sorted(set(int(x) for x in numbers)):
        if ranges and n == ranges[-1][1] + 1:
            ranges[-1][1] = n
        else:
            ranges.append([n, n])
    return ranges


def from_ranges(ranges: Iterable[Sequence[int]] | None) -> set[int]:
    """The inverse of ``to_ranges``; malformed entries are ignored (run.json may have been edited by hand)."""
    numbers: set[int] = set()
    for item in ranges or []:
        try:
            first, last = int(item[0]), int(item[1])
        except (TypeError, ValueError, IndexError):
            continue
        numbers.update(range(first, last + 1))
    return numbers


def format_ranges(numbers: Iterable[int], limit: int = 8) -> str:
    """``"25-48, 53"``; after ``limit`` ranges, ``", ... (N more)"``."""
    ranges = to_ranges(numbers)
    parts = [f"{a}-{b}" if b > a else str(a) for a, b in ranges[:limit]]
    if len(ranges) > limit:
        parts.append(f"... ({len(ranges) - limit} more ranges)")
    return ", ".join(parts)
