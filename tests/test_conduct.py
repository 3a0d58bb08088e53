"""The whole-notebook tamper scan (:func:`rnnkit.grading.conduct.tampering`): the student's own code that could
change the grading rather than compute an answer fails every check and goes to a person."""
from __future__ import annotations

import json

import grading_cases as gc
import nbformat
import pytest

from rnnkit.grading import conduct, notebooks

# the course's own cell, as the test cells and the setup cells of every notebook have them: never scanned
GIVEN = "import numpy as np\nimport torch\nfrom rnnkit import grading\nimport rnnkit\n"


def _scan(code: str, given: str = GIVEN):
    """Findings of ``code`` as the student's cell 1, after the course's cell 0."""
    return conduct.tampering([given, code], [1])


# (student code, a word the finding must contain); every one must be found
FLAGGED = [
    ("import rnnkit.grading.check as c\ndef f(*a):\n    pass\nc.check = f", "rnnkit.grading.check.check"),
    ("from rnnkit.grading import export as e\ne.save = lambda d, p: None", "rnnkit.grading.export.save"),
    ("from rnnkit.grading import export\nsetattr(export, 'collect', print)", "setattr on rnnkit.grading.export"),
    ("grading.check = lambda name, obj: None", "rnnkit.grading.check"),   # the name the course's cell binds
    ("def later():\n    rnnkit.grading.export.save = print\n", "rnnkit.grading.export.save"),  # never called
    ("with open(p, 'wb') as fh:\n    fh.write(b'')", "opens a file for writing"),
    ("fh = open(p, mode='a')", "opens a file for writing"),
    ("fh = open(p, m)", "computed mode"),
    ("np.savez(p, x=1)", "numpy.savez"),
    ("import torch as T\nT.save(x, p)", "torch.save"),
    ("from pathlib import Path\nPath(p).write_bytes(b'')", "write_bytes"),
    ("from pathlib import Path\nfh = Path(p).open('wb')", "opens a file for writing"),
    ("import shutil\nshutil.copy(a, b)", "shutil"),
    ("import os\nos.replace(a, b)", "os.replace"),
    ("import os\nd = os.environ['RNNKIT_GRADING_EXPORT']", "os.environ"),
    ("import os\nd = os.getenv('X')", "os.getenv"),
    ("key = 'RNNKIT_GRADING_EXPORT'", "RNNKIT_GRADING_EXPORT"),
    ("torch.lstm_cell = my_cell", "assigns to torch.lstm_cell"),
    ("import rnnkit.cells as rc\nrc.lstm_cell = mine", "assigns to rnnkit.cells.lstm_cell"),
    ("del torch.tanh", "deletes torch.tanh"),
    ("import sys\nm = sys.modules['rnnkit.grading.check']", "sys.modules"),
    ("import gc\nobjs = gc.get_objects()", "gc.get_objects"),
    ("import sys\nf = sys._getframe(1)", "sys._getframe"),
    ("import inspect\nf = inspect.currentframe().f_back", "inspect.currentframe"),
    ("def g():\n    return g.__globals__", "__globals__"),
    ("import ctypes", "ctypes"),
    ("import builtins\nbuiltins.print = len", "assigns to builtins.print"),
    ("__builtins__.len = max", "__builtins__"),
    ("exec('import rnnkit.grad' + 'ing')", "exec"),
    ("m = __import__('rnnkit')", "__import__"),
    ("import importlib\nm = importlib.import_module(name)", "importlib"),
    ("globals()['grading'] = fake", "globals"),
    ("!cp forged.npz /tmp/x/", "shell command"),
    ("%%writefile forged.py\nprint(1)", "%%writefile"),
    ("%time rnnkit.grading.check.check = f", "rnnkit.grading.check.check"),
    ("x = np.zeros(3)\nx.tofile(p)", "writes a file"),
    ("import rnnkit\ng = getattr(rnnkit, 'grading')\ng.check = f", "assigns to rnnkit.grading.check"),
    ("import rnnkit.cells\nobject.__setattr__(rnnkit.cells, 'lstm_cell', f)", "__setattr__"),
    ("import functools, rnnkit.cells\npatch = functools.partial(setattr, rnnkit.cells)", "passes setattr on"),
    ("def g():\n    pass\ng.__globals__.update(grading=None)", "__globals__"),
    ("torch.nn.functional.__dict__['tanh'] = f", "__dict__"),
    ("import pickle\nx = pickle.loads(blob)", "pickle"),
    ("import io\nx = np.load(io.BytesIO(blob), allow_pickle=True)", "unpickles data"),
]


@pytest.mark.parametrize("code,word", FLAGGED, ids=[c.splitlines()[-1][:40] for c, _ in FLAGGED])
def test_tampering_is_found(code, word):
    found = _scan(code)
    assert found, f"nothing found in {code!r}"
    assert any(word in f.message for f in found), [f.message for f in found]
    assert all(f.kind == "tamper" and f.cell == 1 for f in found)
    assert all(f.message.startswith(f"cell 2, line {f.line}: ") and "by hand" in f.message for f in found)


CLEAN = [
    "# rnnkit.grading.check could be patched here, but is not\nx = 1",   # a comment
    "note = 'do not touch rnnkit.grading or os.environ'",                  # a string
    "def f(environ):\n    environ['x'] = 1\n    return environ\nenviron = {}\nenviron['y'] = 2",  # a local dict
    "import matplotlib.pyplot as plt\nfig, ax = plt.subplots()\nax.plot([1, 2])\nax.set_xlabel('t (steps)')\n"
    "plt.rcParams['figure.dpi'] = 100\nplt.show()",
    "torch.backends.cudnn.deterministic = True",
    "class Cell(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n        self.w = 1\n"
    "cell = Cell()\ncell.w = 2\nlayer = torch.nn.Linear(2, 3)\nlayer.weight = None",
    "def step(params):\n    for p in params:\n        p.grad = None\n    return params",
    "%matplotlib inline\nimport numpy as np\nx = np.load",                  # reading is the static check's business
    "!ls\n!pip list\n%time y = torch.zeros(3).sum()",
    "s = 'a-b'.replace('-', '+')\nt = '{}'.format(s)",
    "text = open('notes.txt').read()\nwith open(p, 'rb') as fh:\n    data = fh.read()",   # reading: the static check's
    "fig = plt.figure()\nfig.savefig('loss.png')",                                      # a figure is no export
    # the student's own objects
    "class Box:\n    def __init__(self):\n        self.__dict__['x'] = 1\nbox = Box()\nsetattr(box, 'y', 2)",
]


@pytest.mark.parametrize("code", CLEAN, ids=range(len(CLEAN)))
def test_ordinary_code_is_not_tampering(code):
    assert _scan(code) == []


def test_given_cells_are_not_scanned():
    """A read-only ``open`` or ``grading.check`` in the course's own cells is the course's, not the student's."""
    given = GIVEN + "data = open('corpus.txt').read()\ngrading.check('x', f)\nimport os\nos.environ\n"
    assert _scan("y = 2", given=given) == []
    assert conduct.tampering([given, "y = 2"], [0, 1])   # the same code as the student's is found


@pytest.mark.parametrize("assignment", gc.assignments())
def test_correct_solutions_have_no_finding(assignment):
    """Every solution in solutions/ (its answer cells, read with every cell of the notebook as context)."""
    for path in sorted((gc.REPO / "solutions" / assignment).glob("*.ipynb")):
        nb = nbformat.read(str(path), as_version=4)
        student = conduct.student_cells(nb)
        assert student and all(nb.cells[i].metadata["nbgrader"].get("solution") for i in student), path
        assert conduct.tampering(conduct.notebook_code(nb), student) == [], path


def test_student_cells_are_answers_and_added_cells_only():
    src = _source("01_rnn")
    nb = gc.correct_notebook("01_rnn")
    nb.cells.insert(3, nbformat.v4.new_code_cell("import rnnkit.grading"))
    executed = notebooks.prepare(src, json.loads(nbformat.writes(nb))["cells"])
    student = conduct.student_cells(executed)
    assert 3 in student
    md = [executed.cells[i].metadata.get("nbgrader", {}) for i in student]
    assert all(m.get("solution") or not m.get("grade_id") for m in md)
    assert [f.cell for f in conduct.tampering(conduct.notebook_code(executed), student)] == [3]


def _source(assignment: str) -> notebooks.SourceNotebook:
    name = gc.source_notebook(assignment)[0]
    return notebooks.load_source(str(gc.REPO / "solutions" / assignment / f"{name}.ipynb"),
                                 str(gc.REPO / "exercises" / assignment / f"{name}.ipynb"))


FORGE = """\
import numpy as np
import rnnkit
import rnnkit.grading.check as _c
from rnnkit.grading import export as _e, specs as _s

def _forged(name, obj):     # what a hidden test's check would export, computed with the reference
    spec = _s.get(name)
    np.savez(_e.os.path.join(_e.os.environ["RNNKIT_GRADING_EXPORT"], name + ".npz"),
             **_e.collect(spec, spec.reference, guarded=False))

_c.check = _forged
"""


def test_a_forged_export_scores_zero_and_goes_to_a_person():
    """A top-level cell that monkeypatches ``check`` to export the reference's results: the exports the sandbox
    sends back are perfect (stubbed here with the reference's clean exports), yet every check scores 0 with the
    tamper message and every graded cell is marked for a manual grade."""
    from test_grading_submissions import _good_records

    from rnnkit.grading import autograde, sandbox

    src = _source("01_rnn")
    nb = gc.correct_notebook("01_rnn")
    nb.cells.insert(1, nbformat.v4.new_code_cell(FORGE))
    prepared = notebooks.prepare(src, json.loads(nbformat.writes(nb))["cells"])
    job = autograde.Job("ann", "01_rnn", "01_rnn", src, gc.REPO)
    result = sandbox.Result(records=_good_records(job, prepared))

    graded = autograde.judge_notebook(job, prepared, result, None, sandbox.Limits())
    assert set(graded.scores) == {c.grade_id for c in src.graded}
    assert all(score == 0 for score in graded.scores.values())
    assert graded.manual == {c.grade_id for c in src.graded}
    for text in graded.messages.values():
        assert "code in your notebook could change the grading" in text
        assert "cell 2, line 11: assigns to rnnkit.grading.check.check" in text
        assert "your instructor will look at this notebook by hand" in text
        assert "PASS" not in text

    clean = notebooks.prepare(src, json.loads(nbformat.writes(gc.correct_notebook("01_rnn")))["cells"])
    honest = autograde.judge_notebook(job, clean, sandbox.Result(records=_good_records(job, clean)), None,
                                      sandbox.Limits())
    assert honest.scores == gc.points("01_rnn") and not honest.manual   # the same exports, honestly made


@pytest.mark.parametrize("name", sorted(p.name for p in (gc.REPO / "solutions").iterdir()
                                        if (p / f"{p.name}.ipynb").exists()))
def test_no_solution_breaks_a_rule(name):
    """The rule check of every graded check (not only the tamper scan) finds nothing in the course's own solutions:
    a model the notebook hands out, or the data its setup cell loads, is not the student's delegation."""
    src = notebooks.load_source(str(gc.REPO / "solutions" / name / f"{name}.ipynb"),
                                str(gc.REPO / "exercises" / name / f"{name}.ipynb"))
    nb = nbformat.read(gc.REPO / "solutions" / name / f"{name}.ipynb", as_version=4)
    found = {check: [f.message for f in fs] for check, fs in conduct.findings(src, nb).items() if fs}
    assert found == {}, found
