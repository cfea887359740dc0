"""Prompts for the LLM mutator, built from plain template files a problem can override.

A prompt is two messages: a system message (role, objective, and the exact edit format from
``evolve.edit_render.render_diff_format_help``) and a user message (problem description, the parent's code and
metrics, its evaluation artifacts, recent attempts of the same lineage with their outcomes, inspiration programs
with their scores, and the task). When a diff answer cannot be applied, the conversation continues with the answer
and a follow-up asking for a full rewrite (``llm_fallback.txt``).

The search layer (``evolve.search``) may add, each in its own slot of the user message: the search's notes
(``${scratchpad}``), a co-evolved strategy (``${strategy}``) and, for a crossover, the second parent (``${partner}``,
with ``llm_task_crossover.txt`` as the task). A request's ``kind`` picks the edit mode of that one child ("diff" or
"full"; a crossover is a full rewrite); the system message always describes the mode asked, whatever a strategy
says. A template override without one of these placeholders gets the section appended at the end instead.

Templates use ``string.Template`` syntax (``${name}``; write ``$$`` for a literal dollar sign). The defaults live in
``evolve/templates/llm_*.txt``; a problem's ``[prompt] templates = "<folder>"`` holds replacements with the same file
names (any subset). Unknown placeholders are reported when the mutator is built, not mid-run.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

from evolve.blocks import evolvable_text
from evolve.edit_render import render_diff_format_help
from evolve.edits import EditMode
from evolve.llm.settings import LLMConfigError
from evolve.mutators.base import Attempt, MutationRequest, ProgramView
from evolve.schema import truncate_artifact

TEMPLATE_NAMES = ("llm_system.txt", "llm_user.txt", "llm_task_diff.txt", "llm_task_full.txt", "llm_fallback.txt",
                  "llm_task_crossover.txt")
PLACEHOLDERS: dict[str, frozenset[str]] = {
    "llm_system.txt": frozenset({"language", "direction", "better", "score_metric", "edit_format", "system_extra"}),
    "llm_user.txt": frozenset({"description", "parent_metrics", "fence", "parent_code", "artifacts", "attempts",
                               "inspirations", "task", "language", "score_metric", "scratchpad", "strategy",
                               "partner"}),
    "llm_task_diff.txt": frozenset({"goal", "score_metric", "language"}),
    "llm_task_full.txt": frozenset({"goal", "score_metric", "language"}),
    "llm_task_crossover.txt": frozenset({"goal", "score_metric", "language"}),
    "llm_fallback.txt": frozenset({"reason", "fence", "language"}),
}
_FENCES = {"python": "python", "cuda": "cuda", "c": "c", "cpp": "cpp", "rust": "rust", "text": ""}


@dataclass(frozen=True)
class PromptSettings:
    """The problem's ``[prompt]`` table."""

    mode: EditMode = EditMode.DIFF  # what the model is asked for: SEARCH/REPLACE diffs or full rewrites
    templates: Path | None = None  # folder of template overrides (absolute once resolved)
    system_extra: str = ""  # appended to the system message (e.g. "Use only the standard library.")
    artifact_chars: int = 3000  # per artifact shown (head and tail kept: errors end at the bottom)
    inspiration_chars: int = 2000  # per inspiration program (its evolve blocks only)
    attempt_chars: int = 600  # per recent attempt's edit
    max_attempts: int = 5  # recent attempts shown
    max_inspirations: int = 4


def resolve_prompt_settings(section: Mapping[str, Any] | None, root: Path | None = None) -> PromptSettings:
    """Validate a problem's ``[prompt]`` table; raise ``LLMConfigError`` listing every mistake."""
    section = dict(section or {})
    errors: list[tuple[str, str]] = []
    values: dict[str, Any] = {}
    ints = ("artifact_chars", "inspiration_chars", "attempt_chars", "max_attempts", "max_inspirations")
    for key, value in section.items():
        where = f"problem.toml [prompt].{key}"
        if key == "mode":
            if value in ("diff", "full"):
                values["mode"] = EditMode(value)
            else:
                errors.append((where, "must be 'diff' or 'full'"))
        elif key == "templates":
            if not isinstance(value, str):
                errors.append((where, "expected a folder path (relative to the problem folder)"))
                continue
            folder = Path(value) if root is None else (root / value)
            if not folder.is_dir():
                errors.append((where, f"folder {folder} not found"))
                continue
            unknown = sorted(p.name for p in folder.iterdir() if p.name.startswith("llm_") and
                             p.name not in TEMPLATE_NAMES)
            if unknown:
                errors.append((where, f"unknown template file(s) {', '.join(unknown)} (known: "
                                      f"{', '.join(TEMPLATE_NAMES)})"))
            values["templates"] = folder.resolve()
        elif key == "system_extra":
            if isinstance(value, str):
                values[key] = value
            else:
                errors.append((where, "expected a string"))
        elif key in ints:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                errors.append((where, "expected a non-negative integer"))
            else:
                values[key] = value
        else:
            allowed = ", ".join(sorted({"mode", "templates", "system_extra", *ints}))
            errors.append((where, f"unknown key (allowed: {allowed})"))
    if errors:
        raise LLMConfigError(errors)
    return PromptSettings(**values)


def load_templates(folder: Path | None = None) -> dict[str, Template]:
    """The default templates, each replaced by ``folder/<name>`` when that file exists; placeholders checked."""
    templates: dict[str, Template] = {}
    errors: list[tuple[str, str]] = []
    defaults = resources.files("evolve") / "templates"
    for name in TEMPLATE_NAMES:
        override = folder / name if folder is not None else None
        if override is not None and override.is_file():
            text, origin = override.read_text(), str(override)
        else:
            text, origin = (defaults / name).read_text(), f"evolve/templates/{name}"
        template = Template(text)
        if not template.is_valid():
            errors.append((origin, "invalid placeholder syntax (write $$ for a literal $)"))
            continue
        unknown = set(template.get_identifiers()) - PLACEHOLDERS[name]
        if unknown:
            errors.append((origin, f"unknown placeholder(s) {', '.join(sorted(unknown))} (available: "
                                   f"{', '.join(sorted(PLACEHOLDERS[name]))})"))
        templates[name] = template
    if errors:
        raise LLMConfigError(errors)
    return templates


def fmt_number(value: float | None) -> str:
    if value is None:
        return "none"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return f"{value:.6g}"


# Held-out stages are a role now (evolve.oversight): their metrics live in the run's events and never reach a row, so
# no prompt can show them. Rows written before that (the optimizer's old held-out stage) still carry heldout_* metrics;
# this filter keeps a resumed old run from showing them. Remove it once such runs no longer matter.
HIDDEN_METRIC_PREFIX = "heldout_"


def fmt_metrics(metrics: Mapping[str, float], first: str) -> str:
    keys = sorted((k for k in metrics if not k.startswith(HIDDEN_METRIC_PREFIX)), key=lambda k: (k != first, k))
    return ", ".join(f"{k} = {fmt_number(metrics[k])}" for k in keys) or "none yet"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"\n... [{len(text) - limit} characters cut]"


class PromptBuilder:
    """Renders requests into Chat Completions messages. Stateless after construction, so thread-safe."""

    def __init__(self, settings: PromptSettings | None = None, language: str = "python"):
        self.settings = settings or PromptSettings()
        self.language = language
        self.templates = load_templates(self.settings.templates)

    @property
    def mode(self) -> EditMode:
        return self.settings.mode

    def fence(self, language: str) -> str:
        return _FENCES.get(language, language)

    def mode_for(self, request: MutationRequest) -> EditMode:
        """The edit mode of one request: its kind's ("diff"; "full" and "crossover" are rewrites), else the
        settings'."""
        if request.kind == "diff":
            return EditMode.DIFF
        if request.kind in ("full", "crossover"):
            return EditMode.FULL
        return self.mode

    def messages(self, request: MutationRequest) -> list[dict[str, str]]:
        lang = request.language or self.language
        maximize = request.score_direction != "minimize"
        metric = request.score_metric
        extra = self.settings.system_extra.strip()
        mode = self.mode_for(request)
        system = self.templates["llm_system.txt"].substitute(
            language=lang,
            direction="Maximize" if maximize else "Minimize",
            better="higher" if maximize else "lower",
            score_metric=metric,
            edit_format=render_diff_format_help(lang, mode),
            system_extra=f"\n{extra}\n" if extra else "",
        )
        goal = f"{'raise' if maximize else 'lower'} the program's `{metric}`"
        crossover = request.kind == "crossover" and request.partner is not None
        task_name = "llm_task_crossover.txt" if crossover else (
            "llm_task_full.txt" if mode is EditMode.FULL else "llm_task_diff.txt")
        task = self.templates[task_name].substitute(goal=goal, score_metric=metric, language=lang).strip()
        parent = request.parent
        user_template = self.templates["llm_user.txt"]
        slots = {
            "scratchpad": _section("Notes from the search so far", request.scratchpad),
            "strategy": _section("Search strategy (advice for this change)", request.strategy),
            "partner": self._partner(request.partner, metric, lang) if crossover else "",
        }
        user = user_template.substitute(
            description=request.description.strip() or "(no description given)",
            parent_metrics=self._parent_metrics(parent, metric),
            fence=self.fence(lang),
            parent_code=parent.code.rstrip("\n"),
            artifacts=self._artifacts(parent),
            attempts=self._attempts(request.attempts, parent, metric),
            inspirations=self._inspirations(request.inspirations, metric, lang),
            task=task,
            language=lang,
            score_metric=metric,
            **slots,
        )
        used = set(user_template.get_identifiers())
        for name, text in slots.items():
            if text and name not in used:  # an override written before the slot existed
                user = f"{user.rstrip()}\n{text}"
        if request.notes:
            user = f"{user.rstrip()}\n\n# {request.notes}\n"
        return [{"role": "system", "content": system.strip() + "\n"}, {"role": "user", "content": user}]

    def fallback(self, messages: Sequence[dict[str, str]], answer: str, reason: str,
                 language: str | None = None) -> list[dict[str, str]]:
        """The conversation continued after an unusable diff answer, asking for a full rewrite."""
        text = self.templates["llm_fallback.txt"].substitute(
            reason=reason, fence=self.fence(language or self.language), language=language or self.language)
        return [*messages, {"role": "assistant", "content": answer}, {"role": "user", "content": text.strip()}]

    # -- sections --------------------------------------------------------------------------------------------------
    def _parent_metrics(self, parent: ProgramView, metric: str) -> str:
        metrics = dict(parent.metrics)
        if parent.score is not None:
            metrics.setdefault(metric, parent.score)
        text = fmt_metrics(metrics, metric)
        if parent.status and parent.status != "ok":
            text += f" (status: {parent.status})"
        return text

    def _artifacts(self, parent: ProgramView) -> str:
        limit = self.settings.artifact_chars
        if not parent.artifacts or limit == 0:
            return ""
        parts = ["\n# Evaluation output of the current program\n"]
        for name in sorted(parent.artifacts):
            text = truncate_artifact(str(parent.artifacts[name]).strip("\n"), limit)
            if text.strip():
                parts.append(f"## {name}\n```\n{text}\n```\n")
        return "".join(parts) if len(parts) > 1 else ""

    def _attempts(self, attempts: Sequence[Attempt], parent: ProgramView, metric: str) -> str:
        shown = list(attempts)[-self.settings.max_attempts:] if self.settings.max_attempts else []
        if not shown:
            return ""
        lines = [f"\n# Recent attempts on this program (its {metric}: {fmt_number(parent.score)})\n"]
        for i, attempt in enumerate(shown, 1):
            outcome = attempt.status
            if attempt.score is not None:
                outcome += f", {metric} = {fmt_number(attempt.score)}"
            summary = f" - {attempt.summary.strip()}" if attempt.summary.strip() else ""
            lines.append(f"## Attempt {i}: {outcome}{summary}\n")
            if attempt.edit.strip() and self.settings.attempt_chars:
                lines.append(f"```\n{_cut(attempt.edit.strip(), self.settings.attempt_chars)}\n```\n")
        return "".join(lines)

    def _partner(self, partner: ProgramView | None, metric: str, language: str) -> str:
        if partner is None:
            return ""
        code = evolvable_text(partner.code)
        return ("\n# Second parent, to combine with the current program (its evolve blocks)\n"
                f"Metrics: {fmt_metrics({**partner.metrics, metric: partner.score}, metric)}\n\n"
                f"```{self.fence(language)}\n{code.strip(chr(10))}\n```\n")

    def _inspirations(self, programs: Sequence[ProgramView], metric: str, language: str) -> str:
        shown = list(programs)[: self.settings.max_inspirations]
        if not shown or self.settings.inspiration_chars == 0:
            return ""
        lines = ["\n# Other programs from the search, for inspiration (their evolve blocks)\n"]
        for i, program in enumerate(shown, 1):
            code = evolvable_text(program.code)
            lines.append(f"## Program {i} (island {program.island}): "
                         f"{fmt_metrics({**program.metrics, metric: program.score}, metric)}\n"
                         f"```{self.fence(language)}\n{_cut(code.strip(chr(10)), self.settings.inspiration_chars)}\n"
                         "```\n")
        return "".join(lines)


def _section(title: str, text: str) -> str:
    text = text.strip()
    return f"\n# {title}\n{text}\n" if text else ""


def messages_json(messages: Sequence[dict[str, str]]) -> str:
    """The JSON text stored in the archive's ``prompt`` column."""
    return json.dumps(list(messages), ensure_ascii=False)
