"""Submissions a real class produces that are not hostile, only untidy: notebooks whose cell metadata was lost,
notebooks saved under another file name, a kernel that fails to start. Each must get the grade a human grader would
give. These tests rebuild and judge notebooks in this process (no sandbox); test_hostile.py runs the sandboxed path."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import grading_cases as gc
import nbformat
import pytest

from rnnkit.grading import notebooks, submissions


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


# ------------------------------------------------------------------ which file is graded

def _touch(folder, *names):
    for name in names:
        (folder / name).write_text("{}")


@pytest.mark.parametrize("files, graded", [
    (["01_rnn.ipynb", "01_rnn-Copy1.ipynb"], "01_rnn.ipynb"),  # the expected name always wins
    (["01_rnn (1).ipynb"], "01_rnn (1).ipynb"),  # a browser download's name
    (["Untitled.ipynb", "notes.txt"], "Untitled.ipynb"),  # the only notebook handed in
    (["01_RNN-final.ipynb", "Untitled.ipynb"], "01_RNN-final.ipynb"),  # the only one named like the assignment
])
def test_a_renamed_notebook_is_graded_with_a_note(tmp_path, files, graded):
    _touch(tmp_path, *files)
    path, note = submissions.locate(tmp_path, "01_rnn")
    assert path == tmp_path / graded
    assert (note is None) == (graded == "01_rnn.ipynb")
    if note:
        assert "01_rnn.ipynb` was not in your submission" in note and graded in note


def test_no_clear_notebook_to_grade_lists_what_was_there(tmp_path):
    _touch(tmp_path, "a.ipynb", "b<img src=x onerror=alert(1)>.ipynb", "c.ipynb")
    (tmp_path / ".ipynb_checkpoints").mkdir()
    _touch(tmp_path / ".ipynb_checkpoints", "01_rnn-checkpoint.ipynb")
    path, why = submissions.locate(tmp_path, "01_rnn")
    assert path is None and "not submitted" in why and "a.ipynb" in why and "c.ipynb" in why
    assert "<" not in why and ">" not in why  # the student's file names are shown, never as markup
    assert submissions.locate(tmp_path / "empty", "01_rnn") == (None, None)
    (tmp_path / "02_gradients.ipynb").symlink_to(tmp_path / "a.ipynb")
    assert submissions.locate(tmp_path, "01_rnn", siblings=("a", "c"))[0] is not None  # a sibling is never taken


# ------------------------------------------------------------------ judged in the trusted parent

def _job(tmp_path, nb=None, name="01_rnn.ipynb"):
    """A job for student ann's 01_rnn, whose folder holds ``nb`` (the correct notebook unless given) as ``name``."""
    from rnnkit.grading import autograde

    folder = tmp_path / "submitted" / "ann" / "01_rnn"
    folder.mkdir(parents=True)
    nbformat.write(nb or gc.correct_notebook("01_rnn"), str(folder / name))
    return autograde.Job("ann", "01_rnn", "01_rnn", _source("01_rnn"), folder)


def _run_job(job, tmp_path, fake_run, monkeypatch):
    from rnnkit.grading import autograde, sandbox

    monkeypatch.setattr(autograde.sandbox, "run", fake_run)
    slots = __import__("queue").Queue()
    slots.put(0)
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    return autograde.run_job(job, sandbox.Limits(), slots, work)


def _good_records(job, prepared) -> dict:
    """What the sandbox streams back for a notebook whose every check passed (exports of the references)."""
    import io

    import numpy as np

    records = {"done.json": b"{}"}
    for index, cell in enumerate(prepared.cells):
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        for graded in job.source.graded:
            if graded.grade_id == gid:
                records[f"cell/{index}.json"] = json.dumps({"status": "ok", "outputs": []}).encode()
                for name in graded.checks:
                    buffer = io.BytesIO()
                    np.savez(buffer, **gc.clean_export(name))
                    records[f"export/{index}/{name}.npz"] = buffer.getvalue()
    return records


def test_a_kernel_that_never_started_is_retried_not_scored_zero(tmp_path, monkeypatch):
    """A kernel that fails to start ran none of the student's code: that is the grader's failure. Observed once
    in a batch of four here (every check 'this cell did not run', 0 points); the run is retried."""
    from rnnkit.grading import sandbox

    job = _job(tmp_path)
    prepared = notebooks.prepare(job.source, _cells(gc.correct_notebook("01_rnn")))
    failed = sandbox.Result(records={"kernel-error.json": b'{"error": "RuntimeError", "message": "Kernel died '
                                                          b'before replying to kernel_info"}', "done.json": b"{}"})
    runs = []

    def flaky(*args, **kwargs):
        runs.append(args)
        return failed if len(runs) == 1 else sandbox.Result(records=_good_records(job, prepared))

    graded = _run_job(job, tmp_path, flaky, monkeypatch)
    assert len(runs) == 2
    assert graded.scores == gc.points("01_rnn")

    graded = _run_job(job, tmp_path, lambda *a, **k: failed, monkeypatch)  # never starts: say so, to both
    assert sum(graded.scores.values()) == 0
    assert all("could not start a Python kernel" in m for m in graded.messages.values())
    assert "grade it again" in graded.log and "RuntimeError: Kernel died before replying" in graded.log


def test_another_assignments_notebook_under_another_name_is_graded_with_notes(tmp_path, monkeypatch):
    from rnnkit.grading import sandbox

    job = _job(tmp_path, gc.correct_notebook("02_gradients"), name="02_gradients.ipynb")
    graded = _run_job(job, tmp_path, lambda *a, **k: sandbox.Result(records={"done.json": b"{}"}), monkeypatch)
    first = graded.autograded_nb.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("**Grader's note:**")
    assert "so `02_gradients.ipynb` was graded in its place" in first.source
    assert "none of this assignment's answer cells were found" in first.source
    assert graded.log and "02_gradients.ipynb" in graded.log


# IPython 9's traceback of a visible test that calls an earlier part's unimplemented function (recorded from a kernel)
_TRACEBACK = [
    "\x1b[31m---------------------------------------------------------------------------\x1b[39m",
    "\x1b[31mNotImplementedError\x1b[39m                       Traceback (most recent call last)",
    "\x1b[36mCell\x1b[39m\x1b[36m \x1b[39m\x1b[32mIn[2]\x1b[39m\x1b[32m, line 2\x1b[39m\n\x1b[32m      1\x1b[39m _a = "
    "\x1b[32m1\x1b[39m\n\x1b[32m----> \x1b[39m\x1b[32m2\x1b[39m print(rnn_bptt(_a))\n",
    "\x1b[36mCell\x1b[39m\x1b[36m \x1b[39m\x1b[32mIn[1]\x1b[39m\x1b[32m, line 2\x1b[39m, in \x1b[36mrnn_bptt\x1b[39m"
    "\x1b[34m(x)\x1b[39m\n\x1b[32m      1\x1b[39m \x1b[38;5;28;01mdef\x1b[39;00m rnn_bptt(x):\n\x1b[32m----> "
    "\x1b[39m\x1b[32m2\x1b[39m     \x1b[38;5;28;01mraise\x1b[39;00m NotImplementedError()\n",
    "\x1b[31mNotImplementedError\x1b[39m: ",
]


def test_an_error_from_another_parts_function_is_named():
    """02_gradients' numeric_gradient test prints with rnn_bptt (Part 1): a student who skipped Part 1 sees their
    Part 2 check stop with NotImplementedError, and must be told it came from rnn_bptt, not numeric_gradient."""
    from rnnkit.grading import reasons, sandbox

    status = {"status": "error", "ename": "NotImplementedError",
              "outputs": [{"output_type": "error", "ename": "NotImplementedError", "traceback": _TRACEBACK}]}
    text = reasons.reason(status, sandbox.Result(), sandbox.Limits(), {"rnn_bptt", "numeric_gradient"})
    assert "stopped with NotImplementedError (raised in your rnn_bptt) before" in text
    assert "raised in" not in reasons.reason(status, sandbox.Result(), sandbox.Limits(), {"numeric_gradient"})
    forged = {**status, "outputs": [{"output_type": "error", "traceback": ["line 1, in <b>x</b>(", 7, None]}]}
    assert "raised in" not in reasons.reason(forged, sandbox.Result(), sandbox.Limits(), {"x"})


def test_an_unzipped_upload_is_graded_from_its_sub_folder(tmp_path):
    (tmp_path / "__MACOSX" / "01_rnn").mkdir(parents=True)
    _touch(tmp_path / "__MACOSX" / "01_rnn", "01_rnn.ipynb")  # zip tools' resource forks: never graded
    (tmp_path / "hw1" / "01_rnn").mkdir(parents=True)
    _touch(tmp_path / "hw1" / "01_rnn", "01_rnn.ipynb", "notes.md")
    path, note = submissions.locate(tmp_path, "01_rnn")
    assert path == tmp_path / "hw1" / "01_rnn" / "01_rnn.ipynb" and "hw1/01_rnn/01_rnn.ipynb" in note
    (tmp_path / "copy").mkdir()
    _touch(tmp_path / "copy", "01_rnn.ipynb")  # two of them: no guess
    assert submissions.locate(tmp_path, "01_rnn") == (None, None)


@pytest.mark.parametrize("raw, words", [
    (b"", "is empty (0 bytes)"),
    (b"\n", "is empty (0 bytes)"),
    (b"x" * (notebooks.MAX_WITH_OUTPUTS_BYTES + 1), "clear them"),
    (b"[" * (notebooks.MAX_NOTEBOOK_BYTES + 1), "not valid JSON"),
])
def test_unreadable_notebooks_say_what_to_do(tmp_path, raw, words):
    (tmp_path / "n.ipynb").write_bytes(raw)
    cells, why = notebooks.read_submission(str(tmp_path / "n.ipynb"))
    assert cells is None and words in why


def test_a_byte_order_mark_is_not_an_error(tmp_path):
    (tmp_path / "n.ipynb").write_bytes(b"\xef\xbb\xbf" + nbformat.writes(gc.correct_notebook("01_rnn")).encode())
    cells, why = notebooks.read_submission(str(tmp_path / "n.ipynb"))
    assert why is None and len(cells) == len(gc.correct_notebook("01_rnn").cells)


def test_a_garbage_timestamp_in_one_submission_does_not_stop_the_batch(tmp_path, monkeypatch, capsys):
    """timestamp.txt comes with the submission folder; a hand-copied one may hold anything. nbgrader's reader raised
    on it and the whole `make autograde` stopped: no grades.csv, every later student ungraded."""
    from rnnkit.grading import autograde, sandbox

    course = gc.make_course(tmp_path / "course", ["01_rnn"])
    folder = gc.submit(course, "aa", "01_rnn", gc.correct_notebook("01_rnn"))
    (folder / "timestamp.txt").write_text("last Tuesday, around noon")
    gc.submit(course, "zz", "01_rnn", gc.correct_notebook("01_rnn"))
    loose = course / "grading" / "submitted" / "mm" / "01_RNN"  # and a loosely named assignment folder
    loose.mkdir(parents=True)
    nbformat.write(gc.correct_notebook("01_rnn"), str(loose / "01_rnn.ipynb"))
    macos = course / "grading" / "submitted" / "__MACOSX" / "01_rnn"  # an unzipped bulk download: no student
    macos.mkdir(parents=True)
    (macos / "._01_rnn.ipynb").write_bytes(b"\x00\x05\x16\x07")
    monkeypatch.setattr(autograde.sandbox, "check_available", lambda: None)  # judged here, not executed
    monkeypatch.setattr(autograde.sandbox, "run", lambda *a, **k: sandbox.Result(records={"done.json": b"{}"}))
    autograde.autograde(course, db_url=f"sqlite:///{course}/grading/gradebook.db", export_to="grades.csv",
                        feedback=False, progress=False)
    assert set(gc.read_export(course / "grades.csv")) == {("aa", "01_rnn"), ("mm", "01_rnn"), ("zz", "01_rnn")}
    for student in ("aa", "mm", "zz"):
        assert (course / "grading" / "autograded" / student / "01_rnn" / "01_rnn.ipynb").exists()
    loose_nb = nbformat.read(str(course / "grading" / "autograded" / "mm" / "01_rnn" / "01_rnn.ipynb"), as_version=4)
    assert "your folder `01_RNN` was graded as assignment 01_rnn" in loose_nb.cells[0].source
    assert "aa/01_rnn: timestamp.txt is not a date, the notebook's file time is used" in capsys.readouterr().err


def test_a_float32_output_for_float64_inputs_is_named_once():
    """A layer that fills torch.zeros(T, B, H) (float32 by default) passes float32 cases and fails float64 ones;
    the message names the leaf plainly (it read 'output output has dtype ...')."""
    import torch

    from rnnkit.grading import export, judge, specs

    def rnn_forward(x, h0, lengths, w_ih, w_hh, b_ih, b_hh):
        out, h = torch.zeros(x.shape[0], x.shape[1], h0.shape[1]), h0
        for t in range(x.shape[0]):
            new, alive = torch.tanh(x[t] @ w_ih.T + b_ih + h @ w_hh.T + b_hh), (t < lengths).unsqueeze(1)
            h, out[t] = torch.where(alive, new, h), torch.where(alive, new, torch.zeros_like(new))
        return out, h

    verdict = judge.compare("rnn_forward", export.collect(specs.get("rnn_forward"), rnn_forward))
    assert not verdict.passed and "float64" in verdict.message
    assert "the output has dtype torch.float32, expected torch.float64" in verdict.message
    assert "output output" not in verdict.message


@pytest.mark.parametrize("name", ["next_symbol_log_probs", "adding_gated_beats_baseline"])
def test_cases_do_not_follow_the_kernels_default_dtype(name):
    """torch.set_default_dtype(torch.float64) earlier in a notebook (common for gradient checks) changed the inputs
    of specs that build a tensor without a dtype: a correct answer then failed ('has dtype torch.float64, expected
    torch.float32'; a trained model scored on different test inputs than its targets)."""
    import torch

    from rnnkit.grading import judge, specs

    def exact_model(x):  # knows the adding task: follows its input like a trained float64 model would
        return (x[..., 0] * x[..., 1]).sum(1)

    spec = specs.get(name)
    answer = exact_model if name == "adding_gated_beats_baseline" else spec.reference
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        exported = gc.clean_export(name, answer)  # the reference may call rnnkit: run unguarded
        assert torch.get_default_dtype() == torch.float64  # the kernel's setting is left as it was
    finally:
        torch.set_default_dtype(default)
    verdict = judge.compare(name, exported)
    assert verdict.passed, verdict.message


@pytest.mark.slow
def test_untidy_but_complete_submissions_get_full_marks_through_make_autograde(tmp_path):
    """The real path (sandbox, gradebook, feedback) for the three untidy submissions above: each is complete."""
    from rnnkit.grading import sandbox

    try:
        sandbox.check_available()
    except sandbox.SandboxUnavailable as exc:
        pytest.skip(str(exc))
    course = gc.make_course(tmp_path / "course", ["01_rnn"])
    gc.submit(course, "no_metadata", "01_rnn", _strip_metadata(gc.correct_notebook("01_rnn")))
    gc.submit(course, "renamed", "01_rnn", gc.correct_notebook("01_rnn"), name="01_rnn (1)")
    unzipped = course / "grading" / "submitted" / "unzipped" / "01_rnn" / "hw1"
    unzipped.mkdir(parents=True)
    nbformat.write(gc.correct_notebook("01_rnn"), str(unzipped / "01_rnn.ipynb"))
    done = gc.make_autograde(course, jobs=2, db_url=f"sqlite:///{course}/grading/gradebook.db", cell_timeout=30)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = gc.read_export(course / "grades.csv")
    full = sum(gc.points("01_rnn").values())
    assert {s: float(r["score"]) for (s, _), r in rows.items()} == {"no_metadata": full, "renamed": full,
                                                                    "unzipped": full}
    for student, words in (("renamed", "so `01_rnn (1).ipynb` was graded"), ("unzipped", "`hw1/01_rnn.ipynb`")):
        page = (course / "grading" / "feedback" / student / "01_rnn" / "01_rnn.html").read_text()
        assert words in page.replace("<code>", "`").replace("</code>", "`")
        assert f"{student}/01_rnn: " in done.stderr  # the instructor hears of it too


def test_assignment_folders_named_loosely_are_found_and_strays_reported(tmp_path, capsys):
    """A hand-copied submission with 'ann/01_RNN/' was never graded (no job: 0, no feedback, no word to anyone)."""
    every = ["01_rnn", "02_gradients", "03_lstm"]
    for folder in ("01_RNN", "02_gradients", "02-Gradients", "lab3"):
        (tmp_path / "ann" / folder).mkdir(parents=True)
    _touch(tmp_path / "ann", "03_lstm.ipynb", "notes.txt")
    found = submissions.assignment_folders(tmp_path / "ann", every)
    assert found == {"01_rnn": (tmp_path / "ann" / "01_RNN", "your folder `01_RNN` was graded as assignment 01_rnn"),
                     "02_gradients": (tmp_path / "ann" / "02_gradients", None)}
    err = capsys.readouterr().err
    for stray in ("'02-Gradients'", "'lab3'", "'03_lstm.ipynb'"):
        assert f"ann: {stray} is not an assignment folder" in err
    assert "notes.txt" not in err


def test_a_notebook_made_big_by_its_outputs_is_still_read(tmp_path):
    """Plots and training logs saved in the notebook pushed it over 20 MB: it scored 0 ('not a regular file under
    20 MB') though a human grader would simply open it. Its cells are read without their outputs."""
    nb = gc.correct_notebook("01_rnn")
    big = "A" * (notebooks.MAX_NOTEBOOK_BYTES + 2**20)
    gc.find(nb, "rnn_cell_forward").outputs = [nbformat.v4.new_output("display_data", data={"image/png": big})]
    nbformat.write(nb, str(tmp_path / "n.ipynb"))
    cells, why = notebooks.read_submission(str(tmp_path / "n.ipynb"))
    assert why is None
    assert [c["source"] for c in cells] == [c["source"] for c in _cells(nb)]
    assert all("outputs" not in c for c in cells)


def test_a_nested_notebook_runs_alone_and_its_neighbours_are_reported(tmp_path, monkeypatch):
    """An unzipped upload's notebook is still found one folder down, but only it (and the release's files) go into
    the sandbox: a file beside it could be anyone's (a planted torch.py), so it is listed for the instructor."""
    from rnnkit.grading import sandbox

    job = _job(tmp_path)
    (job.folder / "01_rnn.ipynb").unlink()  # only hw1/01_rnn.ipynb is handed in
    (job.folder / "hw1").mkdir()
    nbformat.write(gc.correct_notebook("01_rnn"), str(job.folder / "hw1" / "01_rnn.ipynb"))
    (job.folder / "hw1" / "helpers.py").write_text("SCALE = 1.0\n")
    seen = {}

    def look(inp, notebook, **kwargs):
        seen["files"] = sorted(str(p.relative_to(inp)) for p in Path(inp).rglob("*"))
        return sandbox.Result(records={"done.json": b"{}"})

    graded = _run_job(job, tmp_path, look, monkeypatch)
    assert seen["files"] == ["01_rnn.ipynb"]
    assert "not copied into the sandbox" in graded.log and "hw1/helpers.py" in graded.log


def test_a_failed_visible_test_shows_its_own_message():
    """'a visible test failed: run it in your notebook to see why' left the student guessing; the visible test's
    message says what to fix (a tuple, not a list). A hidden test line the kernel raised is never shown."""
    from rnnkit.grading import reasons, sandbox

    def status(evalue):
        return {"status": "error", "ename": "AssertionError",
                "outputs": [{"output_type": "error", "ename": "AssertionError", "evalue": evalue, "traceback": []}]}

    scrub = notebooks.Scrubber(['grading.check("rnn_forward", rnn_forward)'])
    text = reasons.reason(status("rnn_forward should return a tuple (output, h_n)"), sandbox.Result(),
                          sandbox.Limits(), scrub=scrub)
    assert text.endswith("a visible test in this cell failed: rnn_forward should return a tuple (output, h_n)")
    leaked = reasons.reason(status('In = [\'grading.check("rnn_forward", rnn_forward)\']'), sandbox.Result(),
                            sandbox.Limits(), scrub=scrub)
    assert "grading.check" not in leaked and "hidden test line removed" in leaked
    assert "run it in your notebook" in reasons.reason(status(""), sandbox.Result(), sandbox.Limits(), scrub=scrub)


def test_malformed_cell_fields_cost_nothing_but_themselves():
    """A cell whose metadata is a list (or whose cell_type is an object) made the rebuild raise, and the whole
    submission scored 0 as 'the grader failed on this submission'. Such a cell is just the student's own cell."""
    src = _source("01_rnn")
    cells = _cells(gc.correct_notebook("01_rnn"))
    markdown = [c for c in cells if c["cell_type"] == "markdown"]
    markdown[1]["metadata"] = ["not", "a", "dict"]
    markdown[2]["cell_type"] = {"not": "a type"}
    markdown[3]["metadata"] = {"nbgrader": "not a dict"}
    out = notebooks.prepare(src, cells)
    intact = notebooks.prepare(src, _cells(gc.correct_notebook("01_rnn")))
    assert [x for x in _layout(out) if x[1]] == [x for x in _layout(intact) if x[1]]  # every graded cell, in order


@pytest.mark.slow
def test_a_part_left_undone_costs_only_its_own_checks_through_make_autograde(tmp_path):
    """Hidden checks run first in every test cell: a visible test that calls an unfinished earlier part (02's
    gradient-check cell prints with rnn_bptt) or checks the cell's other function first cannot cost a finished
    function its credit. Before, rnn_bptt left undone zeroed test_gradcheck too (5/10 where a grader gives 7), and a
    cell with one of its two functions undone scored 0 instead of half."""
    from rnnkit.grading import sandbox

    try:
        sandbox.check_available()
    except sandbox.SandboxUnavailable as exc:
        pytest.skip(str(exc))
    nb = gc.correct_notebook("02_gradients")
    release = nbformat.read(str(gc.REPO / "exercises" / "02_gradients" / "02_gradients.ipynb"), as_version=4)
    gc.find(nb, "rnn_bptt").source = gc.find(release, "rnn_bptt").source  # the untouched stub
    clipping = gc.find(nb, "clipping")
    clipping.source += "\n\n\ndef clip_grad_value(grads, clip_value):\n    raise NotImplementedError\n"
    course = gc.make_course(tmp_path / "course", ["02_gradients"])
    gc.submit(course, "partial", "02_gradients", nb)
    done = gc.make_autograde(course, jobs=1, db_url=f"sqlite:///{course}/grading/gradebook.db", cell_timeout=30)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    points = gc.points("02_gradients")
    # lost: rnn_bptt itself, half of the clipping cell, and the direction cell, whose clip_cosines (and the computed
    # KEEPS_DIRECTION) really do call the unfinished clip_grad_value; kept: the gradient check, the norms,
    # clip_grad_norm
    expected = (sum(points.values()) - points["test_rnn_bptt"] - points["test_clipping"] / 2
                - points["test_direction"])
    (row,) = gc.read_export(course / "grades.csv").values()
    assert float(row["score"]) == pytest.approx(expected), row
    page = (course / "grading" / "feedback" / "partial" / "02_gradients" / "02_gradients.html").read_text()
    for line in ("PASS numeric_gradient", "PASS relative_error", "PASS clip_grad_norm", "FAIL clip_grad_value"):
        assert line in page, line
