"""rnnkit.grading without nbgrader: specs and fixtures are current, the judge accepts the references and rejects
wrong results with student-safe messages, scores the share of passing cases, fails a forbidden call (the guard's
record) or a modified input, exports carry no pickle, and monkeypatching inside the kernel gains nothing."""
import dataclasses
import io
import re
import zipfile
from pathlib import Path

import grading_cases as gc
import numpy as np
import pytest
import torch

import rnnkit.cells
from rnnkit import grading
from rnnkit.grading import export, fixtures, judge, sandbox, specs


def _collect(name, obj):
    return export.collect(specs.get(name), obj)


def _as_student(name, obj):
    """An export of a trusted function (which may call rnnkit) made to look like a clean student's (for tests of the
    value comparison)."""
    return gc.clean_export(name, obj)


def _wrong_cell(x, h, w_ih, w_hh, b_ih, b_hh):  # forgets b_hh
    return torch.tanh(x @ w_ih.T + b_ih + h @ w_hh.T)


def _right_cell(x, h, w_ih, w_hh, b_ih, b_hh):  # written differently from rnnkit's
    return torch.tanh(torch.addmm(b_ih + b_hh, x.reshape(-1, x.shape[-1]), w_ih.T).reshape(h.shape) + h @ w_hh.T)


def test_every_check_is_listed_with_a_summary(capsys):
    assert fixtures.main(["--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(specs.names()) and all(specs.get(n).summary for n in specs.names())


def test_fixtures_are_current():
    assert fixtures.check() == [], "run `make fixtures` (python -m rnnkit.grading.fixtures --write)"


@pytest.mark.parametrize("name", specs.names())
def test_reference_passes_its_own_check_when_run_unguarded(name):
    spec = specs.get(name)
    verdict = judge.compare(name, _as_student(name, spec.reference() if spec.kind == "value" else spec.reference))
    assert verdict.passed and verdict.score == 1.0, verdict.message


# the references that compute with what the rule forbids (rnnkit, autograd, torch.nn.utils.clip_grad_*, log_softmax):
# handed in as an answer, the sandbox's guard alone (no static check involved) must fail them, naming the rule
# (06 and 08 write several references out in plain torch inside the spec, as a student would: handing those in
# is not a delegation, so they are not listed)
WRITTEN_OUT = ("sample_until_eos", "relative_error", "build_vocab", "encode_names", "decode_ids", "tbptt_batches",
               "train_epoch", "perplexity", "sample_name", "greedy_search", "beam_search", "teacher_forcing_loss")
DELEGATING = [n for n in specs.names() if specs.get(n).kind == "function" and n not in WRITTEN_OUT]


@pytest.mark.parametrize("name", DELEGATING)
def test_a_reference_handed_in_as_the_answer_is_caught_by_the_guard(name):
    spec = specs.get(name)
    verdict = judge.compare(name, _collect(name, spec.reference))
    assert not verdict.passed and verdict.score == 0.0
    assert re.search(r": calls \S+ — ", verdict.message) and spec.rule.why in verdict.message, verdict.message


@pytest.mark.parametrize("name", specs.names())
def test_case_labels_are_unique_and_cover_float32_and_float64_where_tensors_flow(name):
    spec = specs.get(name)
    labels = [case.label for case in spec.make_cases()]
    assert len(labels) == len(set(labels))
    if name.endswith(("_cell_forward", "_forward")) or name.startswith("gru_cell_reset"):
        text = " ".join(labels)
        for needle in ("float32", "float64", "batch of 1"):
            assert needle in text, f"{name}: no case with {needle}"


def test_a_correct_cell_written_differently_passes():
    assert judge.compare("rnn_cell_forward", _collect("rnn_cell_forward", _right_cell)).passed


@pytest.mark.parametrize("student, expected", [
    (_wrong_cell, r"output h_new differs from the expected values at index \(\d+, \d+\), max error [\d.e-]+"),
    (lambda x, h, *w: _right_cell(x, h, *w).float(), r"has dtype torch\.float32, expected torch\.float64"),
    (lambda x, h, *w: _right_cell(x, h, *w).transpose(0, -1), r"has shape \(5, 3\), expected \(3, 5\)"),
    (lambda x, h, *w: _right_cell(x, h, *w) * float("nan"), r"contains NaN"),
    (lambda x, h, *w: 1 / 0, r"your function raised ZeroDivisionError: division by zero"),
    (lambda x, h, *w: (_right_cell(x, h, *w),), r"should be a tensor, got a tuple/list of 1 item"),
    (lambda x, h, *w: _right_cell(x, h, *w).numpy(), r"should be a torch\.Tensor, got an object of type ndarray"),
])
def test_wrong_results_get_a_specific_message(student, expected):
    verdict = judge.compare("rnn_cell_forward", _collect("rnn_cell_forward", student))
    assert not verdict.passed and verdict.score < 1.0
    assert re.search(expected, verdict.message), verdict.message
    assert re.match(r"rnn_cell_forward: [0-4] of 5 cases pass\n  case '", verdict.message)


class _AlwaysEqual(torch.Tensor):
    def __eq__(self, other):
        return True


def test_tensor_and_float_subclasses_do_not_pass():
    sneaky = judge.compare("rnn_cell_forward", _collect("rnn_cell_forward",
                                                       lambda *a: _right_cell(*a).as_subclass(_AlwaysEqual)))
    assert not sneaky.passed and "should be a torch.Tensor" in sneaky.message

    class Float(float):
        def __eq__(self, other):
            return True

    spec = specs.get("relative_error")
    verdict = judge.compare("relative_error", export.collect(spec, lambda a, b: Float(spec.reference(a, b))))
    assert not verdict.passed and "should be a Python float" in verdict.message


def _expected_numbers(name):
    """Every expected value of a spec, as the strings a message could leak them with."""
    exp = specs.expected_export(name)
    values = np.concatenate([np.ravel(v).astype(np.float64) for k, v in exp.items()
                             if k.endswith(".value") and v.dtype.kind == "f"])
    return {f"{v:.4g}" for v in values if abs(v) > 1e-3} | {f"{v:.6f}" for v in values}


@pytest.mark.parametrize("name", ["rnn_cell_forward", "lstm_cell_forward", "rnn_bptt", "gru_forward", "relative_error"])
def test_messages_never_show_expected_values_or_hidden_source(name):
    spec = specs.get(name)

    def off_by_a_bit(*args, **kwargs):  # every output leaf shifted: wrong everywhere, but close
        out = spec.reference(*args, **kwargs)
        if isinstance(out, dict):
            return {k: v + 0.37 for k, v in out.items()}
        if isinstance(out, tuple):
            return tuple(v + 0.37 for v in out)
        return out + 0.37

    message = judge.compare(name, _as_student(name, off_by_a_bit)).message
    assert "differs" in message  # short: one line per failing case, the first ones described
    lines = message.splitlines()
    assert len(lines) <= 1 + len(spec.make_cases()) and all(len(line) < 200 for line in lines)
    numbers = set(re.findall(r"-?\d+\.\d+(?:e-?\d+)?", message))
    leaked = {n for n in numbers if f"{float(n):.4g}" in _expected_numbers(name)} - {"0.37"}
    assert not leaked, f"message shows expected values {leaked}: {message}"
    for secret in ("grading.check", "BEGIN HIDDEN", "tensor(", "array("):
        assert secret not in message


def test_exports_are_plain_data_and_round_trip(tmp_path):
    exported = _collect("lstm_forward", lambda *a: (a[0], a[1], a[2]))  # wrong, but well-formed
    path = tmp_path / "lstm_forward.npz"
    export.save(exported, path)
    loaded = export.load(path)  # allow_pickle=False inside
    assert all(v.dtype != object for v in loaded.values())
    assert judge.compare("lstm_forward", loaded) == judge.compare("lstm_forward", exported)
    assert not judge.compare("lstm_forward", loaded).passed


def test_huge_or_self_referencing_results_are_exported_bounded():
    looped = []
    looped.append(looped)
    for value in (list(range(10**6)), looped, {str(k): k for k in range(10**5)}, torch.zeros(2000, 1000)):
        exported = export.collect(specs.get("keeps_direction"), value)
        assert len(exported) < 4 * (export.MAX_LEAVES + 10)
        assert sum(v.size for v in exported.values()) < 10_000
        assert not judge.compare("keeps_direction", exported).passed


def test_export_of_another_check_is_refused():
    exported = _collect("rnn_cell_forward", _right_cell)
    verdict = judge.compare("gru_cell_reset_after", exported)
    assert not verdict.passed and "belong to another check" in verdict.message


def test_value_check():
    assert judge.compare("keeps_direction", _collect("keeps_direction", "norm")).passed
    wrong = judge.compare("keeps_direction", _collect("keeps_direction", "value"))
    assert not wrong.passed and "differs" in wrong.message
    typed = judge.compare("keeps_direction", _collect("keeps_direction", None))
    assert not typed.passed and "should be a str, got None" in typed.message


def test_trained_model_check_judges_the_mse_against_the_baseline():
    def exact_model(x):  # knows the task: sum of the marked values
        return (x[..., 0] * x[..., 1]).sum(1)

    def mean_model(x):
        return torch.full((x.shape[0],), 1.0)

    assert judge.compare("adding_gated_beats_baseline", _collect("adding_gated_beats_baseline", exact_model)).passed
    verdict = judge.compare("adding_gated_beats_baseline", _collect("adding_gated_beats_baseline", mean_model))
    assert not verdict.passed and re.search(r"test MSE 0\.1\d+ does not beat the mean predictor", verdict.message)
    shaped = judge.compare("adding_gated_beats_baseline", _collect("adding_gated_beats_baseline", lambda x: x))
    assert not shaped.passed and "shape" in shaped.message


def test_check_in_kernel_prints_a_pass_and_raises_the_message_on_failure(capsys):
    grading.check("rnn_cell_forward", _right_cell)
    assert "rnn_cell_forward: passed" in capsys.readouterr().out
    with pytest.raises(AssertionError, match=r"rnn_cell_forward: 0 of 5 cases pass\n  case '.*': output h_new differs"):
        grading.check("rnn_cell_forward", _wrong_cell)


def test_check_exports_only_when_asked(tmp_path, monkeypatch):
    monkeypatch.setenv(grading.EXPORT_ENV, str(tmp_path / "out"))
    assert grading.check("rnn_cell_forward", _wrong_cell) is None  # no judging in the sandbox
    assert grading.check("rnn_forward", lambda *a: 1 / 0) is None  # a crash is recorded, not raised
    loaded = export.load(tmp_path / "out" / "rnn_cell_forward.npz")
    assert not judge.compare("rnn_cell_forward", loaded).passed
    crashed = judge.compare("rnn_forward", export.load(tmp_path / "out" / "rnn_forward.npz"))
    assert "raised ZeroDivisionError" in crashed.message


def test_monkeypatching_rnnkit_torch_numpy_and_the_judge_in_the_kernel_gains_nothing(monkeypatch):
    import rnnkit.recurrence

    def patched_reference(x, h, w_ih, w_hh, b_ih=None, b_hh=None, nonlinearity="tanh"):
        return _wrong_cell(x, h, w_ih, w_hh, b_ih, b_hh)

    monkeypatch.setattr(rnnkit.cells, "rnn_cell", patched_reference)
    monkeypatch.setattr(rnnkit.recurrence, "rnn_cell", patched_reference, raising=False)
    monkeypatch.setattr(torch, "allclose", lambda *a, **k: True)
    monkeypatch.setattr(np, "allclose", lambda *a, **k: True)
    monkeypatch.setattr(np, "abs", lambda a: np.zeros_like(a))
    monkeypatch.setattr(judge, "compare", lambda *a, **k: judge.Verdict(True, "patched"))
    monkeypatch.setattr(specs, "expected_export", lambda name: _collect(name, _wrong_cell))
    with pytest.raises(AssertionError, match="differs"):
        grading.check("rnn_cell_forward", _wrong_cell)


def _partly_right_cell(x, h, w_ih, w_hh, b_ih, b_hh):  # right on batches, wrong on unbatched inputs (2 of 5 cases)
    out = _right_cell(x, h, w_ih, w_hh, b_ih, b_hh)
    return out if x.dim() == 2 else out + 1


def test_a_check_scores_the_share_of_its_cases_that_pass_and_names_the_failing_ones():
    verdict = judge.compare("rnn_cell_forward", _collect("rnn_cell_forward", _partly_right_cell))
    assert not verdict.passed and verdict.score == pytest.approx(3 / 5)
    lines = verdict.message.splitlines()
    assert lines[0] == "rnn_cell_forward: 3 of 5 cases pass"
    assert [re.match(r"  case '([^']*)'", line).group(1) for line in lines[1:]] == [
        "unbatched (1-D x and h), float32", "unbatched (1-D x and h), float64"]


def test_case_weights_set_their_share_of_the_points(monkeypatch):
    spec = specs.get("rnn_cell_forward")
    weighted = lambda: [specs.Case(c.label, c.args, c.kwargs, weight=3.0 if c.args[0].dim() == 1 else 1.0)
                        for c in spec.make_cases()]
    monkeypatch.setitem(specs.REGISTRY, "rnn_cell_forward", dataclasses.replace(spec, make_cases=weighted))
    verdict = judge.compare("rnn_cell_forward", _collect("rnn_cell_forward", _partly_right_cell))
    assert verdict.score == pytest.approx(3 / 9)


def _in_place_cell(x, h, w_ih, w_hh, b_ih, b_hh):
    h.copy_(_right_cell(x, h, w_ih, w_hh, b_ih, b_hh))  # right values, written into the caller's h
    return h.clone()


def test_a_function_that_changes_an_argument_in_place_fails_the_whole_check():
    verdict = judge.compare("rnn_cell_forward", _collect("rnn_cell_forward", _in_place_cell))
    assert not verdict.passed and verdict.score == 0.0
    assert verdict.message.startswith("_in_place_cell changed its argument h in place"), verdict.message

    def clips_in_place(grads, max_norm):  # a list argument: its tensors count too
        for g in grads:
            g.mul_(0.5)
        return [g.clone() for g in grads]

    verdict = judge.compare("clip_grad_norm", _collect("clip_grad_norm", clips_in_place))
    assert "changed its argument grads in place" in verdict.message


@pytest.mark.parametrize("damage, words", [
    (lambda e: e.pop("c2.guard.calls"), "record of what your function called is missing"),
    (lambda e: e.update({"c0.guard.calls": np.array(3)}), "record of what your function called is missing"),
    (lambda e: e.update({"c1.guard.complete": np.array(False)}), "switched off or altered"),
    (lambda e: e.update({"c4.guard.calls": np.array(["torch.rnn_tanh_cell"])}), "calls torch.rnn_tanh_cell — "),
    (lambda e: e.pop("c3.changed"), "record of its inputs is missing"),
])
def test_a_missing_malformed_or_damning_guard_record_fails_the_check(damage, words):
    exported = _collect("rnn_cell_forward", _right_cell)
    assert judge.compare("rnn_cell_forward", exported).passed
    damage(exported)
    verdict = judge.compare("rnn_cell_forward", exported)
    assert not verdict.passed and verdict.score == 0.0 and words in verdict.message, verdict.message


def test_the_guard_catches_a_delegation_however_it_is_reached():
    via_getattr = lambda x, h, *w: getattr(torch, "rnn_" + "tanh_cell")(x, h, *w)
    via_exec = lambda x, h, *w: eval("torch.rnn_tanh_cell")(x, h, *w)
    via_module = lambda x, h, w_ih, w_hh, b_ih, b_hh: rnnkit.cells.rnn_cell(x, h, w_ih, w_hh, b_ih, b_hh)
    for student in (via_getattr, via_exec, via_module):
        verdict = judge.compare("rnn_cell_forward", _collect("rnn_cell_forward", student))
        assert not verdict.passed and "calls " in verdict.message and "write the RNN equations yourself" in \
            verdict.message, verdict.message


def test_a_sample_of_the_wrong_length_is_not_told_the_expected_length():
    verdict = judge.compare("sample_until_eos", _collect("sample_until_eos", lambda *a, **k: [1]))
    assert "not the expected number of items" in verdict.message
    assert not re.search(r"of \d+ items", verdict.message), verdict.message


def test_export_load_refuses_a_zip_bomb():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("spec.npy", b"\0" * (export.MAX_UNPACKED + 1))
    with pytest.raises(ValueError, match="too large"):
        export.load(buffer.getvalue())


def test_stored_expected_values_are_out_of_the_students_reach():
    package = Path(rnnkit.__file__).resolve().parent
    assert not list(package.rglob("*.npz")), "expected values must not ship in the package students import"
    assert specs.FIXTURE_DIR.resolve() == package.parent / "solutions" / "fixtures"
    bound = sandbox._mount_args(Path("/tmp/input"), Path("/tmp/etc"), sandbox.Limits())
    sources = {bound[k + 1] for k, arg in enumerate(bound) if arg == "--ro-bind"}
    assert not any(Path(s).resolve() in (specs.FIXTURE_DIR.resolve(), *specs.FIXTURE_DIR.resolve().parents[:2])
                   for s in sources), sources


def test_the_visible_self_check_reads_the_kernels_cells_and_gives_the_graders_message(capsys):
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    try:
        def run(code):
            result = shell.run_cell(code, store_history=True)
            return result.error_in_exec

        run("import torch\nfrom rnnkit import grading")
        run("def lstm_cell_forward(x, h, c, w_ih, w_hh, b_ih, b_hh):\n"
            "    cell = torch.nn.LSTMCell(w_ih.shape[1], w_hh.shape[1])\n    return cell(x, (h, c))")
        error = run('grading.rules("lstm_cell_forward", lstm_cell_forward)')
        assert isinstance(error, AssertionError)
        assert "lstm_cell_forward, line 2: calls torch.nn.LSTMCell — this exercise asks you to write the LSTM " \
               "equations yourself" in str(error)
        # corrected in a new cell: the replaced definition no longer counts; a mention in a comment never did
        run("def lstm_cell_forward(x, h, c, w_ih, w_hh, b_ih, b_hh):\n    # not torch.nn.LSTMCell\n"
            "    i, f, g, o = (x @ w_ih.T + b_ih + h @ w_hh.T + b_hh).chunk(4, -1)\n"
            "    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)\n"
            "    return torch.sigmoid(o) * torch.tanh(c), c")
        capsys.readouterr()
        assert run('grading.rules("lstm_cell_forward", lstm_cell_forward)') is None
        assert "lstm_cell_forward: rules: ok" in capsys.readouterr().out
    finally:
        InteractiveShell.clear_instance()


@pytest.mark.parametrize("assignment, grade_id, source, check, name", [
    ("01_rnn", "rnn_cell_forward", "def rnn_cell_forward(x, h, w_ih, w_hh, b_ih, b_hh):\n"
     "    return torch.rnn_tanh_cell(x, h, w_ih, w_hh, b_ih, b_hh)", "rnn_cell_forward", "torch.rnn_tanh_cell"),
    ("03_lstm", "lstm_cell_forward", "from torch.nn import LSTMCell as Cell\n\n"
     "def lstm_cell_forward(x, h, c, w_ih, w_hh, b_ih, b_hh):\n    return Cell(4, 5)(x, (h, c))",
     "lstm_cell_forward", "torch.nn.LSTMCell"),
    ("04_gru", "gru_cell_from_torch", "def gru_cell_from_torch(cell, x, h):\n    return cell(x, h)",
     "gru_cell_from_torch", "cell"),
    ("05_long_range", "adding_problem", "import rnnkit.data as d\n\n"
     "def adding_problem(num_samples, seq_len, *, seed=None, generator=None, dtype=torch.float32):\n"
     "    return d.adding_problem(num_samples, seq_len, seed=seed, generator=generator, dtype=dtype)",
     "adding_problem", "rnnkit.data.adding_problem"),
])
def test_the_static_check_alone_catches_a_plain_delegation(assignment, grade_id, source, check, name):
    """The trusted parent's static half, with no sandbox and no guard: the notebook is only read."""
    from rnnkit.grading import conduct, notebooks

    src = notebooks.load_source(str(gc.REPO / "solutions" / assignment / f"{assignment}.ipynb"),
                                str(gc.REPO / "exercises" / assignment / f"{assignment}.ipynb"))
    nb = gc.correct_notebook(assignment)
    gc.find(nb, grade_id).source = source
    prepared = notebooks.prepare(src, [dict(c) for c in nb.cells])
    found = conduct.findings(src, prepared)
    assert [f.name for f in found[check]] == [name], found[check]
    callers = {"rnn_cell_forward": {"rnn_forward"}, "lstm_cell_forward": {"lstm_forward", "forget_bias_retention"}}
    assert not any(found[other] for other in found if other not in {check, *callers.get(check, ())})
    assert not any(conduct.findings(src, notebooks.prepare(src, [dict(c) for c in gc.correct_notebook(
        assignment).cells])).values()), "the correct notebook has no finding"
