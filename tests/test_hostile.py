"""Hostile submissions through the real `make autograde` path (issue 8).

Every case starts from the notebook a student who solved assignment 01_rnn would submit (built from solutions/),
then breaks or games ONE thing, mostly around `sample_until_eos` (a leaf function: nothing else calls it). All cases
are graded in ONE `make autograde JOBS=2` run (module fixture); each test then asserts the grade a careful human
grader would give, a reason in the student's feedback, that every student has a row in grades.csv, and that nothing
outside the sandbox changed.
"""
from __future__ import annotations

import json
import socket
import tempfile
import threading
import time
from pathlib import Path

import nbformat
import pytest

import grading_cases as gc
from rnnkit.grading import sandbox

ASSIGNMENT = "01_rnn"
TARGET = "sample_until_eos"  # solution cell grade_id and check name
CELL_TIMEOUT = 10
SUBMISSION_TIMEOUT = 180
WRONG = f"""def {TARGET}(step_fn, h0, start, eos, max_len, temperature, generator):
    return [eos]
"""

pytestmark = pytest.mark.slow


def _prepend(nb, grade_id, code):
    cell = gc.find(nb, grade_id)
    cell.source = code + "\n" + cell.source


def _set(nb, grade_id, code):
    gc.find(nb, grade_id).source = code


def _insert_before(nb, grade_id, code):
    nb.cells.insert(gc.index_of(nb, grade_id), nbformat.v4.new_code_cell(code))


def _append(nb, code):
    nb.cells.append(nbformat.v4.new_code_cell(code))


def build_cases(paths: dict) -> dict:
    """student id -> (notebook or raw bytes, expected score key, words expected in the feedback)."""
    cases = {}

    def case(name, expect, words, mutate=None, raw=None):
        nb = gc.correct_notebook(ASSIGNMENT)
        if mutate:
            mutate(nb)
        cases[name] = (raw if raw is not None else nb, expect, words)

    case("correct", "full", [f"PASS {TARGET}"])
    case("rewritten", "full", [f"PASS {TARGET}", "PASS rnn_cell_forward"], lambda nb: (
        _set(nb, "rnn_cell_forward", "def rnn_cell_forward(x, h, w_ih, w_hh, b_ih, b_hh):\n"
             "    pre = torch.matmul(x, w_ih.t()) + torch.matmul(h, w_hh.t())\n    return (pre + (b_ih + b_hh)).tanh()"),
        _insert_before(nb, TARGET, "def _softmax_with_temperature(logits, t):\n    return (logits / t).softmax(dim=-1)"),
        _set(nb, TARGET, f"def {TARGET}(step_fn, h0, start, eos, max_len, temperature, generator):\n"
             "    out, h, s = [], h0, start\n    while len(out) < max_len:\n        logits, h = step_fn(s, h)\n"
             "        s = torch.multinomial(_softmax_with_temperature(logits, temperature), num_samples=1,\n"
             "                              generator=generator).item()\n        out.append(s)\n"
             "        if s == eos:\n            return out\n    return out")))
    case("wrong_values", "lost", [f"FAIL {TARGET}"], lambda nb: _set(nb, TARGET, WRONG))
    case("wrong_shape", "lost", [f"FAIL {TARGET}"], lambda nb: _set(nb, TARGET, WRONG.replace(
        "return [eos]", "return torch.tensor([[eos]])")))
    case("nan", "lost", [f"FAIL {TARGET}"], lambda nb: _set(nb, TARGET, WRONG.replace(
        "return [eos]", "return [float('nan')]")))
    case("loop_top_level", "lost", ["per cell"], lambda nb: _prepend(nb, TARGET, "while True:\n    pass"))
    case("loop_in_function", "lost", ["per cell"], lambda nb: _set(nb, TARGET, WRONG.replace(
        "    return [eos]", "    while True:\n        pass")))
    case("sys_exit", "lost", ["SystemExit"], lambda nb: _prepend(nb, TARGET, "import sys\nsys.exit()"))
    case("os_exit", "lost", ["killed the kernel"], lambda nb: _prepend(nb, TARGET, "import os\nos._exit(0)"))
    case("segfault", "lost", ["kernel died"], lambda nb: _set(nb, TARGET, WRONG.replace(
        "    return [eos]", "    import ctypes\n    return ctypes.string_at(0)")))
    case("import_error", "lost", ["ImportError"], lambda nb: _prepend(nb, TARGET, "from rnnkit import no_such_name"))
    case("malformed_json", "zero", ["not valid JSON"], raw=b'{"cells": [{"cell_type": "code", ')
    case("solution_cell_deleted", "lost", ["NameError"], lambda nb: nb.cells.remove(gc.find(nb, TARGET)))
    case("test_cell_deleted", "full", [f"PASS {TARGET}"], lambda nb: nb.cells.remove(gc.find(nb, f"test_{TARGET}")))
    case("test_cell_edited", "lost", [f"FAIL {TARGET}"], lambda nb: (
        _set(nb, TARGET, WRONG), _set(nb, f"test_{TARGET}", "print('all tests passed')")))

    def tamper(nb):
        for cell in nb.cells:
            md = cell.metadata.get("nbgrader", {})
            if md.get("grade"):
                md["points"] = 100
        gc.find(nb, f"test_{TARGET}").metadata["nbgrader"]["grade_id"] = "bonus_cell"
    case("metadata_tampered", "full", [f"PASS {TARGET}"], tamper)
    case("monkeypatch", "lost", [f"FAIL {TARGET}"], lambda nb: (_set(nb, TARGET, WRONG), _insert_before(
        nb, f"test_{TARGET}",
        "import builtins, numpy, torch, rnnkit, rnnkit.grading, rnnkit.grading.judge\n"
        "torch.allclose = lambda *a, **k: True\nnumpy.allclose = lambda *a, **k: True\n"
        "torch.Tensor.__eq__ = lambda *a, **k: True\n"
        "rnnkit.grading.judge.compare = lambda *a, **k: (True, 'passed')\n"
        "rnnkit.grading.check = lambda *a, **k: print('passed')\n"
        "builtins.round = lambda *a, **k: 0\nbuiltins.sum = lambda *a, **k: 0\n")))
    case("always_equal", "lost", [f"FAIL {TARGET}"], lambda nb: _set(nb, TARGET, WRONG.replace(
        "    return [eos]", "    class Anything(list):\n        def __eq__(self, other):\n            return True\n"
        "    return Anything([eos])")))
    case("float_subclass", "lost", [f"FAIL {TARGET}"], lambda nb: _set(nb, TARGET, WRONG.replace(
        "    return [eos]", "    class F(float):\n        def __eq__(self, other):\n            return True\n"
        "        __hash__ = float.__hash__\n    return [F(eos)]")))
    case("ast_hook_and_run_cell", "lost", [f"FAIL {TARGET}"], lambda nb: (_set(nb, TARGET, WRONG), _insert_before(
        nb, f"test_{TARGET}",
        "import ast\nclass _NoAsserts(ast.NodeTransformer):\n    def visit_Assert(self, node):\n"
        "        return ast.Pass()\nip = get_ipython()\nip.ast_transformers.append(_NoAsserts())\n"
        "_run = ip.run_cell\ndef _quiet(*a, **k):\n    r = _run(*a, **k)\n    r.error_in_exec = None\n    return r\n"
        "ip.run_cell = _quiet\n")))
    case("write_outside", "full", [f"PASS {TARGET}"], lambda nb: _append(nb, (
        "import os\nfor _p in {targets!r}:\n    try:\n        with open(_p, 'a') as _f:\n            _f.write('x')\n"
        "        print('WROTE', _p)\n    except OSError as _e:\n        print('blocked', _p, type(_e).__name__)\n"
        "for _d in {dirs!r}:\n    try:\n        print(_d, os.listdir(_d))\n    except OSError as _e:\n"
        "        print('hidden', _d, type(_e).__name__)\n").format(targets=paths["targets"], dirs=paths["dirs"])))
    case("network", "full", [f"PASS {TARGET}"], lambda nb: _append(nb, (
        "import socket\nfor _addr in [('127.0.0.1', {port}), ('10.0.0.1', 80), ('1.1.1.1', 443)]:\n    try:\n"
        "        socket.create_connection(_addr, timeout=3)\n        print('CONNECTED', _addr)\n"
        "    except OSError as _e:\n        print('no network', _addr, _e)\n").format(port=paths["port"])))
    case("memory_hog", "lost", ["MemoryError"], lambda nb: _prepend(nb, TARGET, "_big = bytearray(1 << 40)"))
    case("fork_bomb", "lost", [TARGET], lambda nb: _prepend(
        nb, TARGET, "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"))
    case("print_flood", "full", ["not kept", f"PASS {TARGET}"], lambda nb: _append(
        nb, "print('x' * 100_000_000)\nfor _i in range(1_000_000):\n    print('y' * 99)"))
    return cases


class _Listener:
    """A TCP server on the host's loopback that records every connection (there must be none)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.stop = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
                self.connections += 1
                conn.close()
            except OSError:
                pass


@pytest.fixture(scope="module")
def graded():
    # not pytest's tmp_path: a concurrent pytest run may prune old basetemps while this batch is being graded
    with tempfile.TemporaryDirectory(prefix="rnnkit-hostile-") as tmp:
        yield _grade_all(Path(tmp))


def _grade_all(tmp: Path) -> dict:
    try:
        sandbox.check_available()
    except sandbox.SandboxUnavailable as exc:
        if __import__("os").environ.get("CI") == "true":
            pytest.fail(f"the grading sandbox must work in CI: {exc}")
        pytest.skip(str(exc))
    course = gc.make_course(tmp / "course", [ASSIGNMENT])
    canary = course.parent / "canary.txt"
    canary.write_text("untouched")
    listener = _Listener()
    gradebook = course / "grading" / "gradebook.db"
    other = course / "grading" / "submitted" / "correct" / ASSIGNMENT / "01_rnn.ipynb"
    paths = {"targets": [str(gradebook), str(other), str(canary), str(gc.REPO / "solutions" / "owned.txt"),
                         "/etc/passwd", "/input/x.txt", "/work/main/x"],
             "dirs": [str(course / "grading" / "submitted"), str(gc.REPO / "solutions"), str(gc.REPO / ".git"), "/"],
             "port": listener.port}
    cases = build_cases(paths)
    for student, (nb, _, _) in cases.items():
        if isinstance(nb, bytes):
            gc.submit(course, student, ASSIGNMENT, raw=nb)
        else:
            gc.submit(course, student, ASSIGNMENT, nb)
    (course / "grading" / "submitted" / "no_notebook" / ASSIGNMENT).mkdir(parents=True)
    before = {"submitted": gc.tree_digest(course / "grading" / "submitted"),
              "solutions": gc.tree_digest(gc.REPO / "solutions"), "course_solutions": gc.tree_digest(
                  course / "solutions")}
    db_url = f"sqlite:///{gradebook}"
    started = time.monotonic()
    done = gc.make_autograde(course, jobs=2, db_url=db_url, cell_timeout=CELL_TIMEOUT, timeout=SUBMISSION_TIMEOUT,
                             report=tmp / "report.json")
    seconds = time.monotonic() - started
    listener.stop = True
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    after = {"submitted": gc.tree_digest(course / "grading" / "submitted"),
             "solutions": gc.tree_digest(gc.REPO / "solutions"), "course_solutions": gc.tree_digest(
                 course / "solutions")}
    full = sum(gc.points(ASSIGNMENT).values())
    expected = {"full": full, "lost": full - gc.points_of_check(ASSIGNMENT, TARGET), "zero": 0.0}
    return {"course": course, "cases": cases, "export": gc.read_export(course / "grades.csv"),
            "scores": gc.gradebook_scores(db_url), "expected": expected, "before": before, "after": after,
            "listener": listener, "canary": canary, "seconds": seconds, "stdout": done.stdout,
            "sandbox_seconds": dict(json.loads((tmp / "report.json").read_text())["sandbox_seconds"])}


def _feedback(graded, student) -> str:
    nb = nbformat.read(str(graded["course"] / "grading" / "autograded" / student / ASSIGNMENT / "01_rnn.ipynb"),
                       as_version=4)
    return "\n".join(json.dumps(c.get("outputs", [])) for c in nb.cells if c.cell_type == "code")


CASE_NAMES = list(build_cases({"targets": [], "dirs": [], "port": 1}))


@pytest.mark.parametrize("student", CASE_NAMES)
def test_hostile_case_grade_and_reason(graded, student):
    _, expect, words = graded["cases"][student]
    row = graded["export"][(student, ASSIGNMENT)]
    assert float(row["score"]) == pytest.approx(graded["expected"][expect]), (student, row)
    assert float(row["max_score"]) == pytest.approx(graded["expected"]["full"])  # tampered points change nothing
    text = _feedback(graded, student)
    for word in words:
        assert word in text, f"{student}: feedback lacks {word!r}"


def test_every_student_has_a_row_and_the_batch_finished(graded):
    students = set(CASE_NAMES) | {"no_notebook"}
    assert {s for s, _ in graded["export"]} == students
    assert float(graded["export"][("no_notebook", ASSIGNMENT)]["score"]) == 0.0
    assert "not submitted" in _feedback(graded, "no_notebook")
    # bounded: each notebook finished on its own (restarts included) before the per-notebook wall clock
    assert all(s < SUBMISSION_TIMEOUT for s in graded["sandbox_seconds"].values()), graded["sandbox_seconds"]


def test_nothing_outside_the_sandbox_changed(graded):
    assert graded["before"] == graded["after"]
    assert graded["canary"].read_text() == "untouched"
    assert not (gc.REPO / "solutions" / "owned.txt").exists()
    assert graded["listener"].connections == 0
    text = _feedback(graded, "write_outside")
    assert "WROTE" not in text
    # The host's listener counted no connection (above): that is the loopback check. Inside its own network namespace
    # the sandbox has a loopback of its own (the kernel's ZMQ ports live there, and a connect to a free ephemeral port
    # can even meet itself, a TCP self-connect), so a "CONNECTED ('127.0.0.1', ...)" there reached nothing of ours.
    text = _feedback(graded, "network")
    for external in ("('10.0.0.1', 80)", "('1.1.1.1', 443)"):
        assert f"CONNECTED {external}" not in text and f"no network {external}" in text


def test_feedback_never_shows_hidden_tests_or_expected_values(graded):
    from rnnkit.grading.notebooks import _hidden_lines

    _, source = gc.source_notebook(ASSIGNMENT)
    hidden = [line for cell in source.cells for line in _hidden_lines(cell.source)]
    assert hidden, "the assignment has hidden tests"
    pages = list((graded["course"] / "grading" / "feedback").rglob("*.html"))
    assert len(pages) == len(CASE_NAMES) + 1  # every student folder got feedback, even malformed or missing ones
    for page in pages + list((graded["course"] / "grading" / "autograded").rglob("*.ipynb")):
        text = page.read_text()
        for line in hidden:
            assert line not in text, f"{page}: shows hidden test text {line!r}"
    for student in CASE_NAMES:
        nb = nbformat.read(str(graded["course"] / "grading" / "autograded" / student / ASSIGNMENT / "01_rnn.ipynb"),
                           as_version=4)
        for cell in nb.cells:
            md = cell.metadata.get("nbgrader", {})
            if md.get("grade") and not md.get("solution"):
                assert [o["output_type"] for o in cell.outputs] == ["stream"]  # generated verdicts only
                assert cell.outputs[0]["text"].startswith(("PASS", "FAIL"))


def test_output_flood_is_capped(graded):
    path = graded["course"] / "grading" / "autograded" / "print_flood" / ASSIGNMENT / "01_rnn.ipynb"
    assert path.stat().st_size < 1_000_000


def test_formgrader_sees_every_submission_autograded(graded):
    """What the formgrader lists (nbgrader's API over the gradebook and the autograded folder)."""
    from rnnkit.grading.autograde import course_api

    api = course_api(graded["course"], **{"CourseDirectory.db_url":
                                          f"sqlite:///{graded['course'] / 'grading' / 'gradebook.db'}"})
    rows = {s["student"]: s for s in api.get_submissions(ASSIGNMENT)}
    assert set(rows) == set(CASE_NAMES) | {"no_notebook"}
    for student, row in rows.items():
        assert row["autograded"] and not row["needs_manual_grade"], (student, row)
        assert row["score"] == pytest.approx(float(graded["export"][(student, ASSIGNMENT)]["score"]))
