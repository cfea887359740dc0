"""Oversight: a program's visible score is checked before it counts as best, tripwires quarantine what looks wrong,
people sign off, and everything is audited. See ``evolve/oversight/README.md``.

Modules: ``standing`` (standings, tripwires and verdicts as pure functions), ``state`` (a run's standings and
contenders), ``driver`` (the loop's side), ``rebuild`` (after a resume), ``events`` (the event kinds), ``read``,
``audit``, ``html`` and ``decisions`` (the people's side), ``verdict`` (``evolve eval``).
"""

from evolve.oversight.standing import Standing, Tripwire

__all__ = ["Standing", "Tripwire"]
