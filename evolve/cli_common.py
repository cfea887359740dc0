"""What the ``evolve`` commands share: the one-clear-message error and loading a problem folder."""

from __future__ import annotations

import click

from evolve.problem import Problem, ProblemError


class EvolveError(click.ClickException):
    """One clear message and a non-zero exit."""


def load_with_notes(problem_dir: str) -> tuple[Problem, list[str]]:
    """A ``problem.toml`` folder, or an OpenEvolve-format one (with notes on what was mapped or ignored)."""
    from evolve.openevolve import load_any_problem

    try:
        return load_any_problem(problem_dir)
    except ProblemError as exc:
        raise EvolveError(str(exc)) from None


def load(problem_dir: str) -> Problem:
    return load_with_notes(problem_dir)[0]
