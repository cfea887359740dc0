"""Prompt building: what the model sees, truncation, modes, and per-problem template overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from evolve.edits import EditMode
from evolve.llm.prompts import PromptBuilder, PromptSettings, load_templates, resolve_prompt_settings
from evolve.llm.settings import LLMConfigError
from evolve.mutators.base import Attempt, MutationRequest, ProgramView

PROGRAM = '''"""Tiny optimiser."""

# EVOLVE-BLOCK-START
STEP = 0.5


def solve(x):
    return x * STEP
# EVOLVE-BLOCK-END


def main():
    return solve(2.0)
'''


@pytest.fixture
def request_() -> MutationRequest:
    traceback = "Traceback (most recent call last):\n" + "  frame line\n" * 2000 + "ZeroDivisionError: division by zero"
    parent = ProgramView("p1", PROGRAM, score=1.25, metrics={"loss": 1.25, "speed": 3.0}, status="ok",
                         artifacts={"traceback": traceback, "stdout": "iteration 1\n"})
    inspiration = ProgramView("p2", PROGRAM.replace("0.5", "0.3"), score=0.9, metrics={"loss": 0.9}, island=2)
    attempts = (
        Attempt(edit="<<<<<<< SEARCH\nSTEP = 0.5\n=======\nSTEP = 5\n>>>>>>> REPLACE", status="wrong_output",
                score=None, summary="diverged"),
        Attempt(edit="<<<<<<< SEARCH\nSTEP = 0.5\n=======\nSTEP = 0.45\n>>>>>>> REPLACE", status="ok", score=1.2),
    )
    return MutationRequest(parent=parent, iteration=3, seed=11, language="python",
                           description="Minimise the loss of a tiny optimiser.", score_metric="loss",
                           score_direction="minimize", inspirations=(inspiration,), attempts=attempts)


def test_diff_prompt_holds_everything_the_model_needs(request_: MutationRequest) -> None:
    system, user = PromptBuilder().messages(request_)
    assert system["role"] == "system" and user["role"] == "user"
    s, u = system["content"], user["content"]
    assert "Minimize the metric `loss` (lower is better)" in s
    assert "<<<<<<< SEARCH" in s and ">>>>>>> REPLACE" in s and "EVOLVE-BLOCK-START" in s
    assert "Minimise the loss of a tiny optimiser." in u
    assert PROGRAM.rstrip("\n") in u
    assert "Metrics: loss = 1.25, speed = 3" in u
    # Artifacts: the error at the bottom of a long traceback survives truncation; the prompt stays bounded.
    assert "ZeroDivisionError: division by zero" in u and "characters cut" in u
    assert "## stdout" in u and "iteration 1" in u
    # Recent attempts with their outcomes, inspirations with their scores and islands.
    assert "## Attempt 1: wrong_output - diverged" in u and "## Attempt 2: ok, loss = 1.2" in u
    assert "STEP = 0.45" in u
    assert "## Program 1 (island 2): loss = 0.9" in u and "STEP = 0.3" in u
    assert "lower the program's `loss`" in u
    assert len(u) < len(PROGRAM) * 3 + 3000 + 2000


def test_maximize_wording_and_empty_sections(request_: MutationRequest) -> None:
    bare = ProgramView("p", PROGRAM, score=None)
    req = MutationRequest(parent=bare, iteration=1, seed=1, score_metric="score")
    system, user = PromptBuilder().messages(req)
    assert "Maximize the metric `score` (higher is better)" in system["content"]
    u = user["content"]
    assert "Evaluation output" not in u and "Recent attempts" not in u and "inspiration" not in u
    assert "(no description given)" in u and "Metrics: none yet" in u


def test_full_rewrite_mode(request_: MutationRequest) -> None:
    builder = PromptBuilder(PromptSettings(mode=EditMode.FULL))
    system, user = builder.messages(request_)
    assert "complete new contents of the evolve block" in system["content"]
    assert "<<<<<<< SEARCH" not in system["content"]
    assert "one fenced code block" in user["content"]


def test_section_limits(request_: MutationRequest) -> None:
    settings = PromptSettings(artifact_chars=0, inspiration_chars=0, max_attempts=1, system_extra="Use no imports.")
    system, user = PromptBuilder(settings).messages(request_)
    assert system["content"].rstrip().endswith("Use no imports.")
    u = user["content"]
    assert "Evaluation output" not in u and "inspiration" not in u
    assert "## Attempt 1: ok" in u and "diverged" not in u


def test_fallback_continues_the_conversation(request_: MutationRequest) -> None:
    builder = PromptBuilder()
    first = builder.messages(request_)
    convo = builder.fallback(first, "<<<<<<< SEARCH\nnope", "malformed: unterminated SEARCH block", "python")
    assert convo[:2] == first
    assert convo[2] == {"role": "assistant", "content": "<<<<<<< SEARCH\nnope"}
    assert convo[3]["role"] == "user"
    assert "malformed: unterminated SEARCH block" in convo[3]["content"]
    assert "```python" in convo[3]["content"]


def test_problem_templates_override_defaults(tmp_path: Path, request_: MutationRequest) -> None:
    folder = tmp_path / "prompts"
    folder.mkdir()
    (folder / "llm_task_diff.txt").write_text("Make ${score_metric} smaller; it costs $$0 to try.\n")
    settings = resolve_prompt_settings({"templates": "prompts", "mode": "diff", "max_attempts": 2}, tmp_path)
    assert settings.templates == folder.resolve() and settings.max_attempts == 2
    _, user = PromptBuilder(settings).messages(request_)
    assert "Make loss smaller; it costs $0 to try." in user["content"]
    assert "# Problem" in user["content"]  # the other templates are the defaults


def test_bad_templates_are_reported_at_build_time(tmp_path: Path) -> None:
    (tmp_path / "llm_user.txt").write_text("${parent_code} ${parent_score}\n")
    (tmp_path / "llm_system.txt").write_text("costs $5\n")
    with pytest.raises(LLMConfigError) as info:
        load_templates(tmp_path)
    text = str(info.value)
    assert "llm_user.txt" in text and "parent_score" in text
    assert "llm_system.txt" in text and "$$" in text


def test_prompt_table_validation(tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "llm_typo.txt").write_text("x")
    with pytest.raises(LLMConfigError) as info:
        resolve_prompt_settings({"mode": "patch", "templates": "p", "artifact_chars": -1, "colour": 1}, tmp_path)
    places = [where for where, _ in info.value.errors]
    assert places == ["problem.toml [prompt].mode", "problem.toml [prompt].templates",
                      "problem.toml [prompt].artifact_chars", "problem.toml [prompt].colour"]
    with pytest.raises(LLMConfigError, match="not found"):
        resolve_prompt_settings({"templates": "missing"}, tmp_path)
    assert resolve_prompt_settings(None).mode is EditMode.DIFF
    assert resolve_prompt_settings({"mode": "full"}).mode is EditMode.FULL


def test_heldout_metrics_never_reach_a_prompt() -> None:
    from evolve.llm.prompts import fmt_metrics

    text = fmt_metrics({"score": 1.5, "heldout_score": 9.0, "heldout_quadratic50": 3.0, "train_loss": 0.1}, "score")
    assert "heldout" not in text and text.startswith("score = 1.5") and "train_loss" in text
