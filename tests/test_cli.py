"""`evolve run` / `evolve eval` input handling: one clear message and a non-zero exit, nothing started."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from evolve.cli import main

from .conftest import PROBLEMS

CIRCLES = PROBLEMS / "circle_packing"


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_eval_prints_every_stage_and_metrics() -> None:
    code, out = invoke("eval", str(CIRCLES), str(CIRCLES / "initial_program.py"))
    assert code == 0, out
    assert "[validate] ok" in out and "sum_radii = 2.40817" in out


def test_eval_json_and_failing_program(tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("def run_packing():\n    return {'centers': [[0.5, 0.5]] * 26, 'radii': [0.4] * 26}\n")
    code, out = invoke("eval", str(CIRCLES), str(broken), "--json")
    assert code == 1
    data = json.loads(out)
    (stage,) = data["stages"]
    assert stage["status"] == "wrong_output" and "overlap" in stage["message"]


def test_eval_unknown_stage() -> None:
    code, out = invoke("eval", str(CIRCLES), str(CIRCLES / "initial_program.py"), "--stages", "nope")
    assert code != 0 and "unknown stage(s) nope" in out and "validate" in out


def test_run_rejects_a_bad_problem_file_before_starting(tmp_path: Path) -> None:
    (tmp_path / "problem.toml").write_text('name = "x"\nseed = "missing.py"\n[score]\ndirection = "up"\n')
    code, out = invoke("run", str(tmp_path), "--run-dir", str(tmp_path / "run"))
    assert code != 0
    assert "seed" in out and "missing.py" in out and "score.metric" in out and "score.direction" in out
    assert not (tmp_path / "run").exists()


def test_run_rejects_bad_flags() -> None:
    code, out = invoke("run", str(CIRCLES), "--iterations", "0")
    assert code == 2 and "--iterations" in out
    code, out = invoke("run", str(CIRCLES), "--mutator", "magic")
    assert code == 2 and "magic" in out


def test_resume_without_a_run(tmp_path: Path) -> None:
    code, out = invoke("run", str(CIRCLES), "--resume", "--archive-root", str(tmp_path))
    assert code != 0 and "no run of 'circle_packing'" in out


def test_resume_of_another_problems_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "run.json").write_text(json.dumps({"problem": "other", "run_id": "r", "settings": {}}))
    code, out = invoke("run", str(CIRCLES), "--resume", "--run-dir", str(run_dir))
    assert code != 0 and "is a run of 'other'" in out


def test_run_refuses_when_the_required_sandbox_level_is_unavailable(problem_copy, tmp_path: Path) -> None:
    folder = problem_copy("circle_packing")
    with open(folder / "problem.toml", "a") as fh:
        fh.write('\n[sandbox]\nlayers = "session+rlimits"\n')  # as on a host that allows nothing more
    code, out = invoke("run", str(folder), "--sandbox-require", "landlock", "--run-dir", str(tmp_path / "run"))
    assert code != 0
    assert "sandbox.require = 'landlock' cannot be met" in out and "missing landlock" in out
    assert not (tmp_path / "run").exists()


def test_run_reports_a_bad_sandbox_table(problem_copy, tmp_path: Path) -> None:
    folder = problem_copy("circle_packing")
    with open(folder / "problem.toml", "a") as fh:
        fh.write('\n[sandbox]\nlevel = "max"\n')
    code, out = invoke("run", str(folder), "--run-dir", str(tmp_path / "run"))
    assert code != 0 and "sandbox.level: unknown key" in out


def test_every_option_says_what_it_does() -> None:
    import click

    def commands(command: click.Command, path: tuple[str, ...] = ()):  # noqa: ANN202
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                yield from commands(sub, (*path, name))
        else:
            yield path, command

    pending: set[tuple[str, ...]] = set()
    silent = [(*path, option.opts[0]) for path, command in commands(main) for option in command.params
              if isinstance(option, click.Option) and not option.help and "--help" not in option.opts]
    assert [s for s in silent if s not in pending] == []
    code, out = invoke("run", "--help")
    assert code == 0 and "problem.toml" in " ".join(out.split()[out.split().index("--iterations"):][:30])


ENTRY = """
import atexit, sys, threading, time
import evolve.cli

atexit.register(lambda: print("exit hook ran"))
def late():
    time.sleep(0.2)
    print("thread finished")
threading.Thread(target=late).start()
sys.argv = ["evolve", *sys.argv[1:]]
evolve.cli.entry()
"""


def test_the_command_ends_as_an_ordinary_exit_would_with_its_exit_code(tmp_path: Path) -> None:
    """`evolve` (``entry``) skips the interpreter's finalization, not what an exit must do: running threads
    finish, exit hooks run, piped output is flushed, and the command's exit code is kept."""
    import subprocess
    import sys

    def command(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", ENTRY, *args], capture_output=True, text=True, timeout=120)

    ok = command("--version")
    assert ok.returncode == 0, ok.stderr
    version, *after = ok.stdout.splitlines()
    assert version.startswith("evolve, version ") and after == ["thread finished", "exit hook ran"]
    refused = command("archive", "top", str(tmp_path / "missing"))
    assert refused.returncode == 1 and "no such run folder" in refused.stderr
    assert refused.stdout.splitlines() == ["thread finished", "exit hook ran"]
    assert command("no-such-command").returncode == 2
