"""The formatter, the linter and the type checker, as part of the suite: the README's one test command
checks the code's shape as well as its behaviour (configuration in pyproject.toml, docs/quality.md)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHECKED = ["gateway", "conversations"]


def _tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: pip install -e '.[test]' brings it")
    return found


class _Started:
    """A check started in the background, its output in a temporary file."""

    def __init__(self, command: list[str]) -> None:
        self.output = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(
            [_tool(command[0]), *command[1:]], cwd=ROOT, stdout=self.output, stderr=subprocess.STDOUT, text=True
        )

    def result(self) -> tuple[int, str]:
        try:
            code = self.process.wait(timeout=900)
            self.output.seek(0)
            return code, self.output.read()
        finally:
            self.stop()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.output.close()


_STARTED: dict[str, _Started] = {}


def start(item: pytest.Item) -> None:
    """Start this item's check now (tests/conftest.py calls it once the suite is collected): a cold mypy
    run takes most of a minute of one core, and so runs beside the other tests instead of after them."""
    command = item.callspec.params["command"]  # type: ignore[attr-defined]
    try:
        _STARTED[" ".join(command)] = _Started(command)
    except pytest.fail.Exception:
        return  # the tool is missing: the test itself says so


def stop_all() -> None:
    for started in _STARTED.values():
        started.stop()
    _STARTED.clear()


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(["ruff", "format", "--check", *CHECKED], id="ruff-format"),
        pytest.param(["ruff", "check", *CHECKED], id="ruff-check"),
        pytest.param(["mypy"], id="mypy"),
    ],
)
def test_static_check_passes(command: list[str]) -> None:
    started = _STARTED.pop(" ".join(command), None) or _Started(command)
    code, output = started.result()
    assert code == 0, f"{' '.join(command)} failed:\n{output}"
