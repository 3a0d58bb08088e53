"""Assignment 7 (backward through an LSTM and a GRU): the typical mistakes caught by both the visible tests and the
hidden checks, autograd unavailable inside the graded functions, the Rules text, the Part 4 problem shared by the
notebook and the spec, and the sandboxed grading of whole submissions (correct, blank, delegating to autograd)."""
from __future__ import annotations

import grading_cases as gc
import nbformat
import pytest
import torch

from rnnkit.grading import specs
from rnnkit.grading.specs import a07_backward as a07

NAME = "07_backward"
CHECKS = ["lstm_cell_backward", "gru_cell_backward_reset_after", "gru_cell_backward_reset_before", "lstm_bptt",
          "gru_bptt", "lstm_state_grad_norms", "gradient_path"]
_FUNCTION_OF = {"lstm_cell_backward": "lstm_cell_backward", "gru_cell_backward_reset_after": "gru_cell_backward",
                "gru_cell_backward_reset_before": "gru_cell_backward", "lstm_bptt": "lstm_bptt", "gru_bptt": "gru_bptt",
                "lstm_state_grad_norms": "lstm_state_grad_norms"}
# a backward pass that asks autograd: correct values with grad mode on, an error under the grader's torch.no_grad()
AUTOGRAD_LSTM = '''def lstm_cell_backward(x, h, c, w_ih, w_hh, b_ih, b_hh, dh_new, dc_new):
    leaves = [v.detach().clone().requires_grad_(True) for v in (x, h, c, w_ih, w_hh, b_ih, b_hh)]
    h_new, c_new = lstm_cell_gates(*leaves)[5:3:-1]
    grads = torch.autograd.grad((h_new * dh_new).sum() + (c_new * dc_new).sum(), leaves)
    return dict(zip(("x", "h", "c", "w_ih", "w_hh", "b_ih", "b_hh"), grads))
'''

MISTAKES = [
    # (name, solution cell, test cell, replace, visible message, hidden check that must fail)
    ("LSTM: missing the tanh'(c) term", "lstm_cell_backward", "test_lstm_cell_backward",
     ("    dc = dc_new + dh_new * o * (1 - tanh_c ** 2)", "    dc = dc_new"), "the tanh'(c') term",
     "lstm_cell_backward"),
    ("LSTM: tanh' taken at c, not c'", "lstm_cell_backward", "test_lstm_cell_backward",
     ("    dc = dc_new + dh_new * o * (1 - tanh_c ** 2)", "    dc = dc_new + dh_new * o * (1 - torch.tanh(c) ** 2)"),
     "the derivative of tanh at c', not at c", "lstm_cell_backward"),
    ("LSTM: input and forget rows swapped", "lstm_cell_backward", "test_lstm_cell_backward",
     ("da = torch.cat([di * i * (1 - i), df * f * (1 - f),", "da = torch.cat([df * f * (1 - f), di * i * (1 - i),"),
     "PyTorch orders the rows i, f, g, o", "lstm_cell_backward"),
    ("LSTM: bias summed over dim 0 (breaks unbatched)", "lstm_cell_backward", "test_lstm_cell_backward",
     ("    db = da.reshape(-1, da.shape[-1]).sum(0)", "    db = da.sum(0)"), "unbatched inputs", "lstm_cell_backward"),
    ("GRU reset_before: r left out of the matrix product", "gru_cell_backward", "test_gru_cell_backward_reset_before",
     ("dw_hn, db_hn = outer(da_n, r * h), batch_sum(da_n)", "dw_hn, db_hn = outer(da_n, h), batch_sum(da_n)"),
     "r is INSIDE the matrix product", "gru_cell_backward_reset_before"),
    ("GRU reset_after: b_hn without the factor r", "gru_cell_backward", "test_gru_cell_backward_reset_after",
     ("        d_hn = da_n * r  # what W_hn h + b_hn receives", "        d_hn = da_n"),
     "b_hn sits INSIDE r * (W_hn h + b_hn)", "gru_cell_backward_reset_after"),
    ("GRU: z and 1 - z swapped", "gru_cell_backward", "test_gru_cell_backward_reset_after",
     ("    dn = dh_new * (1 - z)\n", "    dn = dh_new * z\n"), "da_n = dh' * (1 - z)", "gru_cell_backward_reset_after"),
    ("BPTT: state not frozen after the length", "bptt", "test_bptt",
     ("        dh = torch.where(alive, step[\"h\"], dh)  # frozen: the copy passes the gradient on unchanged\n"
      "        dc = torch.where(alive, step[\"c\"], dc)\n", "        dh, dc = step[\"h\"], step[\"c\"]\n"),
     "its state is frozen after its last valid step", "lstm_bptt"),
    ("BPTT: backward run on padded steps", "bptt", "test_bptt",
     ("torch.where(alive, dh, zero),\n                                  torch.where(alive, dc, zero))", "dh, dc)"),
     "dL/dx must be zero at padded steps", "lstm_bptt"),
    ("norms: c_t's path through h_t forgotten", "grad_norms", "test_grad_norms",
     ("        dc_norms[t] = (dc + dh * o * (1 - torch.tanh(c_new) ** 2)).norm()", "        dc_norms[t] = dc.norm()"),
     "not 0", "lstm_state_grad_norms"),
]


@pytest.mark.parametrize("mistake", MISTAKES, ids=[m[0] for m in MISTAKES])
def test_visible_tests_name_the_mistake(mistake):
    _, solution_id, grade_id, replace, message, _ = mistake
    assert message in gc.run_visible(NAME, grade_id, solution_id, replace)


def test_visible_tests_pass_on_the_solution():
    for grade_id in ("test_lstm_cell_backward", "test_gru_cell_backward_reset_after",
                     "test_gru_cell_backward_reset_before", "test_bptt", "test_grad_norms"):
        assert gc.run_visible(NAME, grade_id, "setup", ("", "")) == ""


def test_a_visible_test_says_autograd_is_switched_off_when_grading():
    replace = (gc.find(gc.source_notebook(NAME)[1], "lstm_cell_backward").source, AUTOGRAD_LSTM)
    assert "autograd, which is switched off when grading" in gc.run_visible(
        NAME, "test_lstm_cell_backward", "lstm_cell_backward", replace)


def _runs(md: dict) -> bool:
    """The cells ``_functions`` runs, by their nbgrader metadata."""
    return not md.get("grade") and md.get("grade_id") != "check_own_code"


def _functions(solution_id: str, replace: tuple[str, str], stop_after: str | None = None) -> dict:
    """The notebook's setup, given and answer cells run in-process (no test cells), one cell's text replaced, up to
    the cell ``stop_after`` (default: all)."""
    return gc.answer_functions(NAME, solution_id, replace, _runs, stop_after)


@pytest.mark.parametrize("mistake", MISTAKES, ids=[m[0] for m in MISTAKES])
def test_hidden_checks_fail_the_mistake(mistake):
    _, solution_id, _, replace, _, check = mistake
    verdict = gc.verdict(check, _functions(solution_id, replace)[_FUNCTION_OF[check]])
    assert not verdict.passed, verdict.message


def test_the_solution_passes_every_check():
    functions = _functions("setup", ("", ""))
    for check in CHECKS:
        obj = functions["GRADIENT_PATH"] if check == "gradient_path" else functions[_FUNCTION_OF[check]]
        verdict = gc.verdict(check, obj)
        assert verdict.passed, verdict.message
    assert functions["GRADIENT_PATH"] == "c"


def test_delegating_to_autograd_fails_the_hidden_check_with_the_reason():
    fn = _functions("lstm_cell_backward", (gc.find(gc.source_notebook(NAME)[1], "lstm_cell_backward").source,
                                           AUTOGRAD_LSTM), stop_after="lstm_cell_backward")["lstm_cell_backward"]
    verdict = gc.verdict("lstm_cell_backward", fn)
    # the runtime guard names the rule (before: only the RuntimeError autograd raises under no_grad)
    assert not verdict.passed and "calls torch.autograd.grad" in verdict.message, verdict.message


def test_the_part_4_problem_is_the_specs_and_the_cell_state_carries_the_gradient():
    notebook = _functions("setup", ("", ""))
    for args in ((), (30, 2, 3, 8, 0.0, 1), (20, 3, 3, 8, 1.0, 3, torch.float32)):
        for a, b in zip(notebook["long_sequence"](*args), a07.long_sequence(*args), strict=True):
            assert a.dtype == b.dtype and torch.equal(a, b)
    dh, dc = a07._state_grad_norms(*a07.long_sequence())
    assert a07.gradient_path() == "c" and float(dc[0]) > 2 * float(dh[0])
    dh0, dc0 = a07._state_grad_norms(*a07.long_sequence(forget_bias=-2.0))
    assert float(dc0[0]) < 1e-6 * float(dc0[-1]), "with a negative forget bias the carousel should leak"


def test_every_check_has_a_rule_stated_in_the_notebook_and_switches_autograd_off():
    intro = gc.source_notebook(NAME)[1].cells[0].source
    for check in CHECKS:
        spec = specs.get(check)
        assert spec.rule is not None and spec.rule.why in intro, check
        assert spec.grad_enabled is False or spec.kind == "value", check
    rule = specs.get("lstm_cell_backward").rule
    for name in ("torch.autograd.grad", "torch.Tensor.backward", "torch.func.vjp", "torch.enable_grad", "rnnkit.cells",
                 "torch.nn.LSTMCell", "torch.nn.GRUCell", "torch.lstm_cell", "torch._VF.gru_cell"):
        assert rule.forbids(name), name
    assert not rule.forbids("torch.einsum") and not rule.forbids("torch.sigmoid")


# ---------------------------------------------------------------------- whole submissions through `make autograde`
@pytest.mark.slow
def test_sandboxed_grading_of_correct_blank_and_autograd_submissions():
    gc.need_sandbox()
    autograd = gc.correct_notebook(NAME)
    gc.find(autograd, "lstm_cell_backward").source = AUTOGRAD_LSTM
    # Part 1 (2) and everything that steps with the LSTM cell's backward: lstm_bptt (half of 3), Part 4 (2)
    submissions = {
        "correct": (gc.correct_notebook(NAME), 10.0, ["PASS lstm_cell_backward", "PASS gradient_path"]),
        "blank": (nbformat.read(str(gc.REPO / "exercises" / NAME / f"{NAME}.ipynb"), as_version=4), 0.0, []),
        "autograd": (autograd, 4.5, ["FAIL lstm_cell_backward", "PASS gru_bptt"]),
    }
    seconds = gc.grade_batch(NAME, submissions, jobs=1)
    assert all(s < 240 for s in seconds.values()), seconds
