"""``check(name, obj)``: what every hidden test cell calls.

It builds the fixed seeded cases of spec ``name``, calls the student's function on them (or takes the value) and
turns the results into plain arrays (:mod:`rnnkit.grading.export`). Then:

* with ``RNNKIT_GRADING_EXPORT=<dir>`` set (the sandboxed grader), it only writes ``<dir>/<name>.npz`` and returns;
  a trusted process judges it later with :func:`rnnkit.grading.judge.compare`;
* otherwise (plain ``nbgrader autograde``, or a student trying a check), the judging happens in a separate Python
  process started once per kernel, which recomputes the expected values from a fresh ``rnnkit``: monkeypatching
  ``rnnkit``, ``torch`` or ``numpy`` inside the notebook changes neither the expected values nor the comparison.
  A failure raises ``AssertionError`` with the judge's student-safe message.
"""
from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from . import export, specs

EXPORT_ENV = "RNNKIT_GRADING_EXPORT"


class _JudgeProcess:
    """``python -m rnnkit.grading.judge --serve``, started on first use and kept for the kernel's lifetime."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.workdir = Path(tempfile.mkdtemp(prefix="rnnkit-judge-"))
        atexit.register(self.close)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _start(self) -> None:
        env = {k: v for k, v in os.environ.items() if k != EXPORT_ENV}
        package_root = str(Path(__file__).resolve().parents[2])  # the folder holding rnnkit/
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rnnkit.grading.judge", "--serve"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=open(self.workdir / "judge.log", "ab"), text=True, env=env, cwd=self.workdir)

    def ask(self, name: str, exported: dict) -> tuple[bool, str]:
        path = self.workdir / f"{name}.npz"
        export.save(exported, path)
        request = json.dumps({"name": name, "path": str(path)}) + "\n"
        for _attempt in range(2):  # restart once if the process died (e.g. killed with the previous cell)
            if self.proc is None or self.proc.poll() is not None:
                self._start()
            try:
                self.proc.stdin.write(request)
                self.proc.stdin.flush()
                reply = json.loads(self.proc.stdout.readline())
                return bool(reply["passed"]), str(reply["message"])
            except (OSError, ValueError, KeyError):
                self.proc.kill()
                self.proc = None
        raise RuntimeError(f"{name}: the grading judge process failed to answer (see {self.workdir / 'judge.log'})")


_judge: _JudgeProcess | None = None


def check(name: str, obj) -> None:
    """Grade ``obj`` (the student's function, or a value) against spec ``name``; see the module docstring."""
    global _judge
    spec = specs.get(name)
    exported = export.collect(spec, obj)
    target = os.environ.get(EXPORT_ENV)
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        export.save(exported, Path(target) / f"{name}.npz")
        return
    if _judge is None:
        _judge = _JudgeProcess()
    passed, message = _judge.ask(name, exported)
    if not passed:
        raise AssertionError(message)
    print(message)
