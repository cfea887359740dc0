"""A person steering a running run: pin a program as a preferred parent, ban one from breeding, leave notes.

Every action is one JSON line appended to ``RUN/steering.jsonl`` (who, when, what) by ``append_action``: one
``write`` under an exclusive ``flock`` (the UI and the CLI may write at the same time), then ``fsync``. The file is
never rewritten, so it is also the audit trail of what people asked for, and it survives a resume.

The driver reads it through ``SteeringLog.poll()``: a ``stat`` when nothing changed, otherwise a read of the new
bytes only, folded into the previous ``SteeringState``. A line that is not a valid action is kept in
``SteeringState.damaged`` with its line number and reason (never dropped silently); a line still being written (no
newline yet) is left for the next poll. If a writer died mid-line, the next writer closes that line with a newline
first, so the fragment becomes one damaged line instead of corrupting the next action.

Folding rules, in file order: ``pin`` adds a program to ``pinned`` and lifts a ban on it; ``ban`` adds it to
``banned`` and lifts a pin; ``unpin``/``unban`` undo them; ``note`` adds a note. ``choose_parent`` and
``without_banned`` are the pure helpers parent selection uses; ``prompt_notes`` formats notes for a prompt;
``DriverSteering`` bundles them for the driver (poll once a second, pinned programs' views, damage reported once).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import threading
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    import numpy as np

STEERING_FILE = "steering.jsonl"
PIN_PROBABILITY = 0.5  # share of parent choices that go to a pinned program while one is pinned
NOTES_IN_PROMPT = 3
MAX_NOTE_CHARS = 2000
MAX_WHO_CHARS = 100
POLL_SECONDS = 1.0
_PROGRAM_ID = re.compile(r"^[0-9A-Za-z_-]{1,128}$")

T = TypeVar("T")


class SteeringError(ValueError):
    """An action that cannot be recorded (unknown action, missing program, empty note); the message says why."""


class Action(StrEnum):
    PIN = "pin"
    UNPIN = "unpin"
    BAN = "ban"
    UNBAN = "unban"
    NOTE = "note"

    @property
    def needs_program(self) -> bool:
        return self is not Action.NOTE


@dataclass(frozen=True)
class SteeringAction:
    """One line of the steering log."""

    action: Action
    program_id: str = ""
    text: str = ""
    who: str = ""
    at: float = 0.0  # unix seconds
    source: str = ""  # "ui", "cli", ...

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"action": self.action.value, "at": self.at, "who": self.who, "source": self.source}
        if self.action.needs_program:
            data["program_id"] = self.program_id
        else:
            data["text"] = self.text
        return data

    @classmethod
    def from_json(cls, data: Any) -> SteeringAction:
        """Parse and validate one decoded line; ``SteeringError`` says what is wrong with it."""
        if not isinstance(data, dict):
            raise SteeringError(f"expected a JSON object, got {type(data).__name__}")
        try:
            action = Action(data.get("action"))
        except ValueError:
            raise SteeringError(f"unknown action {data.get('action')!r}") from None
        at = data.get("at", 0.0)
        if isinstance(at, bool) or not isinstance(at, int | float):
            raise SteeringError(f"'at' is not a time: {at!r}")
        who, source = data.get("who", ""), data.get("source", "")
        if not isinstance(who, str) or not isinstance(source, str):
            raise SteeringError("'who' and 'source' must be strings")
        return make_action(action, program_id=data.get("program_id", ""), text=data.get("text", ""), who=who,
                           source=source, at=float(at))


def make_action(action: Action | str, program_id: Any = "", text: Any = "", who: str = "", source: str = "",
                at: float | None = None) -> SteeringAction:
    """A validated action (``SteeringError`` if it is not one)."""
    try:
        kind = Action(action)
    except ValueError:
        raise SteeringError(f"unknown action {action!r}; actions are {', '.join(a.value for a in Action)}") from None
    program_id = program_id if isinstance(program_id, str) else ""
    text = text if isinstance(text, str) else ""
    if kind.needs_program:
        if not _PROGRAM_ID.match(program_id):
            raise SteeringError(f"{kind.value} needs a program id, got {program_id!r}")
        text = ""
    else:
        text = text.strip()
        if not text:
            raise SteeringError("a note needs some text")
        if len(text) > MAX_NOTE_CHARS:
            raise SteeringError(f"a note is limited to {MAX_NOTE_CHARS} characters (got {len(text)})")
        program_id = ""
    return SteeringAction(action=kind, program_id=program_id, text=text, who=who.strip()[:MAX_WHO_CHARS],
                          source=source.strip()[:40], at=time.time() if at is None else at)


@dataclass(frozen=True)
class DamagedLine:
    """A line of the steering log that is not a valid action: kept and shown, never applied."""

    line: int  # 1-based
    offset: int  # byte offset of the line in the file
    reason: str
    text: str  # the start of the line, for a person to read

    def to_json(self) -> dict[str, Any]:
        return {"line": self.line, "offset": self.offset, "reason": self.reason, "text": self.text}


@dataclass(frozen=True)
class SteeringState:
    """Everything the steering log said so far. ``pinned`` is in pin order (oldest first)."""

    pinned: tuple[str, ...] = ()
    banned: frozenset[str] = frozenset()
    notes: tuple[SteeringAction, ...] = ()
    actions: tuple[SteeringAction, ...] = ()
    damaged: tuple[DamagedLine, ...] = ()
    size: int = 0  # bytes of complete lines read
    incomplete_tail: int = 0  # bytes after the last newline (a line being written, or left by a dead writer)
    warnings: tuple[str, ...] = ()

    @property
    def steers_parents(self) -> bool:
        """True when parent selection must consult this state (some program is pinned or banned)."""
        return bool(self.pinned or self.banned)

    def is_banned(self, program_id: str) -> bool:
        return program_id in self.banned

    def is_pinned(self, program_id: str) -> bool:
        return program_id in self.pinned

    def applied(self, action: SteeringAction) -> SteeringState:
        """This state with one more action folded in."""
        pinned, banned, notes = list(self.pinned), set(self.banned), self.notes
        pid = action.program_id
        if action.action is Action.PIN:
            banned.discard(pid)
            if pid in pinned:
                pinned.remove(pid)
            pinned.append(pid)
        elif action.action is Action.UNPIN:
            if pid in pinned:
                pinned.remove(pid)
        elif action.action is Action.BAN:
            banned.add(pid)
            if pid in pinned:
                pinned.remove(pid)
        elif action.action is Action.UNBAN:
            banned.discard(pid)
        else:
            notes = (*notes, action)
        return replace(self, pinned=tuple(pinned), banned=frozenset(banned), notes=notes,
                       actions=(*self.actions, action))

    def to_json(self) -> dict[str, Any]:
        return {
            "pinned": list(self.pinned), "banned": sorted(self.banned),
            "notes": [n.to_json() for n in self.notes], "actions": [a.to_json() for a in self.actions],
            "damaged": [d.to_json() for d in self.damaged], "incomplete_tail": self.incomplete_tail,
            "warnings": list(self.warnings),
        }


def steering_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / STEERING_FILE


def append_action(run_dir: str | Path, action: SteeringAction) -> SteeringAction:
    """Append ``action`` to the run's steering log, durably (fsynced) and atomically; return it.

    The run folder must exist (steering a run that is not there is a mistake, not a new run).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise SteeringError(f"{run_dir}: no such run folder")
    path = steering_path(run_dir)
    line = (json.dumps(action.to_json(), ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
    created = not path.exists()
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line  # a writer died mid-line: end its fragment so it is reported, not glued to ours
        view = memoryview(line)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)  # releases the lock
    if created:
        with contextlib.suppress(OSError):
            dir_fd = os.open(run_dir, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
    return action


class SteeringLog:
    """Incremental reader of one run's steering log. Thread-safe; cheap to poll.

    ``poll()`` returns the current ``SteeringState``: with no new bytes it costs one ``stat``. With
    ``min_interval`` > 0 it reads the file at most that often (``clock`` seconds) and otherwise returns the last
    state, so a driver may call it on every iteration. A file that shrank or was replaced is read again from the
    start, with a warning in the state.
    """

    def __init__(self, run_dir: str | Path, min_interval: float = 0.0,
                 clock: Callable[[], float] = time.monotonic):
        self.path = steering_path(run_dir)
        self.min_interval = min_interval
        self.clock = clock
        self._state = SteeringState()
        self._lines = 0
        self._inode: int | None = None
        self._last_poll: float | None = None
        self._lock = threading.Lock()

    @property
    def state(self) -> SteeringState:
        """The last state polled (no I/O)."""
        return self._state

    def poll(self, force: bool = False) -> SteeringState:
        with self._lock:
            now = self.clock()
            if not force and self._last_poll is not None and now - self._last_poll < self.min_interval:
                return self._state
            self._last_poll = now
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                if self._state.size or self._state.incomplete_tail:
                    self._restart("the steering log disappeared")
                return self._state
            if self._inode is not None and (st.st_ino != self._inode or st.st_size < self._state.size):
                self._restart(f"the steering log was replaced or shrank (now {st.st_size} bytes): read again")
            self._inode = st.st_ino
            if st.st_size == self._state.size + self._state.incomplete_tail:
                return self._state
            with open(self.path, "rb") as f:
                f.seek(self._state.size)
                data = f.read()
            self._fold(data)
            return self._state

    def _restart(self, warning: str) -> None:
        self._state = SteeringState(warnings=(*self._state.warnings, warning))
        self._lines = 0
        self._inode = None

    def _fold(self, data: bytes) -> None:
        end = data.rfind(b"\n") + 1  # only complete lines; the rest is still being written
        state = self._state
        offset = state.size
        damaged = list(state.damaged)
        for raw in data[:end].split(b"\n")[:-1]:
            self._lines += 1
            try:
                action = SteeringAction.from_json(json.loads(raw.decode("utf-8")))
            except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError and SteeringError are ValueErrors
                reason = str(exc) if isinstance(exc, SteeringError) else f"not a JSON line: {exc}"
                damaged.append(DamagedLine(self._lines, offset, reason, raw[:200].decode("utf-8", "replace")))
            else:
                state = state.applied(action)
            offset += len(raw) + 1
        self._state = replace(state, damaged=tuple(damaged), size=offset, incomplete_tail=len(data) - end)


def read_state(run_dir: str | Path) -> SteeringState:
    """The whole steering log of a run, read once."""
    return SteeringLog(run_dir).poll()


# ---------------------------------------------------------------------------------------------------------------
# What parent selection and prompts do with the state


def choose_parent(sample: Callable[[], str], state: SteeringState, rng: np.random.Generator,
                  pinned_available: Collection[str] | None = None, pin_probability: float = PIN_PROBABILITY,
                  max_draws: int = 32) -> str | None:
    """The id of the next parent, given the database's own sampler ``sample`` (returns a program id).

    * Nothing pinned or banned: ``sample()`` once and no draw from ``rng``, so an unsteered run breeds exactly
      as it would without this function (deterministic runs stay reproducible).
    * Something pinned: with probability ``pin_probability`` (one ``rng.random()`` draw) a pinned program is the
      parent, uniformly among the pinned ones the caller can breed from (``pinned_available``; all if None).
    * Otherwise ``sample()`` is drawn again while it returns a banned program, up to ``max_draws`` times.
    * A banned program is never returned. If every draw was banned, a pinned program is returned if one is
      available, else None: the caller must then not breed from this island (e.g. try another one).
    """
    if not state.steers_parents:
        return sample()
    pinned = [p for p in state.pinned
              if p not in state.banned and (pinned_available is None or p in pinned_available)]
    if pinned and rng.random() < pin_probability:
        return pinned[int(rng.integers(len(pinned)))]
    for _ in range(max_draws):
        candidate = sample()
        if candidate not in state.banned:
            return candidate
    return pinned[int(rng.integers(len(pinned)))] if pinned else None


def without_banned(items: Iterable[T], state: SteeringState, key: Callable[[T], str] = str) -> list[T]:
    """``items`` (program ids, or objects with ``key`` giving the id) less the banned ones, in order: a banned
    program is never shown as an inspiration either."""
    return [item for item in items if key(item) not in state.banned]


def prompt_notes(state: SteeringState, limit: int = NOTES_IN_PROMPT, max_chars: int = MAX_NOTE_CHARS) -> str:
    """The most recent ``limit`` notes as a prompt section (oldest first), or "" when there are none."""
    notes = state.notes[-limit:] if limit > 0 else ()
    if not notes:
        return ""
    lines = ["Notes from the person supervising this run (most recent last):"]
    lines += [f"- {n.text[:max_chars]}" for n in notes]
    return "\n".join(lines)



V = TypeVar("V")


class DriverSteering(Generic[V]):
    """The driver's side of steering in one object, so the loop needs a few lines only.

    ``views`` are the driver's program objects (``ProgramView``); ``key`` gives a view's id. ``load(program_id)``
    returns the view of a pinned program, or None if it cannot breed (asked once per pin: from the database when
    it is an elite, else from the archive). ``report`` receives one line per damaged log line, once. ``breedable``
    is asked at every draw whether a pinned program may be a parent now (oversight excludes overfit, quarantined and
    pending programs: a pin does not override that).
    """

    def __init__(self, run_dir: str | Path, key: Callable[[V], str], load: Callable[[str], V | None],
                 report: Callable[[str], None] = lambda _: None, min_interval: float = POLL_SECONDS,
                 clock: Callable[[], float] = time.monotonic, breedable: Callable[[str], bool] = lambda _: True):
        self.log = SteeringLog(run_dir, min_interval=min_interval, clock=clock)
        self.key = key
        self.load = load
        self.breedable = breedable
        self.report = report
        self._pinned: dict[str, V] = {}
        self._reported = 0

    def poll(self) -> SteeringState:
        """The current state (a ``stat`` at most once per ``min_interval``; new bytes read only)."""
        state = self.log.poll()
        for bad in state.damaged[self._reported:]:
            self.report(f"steering.jsonl line {bad.line} ignored: {bad.reason}")
        self._reported = len(state.damaged)
        return state

    def parent(self, state: SteeringState, sample: Callable[[], V], rng: np.random.Generator,
               fallback: Callable[[], Iterable[V]] = tuple) -> V | None:
        """The next parent: ``sample()`` unchanged when nothing is pinned or banned, else ``choose_parent``'s
        choice. When every draw was banned, the first unbanned view of ``fallback()`` (e.g. every elite, best
        first); None if there is none (every elite banned: the caller stops with a clear message)."""
        if not state.steers_parents:
            return sample()
        for pid in state.pinned:
            if pid not in self._pinned and (view := self.load(pid)) is not None:
                self._pinned[pid] = view
        drawn: dict[str, V] = {}

        def sample_id() -> str:
            view = sample()
            drawn[self.key(view)] = view
            return self.key(view)

        available = [pid for pid in self._pinned if self.breedable(pid)]
        chosen = choose_parent(sample_id, state, rng, pinned_available=available)
        if chosen is not None:
            return drawn.get(chosen) or self._pinned[chosen]
        return next((v for v in fallback() if self.key(v) not in state.banned), None)

    def inspirations(self, state: SteeringState, views: Iterable[V], limit: int) -> tuple[V, ...]:
        """``views`` less the banned ones, at most ``limit`` (ask the database for ``limit + len(banned)``)."""
        return tuple(without_banned(views, state, key=self.key))[:limit]
