"""rnnkit.grading.guard: the runtime record of forbidden calls, on its own (no static check involved).

Every delegation is written as student code (compiled from source, as a notebook cell is) in six forms: a direct
call, an alias, a helper function, a computed ``getattr``, ``exec`` of a string, and a lambda stored in a dict.
"""
import functools
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import rnnkit
from rnnkit.grading import guard
from rnnkit.grading.guard import CallRecord, recording
from rnnkit.grading.rules import Rule, describe

RULE = Rule(
    forbidden=("torch.lstm_cell", "torch.gru_cell", "torch.rnn_tanh_cell", "torch._VF.*", "torch.nn.LSTMCell",
               "torch.nn.LSTM", "torch.nn.functional.*", "torch.log_softmax", "torch.Tensor.log_softmax",
               "torch.autograd.*", "torch.Tensor.backward", "torch.nn.utils.clip_grad_*", "rnnkit.cells.lstm_cell",
               "rnnkit.data.adding_problem", "rnnkit.*"),
    why="write it yourself",
    allowed=("torch.nn.functional.linear", "rnnkit.data.pad_batch"),
    uncallable_args=("cell",),
)


def reference(cell, x, h, c):
    """Names the graded function's parameters (the spec's reference plays this part)."""


def _inputs():
    g = torch.Generator().manual_seed(0)
    cell = torch.nn.GRUCell(3, 4)
    with torch.no_grad():  # seeded weights: every call builds the same cell
        for p in cell.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    x, h, c = torch.randn(2, 3, generator=g), torch.randn(2, 4, generator=g), torch.randn(2, 4, generator=g)
    return cell, x, h, c


def _namespace():
    """What a student's kernel holds: the libraries, weights, a loss with a graph, a parameter with a gradient."""
    g = torch.Generator().manual_seed(1)
    w = torch.randn(4, 3, generator=g, requires_grad=True)
    param = torch.nn.Parameter(torch.ones(3))
    param.grad = torch.full((3,), 10.0)

    def graph():  # a scalar and the input it depends on, built with autograd on (rnn_bptt runs under no_grad)
        with torch.enable_grad():
            a = torch.randn(2, 3, generator=g).requires_grad_()
            return (a * a).sum(), a

    return {"torch": torch, "F": F, "rnnkit": rnnkit, "functools": functools, "graph": graph, "param": param,
            "loss": (w * 2).sum(), "w_ih": torch.randn(16, 3, generator=g), "w_hh": torch.randn(16, 4, generator=g),
            "w_ih_g": torch.randn(12, 3, generator=g), "w_hh_g": torch.randn(12, 4, generator=g),
            "w_ih_r": torch.randn(4, 3, generator=g), "w_hh_r": torch.randn(4, 4, generator=g)}


# (callee, arguments, what to do with the result, the name the record must show first)
DELEGATIONS = {
    "torch.lstm_cell": ("torch.lstm_cell", "x, (h, c), w_ih, w_hh", "", "torch.lstm_cell"),
    "torch._VF.lstm_cell": ("torch._VF.lstm_cell", "x, (h, c), w_ih, w_hh", "", "torch.lstm_cell"),
    "torch.nn.LSTMCell": ("torch.nn.LSTMCell", "3, 4", "(x)", "torch.nn.LSTMCell"),
    "torch.rnn_tanh_cell": ("torch.rnn_tanh_cell", "x, h, w_ih_r, w_hh_r", "", "torch.rnn_tanh_cell"),
    "torch.gru_cell": ("torch.gru_cell", "x, h, w_ih_g, w_hh_g", "", "torch.gru_cell"),
    "F.log_softmax": ("F.log_softmax", "x, 1", "", "torch.nn.functional.log_softmax"),
    "torch.log_softmax": ("torch.log_softmax", "x, 1", "", "torch.log_softmax"),
    "Tensor.log_softmax": ("x.log_softmax", "1", "", "torch.Tensor.log_softmax"),
    "torch.autograd.grad": ("torch.autograd.grad", "*graph()", "", "torch.autograd.grad"),
    "loss.backward": ("loss.backward", "", "", "torch.Tensor.backward"),
    "clip_grad_norm_": ("torch.nn.utils.clip_grad_norm_", "[param], 1.0", "", "torch.nn.utils.clip_grad_norm_"),
    "rnnkit.cells.lstm_cell": ("rnnkit.cells.lstm_cell", "x, (h, c), w_ih, w_hh", "", "rnnkit.cells.lstm_cell"),
    "rnnkit.LSTM": ("rnnkit.LSTM", "3, 4", "(x[None])", "rnnkit.LSTM"),
    "rnnkit.data.adding_problem": ("rnnkit.data.adding_problem", "4, 5, seed=0", "", "rnnkit.data.adding_problem"),
    "given cell": ("cell", "x, h", "", "cell()"),
    "given cell.forward": ("cell.forward", "x, h", "", "cell()"),
}


def _source(form: str, callee: str, args: str, then: str) -> str:
    root, *path = callee.split(".")
    if form == "direct":
        return f"def answer(cell, x, h, c):\n    return {callee}({args}){then}\n"
    if form == "alias":  # import torch as T; f = T.lstm_cell
        alias = callee.replace("torch.", "T.", 1) if root == "torch" else callee
        return f"import torch as T\ndef answer(cell, x, h, c):\n    f = {alias}\n    return f({args}){then}\n"
    if form == "helper":
        return (f"def _inner(cell, x, h, c):\n    return {callee}({args}){then}\n"
                f"def _outer(*a):\n    return _inner(*a)\n"
                f"def answer(cell, x, h, c):\n    return _outer(cell, x, h, c)\n")
    if form == "getattr":  # getattr(torch, "lstm" + "_cell"): no name a text check could read
        pieces = [f"{p[:2]!r} + {p[2:]!r}" for p in path]
        lookup = root + "".join(f", {p}" for p in pieces)
        return (f"def answer(cell, x, h, c):\n    f = functools.reduce(getattr, [{', '.join(pieces)}], {root})\n"
                f"    return f({args}){then}\n") if path else _source("direct", callee, args, then) + f"# {lookup}\n"
    if form == "exec":
        return (f"def answer(cell, x, h, c):\n    scope = dict(globals(), cell=cell, x=x, h=h, c=c)\n"
                f"    exec('out = ' + {callee!r} + '(' + {args!r} + '){then}', scope)\n    return scope['out']\n")
    if form == "lambda in dict":
        return (f"TABLE = {{'go': lambda cell, x, h, c: {callee}({args}){then}}}\n"
                f"def answer(cell, x, h, c):\n    return TABLE['go'](cell, x, h, c)\n")
    raise AssertionError(form)


def _student(source: str):
    ns = _namespace()
    exec(compile(source, "<student cell>", "exec"), ns)
    return ns["answer"]


def _run(fn, rule=RULE, args=None):
    args = _inputs() if args is None else args
    with torch.no_grad(), recording(rule, args, fn=reference) as rec:  # grading runs some checks under no_grad
        out = fn(*args)
    return rec, out


FORMS = ("direct", "alias", "helper", "getattr", "exec", "lambda in dict")


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("delegation", DELEGATIONS)
def test_each_delegation_is_recorded_in_every_form(delegation, form):
    callee, args, then, name = DELEGATIONS[delegation]
    rec, _ = _run(_student(_source(form, callee, args, then)))
    assert rec.complete
    assert rec.calls and rec.calls[0] == name, rec.calls


@pytest.mark.parametrize("how", ["map", "partial", "torch.ops.aten", "bound method"])
def test_calls_made_from_c_code_are_recorded(how):
    """map/partial call torch.lstm_cell from C, where the profiler sees nothing: the torch function mode does."""
    code = {"map": "list(map(torch.lstm_cell, [x], [(h, c)], [w_ih], [w_hh]))",
            "partial": "functools.partial(torch.lstm_cell, x, (h, c))(w_ih, w_hh)",
            "torch.ops.aten": "torch.ops.aten.lstm_cell(x, [h, c], w_ih, w_hh)",
            "bound method": "[x.log_softmax][0](1)"}[how]
    rec, _ = _run(_student(f"def answer(cell, x, h, c):\n    return {code}\n"))
    assert rec.calls[:1] == (["torch.Tensor.log_softmax"] if how == "bound method" else ["torch.lstm_cell"])


def test_subclass_of_a_forbidden_module_is_recorded():
    rec, _ = _run(_student("class Mine(torch.nn.LSTMCell):\n    pass\n"
                           "def answer(cell, x, h, c):\n    return Mine(3, 4)(x)\n"))
    assert rec.calls[0] == "torch.nn.LSTMCell"


def test_a_module_built_before_the_call_is_recorded_when_run():
    ns = _namespace()
    exec("built = torch.nn.LSTM(3, 4)\ndef answer(cell, x, h, c):\n    return built(x[None])\n", ns)
    rec, _ = _run(ns["answer"])
    assert rec.calls[0] == "torch.nn.LSTM"


CORRECT = '''
def lstm(x, h, c):
    gates = torch.addmm(torch.einsum("hi,bi->bh", w_hh, h), x, w_ih.T)  # (B, 4H)
    i, f, g, o = gates.chunk(4, dim=1)
    c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c_new), c_new

def gru(x, h):
    r, z, n = F.linear(x, w_ih_g).chunk(3, 1)
    rh, zh, nh = (h @ w_hh_g.T).chunk(3, 1)
    r, z = torch.sigmoid(r + rh), torch.sigmoid(z + zh)
    return torch.lerp(torch.tanh(n + r * nh), h, z)

def answer(cell, x, h, c):
    h1, c1 = lstm(x, h, c)
    log_p = x - torch.logsumexp(x, dim=1, keepdim=True)
    with torch.no_grad():
        w_ih_g.copy_(cell.weight_ih)  # reading the given cell's weights is fine
        w_hh_g.copy_(cell.weight_hh)
    padded, lengths = rnnkit.data.pad_batch([x, x[:1]])  # handed out: its own rnnkit helpers are not recorded
    return h1, c1, gru(x, h), log_p, padded, lengths
'''


def test_correct_answer_records_nothing_and_returns_the_same():
    fn = _student(CORRECT)
    rec, guarded = _run(fn, args=_inputs())
    assert rec.calls == [] and rec.complete
    plain = fn(*_inputs())
    for a, b in zip(plain, guarded, strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b)


def test_gradients_are_unchanged_by_the_guard():
    def step(w):
        return (torch.tanh(w @ w.T).sum() ** 2).sum()

    grads = []
    for guarded in (False, True):
        w = torch.linspace(-1, 1, 12, dtype=torch.float64).reshape(3, 4).requires_grad_()
        if guarded:
            with recording(Rule(("torch.lstm_cell",), "x")) as rec:
                grads.append(torch.autograd.grad(step(w), w)[0])
            assert rec.calls == []  # this rule leaves autograd alone
        else:
            grads.append(torch.autograd.grad(step(w), w)[0])
    assert grads[0].dtype == grads[1].dtype == torch.float64 and torch.equal(grads[0], grads[1])


def test_what_libraries_call_inside_themselves_is_not_the_students():
    """torch.no_grad() calls torch.set_grad_enabled, nn.Dropout calls F.dropout: neither is the student's call."""
    rule = Rule(("torch.set_grad_enabled", "torch.autograd.*", "torch.nn.functional.*"), "x")
    ns = _namespace()
    exec("@torch.no_grad()\ndef helper(x):\n    return torch.nn.Dropout(0.5).eval()(x) * 2\n"
         "def answer(cell, x, h, c):\n    with torch.no_grad():\n        return helper(x)\n", ns)
    rec, _ = _run(ns["answer"], rule=rule)
    assert rec.calls == [] and rec.complete
    exec("def answer(cell, x, h, c):\n    torch.set_grad_enabled(False)\n    return F.dropout(x, 0.5, False)\n", ns)
    rec, _ = _run(ns["answer"], rule=rule)
    assert rec.calls == ["torch.set_grad_enabled", "torch.nn.functional.dropout"]


@pytest.mark.parametrize("caller_file, recorded", [("grading/export_like.py", True), ("data/library_like.py", False)])
def test_the_answer_being_a_forbidden_function_itself_is_recorded(caller_file, recorded):
    """``lstm_cell_forward = torch.lstm_cell``: the export (in rnnkit.grading) makes the call, and that counts as the
    answer's; the same call made from library code (rnnkit outside grading) is the library's own business."""
    ns = {}
    path = Path(rnnkit.__file__).resolve().parent / caller_file
    exec(compile("def call(f, *a):\n    return f(*a)\n", str(path), "exec"), ns)
    _, x, h, c = _inputs()
    answers = [(torch.lstm_cell, (x, (h, c), torch.randn(16, 3), torch.randn(16, 4)), "torch.lstm_cell"),
               (rnnkit.LSTMCell, (3, 4), "rnnkit.LSTMCell")]
    for answer, args, name in answers:
        with recording(Rule(("torch.lstm_cell", "rnnkit.*"), "x")) as rec:
            ns["call"](answer, *args)
        assert rec.calls == ([name] if recorded else [])


def test_the_students_own_module_calling_a_forbidden_function_is_recorded():
    rec, _ = _run(_student("class Mine(torch.nn.Module):\n    def forward(self, x, h, c):\n"
                           "        return torch.lstm_cell(x, (h, c), w_ih, w_hh)\n"
                           "def answer(cell, x, h, c):\n    return Mine()(x, h, c)\n"))
    assert rec.calls == ["torch.lstm_cell"]


def test_a_wildcard_does_not_reach_an_object_public_under_another_name():
    """torch._VF.tanh is torch.tanh: "torch._VF.*" must not fail an answer that calls torch.tanh."""
    rec, _ = _run(lambda cell, x, h, c: (torch.tanh(x), torch._VF.tanh(x)), rule=Rule(("torch._VF.*",), "x"))
    assert rec.calls == []


def test_grading_machinery_is_never_recorded():
    rule = Rule(("rnnkit.*",), "x")
    with recording(rule) as rec:
        describe(rule)
        CallRecord(["a"], True).export("p.")
    assert rec.calls == []


def test_rnnkit_code_loaded_after_the_index_is_named_by_its_file():
    rnnkit_dir = Path(rnnkit.__file__).resolve().parent
    ns = {}
    exec(compile("def late():\n    pass\n", str(rnnkit_dir / "data" / "late_module.py"), "exec"), ns)
    index = guard._index(Rule(("rnnkit.*",), "late"))
    assert index.code_entries(ns["late"].__code__) == (("rnnkit.data.late_module.late", None),)
    grading_code = compile("def g():\n    pass\n", str(rnnkit_dir / "grading" / "x.py"), "exec").co_consts[0]
    assert index.code_entries(grading_code) == ()


def test_matcher_agrees_with_rule_forbids():
    table = guard._name_table(guard._roots(RULE))
    names = [n for _, obj_names in table.values() for n in obj_names] + ["torch.autograd", "torch.autogradx"]
    forbidden = guard._matcher(RULE.forbidden)
    allowed = guard._matcher(RULE.allowed)
    for n in names:
        assert (bool(forbidden(n)) and not allowed(n)) == RULE.forbids(n), n


def _hooks():
    return sys.getprofile(), threading.getprofile(), sys.setprofile, torch.overrides._get_current_function_mode_stack()


@pytest.mark.parametrize("tamper", [
    "sys.setprofile(None)",
    "__import__('sys').setprofile(lambda *a: None)",
    "list(map(sys.setprofile, [None]))",
    "torch._C._pop_torch_function_stack()",
    "sys.setprofile = print",
])
def test_removing_the_guard_makes_the_record_incomplete_and_is_undone(tamper):
    before = _hooks()
    ns = _namespace()
    exec(f"import sys\ndef answer(cell, x, h, c):\n    {tamper}\n    return torch.lstm_cell(x, (h, c), w_ih, w_hh)\n",
         ns)
    rec, _ = _run(ns["answer"])
    assert not rec.complete
    assert _hooks() == before


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit, ValueError])
def test_state_restored_after_an_exception(exc):
    before = _hooks()
    with pytest.raises(exc):
        with recording(RULE, _inputs(), fn=reference) as rec:
            torch.gru_cell(*_inputs()[1:3], torch.randn(12, 3), torch.randn(12, 4))
            raise exc()
    assert _hooks() == before
    assert rec.calls == ["torch.gru_cell"] and rec.complete


def test_nested_recordings_both_record_and_restore():
    before = _hooks()
    x = torch.randn(2, 3)
    with recording(Rule(("torch.log_softmax",), "outer")) as outer:
        with recording(Rule(("torch.nn.functional.softmax",), "inner")) as inner:
            F.softmax(x, 1)
            torch.log_softmax(x, 1)
        torch.log_softmax(x, 1)
        F.softmax(x, 1)
    assert inner.calls == ["torch.nn.functional.softmax"] and inner.complete
    assert outer.calls == ["torch.log_softmax"] and outer.complete
    assert _hooks() == before


def test_a_thread_started_by_the_answer_is_watched():
    x = torch.randn(2, 3)
    with recording(RULE, _inputs(), fn=reference) as rec:
        t = threading.Thread(target=lambda: torch.log_softmax(x, 1))
        t.start()
        t.join()
    assert rec.calls == ["torch.log_softmax"]


def test_bad_arguments():
    with pytest.raises(TypeError, match="expected a Rule, got str"):
        with recording("torch.lstm_cell"):
            pass
    with pytest.raises(TypeError, match="pass fn="):
        with recording(RULE, _inputs()):
            pass


def test_export_round_trip_through_npz(tmp_path):
    record = CallRecord(["torch.lstm_cell", "cell()"], True)
    np.savez(tmp_path / "e.npz", **record.export("c0.guard."), other=np.array(1))
    with np.load(tmp_path / "e.npz", allow_pickle=False) as npz:
        loaded = {k: npz[k] for k in npz.files}
    assert CallRecord.from_export(loaded, "c0.guard.") == record
    empty = CallRecord([], False)
    assert CallRecord.from_export(empty.export("p."), "p.") == empty
    assert all(v.dtype.kind in "Ub" for v in record.export("p.").values())


@pytest.mark.parametrize("damage", ["missing calls", "missing complete", "missing format", "wrong format",
                                    "calls not strings", "calls 2-d", "complete not bool", "complete 1-d",
                                    "object array", "other prefix"])
def test_malformed_export_is_none(damage):
    good = CallRecord(["torch.lstm_cell"], True).export("p.")
    bad = dict(good)
    if damage.startswith("missing"):
        del bad["p." + damage.split()[1]]
    elif damage == "wrong format":
        bad["p.format"] = np.array("rnnkit-guard-0")
    elif damage == "calls not strings":
        bad["p.calls"] = np.array([1, 2])
    elif damage == "calls 2-d":
        bad["p.calls"] = np.array([["torch.lstm_cell"]])
    elif damage == "complete not bool":
        bad["p.complete"] = np.array(1)
    elif damage == "complete 1-d":
        bad["p.complete"] = np.array([True])
    elif damage == "object array":
        bad["p.calls"] = np.array(["x"], dtype=object)
    assert CallRecord.from_export(good, "p.") is not None
    assert CallRecord.from_export(bad, "q." if damage == "other prefix" else "p.") is None
