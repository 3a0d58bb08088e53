"""rnnkit declares ranges, not the course's pins: ``pip install .`` beside a PyTorch user's own torch keeps that torch,
and the core package imports and runs without the optional music21 (the chorales extra)."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _venv(path: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    return path / "bin" / "python"


def _pip(python: Path, *args: str) -> str:
    done = subprocess.run([str(python), "-m", "pip", "--disable-pip-version-check", *args],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def _fake_torch_wheel(tmp_path: Path, version: str) -> Path:
    """A stand-in distribution named torch at another version in rnnkit's range (no real wheel of another version
    is small enough to install in a test); enough for pip's resolver, which is what the range is about."""
    project = tmp_path / "faketorch"
    (project / "torch").mkdir(parents=True)
    (project / "torch" / "__init__.py").write_text(f"__version__ = {version!r}\n")
    (project / "pyproject.toml").write_text(textwrap.dedent(f"""\
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "torch"
        version = "{version}"
        """))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "wheels"), str(project)], check=True)
    return next((tmp_path / "wheels").glob("torch-*.whl"))


def test_install_keeps_the_users_torch(tmp_path):
    python = _venv(tmp_path / "venv")
    _pip(python, "install", "-q", str(_fake_torch_wheel(tmp_path, "2.5.0")))
    report = json.loads(_pip(python, "install", "--dry-run", "--report", "-", "-q", str(REPO)))
    names = {item["metadata"]["name"].lower() for item in report["install"]}
    assert "rnnkit" in names
    assert "torch" not in names, "pip would replace the installed torch 2.5.0, which is inside rnnkit's range"
    assert "music21" not in names, "music21 belongs to the chorales extra, not the core dependencies"


def test_core_install_runs_without_music21(tmp_path):
    python = _venv(tmp_path / "venv")
    _pip(python, "install", "-q", "torch==2.13.0")  # the local CPU wheel; any torch in range would do
    _pip(python, "install", "-q", str(REPO))
    smoke = textwrap.dedent("""\
        import torch, rnnkit
        out, (h, c) = rnnkit.LSTM(3, 4)(torch.randn(5, 2, 3))
        assert out.shape == (5, 2, 4) and h.shape == c.shape == (1, 2, 4)
        try:
            rnnkit.data.load_chorales(limit=3)
        except ImportError as err:
            assert "rnnkit[chorales]" in str(err), err
        else:
            raise AssertionError("load_chorales ran without music21")
        import shutil
        from rnnkit import _kernels  # the installed package ships the C source of the fused backend's steps
        assert shutil.which("gcc") is None or _kernels.status().startswith("compiled C"), _kernels.status()
        print("ok", torch.__version__)
        """)
    env = dict(os.environ, RNNKIT_CACHE=str(tmp_path / "cache"))
    done = subprocess.run([str(python), "-c", smoke], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert done.returncode == 0 and done.stdout.startswith("ok 2.13.0"), done.stdout + done.stderr
