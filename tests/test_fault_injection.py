"""A short run of ``bench/fault_injection.py``: random kills and damaged files between them lose nothing readable,
and a deterministic run killed at random points ends identical to an uninterrupted one."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .conftest import REPO

pytestmark = [pytest.mark.slow, pytest.mark.ray]


def test_short_fault_injection_run_finds_no_problem(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "fault_injection.py"), "--kills", "6", "--deterministic-kills", "3",
         "--iterations", "600", "--deterministic-iterations", "36", "--damage", "0.7", "--seed", "3",
         "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=1800,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    assert "OK: nothing readable was lost" in out and "rows lost, unexpected: 0" in out
    assert "'identical rows': True" in out and "'identical migrations': True" in out
