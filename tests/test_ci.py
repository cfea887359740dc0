"""``.ci/run`` runs the README's two set-up commands exactly as a new user would; the scripts parse."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from .conftest import REPO


def readme_commands() -> list[str]:
    """The first ```bash block of README.md, as a reader sees it."""
    block = re.search(r"^```bash\s*\n(.*?)^```", (REPO / "README.md").read_text(), re.S | re.M)
    assert block is not None, "README.md has no bash block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_the_readme_opens_with_exactly_two_commands_install_and_run_then_test() -> None:
    install, test = readme_commands()
    assert install.startswith("pip install ") and "evolve run problems/circle_packing" in install
    assert test.startswith("python -m pytest")


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_ci_runs_the_readme_commands_exactly() -> None:
    printed = subprocess.run([str(REPO / ".ci" / "run"), "--print-commands"], capture_output=True, text=True,
                             check=True, timeout=60).stdout
    assert printed.splitlines() == readme_commands()


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
@pytest.mark.parametrize("script", [".ci/run", "bench/upgrade_check.sh"])
def test_scripts_parse(script: str) -> None:
    subprocess.run(["bash", "-n", str(REPO / script)], check=True, timeout=60)
