"""The formatter, the linter and the type checker, as part of the suite: the README's one test command
checks the code's shape as well as its behaviour (configuration in pyproject.toml, docs/quality.md)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHECKED = ["gateway", "conversations"]


def _tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: pip install -e '.[test]' brings it")
    return found


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(["ruff", "format", "--check", *CHECKED], id="ruff-format"),
        pytest.param(["ruff", "check", *CHECKED], id="ruff-check"),
        pytest.param(["mypy"], id="mypy"),
    ],
)
def test_static_check_passes(command: list[str]) -> None:
    result = subprocess.run(
        [_tool(command[0]), *command[1:]], cwd=ROOT, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}"
