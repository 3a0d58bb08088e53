"""Hostile submissions through the real `make autograde` path.

Every case starts from the notebook a student who solved assignment 01_rnn would submit (built from solutions/),
then breaks or games ONE thing, mostly around `sample_until_eos` (a leaf function: nothing else calls it). All cases
are graded in ONE `make autograde JOBS=2` run (module fixture); each test then asserts the grade a careful human
grader would give, a reason in the student's feedback, that every student has a row in grades.csv, and that nothing
outside the sandbox changed.

The second half: answers that delegate to the library the part asks to re-implement, plainly or evasively (aliases,
helpers, getattr, exec, __import__, importlib, sys.modules, reading the grader's files), across all five
assignments, and correct answers written differently; graded in one more `make autograde JOBS=2` run.
"""
from __future__ import annotations

import json
import socket
import tempfile
import threading
import time
from pathlib import Path

import grading_cases as gc
import nbformat
import pytest

ASSIGNMENT = "01_rnn"
TARGET = "sample_until_eos"  # solution cell grade_id and check name
CELL_TIMEOUT = 10
SUBMISSION_TIMEOUT = 180
WRONG = f"""def {TARGET}(step_fn, h0, start, eos, max_len, temperature, generator):
    return [eos + 1]
"""  # right on no case (a sample ends with eos or has max_len symbols): partial credit gives it nothing

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
             "    pre = torch.matmul(x, w_ih.t()) + torch.matmul(h, w_hh.t())\n"
             "    return (pre + (b_ih + b_hh)).tanh()"),
        _insert_before(nb, TARGET, "def _softmax_with_temperature(logits, t):\n"
                       "    return (logits / t).softmax(dim=-1)"),
        _set(nb, TARGET, f"def {TARGET}(step_fn, h0, start, eos, max_len, temperature, generator):\n"
             "    out, h, s = [], h0, start\n    while len(out) < max_len:\n        logits, h = step_fn(s, h)\n"
             "        s = torch.multinomial(_softmax_with_temperature(logits, temperature), num_samples=1,\n"
             "                              generator=generator).item()\n        out.append(s)\n"
             "        if s == eos:\n            return out\n    return out")))
    case("wrong_values", "lost", [f"FAIL {TARGET}"], lambda nb: _set(nb, TARGET, WRONG))
    case("wrong_shape", "lost", [f"FAIL {TARGET}"], lambda nb: _set(nb, TARGET, WRONG.replace(
        "return [eos + 1]", "return torch.tensor([[eos]])")))
    case("nan", "lost", [f"FAIL {TARGET}"], lambda nb: _set(nb, TARGET, WRONG.replace(
        "return [eos + 1]", "return [float('nan')]")))
    case("loop_top_level", "lost", ["per cell"], lambda nb: _prepend(nb, TARGET, "while True:\n    pass"))
    case("loop_in_function", "lost", ["per cell"], lambda nb: _set(nb, TARGET, WRONG.replace(
        "    return [eos + 1]", "    while True:\n        pass")))
    case("sys_exit", "lost", ["SystemExit"], lambda nb: _prepend(nb, TARGET, "import sys\nsys.exit()"))
    case("os_exit", "lost", ["killed the kernel"], lambda nb: _prepend(nb, TARGET, "import os\nos._exit(0)"))
    case("segfault", "lost", ["kernel died"], lambda nb: _set(nb, TARGET, WRONG.replace(
        "    return [eos + 1]", "    import faulthandler\n    return faulthandler._sigsegv()")))
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
    # code that could change the grading itself fails every check and goes to a person (rnnkit.grading.conduct)
    case("monkeypatch", "zero", [f"FAIL {TARGET}", "assigns to torch.allclose"], lambda nb: (
        _set(nb, TARGET, WRONG), _insert_before(
        nb, f"test_{TARGET}",
        "import builtins, numpy, torch, rnnkit, rnnkit.grading, rnnkit.grading.judge\n"
        "torch.allclose = lambda *a, **k: True\nnumpy.allclose = lambda *a, **k: True\n"
        "torch.Tensor.__eq__ = lambda *a, **k: True\n"
        "rnnkit.grading.judge.compare = lambda *a, **k: (True, 'passed')\n"
        "rnnkit.grading.check = lambda *a, **k: print('passed')\n"
        "builtins.round = lambda *a, **k: 0\nbuiltins.sum = lambda *a, **k: 0\n")))
    case("always_equal", "lost", [f"FAIL {TARGET}"], lambda nb: _set(nb, TARGET, WRONG.replace(
        "    return [eos + 1]", "    class Anything(list):\n        def __eq__(self, other):\n            return True\n"
        "    return Anything([eos])")))
    case("float_subclass", "lost", [f"FAIL {TARGET}"], lambda nb: _set(nb, TARGET, WRONG.replace(
        "    return [eos + 1]", "    class F(float):\n        def __eq__(self, other):\n            return True\n"
        "        __hash__ = float.__hash__\n    return [F(eos)]")))
    case("ast_hook_and_run_cell", "zero", [f"FAIL {TARGET}", "uses get_ipython"], lambda nb: (
        _set(nb, TARGET, WRONG), _insert_before(
        nb, f"test_{TARGET}",
        "import ast\nclass _NoAsserts(ast.NodeTransformer):\n    def visit_Assert(self, node):\n"
        "        return ast.Pass()\nip = get_ipython()\nip.ast_transformers.append(_NoAsserts())\n"
        "_run = ip.run_cell\ndef _quiet(*a, **k):\n    r = _run(*a, **k)\n    r.error_in_exec = None\n    return r\n"
        "ip.run_cell = _quiet\n")))
    case("write_outside", "zero", ["opens a file for writing"], lambda nb: _append(nb, (
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
    gc.need_sandbox()
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
    tampered = {"monkeypatch", "ast_hook_and_run_cell", "write_outside"}   # zero, and a person looks
    for student, row in rows.items():
        assert row["autograded"] and row["needs_manual_grade"] == (student in tampered), (student, row)
        assert row["score"] == pytest.approx(float(graded["export"][(student, ASSIGNMENT)]["score"]))


# ---------------------------------------------------------------------------- the rules: delegations and evasions
# Each student below is a correct notebook of one assignment with some answer cells rewritten: a delegation to the
# library the part asks to re-implement (plainly, through an alias, a helper, getattr, exec ...), or a correct answer
# written differently. Expected: the affected checks score 0 with a line naming the rule, the rest keep their points.
_RNN_CELL_PLAIN = """def rnn_cell_forward(x, h, w_ih, w_hh, b_ih, b_hh):
    return torch.rnn_tanh_cell(x, h, w_ih, w_hh, b_ih, b_hh)
"""
_RNN_CELL_GETATTR = """def rnn_cell_forward(x, h, w_ih, w_hh, b_ih, b_hh):
    step = getattr(torch, "rnn_" + "tanh_cell")
    return step(x, h, w_ih, w_hh, b_ih, b_hh)
"""
_RNN_CELL_LINEAR = """import torch.nn.functional as F


def rnn_cell_forward(x, h, w_ih, w_hh, b_ih, b_hh):
    # not torch.nn.RNNCell, not torch.rnn_tanh_cell: the two affine maps, then tanh
    return torch.tanh(F.linear(x, w_ih, b_ih) + F.linear(h, w_hh, b_hh))
"""
_SEQUENCE_NLL = '''

def sequence_nll(logits, targets, lengths):
    log_probs = next_symbol_log_probs(logits)  # (T, B, V)
    nll = -log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (T, B)
    steps = torch.arange(logits.shape[0], device=logits.device).unsqueeze(1)  # (T, 1)
    valid = steps < lengths.to(logits.device).unsqueeze(0)  # (T, B)
    return torch.where(valid, nll, torch.zeros_like(nll))
'''
_LOG_PROBS_ALIAS = """import torch.nn.functional as F


def next_symbol_log_probs(logits):
    return F.log_softmax(logits, dim=-1)
""" + _SEQUENCE_NLL
_LOG_PROBS_EXEC = """def next_symbol_log_probs(logits):
    scope = {"torch": torch, "logits": logits}
    exec("out = torch.log_" + "softmax(logits, dim=-1)", scope)
    return scope["out"]
""" + _SEQUENCE_NLL
_LOG_PROBS_LOGSUMEXP = """def next_symbol_log_probs(logits):
    shifted = logits - logits.amax(dim=-1, keepdim=True)  # the log-sum-exp trick, by hand
    return shifted - shifted.exp().sum(dim=-1, keepdim=True).log()


def sequence_nll(logits, targets, lengths):
    # written without next_symbol_log_probs: -log p = logsumexp(z) - z_target (torch.logsumexp is allowed here)
    nll = torch.logsumexp(logits, dim=-1) - logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (T, B)
    valid = torch.arange(logits.shape[0]).unsqueeze(1) < lengths.unsqueeze(0)  # (T, B)
    return nll * valid.to(nll.dtype)
"""
_SAMPLE_MENTIONS = '''def sample_until_eos(step_fn, h0, start, eos, max_len, temperature, generator):
    """Not rnnkit.sample_sequence, not torch.distributions.Categorical: the recipe, by hand."""
    banned = "torch.distributions.Categorical and rnnkit.sampling are not used here"
    symbols, h, symbol = [], h0, start
    for _ in range(max_len):
        logits, h = step_fn(symbol, h)  # rnnkit.sample_sequence(...) would do all of this
        probs = torch.softmax(logits / temperature, dim=-1)
        symbol = int(torch.multinomial(probs, 1, generator=generator))
        symbols.append(symbol)
        if symbol == eos:
            break
    return symbols
'''
_BPTT_AUTOGRAD = '''def rnn_bptt(x, h0, w_ih, w_hh, b, grad_out):
    leaves = [v.detach().clone().requires_grad_(True) for v in (x, h0, w_ih, w_hh, b)]
    with torch.enable_grad():
        h, loss = leaves[1], 0.0
        for t in range(x.shape[0]):
            h = torch.tanh(leaves[0][t] @ leaves[2].T + h @ leaves[3].T + leaves[4])
            loss = loss + (h * grad_out[t]).sum()
        grads = torch.autograd.grad(loss, leaves)
    return dict(zip(("x", "h0", "w_ih", "w_hh", "b"), grads))
'''
_BPTT_HELPER = '''def _backward_through(loss, leaves):
    return torch.autograd.grad(loss, leaves)


def rnn_bptt(x, h0, w_ih, w_hh, b, grad_out):
    leaves = [v.detach().clone().requires_grad_(True) for v in (x, h0, w_ih, w_hh, b)]
    with torch.enable_grad():
        h, loss = leaves[1], 0.0
        for t in range(x.shape[0]):
            h = torch.tanh(leaves[0][t] @ leaves[2].T + h @ leaves[3].T + leaves[4])
            loss = loss + (h * grad_out[t]).sum()
        grads = _backward_through(loss, leaves)
    return dict(zip(("x", "h0", "w_ih", "w_hh", "b"), grads))
'''
_BPTT_EINSUM = '''def rnn_bptt(x, h0, w_ih, w_hh, b, grad_out):
    states = [h0]
    for t in range(x.shape[0]):
        pre = torch.einsum("bi,hi->bh", x[t], w_ih) + torch.einsum("bk,hk->bh", states[-1], w_hh) + b
        states.append(torch.tanh(pre))
    grads = {"x": torch.zeros_like(x), "w_ih": torch.zeros_like(w_ih), "w_hh": torch.zeros_like(w_hh),
             "b": torch.zeros_like(b)}
    dh_next = torch.zeros_like(h0)
    for t in reversed(range(x.shape[0])):
        da = (grad_out[t] + dh_next) * (1 - states[t + 1] ** 2)
        grads["x"][t] = torch.einsum("bh,hi->bi", da, w_ih)
        grads["w_ih"] += torch.einsum("bh,bi->hi", da, x[t])
        grads["w_hh"] += torch.einsum("bh,bk->hk", da, states[t])
        grads["b"] += da.sum(0)
        dh_next = torch.einsum("bh,hk->bk", da, w_hh)
    grads["h0"] = dh_next
    return grads
'''
_RELATIVE_ERROR = '''

def relative_error(a, b):
    return float((a - b).norm() / max(float(a.norm() + b.norm()), 1e-12))
'''
_NUMERIC_ALIAS = '''from torch.autograd import grad as _g


def numeric_gradient(f, x, eps=1e-6):
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        return _g(f(x), x)[0]
''' + _RELATIVE_ERROR
_NUMERIC_DUNDER_IMPORT = '''def numeric_gradient(f, x, eps=1e-6):
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        return __import__("torch").autograd.grad(f(x), x)[0]


def relative_error(a, b):
    import numpy
    try:  # the grader's expected values: not there, and reading a file is against the rules anyway
        numpy.load("/solutions/fixtures/relative_error.npz")
    except OSError:
        pass
    return float((a - b).norm() / max(float(a.norm() + b.norm()), 1e-12))
'''
_HIDDEN_NORMS_BACKWARD = '''def hidden_grad_norms(x, h0, w_ih, w_hh, b, grad_out):
    w = w_hh.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        states, h = [], h0
        for t in range(x.shape[0]):
            h = torch.tanh(x[t] @ w_ih.T + h @ w.T + b)
            h.retain_grad()
            states.append(h)
        sum((s * g).sum() for s, g in zip(states, grad_out)).backward()
    return torch.stack([s.grad.norm() for s in states]).detach()
'''
_CLIP_LIBRARY = '''from torch.nn.utils import clip_grad_value_ as _clip_value


def clip_grad_norm(grads, max_norm):
    params = [torch.nn.Parameter(g.clone()) for g in grads]
    for p, g in zip(params, grads):
        p.grad = g.clone()
    torch.nn.utils.clip_grad_norm_(params, max_norm)
    return [p.grad for p in params]


def clip_grad_value(grads, clip_value):
    params = [torch.nn.Parameter(g.clone()) for g in grads]
    for p, g in zip(params, grads):
        p.grad = g.clone()
    _clip_value(params, clip_value)
    return [p.grad for p in params]
'''
_CLIP_SYS_MODULES = '''import sys


def clip_grad_norm(grads, max_norm):
    params = [torch.nn.Parameter(g.clone()) for g in grads]
    for p, g in zip(params, grads):
        p.grad = g.clone()
    sys.modules["torch.nn.utils"].clip_grad_norm_(params, max_norm)
    return [p.grad for p in params]


def clip_grad_value(grads, clip_value):
    # the rule forbids torch.nn.utils.clip_grad_value_: clamp, entry by entry
    return [torch.clamp(g, -clip_value, clip_value) for g in grads]
'''
_LSTM_CELL_MODULE = '''def lstm_cell_forward(x, h, c, w_ih, w_hh, b_ih, b_hh):
    cell = torch.nn.LSTMCell(w_ih.shape[1], w_hh.shape[1], dtype=x.dtype)
    with torch.no_grad():
        for p, v in zip(cell.parameters(), (w_ih, w_hh, b_ih, b_hh)):
            p.copy_(v)
        return cell(x, (h, c))
'''
_LSTM_CELL_ADDCMUL = '''def lstm_cell_forward(x, h, c, w_ih, w_hh, b_ih, b_hh):
    """Written with einsum and addcmul; mentions torch.nn.LSTMCell only here."""
    gates = torch.einsum("...i,gi->...g", x, w_ih) + torch.einsum("...k,gk->...g", h, w_hh) + b_ih + b_hh
    i, f, g, o = gates.chunk(4, dim=-1)
    c_new = torch.addcmul(torch.sigmoid(f) * c, torch.sigmoid(i), torch.tanh(g))
    return torch.sigmoid(o) * torch.tanh(c_new), c_new
'''
_LSTM_FORWARD_RNNKIT = '''import rnnkit.recurrence as _rec


def lstm_forward(x, h0, c0, lengths, w_ih, w_hh, b_ih, b_hh):
    output, (h_n, c_n) = _rec.run_direction("LSTM", x, (h0, c0), w_ih, w_hh, b_ih, b_hh, lengths=lengths)
    return output, h_n, c_n
'''
_LSTM_FORWARD_IMPORTLIB = '''import importlib


def lstm_forward(x, h0, c0, lengths, w_ih, w_hh, b_ih, b_hh):
    rec = importlib.import_module("rnnkit." + "recurrence")
    output, (h_n, c_n) = rec.run_direction("LSTM", x, (h0, c0), w_ih, w_hh, b_ih, b_hh, lengths=lengths)
    return output, h_n, c_n
'''
_LSTM_COUNT_MODULE = '''def lstm_param_count(input_size, hidden_size, num_layers=1, bias=True, bidirectional=False):
    layer = torch.nn.LSTM(input_size, hidden_size, num_layers=num_layers, bias=bias, bidirectional=bidirectional)
    return sum(p.numel() for p in layer.parameters())
'''
_LSTM_COUNT_EVAL = '''def lstm_param_count(input_size, hidden_size, num_layers=1, bias=True, bidirectional=False):
    layer = eval("torch.nn.L" + "STM")(input_size, hidden_size, num_layers=num_layers, bias=bias,
                                       bidirectional=bidirectional)
    return sum(p.numel() for p in layer.parameters())
'''
_RETENTION_VF = '''from torch import _VF as _fast


def forget_bias_retention(w_ih, w_hh, forget_bias, steps):
    n_h, n_in = w_hh.shape[1], w_ih.shape[1]
    b_ih = torch.zeros(4 * n_h, dtype=w_ih.dtype)
    b_ih[n_h:2 * n_h] = forget_bias
    b_hh = torch.zeros_like(b_ih)
    x = torch.zeros(1, n_in, dtype=w_ih.dtype)
    h = torch.zeros(1, n_h, dtype=w_ih.dtype)
    c = c0 = torch.ones(1, n_h, dtype=w_ih.dtype)
    for _ in range(steps):
        h, c = _fast.lstm_cell(x, (h, c), w_ih, w_hh, b_ih, b_hh)
    return float(c.norm() / c0.norm())
'''
_GRU_CELL_ATEN = '''def gru_cell_forward(x, h, w_ih, w_hh, b_ih, b_hh, reset_after=True):
    return torch.gru_cell(x, h, w_ih, w_hh, b_ih, b_hh)
'''
_GRU_CELL_LERP = '''import torch.nn.functional as F


def gru_cell_forward(x, h, w_ih, w_hh, b_ih, b_hh, reset_after=True):
    n_h = h.shape[-1]
    i_r, i_z, i_n = F.linear(x, w_ih, b_ih).split(n_h, dim=-1)
    w_hr, w_hz, w_hn = w_hh.split(n_h, dim=0)
    b_hr, b_hz, b_hn = b_hh.split(n_h)
    r = torch.sigmoid(i_r + F.linear(h, w_hr, b_hr))
    z = torch.sigmoid(i_z + F.linear(h, w_hz, b_hz))
    hidden = r * F.linear(h, w_hn, b_hn) if reset_after else F.linear(r * h, w_hn, b_hn)
    return torch.lerp(torch.tanh(i_n + hidden), h, z)  # (1 - z) * n + z * h
'''
_GRU_FORWARD_ALIAS = '''import rnnkit as rk


def gru_forward(x, h0, lengths, w_ih, w_hh, b_ih, b_hh, reset_after=True):
    layer = rk.GRU(x.shape[-1], h0.shape[-1], dtype=x.dtype)
    with torch.no_grad():
        for p, v in zip(layer.parameters(), (w_ih, w_hh, b_ih, b_hh)):
            p.copy_(v)
        output, h_n = layer(x, h0[None])
    return output, h_n[0]
'''
_GRU_COUNT_MODULE = '''import torch.nn as nn


def gru_param_count(input_size, hidden_size, num_layers=1, bias=True, bidirectional=False):
    return sum(p.numel() for p in nn.GRU(input_size, hidden_size, num_layers=num_layers, bias=bias,
                                         bidirectional=bidirectional).parameters())
'''
_GRU_COUNT_GETATTR = '''def gru_param_count(input_size, hidden_size, num_layers=1, bias=True, bidirectional=False):
    kind = "G" + "RU"
    return sum(p.numel() for p in getattr(torch.nn, kind)(input_size, hidden_size, num_layers=num_layers, bias=bias,
                                                          bidirectional=bidirectional).parameters())
'''
_GRU_FROM_TORCH_CALL = '''def gru_cell_from_torch(cell, x, h):
    return cell(x, h)
'''
_GRU_FROM_TORCH_FORWARD = '''def gru_cell_from_torch(cell, x, h):
    run = cell.forward
    return run(x, h)
'''
_ADDING_ALIAS = '''from rnnkit.data import adding_problem as _adding


def adding_problem(num_samples, seq_len, *, seed=None, generator=None, dtype=torch.float32):
    return _adding(num_samples, seq_len, seed=seed, generator=generator, dtype=dtype)
'''
_ADDING_LAMBDA_TABLE = '''import rnnkit.data

_MAKERS = {"adding": lambda *a, **k: rnnkit.data.adding_problem(*a, **k)}


def adding_problem(num_samples, seq_len, *, seed=None, generator=None, dtype=torch.float32):
    return _MAKERS["adding"](num_samples, seq_len, seed=seed, generator=generator, dtype=dtype)
'''
_COPY_PLAIN = '''def copy_task(num_samples, seq_len, delay, *, num_symbols=8, seed=None, generator=None):
    return rnnkit.data.copy_task(num_samples, seq_len, delay, num_symbols=num_symbols, seed=seed, generator=generator)
'''


def _rule_students() -> dict:
    """student -> (assignment, {answer cell: new source}, {test cell: expected points}, feedback words, test cells
    marked for a manual grade)."""
    return {
        "r01_delegate": ("01_rnn", {"rnn_cell_forward": _RNN_CELL_PLAIN, "log_probs_and_nll": _LOG_PROBS_ALIAS},
                         {"test_rnn_cell_forward": 0, "test_rnn_forward": 0, "test_next_symbol_log_probs": 0,
                          "test_sequence_nll": 0, "test_sample_until_eos": 2},
                         ["calls torch.rnn_tanh_cell", "write the RNN equations yourself", "log_softmax"], set()),
        "r01_evade": ("01_rnn", {"rnn_cell_forward": _RNN_CELL_GETATTR, "log_probs_and_nll": _LOG_PROBS_EXEC,
                                 "sample_until_eos": _SAMPLE_MENTIONS},
                      # dynamic code anywhere in the student's cells could rewrite the grader: every check, by hand
                      {"test_rnn_cell_forward": 0, "test_rnn_forward": 0, "test_next_symbol_log_probs": 0,
                       "test_sequence_nll": 0, "test_sample_until_eos": 0},
                      ["getattr", "exec", "instructor"],
                      {"test_rnn_cell_forward", "test_rnn_forward", "test_next_symbol_log_probs", "test_sequence_nll",
                       "test_sample_until_eos"}),
        "r01_variants": ("01_rnn", {"rnn_cell_forward": _RNN_CELL_LINEAR, "log_probs_and_nll": _LOG_PROBS_LOGSUMEXP},
                         {"test_rnn_cell_forward": 2, "test_rnn_forward": 3, "test_next_symbol_log_probs": 1,
                          "test_sequence_nll": 2, "test_sample_until_eos": 2}, ["PASS rnn_cell_forward"], set()),
        "r02_delegate": ("02_gradients", {"rnn_bptt": _BPTT_AUTOGRAD, "gradcheck": _NUMERIC_ALIAS,
                                          "hidden_grad_norms": _HIDDEN_NORMS_BACKWARD, "clipping": _CLIP_LIBRARY},
                         {"test_rnn_bptt": 0, "test_gradcheck": 1, "test_hidden_grad_norms": 0, "test_clipping": 0,
                          "test_direction": 0.5},
                         ["torch.autograd.grad", "without autograd", "clip_grad_norm_", "clip_grad_value_",
                          "PASS relative_error"], set()),
        "r02_evade": ("02_gradients", {"rnn_bptt": _BPTT_HELPER, "gradcheck": _NUMERIC_DUNDER_IMPORT,
                                       "clipping": _CLIP_SYS_MODULES},
                      {"test_rnn_bptt": 0, "test_gradcheck": 0, "test_hidden_grad_norms": 0, "test_clipping": 0,
                       "test_direction": 0}, ["__import__", "sys.modules", "instructor"],
                      {"test_rnn_bptt", "test_gradcheck", "test_hidden_grad_norms", "test_clipping", "test_direction"}),
        "r02_variants": ("02_gradients", {"rnn_bptt": _BPTT_EINSUM},
                         {"test_rnn_bptt": 3, "test_gradcheck": 2, "test_hidden_grad_norms": 2, "test_clipping": 2,
                          "test_direction": 1}, ["PASS rnn_bptt"], set()),
        "r03_delegate": ("03_lstm", {"lstm_cell_forward": _LSTM_CELL_MODULE, "lstm_forward": _LSTM_FORWARD_RNNKIT,
                                     "lstm_param_count": _LSTM_COUNT_MODULE},
                         {"test_lstm_cell_forward": 0, "test_lstm_forward": 0, "test_lstm_param_count": 0,
                          "test_forget_bias_retention": 0},
                         ["torch.nn.LSTMCell", "write the LSTM equations yourself", "torch.nn.LSTM",
                          "derive the count"], set()),
        "r03_evade": ("03_lstm", {"lstm_cell_forward": _LSTM_CELL_ADDCMUL, "lstm_forward": _LSTM_FORWARD_IMPORTLIB,
                                  "lstm_param_count": _LSTM_COUNT_EVAL, "forget_bias_retention": _RETENTION_VF},
                      {"test_lstm_cell_forward": 0, "test_lstm_forward": 0, "test_lstm_param_count": 0,
                       "test_forget_bias_retention": 0}, ["importlib", "eval", "instructor"],
                      {"test_lstm_cell_forward", "test_lstm_forward", "test_lstm_param_count",
                       "test_forget_bias_retention"}),
        "r04_delegate": ("04_gru", {"gru_cell_forward": _GRU_CELL_ATEN, "gru_param_count": _GRU_COUNT_MODULE,
                                    "gru_cell_from_torch": _GRU_FROM_TORCH_CALL},
                         {"test_gru_cell_reset_after": 0, "test_gru_cell_reset_before": 0, "test_gru_forward": 0,
                          "test_gru_param_count": 0, "test_gru_cell_from_torch": 0},
                         ["torch.gru_cell", "torch.nn.GRU", "cell"], set()),
        "r04_evade": ("04_gru", {"gru_cell_forward": _GRU_CELL_LERP, "gru_forward": _GRU_FORWARD_ALIAS,
                                 "gru_param_count": _GRU_COUNT_GETATTR, "gru_cell_from_torch": _GRU_FROM_TORCH_FORWARD},
                      {"test_gru_cell_reset_after": 0, "test_gru_cell_reset_before": 0, "test_gru_forward": 0,
                       "test_gru_param_count": 0, "test_gru_cell_from_torch": 0}, ["getattr", "instructor"],
                      {"test_gru_cell_reset_after", "test_gru_cell_reset_before", "test_gru_forward",
                       "test_gru_param_count", "test_gru_cell_from_torch"}),
        "r05_delegate": ("05_long_range", {"adding_problem": _ADDING_ALIAS, "copy_task": _COPY_PLAIN},
                         {"test_adding_problem": 0, "test_copy_task": 0, "test_gated_model": 4},
                         ["rnnkit.data.adding_problem", "write the generator yourself"], set()),
        "r05_evade": ("05_long_range", {"adding_problem": _ADDING_LAMBDA_TABLE},
                      {"test_adding_problem": 0, "test_copy_task": 3, "test_gated_model": 4},
                      ["rnnkit.data.adding_problem", "PASS copy_task"], set()),
    }


RULE_STUDENTS = _rule_students()


@pytest.fixture(scope="module")
def graded_rules():
    with tempfile.TemporaryDirectory(prefix="rnnkit-rules-") as tmp:
        gc.need_sandbox()
        course = gc.make_course(Path(tmp) / "course", sorted({a for a, *_ in RULE_STUDENTS.values()}))
        for student, (assignment, edits, *_) in RULE_STUDENTS.items():
            nb = gc.correct_notebook(assignment)
            for grade_id, source in edits.items():
                _set(nb, grade_id, source)
            gc.submit(course, student, assignment, nb)
        db_url = f"sqlite:///{course / 'grading' / 'gradebook.db'}"
        done = gc.make_autograde(course, jobs=2, db_url=db_url, cell_timeout=60, timeout=SUBMISSION_TIMEOUT)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        from nbgrader.api import Gradebook

        with Gradebook(db_url, "rnnkit") as gb:
            manual = {(sub.student.id, grade.name) for a in gb.assignments for sub in gb.assignment_submissions(a.name)
                      for nb in sub.notebooks for grade in nb.grades if grade.needs_manual_grade}
        feedback = {}
        for student, (assignment, *_) in RULE_STUDENTS.items():
            name = gc.source_notebook(assignment)[0]
            nb = nbformat.read(str(course / "grading" / "autograded" / student / assignment / f"{name}.ipynb"),
                               as_version=4)
            feedback[student] = {c.metadata.get("nbgrader", {}).get("grade_id"): "".join(
                o.get("text", "") for o in c.outputs) for c in nb.cells if c.cell_type == "code"}
        yield {"scores": gc.gradebook_scores(db_url), "manual": manual, "feedback": feedback,
               "pages": list((course / "grading" / "feedback").rglob("*.html"))}


@pytest.mark.parametrize("student", list(RULE_STUDENTS))
def test_delegations_score_zero_on_their_check_and_correct_variants_keep_their_points(graded_rules, student):
    assignment, _, expected, words, manual = RULE_STUDENTS[student]
    got = {gid: graded_rules["scores"][(student, assignment, gid)] for gid in expected}
    assert got == pytest.approx(expected), {gid: graded_rules["feedback"][student][gid] for gid in expected
                                            if got[gid] != pytest.approx(expected[gid])}
    text = "\n".join(graded_rules["feedback"][student][gid] for gid in expected)
    for word in words:
        assert word in text, f"{student}: feedback lacks {word!r}"
    for gid in expected:  # a check failed by the rules says which rule: the line names the function and the why
        if expected[gid] < gc.points(assignment)[gid]:
            said = graded_rules["feedback"][student][gid]
            assert "breaks the rules of this part" in said or " calls " in said or "could change the grading" in said, \
                said
    flagged = {gid for s, gid in graded_rules["manual"] if s == student}
    assert flagged == manual, f"{student}: cells marked for a manual grade {flagged}, expected {manual}"
