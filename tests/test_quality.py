"""The package stays lint-clean and type-clean: ruff and mypy run as part of the test command.

CI runs exactly the README's test command, so these gates hold on every submission."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(("ruff", "check", "guardian_dns", "tests", "bench"), id="ruff-check"),
        pytest.param(
            ("ruff", "format", "--check", "guardian_dns", "tests", "bench"), id="ruff-format"
        ),
    ],
)
def test_code_is_ruff_clean(args: tuple[str, ...]) -> None:
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert ruff, "ruff is part of the test extra: pip install -e '.[test]'"
    result = _run(ruff, *args[1:])
    assert result.returncode == 0, result.stdout + result.stderr


def test_package_is_mypy_strict_clean() -> None:
    result = _run(sys.executable, "-m", "mypy", "guardian_dns")
    assert result.returncode == 0, result.stdout + result.stderr
