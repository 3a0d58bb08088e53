"""``check(name, obj)``: what every hidden test cell calls.

It builds the fixed seeded cases of spec ``name``, calls the student's function on them (or takes the value) and
turns the results into plain arrays (:mod:`rnnkit.grading.export`). Then:

* with ``RNNKIT_GRADING_EXPORT=<dir>`` set (the sandboxed grader), it only writes ``<dir>/<name>.npz`` and returns;
  a trusted process judges it later with :func:`rnnkit.grading.judge.compare`;
* otherwise (plain ``nbgrader autograde``, or a student trying a check), the judging happens in a separate Python
  process started once per kernel, which recomputes the expected values from a fresh ``rnnkit``: monkeypatching
  ``rnnkit``, ``torch`` or ``numpy`` inside the notebook changes neither the expected values nor the comparison.
  A failure raises ``AssertionError`` with the judge's student-safe message.

``rules(name, fn)``: what the visible test cells call. It runs the grader's static rule check
(:func:`rnnkit.grading.static_check.check_function`, the rule of spec ``name``) on the code cells this kernel ran,
so an honest student sees "calls torch.nn.LSTMCell" before submitting, with the same message the grader gives.
"""
from __future__ import annotations

import ast
import atexit
import inspect
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO, cast

from . import export, specs
from .static_check import check_function

EXPORT_ENV = "RNNKIT_GRADING_EXPORT"


class _JudgeProcess:
    """``python -m rnnkit.grading.judge --serve``, started on first use and kept for the kernel's lifetime."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.log: IO[bytes] | None = None  # the judge's stderr, kept in the work folder
        self.workdir = Path(tempfile.mkdtemp(prefix="rnnkit-judge-"))
        atexit.register(self.close)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.log is not None:
            self.log.close()
            self.log = None
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _start(self) -> subprocess.Popen:
        env = {k: v for k, v in os.environ.items() if k != EXPORT_ENV}
        package_root = str(Path(__file__).resolve().parents[2])  # the folder holding rnnkit/
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
        if self.log is None:
            self.log = open(self.workdir / "judge.log", "ab")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rnnkit.grading.judge", "--serve"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self.log, text=True, env=env, cwd=self.workdir)
        return self.proc

    def ask(self, name: str, exported: dict) -> tuple[bool, str]:
        path = self.workdir / f"{name}.npz"
        export.save(exported, path)
        request = json.dumps({"name": name, "path": str(path)}) + "\n"
        for _attempt in range(2):  # restart once if the process died (e.g. killed with the previous cell)
            proc = self.proc if self.proc is not None and self.proc.poll() is None else self._start()
            requests, replies = cast(IO[str], proc.stdin), cast(IO[str], proc.stdout)  # both pipes: see _start
            try:
                requests.write(request)
                requests.flush()
                reply = json.loads(replies.readline())
                return bool(reply["passed"]), str(reply["message"])
            except (OSError, ValueError, KeyError):
                proc.kill()
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


def _latest(history: list[str]) -> list[str]:
    """The history without cells every top-level name of which a later cell defines again: a corrected answer is
    judged as it is now, not by the version it replaced (the static check assumes every binding may be live)."""
    kept: list[str] = []
    later: set[str] = set()
    for cell in reversed(history):
        try:
            body = ast.parse(cell).body
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            body = []
        names = {node.name for node in body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
        names |= {t.id for node in body if isinstance(node, ast.Assign)
                  for t in node.targets if isinstance(t, ast.Name)}
        if names and names <= later:
            continue
        kept.append(cell)
        later |= names
    return kept[::-1]


def _cell_history(obj) -> list[str]:
    """The code cells this kernel ran, oldest first (IPython's ``In``); outside IPython, the source of ``obj``."""
    try:
        from IPython import get_ipython
    except ImportError:
        get_ipython = None
    shell = get_ipython() if get_ipython is not None else None
    if shell is not None:
        history = shell.user_ns.get("In", [])
        return _latest([cell for cell in history if isinstance(cell, str) and cell.strip()])
    try:
        return [inspect.getsource(obj)]
    except (OSError, TypeError):
        return []


def rules(name: str, obj, function: str | None = None) -> None:
    """Check that the answer ``obj`` (named ``function``, default ``obj.__name__``) keeps the rule of spec ``name``:
    print ``rules: ok``, or raise ``AssertionError`` with the grader's own message."""
    spec = specs.get(name)
    function = function or getattr(obj, "__name__", None) or name
    cells = _cell_history(obj)
    if not cells:
        print(f"{function}: rules: not checked (no notebook cells to read outside IPython)")
        return
    findings = check_function(cells, function, spec.rule)
    if findings:
        raise AssertionError("\n".join(f.message for f in findings))
    print(f"{function}: rules: ok")
