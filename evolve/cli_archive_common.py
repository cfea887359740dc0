"""What every ``evolve archive`` subcommand shares: opening a run (warning about damage), friendly errors, JSON and
number formatting."""

from __future__ import annotations

import functools
import json
import math
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:  # the query layer (DuckDB, pyarrow) loads only when an archive command runs
    from evolve.query import RunArchive

F = TypeVar("F", bound=Callable[..., Any])


def make_console(stderr: bool = False) -> Any:
    from rich.console import Console

    file = sys.stderr if stderr else sys.stdout
    terminal = file.isatty()
    # Off a terminal rich would wrap at 80 columns; tables and code read better unwrapped in logs and pipes.
    return Console(file=file, highlight=False, width=None if terminal else max(120, shutil.get_terminal_size().columns))


def warn_damage(archive: RunArchive) -> None:
    """Name every file a query left out, with what it held where known."""
    described = {archive.run_dir / d.file: d for d in archive.damage}
    for path, reason in archive.bad_files:
        damage = described.get(path)
        click.echo(f"warning: skipped unreadable segment {path}: {reason}"
                   f"{'; it held ' + damage.held() if damage else ''}", err=True)
    skipped = {p for p, _ in archive.bad_files}
    for damage in archive.damage:
        if archive.run_dir / damage.file not in skipped:
            click.echo(f"warning: {damage.describe()}", err=True)
    if archive.bad_files or archive.damage:
        click.echo(f"  (`evolve archive verify {archive.run_dir}` lists the damage; a resume refuses until the files "
                   "are restored or the damage is accepted with --accept-damage)", err=True)


@contextmanager
def open_run(run_dir: str, verify: bool = True) -> Iterator[RunArchive]:
    from evolve.query import RunArchive

    archive = RunArchive(run_dir, verify=verify)
    try:
        yield archive
    finally:
        warn_damage(archive)
        archive.close()


def friendly(fn: F) -> F:
    """Turn query errors into one clear message and exit status 1 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from evolve.query import ArchiveQueryError

        try:
            return fn(*args, **kwargs)
        except ArchiveQueryError as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper  # type: ignore[return-value]


def echo_json(data: Any) -> None:
    click.echo(json.dumps(nulled(data), indent=2, default=str))


def nulled(data: Any) -> Any:
    """JSON has no NaN or infinity: scripts get null."""
    if isinstance(data, float) and not math.isfinite(data):
        return None
    if isinstance(data, dict):
        return {k: nulled(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [nulled(v) for v in data]
    return data


def fmt(value: float | None, spec: str = ".8g") -> str:
    return "-" if value is None else format(value, spec)


def when(seconds: float | None) -> str:
    if not isinstance(seconds, int | float):
        return "-"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(seconds))


# The columns of the ``summary`` view (evolve.query_index.SUMMARY_SELECT) that `top --where` filters on.
SUMMARY_WHERE_COLUMNS = ("program_id", "parent_id", "island", "iteration", "generation", "status", "score", "fitness",
                         "cell", "mutator")


def check_where(archive: RunArchive, where: str, view: str, option: str) -> int:
    """How many programs the SQL condition ``where`` selects in ``view``; a clear error (exit status 1) naming the
    view's columns when DuckDB cannot run it."""
    from evolve.query import ArchiveQueryError

    try:
        return int(archive.tuples(f"SELECT count(DISTINCT program_id) FROM {view} WHERE ({where})")[0][0])
    except ArchiveQueryError as exc:
        reason = str(exc).removeprefix("query failed: ").strip().splitlines()[0]
        try:
            columns = [str(r[0]) for r in archive.tuples(f"DESCRIBE {view}") if r[0] != "file"]
        except ArchiveQueryError:
            columns = []
        raise click.ClickException(f"invalid {option} condition {where!r}: {reason}\n  its columns: "
                                   f"{', '.join(columns) or '-'}") from None


def check_island(archive: RunArchive, island: int | None) -> None:
    """Exit status 1 with the run's islands when ``island`` is not one of them."""
    if island is None:
        return
    islands = archive.islands()
    if island not in islands:
        span = f"{islands[0]}–{islands[-1]}" if len(islands) > 1 else str(islands[0])
        raise click.ClickException(f"island {island} does not exist in {archive.run_dir}: its islands are {span}")
