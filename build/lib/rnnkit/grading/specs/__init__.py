"""The registry of grading specs: for each check name, fixed seeded cases, a reference computed live from
``rnnkit`` (or ``torch``), and the tolerances the judge applies per dtype.

A spec is what a hidden test names: ``grading.check("lstm_cell_forward", lstm_cell_forward)``. One module per
assignment registers its specs (``a01_rnn.py`` ... ``a08_seq2seq.py``).

Cases are built from ``torch.Generator`` seeds only (never the global RNG, never ``rnnkit``), so the student's
kernel and the trusted judge build identical inputs, and the judge never needs inputs from the kernel.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import torch

from .. import export
from ..rules import Rule
from .table import RULES

# (rtol, atol) per expected dtype; a spec may override any entry
DEFAULT_TOLERANCES: dict[str, tuple[float, float]] = {
    "torch.float16": (1e-2, 1e-3),
    "torch.float32": (1e-4, 1e-5),
    "torch.float64": (1e-7, 1e-9),
    "float": (1e-6, 1e-9),
}


@dataclass(frozen=True)
class Case:
    """One call: ``fn(*args, **kwargs)``. ``label`` is shown to students ("batch of 1, float64"), so it says
    what is tested, never what is expected."""

    label: str
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    # share of the check's points: a check scores sum(weights of passing cases) / sum(weights)
    weight: float = 1.0


@dataclass(frozen=True)
class Spec:
    name: str
    # builds fresh cases on every call (the student's function may modify its inputs in place)
    make_cases: Callable[[], list[Case]]
    # called like the student's function, in the trusted process; for kind "value" called with no arguments
    reference: Callable[..., Any]
    # "function": check(name, fn) calls fn on every case; "value": check(name, value) takes the value itself
    kind: str = "function"
    # names of the output leaves in order, used in messages ("output h_n differs ...")
    leaf_names: tuple[str, ...] = ()
    tolerances: dict[str, tuple[float, float]] = field(default_factory=dict)
    # False: call the student's function under torch.no_grad() (e.g. manual backprop must not use autograd)
    grad_enabled: bool = True
    # arguments the function is meant to change in place (a training step updates its model and optimizer); any
    # other argument changed in place fails the check
    may_change: tuple[str, ...] = ()
    # optional custom comparison of one case: (student, expected, case_index) -> failure message or None,
    # where student/expected are the per-case dicts of the export with the "c{i}." prefix stripped
    judge: Callable[[dict, dict, int], str | None] | None = None
    # what the check covers, one line, for the book and the instructor's docs
    summary: str = ""
    @property
    def rule(self) -> Rule:
        """What the answer must not use: the spec's row of the one table, specs/table.py (register() refuses a spec
        without one)."""
        return RULES[self.name]

    def tolerance(self, dtype: str) -> tuple[float, float]:
        return self.tolerances.get(dtype) or DEFAULT_TOLERANCES.get(dtype, (0.0, 0.0))


REGISTRY: dict[str, Spec] = {}


def register(spec: Spec) -> Spec:
    """Add ``spec`` to the registry; its rule is its row of :data:`table.RULES` (every graded check has one)."""
    if spec.name in REGISTRY:
        raise ValueError(f"grading spec {spec.name!r} is registered twice")
    if spec.kind not in ("function", "value"):
        raise ValueError(f"grading spec {spec.name!r}: kind must be 'function' or 'value', got {spec.kind!r}")
    if spec.name not in RULES:
        raise ValueError(f"grading spec {spec.name!r} has no rule in rnnkit/grading/specs/table.py")
    REGISTRY[spec.name] = spec
    return spec


def get(name: str) -> Spec:
    if not isinstance(name, str) or name not in REGISTRY:
        raise KeyError(f"no grading spec named {name!r}; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def names() -> list[str]:
    return sorted(REGISTRY)


# ------------------------------------------------------------------------------ expected values: live and stored
# The stored expected values live with the instructor's sources, never in the installed package: every student
# kernel imports rnnkit, and the sandbox binds the package (not solutions/) read-only.
FIXTURE_DIR = Path(os.environ.get("RNNKIT_FIXTURES") or Path(__file__).resolve().parents[3] / "solutions" / "fixtures")


def fixture_path(name: str) -> Path:
    return FIXTURE_DIR / f"{name}.npz"


@cache
def stored_export(name: str) -> dict | None:
    """The stored export of spec ``name``, or None when there is none."""
    p = fixture_path(name)
    return export.load(p) if p.is_file() else None


@cache
def expected_export(name: str) -> dict:
    """The reference's export on the spec's cases, computed live in this (trusted) process."""
    spec = get(name)
    obj = spec.reference() if spec.kind == "value" else spec.reference
    exported = export.collect(spec, obj, guarded=False)
    for i in range(int(exported["cases"])):
        if export.text(exported, f"c{i}.status") != "ok":
            raise RuntimeError(f"grading spec {name!r}: the reference failed on case {i}: "
                               f"{export.text(exported, f'c{i}.error')}")
    return exported


# ---------------------------------------------------------------------------------------- case-building helpers
def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(g: torch.Generator, *shape: int, dtype: torch.dtype = torch.float64, scale: float = 1.0) -> torch.Tensor:
    """Normal draws made in float64 and cast, so float32 and float64 cases see the same numbers."""
    return (scale * torch.randn(*shape, generator=g, dtype=torch.float64)).to(dtype)


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def cell_cases(seed: int, gates: int, *, with_c: bool = False) -> list[Case]:
    """Cases for a cell ``fn(x, h, [c,] w_ih, w_hh, b_ih, b_hh)``: batched, batch of 1, unbatched, float32/64.

    ``gates`` is the number of row blocks in the weights (1 RNN, 4 LSTM, 3 GRU)."""
    g = generator(seed)
    cases = []
    for label, batch, dtype in (("batch of 3, float32", 3, torch.float32), ("batch of 3, float64", 3, torch.float64),
                                ("batch of 1, float64", 1, torch.float64), ("unbatched (1-D x and h), float32", None,
                                torch.float32), ("unbatched (1-D x and h), float64", None, torch.float64)):
        n_in, n_h = 4, 5
        lead = () if batch is None else (batch,)
        x = randn(g, *lead, n_in, dtype=dtype)
        state = [randn(g, *lead, n_h, dtype=dtype, scale=0.5)]
        if with_c:
            state.append(randn(g, *lead, n_h, dtype=dtype))
        weights = (randn(g, gates * n_h, n_in, dtype=dtype, scale=0.5),
                   randn(g, gates * n_h, n_h, dtype=dtype, scale=0.5),
                   randn(g, gates * n_h, dtype=dtype, scale=0.5), randn(g, gates * n_h, dtype=dtype, scale=0.5))
        cases.append(Case(label, (x, *state, *weights)))
    return cases


def param_count_cases() -> list[Case]:
    """Cases of a parameter-count formula ``fn(input_size, hidden_size, num_layers=, bias=, bidirectional=)``."""
    return [Case("input 10, hidden 20", (10, 20)),
            Case("input 1, hidden 1", (1, 1)),
            Case("input 10, hidden 20, 2 layers", (10, 20), {"num_layers": 2}),
            Case("input 10, hidden 20, no bias", (10, 20), {"bias": False}),
            Case("input 8, hidden 16, 3 layers, bidirectional", (8, 16), {"num_layers": 3, "bidirectional": True}),
            Case("input 3, hidden 7, 2 layers, bidirectional, no bias", (3, 7),
                 {"num_layers": 2, "bias": False, "bidirectional": True})]


def layer_parameters(module_class, input_size, hidden_size, num_layers=1, bias=True, bidirectional=False) -> int:
    """Parameters of an rnnkit layer with these sizes (the reference of assignments 3 and 4's counting formulas)."""
    from rnnkit.models import count_parameters

    return count_parameters(module_class(input_size, hidden_size, num_layers=num_layers, bias=bias,
                                         bidirectional=bidirectional))


def sequence_cases(seed: int, gates: int, *, with_c: bool = False) -> list[Case]:
    """Cases for a layer ``fn(x, h0, [c0,] lengths, w_ih, w_hh, b_ih, b_hh)`` over a padded time-major batch
    (T, B, I) with per-sequence lengths; covers uneven lengths, T=1, B=1, float32 and float64."""
    g = generator(seed)
    cases = []
    for label, lengths, dtype in (("T=6, batch of 3, lengths [6, 2, 4], float64", [6, 2, 4], torch.float64),
                                  ("T=6, batch of 3, lengths [6, 2, 4], float32", [6, 2, 4], torch.float32),
                                  ("T=1, batch of 2, lengths [1, 1], float64", [1, 1], torch.float64),
                                  ("T=5, batch of 1, lengths [5], float32", [5], torch.float32),
                                  ("T=4, batch of 2, lengths [4, 4], float64", [4, 4], torch.float64)):
        n_in, n_h, steps, batch = 3, 4, max(lengths), len(lengths)
        x = randn(g, steps, batch, n_in, dtype=dtype)
        for b, n in enumerate(lengths):
            x[n:, b] = 0.0  # padding is zero, like rnnkit.data.pad_batch
        state = [randn(g, batch, n_h, dtype=dtype, scale=0.5)]
        if with_c:
            state.append(randn(g, batch, n_h, dtype=dtype))
        weights = (randn(g, gates * n_h, n_in, dtype=dtype, scale=0.5),
                   randn(g, gates * n_h, n_h, dtype=dtype, scale=0.5),
                   randn(g, gates * n_h, dtype=dtype, scale=0.5), randn(g, gates * n_h, dtype=dtype, scale=0.5))
        cases.append(Case(label, (x, *state, torch.tensor(lengths, dtype=torch.long), *weights)))
    return cases


# importing the assignment modules registers their specs
from . import (  # noqa: E402,F401
    a01_rnn,
    a02_gradients,
    a03_lstm,
    a04_gru,
    a05_long_range,
    a06_char_lm,
    a07_backward,
    a08_seq2seq,
)
