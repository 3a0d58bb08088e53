"""Copy detection (rnnkit/grading/similarity.py, ``make similarity``) on a generated class of 03_lstm submissions.

30 students answer independently: each answer is built from several templates per graded function (chunk, slicing,
unbind, per-gate helper, a loop over gates; matmul, ``@``, einsum, ``F.linear``; torch.where, mask arithmetic,
lerp, boolean indexing; a loop or a closed formula for the count ...), random variable names, comments and
layout, and every one is checked to be correct. Three more are near-copies of one of them: variables and helpers
renamed, helpers reordered, comments and whitespace changed. Two submit the template, one an unreadable file.
"""
from __future__ import annotations

import builtins
import contextlib
import html
import io
import itertools
import json
import keyword
import random
import re
import shutil
import tokenize

import grading_cases as gc
import nbformat
import pytest
import torch

from rnnkit.grading import notebooks, similarity

ASSIGNMENT = "03_lstm"
INDEPENDENT = 30
ORIGINAL = "s07"
COPIES = ("copy_a", "copy_b", "copy_c")
BLANK = ("blank_1", "blank_2")
SIGNATURES = {
    "lstm_cell_forward": "def lstm_cell_forward(x, h, c, w_ih, w_hh, b_ih, b_hh):",
    "lstm_forward": "def lstm_forward(x, h0, c0, lengths, w_ih, w_hh, b_ih, b_hh):",
    "lstm_param_count": "def lstm_param_count(input_size, hidden_size, num_layers=1, bias=True, bidirectional=False):",
    "forget_bias_retention": "def forget_bias_retention(w_ih, w_hh, forget_bias, steps):",
}
POOLS = {  # a student's names for each role
    "z": ["gates", "z", "pre", "a", "lin", "s", "acts", "preact"],
    "H": ["H", "n_h", "hidden", "hs", "size", "nh"],
    "gates": [("i", "f", "g", "o"), ("in_gate", "forget_gate", "cand", "out_gate"), ("ig", "fg", "gg", "og"),
              ("inp", "forg", "cell", "outp"), ("i_t", "f_t", "g_t", "o_t")],
    "c2": ["c_new", "c_next", "c2", "new_c", "cell_state", "c_t"],
    "h2": ["h_new", "h_next", "h2", "new_h", "hidden_state", "h_t"],
    "helper": ["_gate", "gate_preact", "_rows", "pre_activation", "_block"],
    "sig": ["_sigmoid", "sigm", "logistic", "_sig"],
    "out": ["outputs", "outs", "ys", "result", "hs_all", "seq"],
    "t": ["t", "step", "k", "ti"],
    "mask": ["alive", "mask", "m", "active", "keep", "valid"],
    "total": ["total", "n", "count", "params", "acc"],
    "d": ["directions", "d", "dirs", "n_dir", "nd"],
    "layer": ["layer", "l", "li", "layer_idx"],
    "nin": ["layer_input", "n_in", "in_size", "fan_in", "inputs"],
    "bias_v": ["b_ih", "bias_ih", "b1", "bi"],
    "ratio": ["ratio", "r", "kept", "retention"],
}
COMMENTS = ["# pre-activations of all four gates", "# PyTorch's row order: i, f, g, o", "# new cell state",
            "# keep the state of finished sequences", "# weights and biases per layer", "# one step at a time",
            "# (B, 4H)", "# sigmoid gates", "# count both directions", "# zero inputs", "# norm ratio"]


FRESH_NAMES = ["a", "b", "u", "w", "p", "q", "r", "val", "acc", "tmp", "gi", "gf", "blk", "res", "y", "st", "cs", "nxt",
               "pre_gates", "hc", "cc", "hh", "zz", "sg", "act", "idx", "lo", "hi", "tot", "cnt", "layer_no", "width",
               "buf", "ys_out", "msk", "on", "run", "go", "state_h", "state_c", "fb", "vec", "prev", "curr", "cell_fn"]


class Student:
    """One student's choices: a name per role, a template per function, comments and layout."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.n = {role: rng.choice(pool) for role, pool in POOLS.items()}
        self.i, self.f, self.g, self.o = self.n["gates"]
        self.imports_f = False

    def sig(self, v: str) -> str:
        forms = {"torch": f"torch.sigmoid({v})", "method": f"{v}.sigmoid()", "own": f"{self.n['sig']}({v})"}
        return forms[self.sig_kind]

    def tanh(self, v: str) -> str:
        return f"torch.tanh({v})" if self.tanh_kind == "torch" else f"{v}.tanh()"

    def linear(self, inp: str, w: str, b: str | None) -> str:
        kind = self.pre_kind
        if kind == "F":
            self.imports_f = True
            return f"F.linear({inp}, {w}, {b})" if b else f"F.linear({inp}, {w})"
        core = {"at": f"{inp} @ {w}.T", "matmul": f"torch.matmul({inp}, {w}.t())",
                "einsum": f'torch.einsum("...k,gk->...g", {inp}, {w})'}[kind]
        return f"{core} + {b}" if b else core

    def pick(self, *options: str) -> str:
        """One of equivalent ways to write a line: students differ in these small habits too."""
        return self.rng.choice(options)

    def comment(self) -> str:
        return f"  {self.rng.choice(COMMENTS)}" if self.rng.random() < 0.3 else ""


def _cell_forward(s: Student, kind: str) -> str:
    n, i, f, g, o = s.n, s.i, s.f, s.g, s.o
    z, H, c2, h2 = n["z"], n["H"], n["c2"], n["h2"]
    pre = f"{s.linear('x', 'w_ih', 'b_ih')} + {s.linear('h', 'w_hh', 'b_hh')}"
    update = (f"torch.addcmul({s.sig(f)} * c, {s.sig(i)}, {s.tanh(g)})" if s.addcmul
              else f"{s.sig(f)} * c + {s.sig(i)} * {s.tanh(g)}")
    helpers, body = [], []
    if kind == "chunk":
        split = s.rng.choice([f"{z}.chunk(4, dim=-1)", f"torch.chunk({z}, 4, -1)", f"{z}.split(h.shape[-1], dim=-1)"])
        body = [f"{z} = {pre}{s.comment()}", f"{i}, {f}, {g}, {o} = {split}"]
    elif kind == "slice":
        body = [f"{H} = h.shape[-1]", f"{z} = {pre}{s.comment()}"]
        body += [f"{v} = {z}[..., {a}:{b}]" for v, a, b in
                 ((i, "0", H), (f, H, f"2 * {H}"), (g, f"2 * {H}", f"3 * {H}"), (o, f"3 * {H}", ""))]
    elif kind == "unbind":
        body = [f"{z} = {pre}", f"{z} = {z}.unflatten(-1, (4, -1)){s.comment()}",
                f"{i}, {f}, {g}, {o} = {z}.unbind(-2)"]
    elif kind == "helper":
        hp = n["helper"]
        helpers.append(f"def {hp}(x, h, w_ih, w_hh, b_ih, b_hh, k):\n    {H} = w_hh.shape[1]\n"
                       f"    rows = slice(k * {H}, (k + 1) * {H})\n"
                       f"    return {s.linear('x', 'w_ih[rows]', 'b_ih[rows]')}"
                       f" + {s.linear('h', 'w_hh[rows]', 'b_hh[rows]')}")
        body = [f"{v} = {hp}(x, h, w_ih, w_hh, b_ih, b_hh, {k}){s.comment() if k == 0 else ''}"
                for k, v in enumerate((i, f, g, o))]
    else:  # a loop over the gates' row blocks
        body = [f"{H} = w_hh.shape[1]", "parts = []", "for k in range(4):", f"    rows = slice(k * {H}, (k + 1) * {H})",
                f"    parts.append({s.linear('x', 'w_ih[rows]', 'b_ih[rows]')}"
                f" + {s.linear('h', 'w_hh[rows]', 'b_hh[rows]')})",
                f"{i}, {f}, {g}, {o} = parts"]
    body += [f"{c2} = {update}{s.comment()}", f"{h2} = {s.sig(o)} * {s.tanh(c2)}", f"return {h2}, {c2}"]
    if s.sig_kind == "own":
        helpers.insert(s.rng.randrange(len(helpers) + 1),
                       f"def {n['sig']}(v):\n    return 1 / (1 + torch.exp(-v))")
    return helpers, body


def _lstm_forward(s: Student, kind: str) -> list[str]:
    n = s.n
    out, t, m, c2, h2 = n["out"], n["t"], n["mask"], n["c2"], n["h2"]
    step = f"{h2}, {c2} = lstm_cell_forward(x[{t}], h, c, w_ih, w_hh, b_ih, b_hh)"
    if kind == "where":
        return [s.pick("h, c = h0, c0", "h = h0\nc = c0"), f"{out} = []",
                s.pick(f"for {t} in range(x.shape[0]):", f"for {t} in range(len(x)):", f"for {t} in range(x.size(0)):"),
                f"    {step}",
                f"    {m} = " + s.pick(f"({t} < lengths).to(x.device).unsqueeze(1)",
                                 f"(lengths > {t})[:, None].to(x.device)",
                                 f"lengths.to(x.device).gt({t}).view(-1, 1)") + s.comment(),
                f"    h = torch.where({m}, {h2}, h)", f"    c = torch.where({m}, {c2}, c)",
                f"    {out}.append(" + s.pick(f"torch.where({m}, {h2}, torch.zeros_like({h2}))", f"{h2} * {m}",
                                          f"{h2}.masked_fill(~{m}, 0.0)") + ")",
                f"return torch.stack({out}), h, c"]
    if kind == "arith":
        return ["T = x.shape[0]", "h, c = h0.clone(), c0.clone()",
                f"{out} = x.new_zeros(T, h0.shape[0], h0.shape[1])", f"for {t} in range(T):", f"    {step}",
                f"    {m} = ({t} < lengths).to(x.dtype).to(x.device)[:, None]{s.comment()}",
                s.pick(f"    h = {m} * {h2} + (1 - {m}) * h", f"    h = h + {m} * ({h2} - h)"),
                s.pick(f"    c = {m} * {c2} + (1 - {m}) * c", f"    c = c + {m} * ({c2} - c)"),
                f"    {out}[{t}] = {m} * {h2}", f"return {out}, h, c"]
    if kind == "lerp":
        return ["h, c = h0, c0", f"{out} = []", f"{t} = 0", f"while {t} < len(x):", f"    {step}",
                f"    {m} = (lengths > {t}).unsqueeze(-1).to(dtype=x.dtype, device=x.device)",
                f"    h = torch.lerp(h, {h2}, {m})", f"    c = torch.lerp(c, {c2}, {m}){s.comment()}",
                f"    {out}.append({h2} * {m})", f"    {t} += 1", f"return torch.stack({out}, dim=0), h, c"]
    return ["h, c = h0.clone(), c0.clone()",
            f"{out} = torch.zeros(x.shape[0], *h0.shape, dtype=x.dtype, device=x.device)",
            f"for {t}, x_t in enumerate(x):", f"    {m} = ({t} < lengths).to(x.device){s.comment()}",
            f"    if not {m}.any():", "        break",
            f"    {h2}, {c2} = lstm_cell_forward(x_t, h, c, w_ih, w_hh, b_ih, b_hh)",
            f"    h[{m}] = {h2}[{m}]", f"    c[{m}] = {c2}[{m}]", f"    {out}[{t}][{m}] = {h2}[{m}]",
            f"return {out}, h, c"]


def _param_count(s: Student, kind: str) -> tuple[list[str], list[str]]:
    n = s.n
    total, d, layer, nin = n["total"], n["d"], n["layer"], n["nin"]
    if kind == "loop":
        return [], [f"{d} = 2 if bidirectional else 1", f"{total} = 0", f"for {layer} in range(num_layers):",
                    f"    {nin} = " + s.pick(f"input_size if {layer} == 0 else hidden_size * {d}",
                                          f"hidden_size * {d} if {layer} else input_size"),
                    s.pick(f"    {total} += {d} * (4 * hidden_size * ({nin} + hidden_size)"
                           " + (8 * hidden_size if bias else 0))",
                           f"    {total} += {d} * 4 * hidden_size * ({nin} + hidden_size + (2 if bias else 0))"),
                    f"return {total}"]
    if kind == "closed":
        return [], [f"{d} = 1 + int(bidirectional){s.comment()}", "G = 4 * hidden_size",
                    "first = G * input_size + G * hidden_size", f"rest = G * {d} * hidden_size + G * hidden_size",
                    "biases = 2 * G if bias else 0",
                    f"return {d} * (first + (num_layers - 1) * rest + num_layers * biases)"]
    if kind == "helper":
        hp = "_" + n["helper"].strip("_") + "_params"
        return ([f"def {hp}(n_in, n_h, bias):\n    weights = 4 * n_h * n_in + 4 * n_h * n_h\n"
                 f"    return weights + (8 * n_h if bias else 0)"],
                [f"{d} = 2 if bidirectional else 1",
                 f"sizes = [input_size] + [{d} * hidden_size] * (num_layers - 1){s.comment()}",
                 f"return sum({d} * {hp}(size, hidden_size, bias) for size in sizes)"])
    return [], [f"{total} = 0", f"{nin} = input_size",
                s.pick("for _ in range(num_layers):", "for _layer in range(num_layers):"),
                "    for _direction in range(" + s.pick("2 if bidirectional else 1", "1 + bidirectional") + "):",
                f"        {total} += " + s.pick(f"hidden_size * 4 * {nin}  # W_ih", f"4 * hidden_size * {nin}"),
                f"        {total} += " + s.pick("hidden_size * 4 * hidden_size", "4 * hidden_size ** 2"),
                "        if bias:", f"            {total} += " + s.pick("2 * 4 * hidden_size", "8 * hidden_size"),
                f"    {nin} = hidden_size * (2 if bidirectional else 1)", f"return int({total})"]


def _retention(s: Student, kind: str) -> list[str]:
    n = s.n
    H, b, r = n["H"], n["bias_v"], n["ratio"]
    if kind == "zeros":
        return [s.pick(f"{H}, n_in = w_hh.shape[1], w_ih.shape[1]", f"{H} = w_hh.shape[1]\nn_in = w_ih.shape[1]"),
                f"{b} = " + s.pick(f"torch.zeros(4 * {H}, dtype=w_ih.dtype, device=w_ih.device)",
                                   f"w_ih.new_zeros(4 * {H})"),
                f"{b}[{H}:2 * {H}] = forget_bias{s.comment()}",
                "x = torch.zeros(1, n_in, dtype=w_ih.dtype, device=w_ih.device)",
                f"h = torch.zeros(1, {H}, dtype=w_ih.dtype, device=w_ih.device)",
                f"c = c0 = torch.ones(1, {H}, dtype=w_ih.dtype, device=w_ih.device)",
                "for _ in range(steps):",
                f"    h, c = lstm_cell_forward(x, h, c, w_ih, w_hh, {b}, torch.zeros_like({b}))",
                s.pick("return float(c.norm() / c0.norm())", "return (c.norm() / c0.norm()).item()",
                       f"return float(torch.linalg.norm(c) / {H} ** 0.5)")]
    if kind == "cat":
        return [f"{H} = w_hh.shape[-1]", f"zero = w_ih.new_zeros({H})",
                f"{b} = torch.cat([zero, torch.full_like(zero, forget_bias), zero, zero])",
                "x = w_ih.new_zeros(w_ih.shape[1])", f"h = w_ih.new_zeros({H})", f"c0 = w_ih.new_ones({H})", "c = c0",
                "for step in range(steps):", f"    h, c = lstm_cell_forward(x, h, c, w_ih, w_hh, {b}, 0 * {b})",
                f"{r} = torch.linalg.vector_norm(c) / torch.linalg.vector_norm(c0){s.comment()}",
                f"return {r}.item()"]
    return [f"{H} = w_hh.shape[1]", f"{b} = w_ih.new_zeros(4, {H})", f"{b}[1] = forget_bias  # forget block",
            f"{b} = {b}.reshape(-1)", "state = (w_ih.new_zeros(1, w_hh.shape[1]), w_ih.new_ones(1, w_hh.shape[1]))",
            "x = w_ih.new_zeros(1, w_ih.shape[1])", "n = 0", "while n < steps:",
            f"    state = lstm_cell_forward(x, *state, w_ih, w_hh, {b}, w_ih.new_zeros(4 * {H}))", "    n += 1",
            f"{r} = (state[1] ** 2).sum().sqrt() / {H} ** 0.5", f"return float({r})"]


def _function(s: Student, name: str, body: list[str]) -> str:
    lines = [SIGNATURES[name]]
    if s.keep_docstrings:
        lines.append(f'    """{s.rng.choice(["My answer.", "See above.", "LSTM part " + name + "."])}"""')
    for line in "\n".join(body).splitlines():
        lines.append("    " + line)
        if s.rng.random() < 0.08:
            lines.append("")
    return "\n".join(lines)


def independent_answers(rng: random.Random, styles: tuple) -> dict[str, str]:
    """grade_id -> cell source for one student who chose ``styles`` = (cell, pre, sig, tanh, addcmul, forward,
    count, retention)."""
    s = Student(rng)
    cell, s.pre_kind, s.sig_kind, s.tanh_kind, s.addcmul, fwd, count, ret = styles
    s.keep_docstrings = rng.random() < 0.5
    helpers, body = _cell_forward(s, cell)
    answers = {"lstm_cell_forward": "\n\n\n".join([*helpers, _function(s, "lstm_cell_forward", body)])}
    if s.imports_f:
        answers["lstm_cell_forward"] = "import torch.nn.functional as F\n\n\n" + answers["lstm_cell_forward"]
    answers["lstm_forward"] = _function(s, "lstm_forward", _lstm_forward(s, fwd))
    helpers, body = _param_count(s, count)
    answers["lstm_param_count"] = "\n\n\n".join([*helpers, _function(s, "lstm_param_count", body)])
    answers["forget_bias_retention"] = _function(s, "forget_bias_retention", _retention(s, ret))
    return answers


STYLE_CHOICES = (["chunk", "slice", "unbind", "helper", "loop"], ["at", "matmul", "einsum", "F"],
                 ["torch", "method", "own"], ["torch", "method"], [False, True], ["where", "arith", "lerp", "index"],
                 ["loop", "closed", "helper", "nested"], ["zeros", "cat", "blocks"])


def class_answers(seed: int = 0) -> dict[str, dict[str, str]]:
    """30 students with 30 different combinations of styles (two students who chose the same structure for every
    function wrote the same program up to names: no token-based detector could tell them from a copy)."""
    rng = random.Random(seed)
    copied = ("helper", "F", "own", "method", True, "lerp", "helper", "cat")  # helpers to rename and reorder
    seen, answers = {copied[:1] + copied[5:]}, {}
    while len(answers) < INDEPENDENT:
        student = f"s{len(answers):02d}"
        styles = copied if student == ORIGINAL else tuple(rng.choice(options) for options in STYLE_CHOICES)
        if student != ORIGINAL and styles[:1] + styles[5:] in seen:
            continue
        seen.add(styles[:1] + styles[5:])
        answers[student] = independent_answers(rng, styles)
    return answers


def _rename(source: str, mapping: dict[str, str]) -> str:
    """Replace NAME tokens (never text inside strings or comments) by their new names."""
    tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    return tokenize.untokenize((t.type, mapping.get(t.string, t.string) if t.type == tokenize.NAME else t.string,
                                t.start, t.end, t.line) for t in tokens)


def near_copy(answers: dict[str, str], rng: random.Random) -> dict[str, str]:
    """What a student who copied does to hide it: rename variables and helpers, reorder the helpers, drop and add
    comments, change blank lines and spacing. The graded signatures stay (the grader calls them)."""
    keep = set(SIGNATURES) | set(dir(builtins)) | {"x", "h", "c", "w_ih", "w_hh", "b_ih", "b_hh", "h0", "c0", "lengths",
                                                   "input_size", "hidden_size", "num_layers", "bias", "bidirectional",
                                                   "forget_bias", "steps", "torch", "F", "dim", "dtype", "device"}
    names, attributes = [], set()
    for source in answers.values():
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
        for before, tok in itertools.pairwise([None, *tokens]):
            if tok.type == tokenize.NAME and before is not None and before.string == ".":
                attributes.add(tok.string)
            elif tok.type == tokenize.NAME and not keyword.iskeyword(tok.string) and tok.string not in names:
                names.append(tok.string)
    own = [n for n in names if n not in keep | attributes]
    mapping = dict(zip(own, rng.sample([n for n in FRESH_NAMES if n not in names], len(own)), strict=True))
    copied = {}
    for gid, source in answers.items():
        source = re.sub(r"  # [^\n]*", "", source)  # comments go
        source = _rename(source, mapping)
        blocks = source.split("\n\n\n")
        defs = [b for b in blocks if b.startswith("def ")]
        if len(defs) > 1:
            rng.shuffle(defs)
            blocks = [b for b in blocks if not b.startswith("def ")] + defs
        lines = []
        for line in "\n\n\n".join(blocks).splitlines():
            if rng.random() < 0.4:
                line = re.sub(r" ([*+/]) ", r"\1", line)
            lines.append(line)
            if line.strip() and rng.random() < 0.15:
                indent = len(line) - len(line.lstrip()) + (4 if line.rstrip().endswith(":") else 0)
                lines.append(" " * indent + rng.choice(["# ok", "# step", "# done here"]))
        copied[gid] = "\n".join(lines)
    return copied


def reference_functions() -> dict:
    namespace = {"torch": torch}
    for cell in gc.correct_notebook(ASSIGNMENT).cells:
        if cell.metadata.get("nbgrader", {}).get("solution"):
            exec(cell.source, namespace)  # noqa: S102 - the course's own solution
    return namespace


def assert_correct(answers: dict[str, str], ref: dict) -> None:
    """The generated answers really are correct (what the test claims of an honest class)."""
    ns = {"torch": torch}
    for source in answers.values():
        exec(source, ns)  # noqa: S102 - code this test generated
    g = torch.Generator().manual_seed(3)
    args = [torch.randn(*shape, generator=g, dtype=torch.float64) for shape in [(2, 3), (2, 4), (2, 4), (16, 3),
                                                                                  (16, 4), (16,), (16,)]]
    for got, want in zip(ns["lstm_cell_forward"](*args), ref["lstm_cell_forward"](*args), strict=True):
        torch.testing.assert_close(got, want)
    x = torch.randn(5, 2, 3, generator=g, dtype=torch.float64)
    lengths = torch.tensor([5, 2])
    for got, want in zip(ns["lstm_forward"](x, *args[1:3], lengths, *args[3:]),
                         ref["lstm_forward"](x, *args[1:3], lengths, *args[3:]), strict=True):
        torch.testing.assert_close(got, want)
    for kw in ({}, {"num_layers": 3}, {"num_layers": 2, "bidirectional": True}, {"bias": False}):
        assert ns["lstm_param_count"](7, 5, **kw) == ref["lstm_param_count"](7, 5, **kw)
    assert abs(ns["forget_bias_retention"](args[3], args[4], 1.5, 6)
               - ref["forget_bias_retention"](args[3], args[4], 1.5, 6)) < 1e-9


def notebook_with(answers: dict[str, str]) -> nbformat.NotebookNode:
    release = nbformat.read(str(gc.REPO / "exercises" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"), as_version=4)
    for cell in release.cells:
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        if gid in answers:
            cell.source = answers[gid]
    return release


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """The class submitted into a throw-away course, compared by the real command line."""
    course = gc.make_course(tmp_path_factory.mktemp("similarity") / "course", [ASSIGNMENT])
    shutil.copytree(gc.REPO / "exercises" / ASSIGNMENT, course / "exercises" / ASSIGNMENT)
    answers = class_answers()
    rng = random.Random(1)
    for name in COPIES:
        answers[name] = near_copy(answers[ORIGINAL], rng)
    for student, cells in answers.items():
        gc.submit(course, student, ASSIGNMENT, notebook_with(cells))
    for student in BLANK:
        gc.submit(course, student, ASSIGNMENT, notebook_with({}))
    gc.submit(course, "garbled", ASSIGNMENT, raw=b'{"cells": [')
    gc.submit(course, "wrong_notebook", ASSIGNMENT, gc.correct_notebook("01_rnn"))
    (course / "grading" / "submitted" / "no_notebook" / ASSIGNMENT).mkdir(parents=True)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert similarity.main(["--root", str(course), "--assignment", ASSIGNMENT]) == 0
    out = course / "grading" / "similarity"
    summary = json.loads((out / f"{ASSIGNMENT}.json").read_text())
    return {"course": course, "answers": answers, "summary": summary, "printed": printed.getvalue(),
            "html": (out / f"{ASSIGNMENT}.html").read_text(), "csv": (out / f"{ASSIGNMENT}.csv").read_text()}


def test_the_generated_class_is_correct_and_varied(batch):
    ref = reference_functions()
    for answers in batch["answers"].values():
        assert_correct(answers, ref)
    cells = {s: a["lstm_cell_forward"] for s, a in batch["answers"].items() if s.startswith("s")}
    assert len(set(cells.values())) == INDEPENDENT
    for words in ("chunk", "unbind", "einsum", "F.linear", "torch.matmul", "@", "addcmul", "lerp", "torch.where"):
        assert any(words in "".join(a.values()) for a in batch["answers"].values()), words
    copy = batch["answers"]["copy_a"]["lstm_cell_forward"]
    assert copy != batch["answers"][ORIGINAL]["lstm_cell_forward"] and "1 / (1 + torch.exp(" in copy


def test_near_copies_rank_first_and_no_independent_pair_reaches_them(batch):
    pairs = batch["summary"]["pairs"]
    group = {ORIGINAL, *COPIES}
    copied = [p for p in pairs if {p["a"], p["b"]} <= group]
    assert len(copied) == 6  # the original with each copy, and the copies among themselves
    assert all({p["a"], p["b"]} <= group for p in pairs[:6]), pairs[:8]
    independent = [p for p in pairs if not {p["a"], p["b"]} <= group]
    assert len(pairs) == len(copied) + len(independent) == (INDEPENDENT + 3) * (INDEPENDENT + 2) // 2
    lowest_copy, highest_other = min(p["score"] for p in copied), max(p["score"] for p in independent)
    assert lowest_copy > highest_other, (lowest_copy, highest_other)
    assert lowest_copy >= 0.95, lowest_copy
    first = batch["printed"].split("\n")[1]  # the top pair is printed first
    assert pairs[0]["a"] in first and pairs[0]["b"] in first


def test_blank_and_unreadable_submissions_are_listed_not_compared(batch):
    skipped = batch["summary"]["not_compared"]
    assert set(skipped) == {*BLANK, "garbled", "no_notebook", "wrong_notebook"}
    for student in BLANK:
        assert "template" in skipped[student]
    assert "not valid JSON" in skipped["garbled"] and "not submitted" in skipped["no_notebook"]
    assert "another assignment" in skipped["wrong_notebook"]
    compared = {s for p in batch["summary"]["pairs"] for s in (p["a"], p["b"])}
    assert not compared & set(skipped)
    assert set(batch["summary"]["compared"][ORIGINAL]) >= {"lstm_cell_forward", "lstm_forward", "lstm_param_count",
                                                          "forget_bias_retention"}


def test_a_blank_answer_cell_adds_nothing():
    """The stub and every released line are the course's: a template cell leaves no code, and a half-edited
    docstring is dropped whole (an open triple quote would hide the code after it from the comparison)."""
    src = _source()
    given = similarity.given_lines([src])
    stub = next(c.source for c in src.release.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "lstm_forward")
    assert "raise NotImplementedError()" in stub and similarity.student_code(stub, given) == ""
    edited = stub.replace('"""x: (T, B, I)', '"""My version. x: (T, B, I)').replace(
        "    # YOUR CODE HERE\n    raise NotImplementedError()", "    return x, h0, c0")
    assert similarity.student_code(edited, given) == "    return x, h0, c0"
    # the signature stays as a comment, which copydetect does not fingerprint: still nothing to compare
    signatures = similarity.given_signatures([src])
    assert similarity.student_code(stub, given, signatures) == f"# {SIGNATURES['lstm_forward']}  (given)"


def _source() -> notebooks.SourceNotebook:
    return notebooks.load_source(str(gc.REPO / "solutions" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"),
                                 str(gc.REPO / "exercises" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"))


def test_report_names_the_students_and_shows_no_hidden_test_or_given_line(batch):
    page = batch["html"]
    for student in (ORIGINAL, *COPIES, *BLANK, "garbled"):
        assert html.escape(student) in page
    src = _source()
    assert src.hidden_lines
    for line in src.hidden_lines:
        assert line not in page and html.escape(line) not in page
    given = similarity.given_lines([src])
    shown = re.findall(r"<pre>(.*?)</pre>", page, re.S)
    assert len(shown) >= 12  # six pairs, both sides
    for block in shown:
        for line in html.unescape(re.sub(r"</?mark>", "", block)).splitlines():
            assert line.strip() not in given, line
    assert "<script" not in page and "http" not in page  # one offline file
    assert batch["csv"].splitlines()[0].startswith("rank,student_a,student_b,score")
    assert len(batch["csv"].splitlines()) == 1 + len(batch["summary"]["pairs"])


@pytest.mark.parametrize("kwargs, words", [({"assignments": ["99_nope"]}, "expected assignments among"),
                                           ({"threshold": 1.5}, "between 0 and 1"),
                                           ({"noise": 30, "guarantee": 20}, "noise <= guarantee")])
def test_bad_arguments_are_named(tmp_path, kwargs, words):
    course = gc.make_course(tmp_path / "course", [ASSIGNMENT])
    shutil.copytree(gc.REPO / "exercises" / ASSIGNMENT, course / "exercises" / ASSIGNMENT)
    with pytest.raises(ValueError, match=words):
        similarity.run(course, out=tmp_path / "out", **kwargs)


def test_student_text_is_escaped_in_the_report():
    """Names and code are the students': a folder named like a tag or code holding markup stays text."""
    code = ("def f(v):\n    s = '</pre><script>alert(1)</script>'\n"
            "    return [v * k for k in range(10) if k % 2] + [s]\n")
    works = [similarity.Work("<img src=x onerror=alert(1)>", code), similarity.Work("bob", code)]
    pairs = similarity.compare(works)
    assert pairs[0].score == 1.0
    page = similarity.report_html(ASSIGNMENT, pairs, [similarity.Work("<b>eve</b>", reason="<i>why</i>")], 2,
                                  similarity.THRESHOLD, similarity.NOISE, similarity.GUARANTEE)
    assert "<script" not in page and "<img" not in page and "<b>eve" not in page and "<i>why" not in page
    assert "&lt;img src=x" in page and "&lt;/pre&gt;&lt;script&gt;" in page
