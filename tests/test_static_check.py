"""rnnkit.grading.static_check: every delegation a student can write is found from the graded function (through
aliases, helpers, classes, globals), dynamic access is marked for a person, file reads are found, and correct
answers written any way keep zero findings."""
from __future__ import annotations

import textwrap

import pytest

from rnnkit.grading import _ast_scopes, static_check
from rnnkit.grading.rules import Rule
from rnnkit.grading.static_check import Finding, check_function

_LIBRARY = ("rnnkit", "torch._VF.*", "torch._C._VariableFunctions.*")
_ELEMENTWISE = ("torch.sigmoid", "torch.tanh", "torch.nn.functional.linear", "torch.einsum", "torch.addcmul",
                "torch.lerp", "torch.where")
LSTM = Rule(("torch.nn.LSTM", "torch.nn.LSTMCell", "torch.lstm_cell", "torch.lstm", *_LIBRARY),
            "this exercise asks you to write the LSTM equations yourself", _ELEMENTWISE)
RNN = Rule(("torch.nn.RNN", "torch.nn.RNNCell", "torch.rnn_tanh_cell", "torch.rnn_tanh", *_LIBRARY),
           "this exercise asks you to write the RNN equations yourself", _ELEMENTWISE)
GRU = Rule(("torch.nn.GRU", "torch.nn.GRUCell", "torch.gru_cell", "torch.gru", *_LIBRARY),
           "this exercise asks you to write the GRU equations yourself", _ELEMENTWISE)
GRU_FROM_TORCH = Rule(GRU.forbidden, "this exercise asks you to run YOUR cell with the module's weights",
                      _ELEMENTWISE, uncallable_args=("cell",))
COUNT = Rule(("torch.nn.RNN", "torch.nn.LSTM", "torch.nn.GRU", "torch.nn.LSTMCell", "torch.nn.GRUCell", *_LIBRARY),
             "this exercise asks you to derive the count from the shapes of the weights")
LOG_SOFTMAX = Rule(("torch.log_softmax", "torch.nn.functional.log_softmax", "torch.Tensor.log_softmax",
                    "torch.logsumexp", "torch.Tensor.logsumexp", *_LIBRARY),
                   "this exercise asks you to write the stable log-softmax yourself",
                   ("torch.exp", "torch.log", "torch.max", "torch.amax"))
NLL = Rule(("torch.log_softmax", "torch.nn.functional.log_softmax", "torch.nn.functional.cross_entropy", *_LIBRARY),
           "this exercise asks you to compute the loss from your own log-probabilities", ("torch.logsumexp",))
BPTT = Rule(("torch.autograd.*", "torch.Tensor.backward", "torch.func.*", "torch.enable_grad",
             "torch.set_grad_enabled", "torch.Tensor.requires_grad_", *_LIBRARY),
            "this exercise asks you to compute the gradients yourself, without autograd", ("torch.tanh",))
CLIP = Rule(("torch.nn.utils.clip_grad_*", *_LIBRARY), "this exercise asks you to write the clipping rule yourself",
            ("torch.clamp", "torch.linalg.vector_norm"))
GENERATOR = Rule(_LIBRARY, "this exercise asks you to write the generator yourself", ("torch.rand", "torch.randint"))
PADDED = Rule(("rnnkit",), "write the layer yourself", ("rnnkit.data.pad_batch",))

LSTM_SIG = "def lstm_cell_forward(x, h, c, w_ih, w_hh, b_ih, b_hh):\n"
GRU_SIG = "def gru_cell_from_torch(cell, x, h):\n"
CORRECT_LSTM = LSTM_SIG + """\
    gates = x @ w_ih.t() + b_ih + h @ w_hh.t() + b_hh            # (B, 4H)
    i, f, g, o = gates.chunk(4, dim=-1)
    c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c_new), c_new
"""


def cells(*sources: str) -> list[str]:
    return [textwrap.dedent(s) for s in sources]


def found(findings: list[Finding], kind: str, name: str) -> bool:
    return any(f.kind == kind and (f.name == name or f.name.startswith(name + ".")) for f in findings)


# (rule, graded function, cells, kind, name): each must be found
CAUGHT = {
    # the plain delegations
    "torch.lstm_cell": (LSTM, "lstm_cell_forward", cells("import torch\n", LSTM_SIG + """\
        return torch.lstm_cell(x, (h, c), w_ih, w_hh, b_ih, b_hh)
    """), "forbidden", "torch.lstm_cell"),
    "torch.nn.LSTMCell": (LSTM, "lstm_cell_forward", cells("import torch\n", LSTM_SIG + """\
        m = torch.nn.LSTMCell(x.shape[-1], h.shape[-1])
        return m(x, (h, c))
    """), "forbidden", "torch.nn.LSTMCell"),
    "rnnkit.lstm_cell": (LSTM, "lstm_cell_forward", cells("import rnnkit\n", LSTM_SIG + """\
        return rnnkit.lstm_cell(x, (h, c), w_ih, w_hh, b_ih, b_hh)
    """), "forbidden", "rnnkit.lstm_cell"),
    "rnnkit.cells.lstm_cell": (LSTM, "lstm_cell_forward", cells("from rnnkit.cells import lstm_cell\n", LSTM_SIG + """\
        return lstm_cell(x, (h, c), w_ih, w_hh, b_ih, b_hh)
    """), "forbidden", "rnnkit.cells.lstm_cell"),
    "torch.rnn_tanh_cell": (RNN, "rnn_cell_forward", cells("""\
        import torch
        def rnn_cell_forward(x, h, w_ih, w_hh, b_ih, b_hh):
            return torch.rnn_tanh_cell(x, h, w_ih, w_hh, b_ih, b_hh)
    """), "forbidden", "torch.rnn_tanh_cell"),
    "torch.gru_cell": (GRU, "gru_cell_forward", cells("""\
        import torch
        def gru_cell_forward(x, h, w_ih, w_hh, b_ih, b_hh):
            return torch.gru_cell(x, h, w_ih, w_hh, b_ih, b_hh)
    """), "forbidden", "torch.gru_cell"),
    "torch._VF": (LSTM, "lstm_cell_forward", cells("from torch import _VF\n", LSTM_SIG + """\
        return _VF.lstm_cell(x, (h, c), w_ih, w_hh, b_ih, b_hh)
    """), "forbidden", "torch._VF.lstm_cell"),
    "torch._C._VariableFunctions": (GRU, "gru_cell_forward", cells("""\
        import torch
        def gru_cell_forward(x, h, w_ih, w_hh, b_ih, b_hh):
            return torch._C._VariableFunctions.gru_cell(x, h, w_ih, w_hh, b_ih, b_hh)
    """), "forbidden", "torch._C._VariableFunctions.gru_cell"),
    "torch.ops.aten, named only by torch.lstm_cell": (
        Rule(("torch.lstm_cell",), "why"), "lstm_cell_forward", cells("import torch\n", LSTM_SIG + """\
        return torch.ops.aten.lstm_cell.default(x, [h, c], w_ih, w_hh, b_ih, b_hh)
    """), "forbidden", "torch.ops.aten.lstm_cell.default"),
    "torch.nn.modules.rnn.LSTMCell, named only by torch.nn.LSTMCell": (
        Rule(("torch.nn.LSTMCell",), "why"), "lstm_cell_forward", cells("import torch\n", LSTM_SIG + """\
        return torch.nn.modules.rnn.LSTMCell(3, 4)(x, (h, c))
    """), "forbidden", "torch.nn.modules.rnn.LSTMCell"),
    "rnnkit.lstm_cell, named only by rnnkit.cells.lstm_cell": (
        Rule(("rnnkit.cells.lstm_cell",), "why"), "lstm_cell_forward", cells("import rnnkit\n", LSTM_SIG + """\
        return rnnkit.lstm_cell(x, (h, c), w_ih, w_hh, b_ih, b_hh)
    """), "forbidden", "rnnkit.lstm_cell"),
    "F.log_softmax": (LOG_SOFTMAX, "next_symbol_log_probs", cells("import torch.nn.functional as F\n", """\
        def next_symbol_log_probs(logits):
            return F.log_softmax(logits, dim=-1)
    """), "forbidden", "torch.nn.functional.log_softmax"),
    "torch.log_softmax": (LOG_SOFTMAX, "next_symbol_log_probs", cells("""\
        import torch
        def next_symbol_log_probs(logits):
            return torch.log_softmax(logits, -1)
    """), "forbidden", "torch.log_softmax"),
    "Tensor.log_softmax method": (LOG_SOFTMAX, "next_symbol_log_probs", cells("""\
        def next_symbol_log_probs(logits):
            return logits.log_softmax(-1)
    """), "forbidden", "torch.Tensor.log_softmax"),
    "torch.autograd.grad": (BPTT, "rnn_bptt", cells("""\
        import torch
        def rnn_bptt(xs, h0, w_hh, grad_out):
            with torch.enable_grad():
                w = w_hh.detach().clone()
                loss = (torch.tanh(xs @ w) * grad_out).sum()
                return torch.autograd.grad(loss, w)[0]
    """), "forbidden", "torch.autograd.grad"),
    "torch.enable_grad": (BPTT, "rnn_bptt", cells("""\
        import torch
        def rnn_bptt(xs, h0, w_hh, grad_out):
            with torch.enable_grad():
                return xs
    """), "forbidden", "torch.enable_grad"),
    "loss.backward()": (BPTT, "rnn_bptt", cells("""\
        def rnn_bptt(xs, h0, w_hh, grad_out):
            loss = (xs * grad_out).sum()
            loss.backward()
            return w_hh.grad
    """), "forbidden", "torch.Tensor.backward"),
    "clip_grad_norm_": (CLIP, "clip_grad_norm", cells("""\
        import torch
        def clip_grad_norm(params, max_norm):
            return torch.nn.utils.clip_grad_norm_(params, max_norm)
    """), "forbidden", "torch.nn.utils.clip_grad_norm_"),
    "clip_grad_value_ imported under another name": (CLIP, "clip_grad_value", cells("""\
        from torch.nn.utils import clip_grad_value_ as cv
        def clip_grad_value(params, clip):
            cv(params, clip)
    """), "forbidden", "torch.nn.utils.clip_grad_value_"),
    "from rnnkit.data import adding_problem (the answer itself)": (GENERATOR, "adding_problem", cells("""\
        from rnnkit.data import adding_problem
    """), "forbidden", "rnnkit.data.adding_problem"),
    "from rnnkit.data import * (the answer itself)": (GENERATOR, "adding_problem", cells(
        "from rnnkit.data import *\n"), "forbidden", "rnnkit.data.adding_problem"),
    "rnnkit.data.adding_problem in the function": (GENERATOR, "adding_problem", cells("""\
        def adding_problem(n, length, generator):
            from rnnkit.data import adding_problem as reference
            return reference(n, length, generator=generator)
    """), "forbidden", "rnnkit.data.adding_problem"),
    "build torch.nn.LSTM and sum numel": (COUNT, "lstm_param_count", cells("""\
        import torch
        def lstm_param_count(input_size, hidden_size, num_layers=1, bias=True, bidirectional=False):
            m = torch.nn.LSTM(input_size, hidden_size, num_layers, bias=bias, bidirectional=bidirectional)
            return sum(p.numel() for p in m.parameters())
    """), "forbidden", "torch.nn.LSTM"),
    "build rnnkit.GRU": (COUNT, "gru_param_count", cells("""\
        from rnnkit import GRU
        def gru_param_count(input_size, hidden_size):
            return sum(p.numel() for p in GRU(input_size, hidden_size).parameters())
    """), "forbidden", "rnnkit.GRU"),
    # the given module must not be called
    "cell(x, h)": (GRU_FROM_TORCH, "gru_cell_from_torch", cells(GRU_SIG + "    return cell(x, h)\n"),
                   "uncallable-arg", "cell"),
    "cell.forward": (GRU_FROM_TORCH, "gru_cell_from_torch", cells(GRU_SIG + "    return cell.forward(x, h)\n"),
                     "uncallable-arg", "cell"),
    "cell.__call__": (GRU_FROM_TORCH, "gru_cell_from_torch", cells(GRU_SIG + "    return cell.__call__(x, h)\n"),
                      "uncallable-arg", "cell"),
    "type(cell).forward": (GRU_FROM_TORCH, "gru_cell_from_torch",
                           cells(GRU_SIG + "    return type(cell).forward(cell, x, h)\n"), "uncallable-arg", "cell"),
    "cell handed to a helper that calls it": (GRU_FROM_TORCH, "gru_cell_from_torch", cells("""\
        def run(module, *args):
            return module(*args)
    """, GRU_SIG + "    return run(cell, x, h)\n"), "uncallable-arg", "cell"),
    "cell stored on an object, called by its method": (GRU_FROM_TORCH, "gru_cell_from_torch", cells("""\
        class Runner:
            def __init__(self, m):
                self.m = m
            def go(self, x, h):
                return self.m(x, h)
    """, GRU_SIG + "    return Runner(cell).go(x, h)\n"), "uncallable-arg", "cell"),
    "cell handed to map": (GRU_FROM_TORCH, "gru_cell_from_torch",
                           cells(GRU_SIG + "    return list(map(cell, [x], [h]))[0]\n"), "uncallable-arg", "cell"),
    "torch.nn.GRUCell.forward(cell, ...)": (GRU_FROM_TORCH, "gru_cell_from_torch", cells(
        "import torch\n", GRU_SIG + "    return torch.nn.GRUCell.forward(cell, x, h)\n"), "forbidden",
        "torch.nn.GRUCell.forward"),
    # aliases and rebinding
    "the import is in a cell not given": (LSTM, "lstm_cell_forward", cells(LSTM_SIG + """\
        return torch.nn.LSTMCell(3, 4)(x, (h, c))
    """), "forbidden", "torch.nn.LSTMCell"),
    "import torch as T": (LSTM, "lstm_cell_forward", cells("import torch as T\n", LSTM_SIG + """\
        return T.nn.LSTMCell(3, 4)(x, (h, c))
    """), "forbidden", "torch.nn.LSTMCell"),
    "import torch.nn as nn": (LSTM, "lstm_cell_forward", cells("import torch.nn as nn\n", LSTM_SIG + """\
        return nn.LSTMCell(3, 4)(x, (h, c))
    """), "forbidden", "torch.nn.LSTMCell"),
    "from torch import lstm_cell as f": (LSTM, "lstm_cell_forward", cells(
        "from torch import lstm_cell as f\n", LSTM_SIG + "    return f(x, (h, c), w_ih, w_hh)\n"),
        "forbidden", "torch.lstm_cell"),
    "from torch.nn import functional as Fn": (NLL, "sequence_nll", cells("""\
        from torch.nn import functional as Fn
        def sequence_nll(logits, targets):
            return Fn.cross_entropy(logits, targets)
    """), "forbidden", "torch.nn.functional.cross_entropy"),
    "nn = torch.nn": (LSTM, "lstm_cell_forward", cells("import torch\nnn = torch.nn\n", LSTM_SIG + """\
        return nn.LSTMCell(3, 4)(x, (h, c))
    """), "forbidden", "torch.nn.LSTMCell"),
    "cls = T.nn.LSTMCell": (LSTM, "lstm_cell_forward", cells("import torch as T\ncls = T.nn.LSTMCell\n",
                                                              LSTM_SIG + "    return cls(3, 4)(x, (h, c))\n"),
                            "forbidden", "torch.nn.LSTMCell"),
    "tuple assignment": (LSTM, "lstm_cell_forward", cells("import torch\nact, cell_op = torch.tanh, torch.lstm_cell\n",
                                                          LSTM_SIG + "    return cell_op(x, (h, c), w_ih, w_hh)\n"),
                         "forbidden", "torch.lstm_cell"),
    "rebound in a later cell": (LSTM, "lstm_cell_forward", cells("import torch\nop = torch.tanh\n",
                                                                 LSTM_SIG + "    return op(x, (h, c), w_ih, w_hh)\n",
                                                                 "op = torch.lstm_cell\n"),
                                "forbidden", "torch.lstm_cell"),
    "attribute chain through a local": (LSTM, "lstm_cell_forward", cells("import torch\n", LSTM_SIG + """\
        m = torch.nn
        layer = m.LSTMCell
        return layer(3, 4)(x, (h, c))
    """), "forbidden", "torch.nn.LSTMCell"),
    "getattr with a constant name": (LSTM, "lstm_cell_forward", cells("import torch\n", LSTM_SIG + """\
        return getattr(torch, "lstm_cell")(x, (h, c), w_ih, w_hh)
    """), "forbidden", "torch.lstm_cell"),
    "from rnnkit.cells import *": (LSTM, "lstm_cell_forward", cells("from rnnkit.cells import *\n", LSTM_SIG + """\
        return lstm_cell(x, (h, c), w_ih, w_hh, b_ih, b_hh)
    """), "forbidden", "rnnkit.cells.lstm_cell"),
    "the graded name bound to the library": (LSTM, "lstm_cell_forward", cells("""\
        import torch
        lstm_cell_forward = lambda x, h, c, *w: torch.lstm_cell(x, (h, c), *w)
    """), "forbidden", "torch.lstm_cell"),
    "a library function patched over an allowed one": (LSTM, "lstm_cell_forward", cells(
        "import torch\ntorch.tanh = torch.lstm_cell\n", LSTM_SIG + "    return torch.tanh(x, (h, c), w_ih, w_hh)\n"),
        "forbidden", "torch.lstm_cell"),
    # the student's own code in between
    "helper": (LSTM, "lstm_cell_forward", cells("""\
        import torch
        def step(*args):
            return torch.lstm_cell(*args)
    """, LSTM_SIG + "    return step(x, (h, c), w_ih, w_hh)\n"), "forbidden", "torch.lstm_cell"),
    "helper two levels deep, other cells": (LSTM, "lstm_cell_forward", cells(
        "import rnnkit\n", "def inner(*a):\n    return rnnkit.cells.lstm_cell(*a)\n",
        "def outer(*a):\n    return inner(*a)\n", LSTM_SIG + "    return outer(x, (h, c), w_ih, w_hh)\n"),
        "forbidden", "rnnkit.cells.lstm_cell"),
    "class method": (LSTM, "lstm_cell_forward", cells("""\
        import torch
        class Impl:
            def step(self, *args):
                return torch.lstm_cell(*args)
    """, LSTM_SIG + "    return Impl().step(x, (h, c), w_ih, w_hh)\n"), "forbidden", "torch.lstm_cell"),
    "subclass": (LSTM, "lstm_cell_forward", cells("""\
        import torch
        class Mine(torch.nn.LSTMCell):
            pass
    """, LSTM_SIG + "    return Mine(3, 4)(x, (h, c))\n"), "forbidden", "torch.nn.LSTMCell"),
    "__call__ of the student's class": (LSTM, "lstm_cell_forward", cells("""\
        import torch
        class Op:
            def __call__(self, *a):
                return torch.lstm_cell(*a)
        OP = Op()
    """, LSTM_SIG + "    return OP(x, (h, c), w_ih, w_hh)\n"), "forbidden", "torch.lstm_cell"),
    "lambda in a global": (LSTM, "lstm_cell_forward", cells("import torch\nstep = lambda *a: torch.lstm_cell(*a)\n",
                                                            LSTM_SIG + "    return step(x, (h, c), w_ih, w_hh)\n"),
                           "forbidden", "torch.lstm_cell"),
    "functools.partial": (LSTM, "lstm_cell_forward", cells("import functools, torch\n", LSTM_SIG + """\
        step = functools.partial(torch.lstm_cell, w_ih=w_ih, w_hh=w_hh)
        return step(x, (h, c))
    """), "forbidden", "torch.lstm_cell"),
    "map": (LSTM, "lstm_cell_forward", cells("import torch\n", LSTM_SIG + """\
        return next(map(torch.lstm_cell, [x], [(h, c)], [w_ih], [w_hh]))
    """), "forbidden", "torch.lstm_cell"),
    "decorator": (LSTM, "lstm_cell_forward", cells("""\
        import torch
        def use_torch(fn):
            return lambda x, h, c, *w: torch.lstm_cell(x, (h, c), *w)
    """, "@use_torch\n" + LSTM_SIG + "    raise NotImplementedError\n"), "forbidden", "torch.lstm_cell"),
    "default argument": (LSTM, "lstm_cell_forward", cells("""\
        import torch
        def lstm_cell_forward(x, h, c, w_ih, w_hh, b_ih, b_hh, op=torch.lstm_cell):
            return op(x, (h, c), w_ih, w_hh, b_ih, b_hh)
    """), "forbidden", "torch.lstm_cell"),
    "nested def": (LSTM, "lstm_cell_forward", cells("import torch\n", LSTM_SIG + """\
        def inner():
            return torch.nn.LSTMCell(3, 4)
        return inner()(x, (h, c))
    """), "forbidden", "torch.nn.LSTMCell"),
    "a helper returns the library function": (LSTM, "lstm_cell_forward", cells("""\
        import torch
        def pick():
            return torch.lstm_cell
    """, LSTM_SIG + "    return pick()(x, (h, c), w_ih, w_hh)\n"), "forbidden", "torch.lstm_cell"),
    "global instance of a forbidden class": (LSTM, "lstm_cell_forward", cells(
        "import torch\nW = torch.nn.LSTMCell(3, 4)\n", LSTM_SIG + "    return W(x, (h, c))\n"),
        "forbidden", "torch.nn.LSTMCell"),
    "method on an instance of a forbidden class": (LSTM, "lstm_cell_forward", cells(
        "import torch\nW = torch.nn.LSTMCell(3, 4)\n", LSTM_SIG + "    return W.forward(x, (h, c))\n"),
        "forbidden", "torch.nn.LSTMCell"),
    "global computed by the reference": (LSTM, "lstm_cell_forward", cells("""\
        import rnnkit
        ANSWER = rnnkit.cells.lstm_cell(1, (2, 3), 4, 5)
    """, LSTM_SIG + "    return ANSWER\n"), "forbidden", "rnnkit.cells.lstm_cell"),
    # dynamic access: a person decides
    "getattr with a computed name": (LSTM, "lstm_cell_forward", cells("import torch\n", LSTM_SIG + """\
        return getattr(torch, "lstm" + "_cell")(x, (h, c), w_ih, w_hh)
    """), "dynamic", "getattr with a computed name"),
    "exec of a string": (LSTM, "lstm_cell_forward", cells(LSTM_SIG + """\
        exec("import torch; out = torch.lstm_cell(x, (h, c), w_ih, w_hh)")
        return out
    """), "dynamic", "builtins.exec"),
    "eval": (LSTM, "lstm_cell_forward", cells(LSTM_SIG + "    return eval('torch.lstm_cell')(x, (h, c), w_ih, w_hh)\n"),
             "dynamic", "builtins.eval"),
    "__import__": (LSTM, "lstm_cell_forward", cells(LSTM_SIG + """\
        return __import__("torch").lstm_cell(x, (h, c), w_ih, w_hh)
    """), "dynamic", "builtins.__import__"),
    "importlib.import_module": (LSTM, "lstm_cell_forward", cells("import importlib\n", LSTM_SIG + """\
        return importlib.import_module("rnnkit.cells").lstm_cell(x, (h, c), w_ih, w_hh)
    """), "dynamic", "importlib.import_module"),
    "sys.modules": (LSTM, "lstm_cell_forward", cells("import sys\n", LSTM_SIG + """\
        return sys.modules["torch"].lstm_cell(x, (h, c), w_ih, w_hh)
    """), "dynamic", "sys.modules"),
    "globals()[...]": (LSTM, "lstm_cell_forward", cells(LSTM_SIG + """\
        return globals()["ref" + "erence"](x, h, c)
    """), "dynamic", "builtins.globals"),
    "get_ipython": (LSTM, "lstm_cell_forward", cells(LSTM_SIG + """\
        return get_ipython().ev("torch.lstm_cell")(x, (h, c), w_ih, w_hh)
    """), "dynamic", "IPython.get_ipython"),
    "a magic inside the function": (LSTM, "lstm_cell_forward", cells(LSTM_SIG + """\
        %run -i reference.py
        return out
    """), "dynamic", "IPython.get_ipython"),
    "vars(module)": (LSTM, "lstm_cell_forward", cells("import torch\n", LSTM_SIG + """\
        return vars(torch)["lstm_cell"](x, (h, c), w_ih, w_hh)
    """), "dynamic", "builtins.vars"),
    "__dict__": (LSTM, "lstm_cell_forward", cells("import torch\n", LSTM_SIG + """\
        return torch.__dict__["lstm_cell"](x, (h, c), w_ih, w_hh)
    """), "dynamic", "the __dict__ attribute"),
    "ctypes": (LSTM, "lstm_cell_forward", cells("import ctypes\n", LSTM_SIG + """\
        ctypes.pythonapi.PyRun_SimpleString(b"...")
        return x
    """), "dynamic", "ctypes"),
    "pickle.loads": (LSTM, "lstm_cell_forward", cells("import pickle\nBLOB = b''\n", LSTM_SIG + """\
        return pickle.loads(BLOB)(x, (h, c), w_ih, w_hh)
    """), "dynamic", "pickle.loads"),
    "frame globals": (LSTM, "lstm_cell_forward", cells("import inspect\n", LSTM_SIG + """\
        return inspect.currentframe().f_back.f_globals["ref"](x, h, c)
    """), "dynamic", "inspect.currentframe"),
    "a name only exec defines": (LSTM, "lstm_cell_forward", cells(
        "exec('from torch import lstm_cell as helper')\n", LSTM_SIG + "    return helper(x, (h, c), w_ih, w_hh)\n"),
        "dynamic", "undefined name helper"),
    "the answer in a cell too long to check": (LSTM, "lstm_cell_forward", cells(
        CORRECT_LSTM + "y = 1\n" * 60_000), "dynamic", "a cell not checked"),
    # reading files: the stored expected values
    "open": (LSTM, "lstm_cell_forward", cells(LSTM_SIG + "    return open('expected.txt').read()\n"),
             "file", "builtins.open"),
    "np.load": (LSTM, "lstm_cell_forward", cells("import numpy as np\n", LSTM_SIG + """\
        return np.load("rnnkit/grading/fixtures/lstm_cell_forward.npz")["c0.h_new"]
    """), "file", "numpy.load"),
    "torch.load": (LSTM, "lstm_cell_forward", cells("import torch\n", LSTM_SIG + "    return torch.load('x.pt')\n"),
                   "file", "torch.load"),
    "importlib.resources": (LSTM, "lstm_cell_forward", cells("from importlib import resources\n", LSTM_SIG + """\
        return resources.files("rnnkit").joinpath("grading/fixtures/x.npz").read_bytes()
    """), "file", "importlib.resources.files"),
    "pathlib read_bytes": (LSTM, "lstm_cell_forward", cells("from pathlib import Path\n", LSTM_SIG + """\
        return (Path("solutions") / "fixtures" / "x.npz").read_bytes()
    """), "file", "pathlib.Path.read_bytes"),
    "rnnkit.grading": (GENERATOR, "adding_problem", cells("""\
        from rnnkit.grading import fixtures
        def adding_problem(n, length, generator):
            return fixtures.load("adding_problem")
    """), "file", "rnnkit.grading.fixtures.load"),
}


@pytest.mark.parametrize("rule, function, sources, kind, name", list(CAUGHT.values()), ids=list(CAUGHT))
def test_delegation_is_found(rule, function, sources, kind, name):
    findings = check_function(sources, function, rule)
    assert found(findings, kind, name), findings
    assert all(f.function == function and f.message.startswith(function) for f in findings)
    assert all(f.needs_manual_grade == (f.kind == "dynamic") for f in findings)


# correct answers, written many ways: no finding at all
CLEAN = {
    "matmul, sigmoid, tanh": (LSTM, "lstm_cell_forward", cells("import torch\n", CORRECT_LSTM)),
    "einsum": (LSTM, "lstm_cell_forward", cells("import torch\n", LSTM_SIG + """\
        gates = torch.einsum("bi,gi->bg", x, w_ih) + torch.einsum("bh,gh->bg", h, w_hh) + b_ih + b_hh
        i, f, g, o = gates.sigmoid().chunk(4, -1)
        c_new = f * c + i * (2 * torch.sigmoid(2 * gates.chunk(4, -1)[2]) - 1)
        return o * c_new.tanh(), c_new
    """)),
    "F.linear and addcmul": (LSTM, "lstm_cell_forward", cells("import torch\nimport torch.nn.functional as F\n",
                                                              LSTM_SIG + """\
        gates = F.linear(x, w_ih, b_ih) + F.linear(h, w_hh, b_hh)
        i, f, g, o = gates.chunk(4, dim=-1)
        c_new = torch.addcmul(torch.sigmoid(f) * c, torch.sigmoid(i), torch.tanh(g))
        return torch.sigmoid(o) * torch.tanh(c_new), c_new
    """)),
    "lerp (GRU)": (GRU, "gru_cell_forward", cells("""\
        import torch
        def gru_cell_forward(x, h, w_ih, w_hh, b_ih, b_hh):
            r_i, z_i, n_i = (x @ w_ih.t() + b_ih).chunk(3, -1)
            r_h, z_h, n_h = (h @ w_hh.t() + b_hh).chunk(3, -1)
            r, z = torch.sigmoid(r_i + r_h), torch.sigmoid(z_i + z_h)
            n = torch.tanh(n_i + r * n_h)
            return torch.lerp(n, h, z)
    """)),
    "logsumexp where allowed": (NLL, "sequence_nll", cells("""\
        import torch
        def sequence_nll(logits, targets):
            log_probs = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
            return -log_probs.gather(-1, targets.unsqueeze(-1)).mean()
    """)),
    "the log-sum-exp trick by hand": (LOG_SOFTMAX, "next_symbol_log_probs", cells("""\
        import torch
        def next_symbol_log_probs(logits):
            m = logits.amax(dim=-1, keepdim=True)
            return logits - m - torch.log(torch.exp(logits - m).sum(-1, keepdim=True))
    """)),
    "own helper with a library-like name": (LSTM, "lstm_cell_forward", cells("import torch\n", """\
        def lstm_cell(x, h, c, w_ih, w_hh, b_ih, b_hh):
            gates = x @ w_ih.t() + b_ih + h @ w_hh.t() + b_hh
            i, f, g, o = gates.chunk(4, -1)
            c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            return torch.sigmoid(o) * torch.tanh(c_new), c_new
    """, LSTM_SIG + "    return lstm_cell(x, h, c, w_ih, w_hh, b_ih, b_hh)\n")),
    "a comment and a docstring name the module": (LSTM, "lstm_cell_forward", cells(
        "import torch\n", CORRECT_LSTM.replace(
            "    gates", "    '''Same as torch.nn.LSTMCell.'''\n    # torch.nn.LSTMCell(x, (h, c))\n    gates"))),
    "a string names the reference": (LSTM, "lstm_cell_forward", cells("import torch\n", CORRECT_LSTM.replace(
        "    gates", "    note = 'checked against rnnkit.cells.lstm_cell'\n    gates"))),
    "an annotation names a module": (LSTM, "lstm_cell_forward", cells(
        "import torch\n", CORRECT_LSTM.replace("b_hh):", "b_hh) -> torch.nn.LSTMCell:"))),
    "an unreachable cell uses rnnkit": (LSTM, "lstm_cell_forward", cells("""\
        import torch
        import rnnkit
        def plot_reference(x, h, c, *w):
            return rnnkit.cells.lstm_cell(x, (h, c), *w)
        plot_reference(1, 2, 3)
    """, CORRECT_LSTM)),
    "reads the given module's weights": (GRU_FROM_TORCH, "gru_cell_from_torch", cells("""\
        import torch
        def gru_cell_forward(x, h, w_ih, w_hh, b_ih, b_hh):
            r_i, z_i, n_i = (x @ w_ih.t() + b_ih).chunk(3, -1)
            r_h, z_h, n_h = (h @ w_hh.t() + b_hh).chunk(3, -1)
            r, z = torch.sigmoid(r_i + r_h), torch.sigmoid(z_i + z_h)
            return torch.lerp(torch.tanh(n_i + r * n_h), h, z)
    """, GRU_SIG + """\
        assert isinstance(cell, torch.nn.Module), type(cell)
        bias = getattr(cell, "bias_ih")
        n = len(list(cell.parameters()))
        return gru_cell_forward(x, h, cell.weight_ih, cell.weight_hh.detach(), bias, cell.bias_hh)
    """)),
    "manual clipping reads .grad": (CLIP, "clip_grad_norm", cells("""\
        import torch
        def clip_grad_norm(params, max_norm):
            grads = [p.grad for p in params if p.grad is not None]
            total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
            for g in grads:
                g.mul_(torch.clamp(max_norm / (total + 1e-6), max=1.0))
            return total
    """)),
    "an allowed name inside a forbidden package": (PADDED, "f", cells("""\
        import rnnkit
        from rnnkit import data
        P = rnnkit.data
        def f(seqs):
            return rnnkit.data.pad_batch(seqs), data.pad_batch(seqs), P.pad_batch(seqs)
    """)),
    "IPython's display": (LSTM, "lstm_cell_forward", cells("import torch\n", CORRECT_LSTM.replace(
        "    gates =", "    display(x)\n    gates ="))),
    "magics and a broken cell elsewhere": (LSTM, "lstm_cell_forward", cells(
        "%matplotlib inline\n!pip list\nimport torch\n", "def unfinished(:\n", "%%time\n" + CORRECT_LSTM)),
    "helpers that call each other": (LSTM, "lstm_cell_forward", cells("""\
        import torch
        def even(n):
            return n == 0 or odd(n - 1)
        def odd(n):
            return n != 0 and even(n - 1)
    """, LSTM_SIG + "    assert even(4)\n" + CORRECT_LSTM.split("\n", 1)[1])),
    "not defined at all": (LSTM, "lstm_cell_forward", cells("import torch\nx = 1\n")),
    # a cell that does not parse defines nothing in the kernel either: the check fails without a finding
    "only in a cell that does not parse": (LSTM, "lstm_cell_forward", cells(
        LSTM_SIG + "    return torch.lstm_cell(x, (h, c), w_ih, w_hh\n")),
    "no cells": (LSTM, "lstm_cell_forward", []),
}


@pytest.mark.parametrize("rule, function, sources", list(CLEAN.values()), ids=list(CLEAN))
def test_correct_answer_has_no_finding(rule, function, sources):
    assert check_function(sources, function, rule) == []


def test_message_names_function_line_call_and_rule():
    sources = cells("import torch\n",
                    LSTM_SIG + "    '''Doc.'''\n    n = x.shape[-1]\n    return torch.nn.LSTMCell(n, 4)\n")
    [finding] = check_function(sources, "lstm_cell_forward", LSTM)
    assert finding == Finding("lstm_cell_forward", 1, 4, "torch.nn.LSTMCell", "forbidden",
                              "lstm_cell_forward, line 4: calls torch.nn.LSTMCell — this exercise asks you to "
                              "write the LSTM equations yourself")
    assert not finding.needs_manual_grade


def test_message_follows_the_helpers():
    sources = cells("import torch\n", "def my_helper(*a):\n    return torch.lstm_cell(*a)\n",
                    LSTM_SIG + "    return my_helper(x, (h, c), w_ih, w_hh)\n")
    [finding] = check_function(sources, "lstm_cell_forward", LSTM)
    assert (finding.cell, finding.line, finding.name) == (1, 2, "torch.lstm_cell")
    assert finding.message == ("lstm_cell_forward calls my_helper (cell 1, line 2), which calls torch.lstm_cell — "
                               "this exercise asks you to write the LSTM equations yourself")


def test_dynamic_access_needs_a_person():
    # exec, and `out` (which only the executed string defines) on the same line: one finding for a person
    [finding] = check_function(CAUGHT["exec of a string"][2], "lstm_cell_forward", LSTM)
    assert (finding.name, finding.cell, finding.line) == ("builtins.exec", 0, 2)
    assert finding.needs_manual_grade and "instructor" in finding.message


@pytest.mark.parametrize("sources", [
    [None, b"bytes", 3.5, CORRECT_LSTM],
    ["\x00" + CORRECT_LSTM],
    [CORRECT_LSTM.replace("return", "return x" + ".a" * 3000 + " or")],     # parses, too deep to walk
    [CORRECT_LSTM + "y = 1\n" * 170_000],                                  # over the size a cell is parsed at
    ["(" * 300 + "\n", "def lstm_cell_forward(:\n"],
], ids=["not text", "null byte", "deep attribute chain", "huge cell", "unbalanced"])
def test_hostile_input_never_raises(sources):
    findings = check_function(sources, "lstm_cell_forward", LSTM)
    assert all(f.kind == "dynamic" for f in findings)
    assert findings == [] or findings[0].needs_manual_grade


@pytest.mark.parametrize("function, rule", [(None, LSTM), ("f", None), ("f", ("torch.lstm_cell",))])
def test_wrong_argument_types_are_type_errors(function, rule):
    with pytest.raises(TypeError, match="expected a function name \\(str\\) and a Rule"):
        check_function(["def f(): pass\n"], function, rule)


def test_magics_keep_line_numbers_without_ipython(monkeypatch):
    monkeypatch.setattr(_ast_scopes, "_ipython_transform", lambda: None)
    static_check._program.cache_clear()
    sources = cells("%matplotlib inline\nimport torch\n", "\n\n!ls\n" + LSTM_SIG + "    return torch.lstm_cell(x)\n")
    [finding] = check_function(sources, "lstm_cell_forward", LSTM)
    assert (finding.cell, finding.line, finding.name) == (1, 5, "torch.lstm_cell")


def test_leading_blank_lines_keep_line_numbers():
    sources = ["\n\nimport torch\n" + LSTM_SIG + "    %time y = 1\n    return torch.lstm_cell(x)\n"]
    findings = check_function(sources, "lstm_cell_forward", LSTM)
    assert {(f.kind, f.line) for f in findings} == {("dynamic", 5), ("forbidden", 6)}


def test_long_cell_uses_the_linear_magic_filter():
    # past the size IPython's transformer is given, the line-by-line filter removes the same syntax
    sources = ["import torch\n%matplotlib inline\n" + "y = 1\n" * 10_000 + LSTM_SIG + "    return torch.lstm_cell(x)\n"]
    [finding] = check_function(sources, "lstm_cell_forward", LSTM)
    assert (finding.line, finding.name) == (10_004, "torch.lstm_cell")
