"""The assignments' CI gates, through nbgrader's Python API (its `validate` CLI exits 0 on failure,
jupyter/nbgrader#1908): the committed release equals a fresh regeneration, no solution or hidden test leaks into it,
every graded cell is autograded, the solutions score full marks, the blank release scores 0 on every graded cell, and a
notebook that monkeypatches rnnkit/torch/numpy gains nothing."""
import json
import re
import shutil
from pathlib import Path

import grading_cases as gc
import nbformat
import pytest

from rnnkit.grading import specs
from rnnkit.grading.release import (
    REPO_ROOT,
    assignments,
    generate,
    nbgrader_api,
    rules_markdown,
    solution_lines,
    sync_rules,
)
from rnnkit.grading.rules import describe

ASSIGNMENTS = assignments()
# nbgrader 0.9's own autograde emits SQLAlchemy "not in session" warnings on every submission: not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:Object of type <Submitted:Warning")
CHECK_CALL = re.compile(r"""grading\.check\(\s*["']([A-Za-z0-9_]+)["']""")


def _source(name: str) -> Path:
    return REPO_ROOT / "solutions" / name / f"{name}.ipynb"


def _release(name: str) -> Path:
    return REPO_ROOT / "exercises" / name / f"{name}.ipynb"


def _graded_cells(name: str) -> list[dict]:
    nb = json.loads(_source(name).read_text())
    return [c for c in nb["cells"] if c.get("metadata", {}).get("nbgrader", {}).get("grade")]


def test_the_assignments_exist():
    assert ASSIGNMENTS == ["01_rnn", "02_gradients", "03_lstm", "04_gru", "05_long_range", "06_char_lm",
                           "07_backward", "08_seq2seq"]


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_every_graded_cell_is_autograded_and_calls_known_checks(name):
    cells = _graded_cells(name)
    assert sum(c["metadata"]["nbgrader"]["points"] for c in cells) == 10
    for cell in cells:
        md = cell["metadata"]["nbgrader"]
        assert md["solution"] is False and md["locked"] is True, f"{md['grade_id']} must be an autograded test cell"
        assert cell["cell_type"] == "code"
        names = CHECK_CALL.findall("".join(cell["source"]))
        assert names, f"{md['grade_id']}: no hidden grading.check call"
        assert all(n in specs.REGISTRY for n in names), names
    intro = "".join(json.loads(_source(name).read_text())["cells"][0]["source"])
    assert "10 points" in intro and "visible tests" in intro


def test_every_spec_is_used_by_exactly_one_notebook():
    used = [n for a in ASSIGNMENTS for c in _graded_cells(a) for n in CHECK_CALL.findall("".join(c["source"]))]
    assert sorted(used) == specs.names()


def test_source_notebooks_are_valid_and_hold_no_outputs():
    for name in ASSIGNMENTS:
        nb = nbformat.read(_source(name), as_version=4)
        nbformat.validate(nb)
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{name}: clear the outputs"


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_release_holds_no_solution_and_no_hidden_test(name):
    text = _release(name).read_text()
    for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS", "grading.check"):
        assert marker not in text, f"{marker!r} in the release of {name}"
    released = {line.strip() for cell in json.loads(text)["cells"] for line in "".join(cell["source"]).splitlines()}
    leaked = solution_lines(_source(name)) & released
    assert not leaked, f"solution lines in exercises/{name}: {sorted(leaked)[:3]}"
    assert sorted(p.name for p in _release(name).parent.iterdir()) == [f"{name}.ipynb"], "only the notebook is released"


def test_site_holds_no_solution_when_built():
    html = REPO_ROOT / "_build" / "html"
    if not html.is_dir():
        pytest.skip("the book has not been built (tests/test_book.py builds it)")
    secrets = set().union(*(solution_lines(_source(n)) for n in ASSIGNMENTS))
    for page in list(html.rglob("*.html")) + list(html.rglob("*.ipynb")):
        text = page.read_text(errors="replace")
        assert "BEGIN SOLUTION" not in text and "BEGIN HIDDEN TESTS" not in text, page
        if page.suffix == ".ipynb":
            lines = {line.strip() for cell in json.loads(text).get("cells", [])
                     for line in "".join(cell["source"]).splitlines()}
            assert not (secrets & lines), page
    page = html / "book" / "assignments.html"
    if page.is_file() and "01_rnn.ipynb" in page.read_text():  # the downloads are exactly the student versions
        downloads = {p.name: p.read_bytes() for p in (html / "_downloads").rglob("*.ipynb")}
        for name in ASSIGNMENTS:
            assert downloads.get(f"{name}.ipynb") == _release(name).read_bytes(), f"{name}: download is not the release"


# ------------------------------------------------------------------------------------ nbgrader: generate, autograde
@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """A throw-away course state: a fresh release of every assignment and a gradebook that knows them."""
    tmp = tmp_path_factory.mktemp("course")
    db_url = f"sqlite:///{tmp}/gradebook.db"
    released = generate(into=tmp / "release", db_url=db_url)
    api = nbgrader_api(**{"CourseDirectory.release_directory": str(tmp / "release"),
                          "CourseDirectory.db_url": db_url,
                          "CourseDirectory.submitted_directory": str(tmp / "submitted"),
                          "CourseDirectory.autograded_directory": str(tmp / "autograded"),
                          "CourseDirectory.feedback_directory": str(tmp / "feedback"),
                          # the instructor's own notebooks: nbgrader's autograde, which the course config switches
                          # off for student work (it runs unsandboxed), is re-enabled here on purpose
                          "Autograde.exporter_class": "nbconvert.exporters.NotebookExporter"})
    return {"tmp": tmp, "db_url": db_url, "api": api, "released": released}


def test_regenerated_release_equals_committed_exercises(course):
    fresh = course["tmp"] / "release"
    committed = REPO_ROOT / "exercises"
    fresh_files = sorted(p.relative_to(fresh) for p in fresh.rglob("*") if p.is_file())
    committed_files = sorted(p.relative_to(committed) for p in committed.rglob("*") if p.is_file())
    assert fresh_files == committed_files
    for rel in fresh_files:
        assert (fresh / rel).read_bytes() == (committed / rel).read_bytes(), (
            f"exercises/{rel} is stale: run `make release`")


def _autograde(course, name: str, student: str, notebook: Path) -> dict[str, tuple[float, float, bool]]:
    from nbgrader.api import Gradebook

    target = course["tmp"] / "submitted" / student / name
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(notebook, target / f"{name}.ipynb")
    result = course["api"].autograde(name, student)
    assert result["success"], result.get("error", "") + result.get("log", "")
    with Gradebook(course["db_url"]) as gb:
        submission = gb.find_submission(name, student)
        assert not submission.needs_manual_grade
        return {g.name: (g.score, g.max_score, g.needs_manual_grade) for nb in submission.notebooks for g in nb.grades}


@pytest.mark.slow
@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_solution_scores_full_marks_and_blank_release_scores_zero(course, name):
    full = _autograde(course, name, "solution", _source(name))
    assert full and all(score == max_score and not manual for score, max_score, manual in full.values()), \
        sorted(full.items())
    blank = _autograde(course, name, "blank", course["tmp"] / "release" / name / f"{name}.ipynb")
    assert blank.keys() == full.keys()
    assert all(score == 0 and not manual for score, _, manual in blank.values()), blank


@pytest.mark.slow
def test_monkeypatching_rnnkit_torch_and_numpy_in_the_notebook_gains_nothing(course):
    nb = nbformat.read(_source("01_rnn"), as_version=4)
    cell = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "rnn_cell_forward")
    cell.source = cell.source.replace("return torch.tanh(x @ w_ih.T + b_ih + h @ w_hh.T + b_hh)",
                                      "return torch.tanh(x @ w_ih.T + b_ih + h @ w_hh.T)  # forgets b_hh")
    patch = nbformat.v4.new_code_cell(
        "import numpy, rnnkit.cells, rnnkit.recurrence\n"
        "def _mine(x, h, w_ih, w_hh, b_ih=None, b_hh=None, nonlinearity='tanh'):\n"
        "    return rnn_cell_forward(x, h, w_ih, w_hh, b_ih, b_hh)\n"
        "rnnkit.cells.rnn_cell = rnnkit.recurrence.rnn_cell = _mine\n"
        "torch.allclose = numpy.allclose = lambda *a, **k: True\n")
    nb.cells.insert(nb.cells.index(cell) + 1, patch)
    path = course["tmp"] / "patcher.ipynb"
    nbformat.write(nb, path)
    grades = _autograde(course, "01_rnn", "patcher", path)
    assert grades["test_rnn_cell_forward"][0] == 0 and grades["test_rnn_forward"][0] == 0, grades
    assert grades["test_sequence_nll"][0] == grades["test_sequence_nll"][1], "unrelated cells keep their points"


# ------------------------------------------------------------------------ visible tests explain the usual mistakes
@pytest.mark.parametrize("name, grade_id, solution_id, replace, message", [
    ("03_lstm", "test_lstm_cell_forward", "lstm_cell_forward", ("i, f, g, o = gates.chunk", "f, i, g, o = gates.chunk"),
     "your input gate uses rows of the forget gate; your forget gate uses rows of the input gate. "
     "PyTorch orders the rows i, f, g, o"),
    ("01_rnn", "test_rnn_forward", "rnn_forward", ("h = torch.where(alive, h_new, h)", "h = h_new"),
     "freeze the state once t >= lengths[b]"),
    ("01_rnn", "test_sequence_nll", "log_probs_and_nll",
     ("valid = steps < lengths.to", "valid = steps < -1 + lengths.to"), "the end-of-sequence step counts too"),
    ("01_rnn", "test_next_symbol_log_probs", "log_probs_and_nll",
     ("shifted = logits - logits.max(dim=-1, keepdim=True).values", "shifted = logits"),
     "subtract the max logit first"),
    ("02_gradients", "test_rnn_bptt", "rnn_bptt", ("dh = grad_out[t] + dh_next", "dh = grad_out[t]"),
     "must add the gradient flowing back from step t + 1"),
    ("02_gradients", "test_rnn_bptt", "rnn_bptt",
     ('grads["w_hh"] += da.T @ states[t]', 'grads["w_hh"] += da.T @ states[t + 1]'),
     "w_hh multiplies the PREVIOUS state"),
    ("04_gru", "test_gru_cell_reset_after", "gru_cell_forward",
     ("return (1 - z) * n + z * h", "return z * n + (1 - z) * h"), "you swapped z and 1 - z"),
    ("05_long_range", "test_adding_problem", "adding_problem",
     ("    i = torch.randint(0, seq_len // 2, (num_samples,), generator=g)  # (N,) first half\n"
      "    j = torch.randint(seq_len // 2, seq_len, (num_samples,), generator=g)  # (N,) second half",
      "    j = torch.randint(seq_len // 2, seq_len, (num_samples,), generator=g)\n"
      "    i = torch.randint(0, seq_len // 2, (num_samples,), generator=g)"),
     "draw i = randint(0, T // 2) BEFORE j = randint(T // 2, T)"),
    # a result pre-allocated with torch.zeros(...) is float32 whatever the input: the hidden float64 cases fail it
    ("01_rnn", "test_rnn_forward", "rnn_forward", ("return torch.stack(outputs), h",
     "return torch.zeros(len(outputs), *h.shape).copy_(torch.stack(outputs)), h"),
     "float64 inputs must give float64 results"),
    ("01_rnn", "test_sequence_nll", "log_probs_and_nll", ("return torch.where(valid, nll, torch.zeros_like(nll))",
     "return torch.zeros(nll.shape).copy_(torch.where(valid, nll, torch.zeros_like(nll)))"),
     "float64 logits must give a float64 NLL"),
    ("03_lstm", "test_lstm_forward", "lstm_forward", ("return torch.stack(outputs), h, c",
     "return torch.zeros(len(outputs), *h.shape).copy_(torch.stack(outputs)), h, c"),
     "float64 inputs must give float64 results"),
    ("04_gru", "test_gru_forward", "gru_forward", ("return torch.stack(outputs), h",
     "return torch.zeros(len(outputs), *h.shape).copy_(torch.stack(outputs)), h"),
     "float64 inputs must give float64 results"),
    # a checker that perturbs x[i] (a whole row of a matrix) passed the 1-D visible test; the hidden cases use matrices
    ("02_gradients", "test_gradcheck", "gradcheck",
     ("    flat_x, flat_grad = x.view(-1), grad.view(-1)  # views: writing them writes x and grad\n"
      "    for i in range(flat_x.numel()):\n"
      "        old = flat_x[i].item()\n",
      "    flat_x, flat_grad = x, grad\n"
      "    for i in range(len(x)):\n"
      "        old = flat_x[i].clone()\n"), "perturb one ENTRY at a time"),
    # stacked bidirectional layers read 2H features: a formula using H passed the visible (unidirectional) tests
    ("03_lstm", "test_lstm_param_count", "lstm_param_count",
     ("layer_input = input_size if layer == 0 else hidden_size * directions",
      "layer_input = input_size if layer == 0 else hidden_size"), "layer 1 reads BOTH directions' outputs"),
    ("04_gru", "test_gru_param_count", "gru_param_count",
     ("layer_input = input_size if layer == 0 else hidden_size * directions",
      "layer_input = input_size if layer == 0 else hidden_size"), "layer 1 reads BOTH directions' outputs"),
    # a per-sequence norm (averaged over the batch) passed the batch-of-1 visible test; the hidden cases have batches
    ("02_gradients", "test_hidden_grad_norms", "hidden_grad_norms",
     ("norms[t] = dh.norm()", "norms[t] = dh.norm(dim=-1).mean()"),
     "take ONE norm over the batch and the hidden units together"),
    # ignoring generator= passed the seeded visible tests of copy_task; a hidden case draws from a generator
    ("05_long_range", "test_copy_task", "copy_task",
     ("g = generator if generator is not None else torch.Generator().manual_seed(seed)",
      "g = torch.Generator().manual_seed(seed or 0)"), "with generator=g draw from g"),
    # drawing the values in the requested dtype passes every float32 test but fails the hidden float64 case
    ("05_long_range", "test_adding_problem", "adding_problem",
     ("values = torch.rand(num_samples, seq_len, generator=g)",
      "values = torch.rand(num_samples, seq_len, generator=g, dtype=dtype)"),
     "torch.rand(..., dtype=torch.float64) draws different numbers"),
])
def test_visible_tests_name_the_mistake(name, grade_id, solution_id, replace, message):
    assert message in gc.run_visible(name, grade_id, solution_id, replace)


_C_IN_PLACE = ("    c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)\n",
               "    c.mul_(torch.sigmoid(f))\n    c_new = c.add_(torch.sigmoid(i) * torch.tanh(g))\n")


@pytest.mark.parametrize("name, grade_id, solution_id, replace, message", [
    # a cell that writes c' into c: the visible test used to compare with torch.nn.LSTMCell run on the changed c,
    # and blamed a swapped gate
    ("03_lstm", "test_lstm_cell_forward", "lstm_cell_forward", _C_IN_PLACE,
     "lstm_cell_forward changed its argument c in place"),
    # ... and made c0 change with c in forget_bias_retention, which blamed the forget-gate rows
    ("03_lstm", "test_forget_bias_retention", "lstm_cell_forward", _C_IN_PLACE,
     "lstm_cell_forward (Part 1) changed its argument c in place"),
    # a loop that updates h0 in place: the later comparisons blamed the padding
    ("01_rnn", "test_rnn_forward", "rnn_forward",
     ("h = torch.where(alive, h_new, h)", "h.copy_(torch.where(alive, h_new, h))"),
     "rnn_forward changed its argument h0 in place"),
])
def test_visible_tests_blame_an_input_changed_in_place_not_a_gate(name, grade_id, solution_id, replace, message):
    said = gc.run_visible(name, grade_id, solution_id, replace, earlier_may_fail=True)
    assert said.startswith(message) and "gate uses rows" not in said, said


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_rules_paragraph_is_generated_from_the_rule_table(name, tmp_path):
    """The Rules text students read is the table the grader enforces: `make release` rewrites it, and the committed
    source (and so the release) must already hold the current text."""
    copy = tmp_path / f"{name}.ipynb"
    shutil.copy(_source(name), copy)
    assert not sync_rules(copy), f"solutions/{name}: the Rules paragraph is stale: run `make release`"
    intro = "".join(json.loads(_source(name).read_text())["cells"][0]["source"])
    for cell in _graded_cells(name):
        for check in CHECK_CALL.findall("".join(cell["source"])):
            assert describe(specs.get(check).rule) in intro, check
    assert "3 of 5 cases right earn 3/5" in intro, "the intro states the partial-credit rule"
    released = "".join(json.loads(_release(name).read_text())["cells"][0]["source"])
    assert rules_markdown(json.loads(_source(name).read_text())) in released


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_every_visible_test_cell_runs_the_rule_check(name):
    for cell in _graded_cells(name):
        source = "".join(cell["source"])
        visible = source.split("### END HIDDEN TESTS")[-1]
        for check in CHECK_CALL.findall(source):
            assert f'grading.rules("{check}", ' in visible, f"{name}: no self-check for {check}"


def test_visible_tests_pass_on_the_solution():
    assert gc.run_visible("03_lstm", "test_lstm_cell_forward", "lstm_cell_forward", ("", "")) == ""


def test_nbgrader_config_keeps_grading_state_under_grading_and_bounds_cells():
    api = nbgrader_api()
    coursedir = api.coursedir
    assert Path(coursedir.root) == REPO_ROOT
    assert (coursedir.source_directory, coursedir.release_directory) == ("solutions", "exercises")
    for step in ("submitted", "autograded", "feedback"):
        assert getattr(coursedir, f"{step}_directory") == f"grading/{step}"
    assert coursedir.db_url == f"sqlite:///{REPO_ROOT}/grading/gradebook.db"
    assert api.config.Execute.timeout <= 120 and api.config.Execute.interrupt_on_timeout
    assert api.config.OverwriteCells.add_missing_cells is True
    for pattern in ("*.npz", "fixtures", "*.py"):
        assert pattern in coursedir.ignore


@pytest.mark.slow
def test_a_deleted_test_cell_is_restored_and_graded(course):
    nb = nbformat.read(_source("01_rnn"), as_version=4)
    nb.cells = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") != "test_sequence_nll"]
    path = course["tmp"] / "deleter.ipynb"
    nbformat.write(nb, path)
    grades = _autograde(course, "01_rnn", "deleter", path)
    assert grades["test_sequence_nll"] == (2.0, 2.0, False), grades


# ------------------------------------------------------------- what a student is told about points and dependencies
def _part_dependencies(name: str) -> list[tuple[str, set[str]]]:
    """(markdown of each part, names defined in earlier parts' solution cells that the part's own code calls).
    A part is a markdown cell and the code cells up to the next markdown cell; its test cells do not count (their
    hidden checks run first, so a visible test calling an earlier function costs no points)."""
    import ast

    nb = json.loads(_source(name).read_text())
    parts: list[tuple[str, set[str]]] = []
    defined_before: set[str] = set()
    defined_here: set[str] = set()
    for cell in nb["cells"]:
        md = cell.get("metadata", {}).get("nbgrader", {})
        source = "".join(cell["source"])
        if cell["cell_type"] == "markdown":
            defined_before |= defined_here
            defined_here = set()
            parts.append((source, set()))
            continue
        if md.get("grade") or not parts:
            continue
        tree = ast.parse(source)
        if md.get("solution"):
            defined_here |= {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        parts[-1][1].update(n.func.id for n in ast.walk(tree)
                            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in defined_before)
    return parts


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_a_part_that_uses_an_earlier_part_says_so(name):
    """A later function that calls an earlier one loses its points when the earlier one is wrong (its hidden check
    runs the student's code as written): the part's instructions must say so in a bold "Uses `...`" note."""
    for markdown, used in _part_dependencies(name):
        notes = [s for s in re.findall(r"\*\*(.+?)\*\*", markdown, flags=re.S) if "uses" in s.lower()]
        for callee in sorted(used):
            assert any(f"`{callee}`" in note for note in notes), (
                f"{name}: the part starting {markdown.splitlines()[0]!r} calls {callee} from an earlier part "
                "without a **Uses `...`** note")


def test_some_parts_do_depend_on_earlier_ones():
    """The rule above is not vacuous: the dependencies it finds are the known ones."""
    found = {name: set().union(*(used for _, used in _part_dependencies(name))) for name in ASSIGNMENTS}
    assert found == {"01_rnn": {"rnn_cell_forward"}, "02_gradients": {"clip_grad_norm", "clip_grad_value"},
                     "03_lstm": {"lstm_cell_forward"}, "04_gru": {"gru_cell_forward"},
                     "05_long_range": {"adding_problem"},
                     "06_char_lm": {"clip_grad_norm", "next_symbol_log_probs", "sample_until_eos", "build_vocab",
                                    "encode", "decode", "tbptt_batches", "train_epoch", "perplexity", "sample_name"},
                     "07_backward": {"lstm_cell_backward", "gru_cell_backward"},
                     "08_seq2seq": {"gru_cell_forward", "bidirectional_encoder", "teacher_forcing_loss",
                                    "greedy_search", "beam_search"}}, found


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_intro_says_how_points_are_counted(name):
    """The grader scores points x passed hidden checks / checks and ignores visible asserts: the intro must not
    claim that a cell scores only when all its tests pass."""
    intro = "".join(json.loads(_source(name).read_text())["cells"][0]["source"])
    assert "only when all its tests pass" not in intro
    assert "points are shared equally among its hidden checks" in intro
    assert "a failing visible test costs nothing by itself" in intro


def _run_visible_tolerant(name: str, grade_id: str, solution_id: str, replace: tuple[str, str]) -> None:
    """Like gc.run_visible, but an earlier test cell may fail (a student runs the next cell by hand); the target cell's
    visible part must then run without raising."""
    namespace: dict = {}
    for md, code in gc.visible_cells(name, solution_id, replace):
        if md.get("grade_id") == grade_id:
            exec(code, namespace)
            return
        try:
            exec(code, namespace)
        except Exception:
            if not md.get("grade"):
                raise
    raise AssertionError(f"no cell {grade_id}")


@pytest.mark.parametrize("name, grade_id, solution_id, replace", [
    # Part 2's visible cell used to call rnn_bptt: an unfinished Part 1 showed a NotImplementedError there
    ("02_gradients", "test_gradcheck", "rnn_bptt", ("    states = [h0]  # states[t + 1] = h_t\n",
                                                    "    raise NotImplementedError()\n")),
    # the reset_after=False cell took _ref from the reset_after=True cell, which stops early while that is unfinished
    ("04_gru", "test_gru_cell_reset_before", "gru_cell_forward",
     ("    if reset_after:\n        n = torch.tanh",
      "    if reset_after:\n        raise NotImplementedError()\n        n = torch.tanh")),
])
def test_a_visible_test_runs_while_an_earlier_part_is_unfinished(name, grade_id, solution_id, replace):
    _run_visible_tolerant(name, grade_id, solution_id, replace)


def test_adding_training_instructions_name_the_fit_call_the_solution_makes():
    """Trainer.fit(train, valid=None): a student writing fit(x, y) trains on x alone with y as a 'validation set';
    the instructions must give the call the solution makes, the training set as one tuple."""
    nb = json.loads(_source("05_long_range").read_text())
    cells = {c.get("metadata", {}).get("nbgrader", {}).get("grade_id"): "".join(c["source"]) for c in nb["cells"]}
    part = next("".join(c["source"]) for c in nb["cells"] if "".join(c["source"]).startswith("## Part 3"))
    assert ".fit((x, y))" in cells["model_and_training"]
    assert ".fit((x, y))" in part and "`.fit(x, y)` would read `y` as a validation set" in part
