"""From what the user asked (``evolve run`` flags, ``evolve.run`` arguments) to what a run session needs.

A new run takes the problem's defaults and the options given. A resumed run takes what its ``run.json`` stored
(run settings, mutator, LLM settings, the ``[prompt]`` and ``[sandbox]`` tables, the sandbox requirement) and puts
the options given now on top; each override is recorded with the stored and the given value. API keys are never
stored, so they come from the environment, the user config or ``--api-key`` as on the first session.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evolve.llm.settings import STORED_KEY as STORED_LLM_KEY
from evolve.problem import Problem
from evolve.resume import RunRefused
from evolve.run_info import RUN_INFO, RunConfig, latest_run, merge_given, read_info_quietly
from evolve.settings import RunSettings


class RunExists(RunRefused):
    """A new run was asked for in a folder that already holds one."""


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


@dataclass
class RunPlan:
    """One session of a run, ready to start (once the mutator is built)."""

    problem: Problem  # with the stored [prompt] and [sandbox] tables on resume
    settings: RunSettings
    run_dir: Path
    run_id: str
    resume: bool
    info: dict[str, Any] = field(default_factory=dict)
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    sandbox_require: str | None = None
    llm_options: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    search_settings: Any = None  # the resolved [search] table with the run's flags (evolve.search.settings)

    def config(self, mutator: Any) -> RunConfig:
        """What run.json keeps to continue the run (after the mutator is built: its resolved LLM settings)."""
        settings = getattr(mutator, "settings", None)
        llm = settings.to_dict() if hasattr(settings, "to_dict") and hasattr(settings, "api_base") else None
        if llm is None and isinstance(self.info.get("llm"), dict):
            llm = self.info["llm"]  # a session with another mutator keeps the stored LLM settings for later
        if llm is not None and self.resume and isinstance(self.info.get("llm"), dict):
            self._record_llm_overrides(self.info["llm"], llm)
        return RunConfig(llm=llm, prompt=self.problem.sections.get("prompt"),
                         sandbox=self.problem.sections.get("sandbox"), sandbox_require=self.sandbox_require,
                         search=self.problem.sections.get("search"))

    def _record_llm_overrides(self, stored: Mapping[str, Any], now: Mapping[str, Any]) -> None:
        sources = now.get("sources") or {}
        for key, value in now.items():
            if key in ("sources", "api_key_set") or sources.get(key) != "cli":
                continue
            if stored.get(key) != value:
                self.overrides[f"llm.{key}"] = {"stored": stored.get(key), "given": value}


def find_run_to_resume(root: Path, problem: Problem, run_dir: str | Path | None) -> Path:
    if run_dir is not None:
        return Path(run_dir)
    base = root / problem.name
    latest = latest_run(base)
    if latest.run_dir is None:
        extra = ""
        if latest.failed_starts:
            extra = (f" (only failed starts: {', '.join(p.name for p in latest.failed_starts[-3:])}; pass --run-dir "
                     "to resume one)")
        raise RunRefused(f"--resume: no run of {problem.name!r} found under {base}{extra}; pass --run-dir")
    return latest.run_dir


def plan_run(problem: Problem, *, resume: bool, run_dir: str | Path | None, archive_root: str | Path,
             given: Mapping[str, Any], sandbox_require: str | None = None,
             llm_options: Mapping[str, Any] | None = None) -> RunPlan:
    """Settings of a new run, or of the next session of a stored one (see the module docstring).

    ``given`` holds ``RunSettings`` fields (``None``: not given). Raises ``RunRefused`` with a message."""
    llm = {k: v for k, v in (llm_options or {}).items() if v not in (None, (), [])}
    if not resume:
        run_id = new_run_id()
        path = Path(run_dir) if run_dir is not None else Path(archive_root) / problem.name / run_id
        if (path / RUN_INFO).exists():
            raise RunExists(f"{path} already holds a run; use --resume to continue it or another --run-dir")
        settings = RunSettings.for_problem(problem, **given)
        return RunPlan(problem, settings, path, run_id, False, sandbox_require=sandbox_require, llm_options=llm)
    path = find_run_to_resume(Path(archive_root), problem, run_dir)
    if not (path / RUN_INFO).exists():
        raise RunRefused(f"--resume: {path} has no run.json; not a run folder")
    info = read_info_quietly(path)
    if not info:
        raise RunRefused(f"--resume: {path / RUN_INFO} cannot be read (not JSON); nothing was changed")
    if info.get("problem") != problem.name:
        raise RunRefused(f"--resume: {path} is a run of {info.get('problem')!r}, not {problem.name!r}")
    stored = RunSettings.from_dict(info.get("settings", {})).to_dict()
    merged = merge_given(stored, given)
    stored_config = RunConfig.from_info(info)
    sections = dict(problem.sections)
    notes = []
    for name, table in (("prompt", stored_config.prompt), ("sandbox", stored_config.sandbox),
                        ("search", stored_config.search)):
        if table is not None and sections.get(name, {}) != table:
            notes.append(f"the problem's [{name}] table changed since the run started; the run's own is used")
            sections[name] = table
    require = sandbox_require if sandbox_require is not None else stored_config.sandbox_require
    if sandbox_require is not None and sandbox_require != stored_config.sandbox_require:
        merged.overrides["sandbox_require"] = {"stored": stored_config.sandbox_require, "given": sandbox_require}
    if stored_config.llm is not None:
        llm[STORED_LLM_KEY] = stored_config.llm
    return RunPlan(
        problem=dataclasses.replace(problem, sections=sections),
        settings=RunSettings.from_dict(merged.settings),
        run_dir=path,
        run_id=str(info.get("run_id") or path.name),
        resume=True,
        info=info,
        overrides=merged.overrides,
        sandbox_require=require,
        llm_options=llm,
        notes=notes,
    )
