"""Submissions a real class produces that are not hostile, only untidy: notebooks whose cell metadata was lost,
notebooks saved under another file name, a kernel that fails to start. Each must get the grade a human grader would
give. These tests rebuild and judge notebooks in this process (no sandbox); test_hostile.py runs the sandboxed path."""
from __future__ import annotations

import copy
import json

import nbformat
import pytest

import grading_cases as gc
from rnnkit.grading import notebooks


def _source(assignment: str) -> notebooks.SourceNotebook:
    name = gc.source_notebook(assignment)[0]
    return notebooks.load_source(str(gc.REPO / "solutions" / assignment / f"{name}.ipynb"),
                                 str(gc.REPO / "exercises" / assignment / f"{name}.ipynb"))


def _cells(nb) -> list[dict]:
    return json.loads(nbformat.writes(nb))["cells"]


def _layout(nb) -> list[tuple]:
    return [(c.cell_type, c.metadata.get("nbgrader", {}).get("grade_id"), c.source) for c in nb.cells]


def _strip_metadata(nb):
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        cell.metadata = {}
    return nb


@pytest.mark.parametrize("assignment", gc.assignments())
def test_a_notebook_whose_cell_metadata_was_lost_runs_like_the_intact_one(assignment):
    """An editor that drops cell metadata (or answers pasted into a fresh notebook) must not move every test cell
    above the answers (all NameError, 0 points): answers are found by the names they define, locked and test cells
    by their released text."""
    src = _source(assignment)
    intact = notebooks.prepare(src, _cells(gc.correct_notebook(assignment)))
    stripped = notebooks.prepare(src, _cells(_strip_metadata(gc.correct_notebook(assignment))))
    assert _layout(stripped) == _layout(intact)


def test_lost_metadata_with_a_split_answer_and_a_deleted_test_cell():
    src = _source("01_rnn")
    nb = gc.correct_notebook("01_rnn")
    both = gc.find(nb, "log_probs_and_nll")
    first, second = both.source.split("\n\n\ndef sequence_nll")
    both.source = first
    nb.cells.insert(nb.cells.index(both) + 1, nbformat.v4.new_code_cell("def sequence_nll" + second))
    nb.cells.remove(gc.find(nb, "test_rnn_forward"))
    out = notebooks.prepare(src, _cells(_strip_metadata(nb)))
    ids = [gid for _, gid, _ in _layout(out)]
    defines = [notebooks.defined_names(c.source) for c in out.cells]
    assert ids.index("test_rnn_forward") == ids.index("rnn_forward") + 1
    assert ids.index("test_sequence_nll") > max(k for k, names in enumerate(defines) if "sequence_nll" in names)
    assert ids.count("test_rnn_forward") == 1 and ids.count("setup") == 1


def test_cells_with_metadata_win_over_look_alikes_without():
    """A scratch cell (no metadata) that redefines an answer must not take the answer's place."""
    src = _source("01_rnn")
    nb = gc.correct_notebook("01_rnn")
    scratch = nbformat.v4.new_code_cell("def rnn_cell_forward(*args):\n    return None  # trying something")
    nb.cells.insert(1, scratch)
    out = notebooks.prepare(src, _cells(nb))
    assert _layout(out)[1] == ("code", None, scratch.source)
    assert gc.find(out, "rnn_cell_forward").source == gc.find(nb, "rnn_cell_forward").source
