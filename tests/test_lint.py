"""The code passes its linters, as configured in pyproject.toml: ruff (pyflakes, pycodestyle, isort, pyupgrade,
bugbear; 120 columns) on rnnkit/ and tests/, and mypy on rnnkit/."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)


def test_ruff():
    done = _run(str(BIN / "ruff"), "check", "--no-cache", "rnnkit", "tests")
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]


def test_mypy():
    done = _run(sys.executable, "-m", "mypy", "--no-incremental")
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
