r"""Specs of assignment 7 (backward through an LSTM and a GRU): one cell step's backward pass for the LSTM and for
both GRU formulations, BPTT over a padded batch with lengths for each, and the per-step norms of the total
gradients reaching :math:`h_t` and :math:`c_t` of an LSTM over a long sequence.

Interface: a backward function takes the forward's own inputs and the gradients arriving from above, and recomputes
the gates it needs (what a framework's cache would hold), so each is graded on its own. Every gradient is returned
in a dict keyed by the name of the variable it belongs to.

References: ``torch.autograd`` through ``rnnkit.cells`` (and ``rnnkit.recurrence.run_direction`` for the layers),
computed here in the trusted process; the student's functions run with autograd switched off
(``grad_enabled=False``) and under a rule that forbids autograd, ``rnnkit`` and the fused torch cells."""
from __future__ import annotations

import torch

from . import Case, Spec, cell_cases, generator, randn, register

LSTM_CELL_KEYS = ("x", "h", "c", "w_ih", "w_hh", "b_ih", "b_hh")
GRU_CELL_KEYS = ("x", "h", "w_ih", "w_hh", "b_ih", "b_hh")
LSTM_BPTT_KEYS = ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh")
GRU_BPTT_KEYS = ("x", "h0", "w_ih", "w_hh", "b_ih", "b_hh")
# float32 gradients are sums of many products: allow a little more than a forward pass
_TOLERANCES = {"torch.float32": (2e-4, 2e-5), "torch.float64": (1e-7, 1e-9)}


def _grads(keys, inputs: dict, loss_fn) -> dict:
    """``{key: dloss/dinput}`` by autograd, on fresh leaf copies of ``inputs``."""
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in inputs.items()}
    with torch.enable_grad():
        loss = loss_fn(leaves)
        grads = torch.autograd.grad(loss, [leaves[k] for k in keys])
    return {k: g.detach() for k, g in zip(keys, grads, strict=True)}


# --------------------------------------------------------------------------------------------------- one step
def _lstm_cell_backward(x, h, c, w_ih, w_hh, b_ih, b_hh, dh_new, dc_new):
    from rnnkit.cells import lstm_cell

    def loss(v):
        h_new, c_new = lstm_cell(v["x"], (v["h"], v["c"]), v["w_ih"], v["w_hh"], v["b_ih"], v["b_hh"])
        return (h_new * dh_new).sum() + (c_new * dc_new).sum()

    return _grads(LSTM_CELL_KEYS, dict(x=x, h=h, c=c, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh), loss)


def _gru_cell_backward(x, h, w_ih, w_hh, b_ih, b_hh, dh_new, reset_after=True):
    from rnnkit.cells import gru_cell

    def loss(v):
        return (gru_cell(v["x"], v["h"], v["w_ih"], v["w_hh"], v["b_ih"], v["b_hh"], reset_after) * dh_new).sum()

    return _grads(GRU_CELL_KEYS, dict(x=x, h=h, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh), loss)


def _with_upstream(cases: list[Case], seed: int, lstm: bool, **kwargs) -> list[Case]:
    """The cell cases with the gradients from above appended: dh_new (and dc_new for the LSTM)."""
    g = generator(seed)
    out = []
    for case in cases:
        h = case.args[1]
        upstream = [randn(g, *h.shape, dtype=h.dtype) for _ in range(2 if lstm else 1)]
        out.append(Case(case.label, (*case.args, *upstream), dict(kwargs)))
    return out


def _lstm_cell_cases() -> list[Case]:
    return _with_upstream(cell_cases(701, 4, with_c=True), 711, lstm=True)


def _gru_cell_cases(reset_after: bool):
    def make() -> list[Case]:
        return _with_upstream(cell_cases(702 if reset_after else 703, 3), 712, lstm=False, reset_after=reset_after)

    return make


# --------------------------------------------------------------------------------------- BPTT with lengths
def _lstm_bptt(x, h0, c0, lengths, w_ih, w_hh, b_ih, b_hh, grad_out, grad_h_n, grad_c_n):
    from rnnkit.recurrence import run_direction

    def loss(v):
        out, (h_n, c_n) = run_direction("LSTM", v["x"], (v["h0"], v["c0"]), v["w_ih"], v["w_hh"], v["b_ih"], v["b_hh"],
                                        lengths=lengths)
        return (out * grad_out).sum() + (h_n * grad_h_n).sum() + (c_n * grad_c_n).sum()

    return _grads(LSTM_BPTT_KEYS, dict(x=x, h0=h0, c0=c0, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh), loss)


def _gru_bptt(x, h0, lengths, w_ih, w_hh, b_ih, b_hh, grad_out, grad_h_n, reset_after=True):
    from rnnkit.recurrence import run_direction

    def loss(v):
        out, h_n = run_direction("GRU", v["x"], v["h0"], v["w_ih"], v["w_hh"], v["b_ih"], v["b_hh"], lengths=lengths,
                                 reset_after=reset_after)
        return (out * grad_out).sum() + (h_n * grad_h_n).sum()

    return _grads(GRU_BPTT_KEYS, dict(x=x, h0=h0, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh), loss)


_SEQUENCES = (("T=6, batch of 3, lengths [6, 2, 4], float64", [6, 2, 4], torch.float64),
              ("T=6, batch of 3, lengths [6, 2, 4], float32", [6, 2, 4], torch.float32),
              ("T=1, batch of 2, lengths [1, 1], float64", [1, 1], torch.float64),
              ("T=5, batch of 1, lengths [5], float32", [5], torch.float32),
              ("T=4, batch of 2, lengths [3, 4], float64", [3, 4], torch.float64))


def _bptt_cases(seed: int, lstm: bool) -> list[Case]:
    """``(x, h0, [c0,] lengths, w_ih, w_hh, b_ih, b_hh, grad_out, grad_h_n, [grad_c_n])``; the GRU cases alternate
    the two formulations. Padded steps of x and of grad_out are zero, like a masked loss would make them."""
    g = generator(seed)
    gates = 4 if lstm else 3
    cases = []
    for k, (label, lengths, dtype) in enumerate(_SEQUENCES):
        n_in, n_h, steps, batch = 3, 4, max(lengths), len(lengths)
        x = randn(g, steps, batch, n_in, dtype=dtype)
        grad_out = randn(g, steps, batch, n_h, dtype=dtype)
        for b, n in enumerate(lengths):
            x[n:, b] = 0.0
            grad_out[n:, b] = 0.0
        state = [randn(g, batch, n_h, dtype=dtype, scale=0.5) for _ in range(2 if lstm else 1)]
        weights = tuple(randn(g, *shape, dtype=dtype, scale=0.5) for shape in
                        ((gates * n_h, n_in), (gates * n_h, n_h), (gates * n_h,), (gates * n_h,)))
        final = [randn(g, batch, n_h, dtype=dtype) for _ in range(2 if lstm else 1)]
        kwargs = {} if lstm else {"reset_after": k % 2 == 0}
        if not lstm:
            label += ", reset_after=" + str(kwargs["reset_after"])
        cases.append(Case(label, (x, *state, torch.tensor(lengths, dtype=torch.long), *weights, grad_out, *final),
                          kwargs))
    return cases


# ------------------------------------------------------------------------- which path carries the gradient
def _state_grad_norms(x, h0, c0, w_ih, w_hh, b_ih, b_hh, grad_h_last):
    """Autograd reference: ``(||dL/dh_t||, ||dL/dc_t||)`` for t = 0..T-1 with L = <grad_h_last, h_T>."""
    from rnnkit.cells import lstm_cell

    leaves = [v.detach().clone().requires_grad_(True) for v in (x, h0, c0, w_ih, w_hh, b_ih, b_hh)]
    with torch.enable_grad():
        h, c = leaves[1], leaves[2]
        hs, cs = [], []
        for t in range(x.shape[0]):
            h, c = lstm_cell(leaves[0][t], (h, c), *leaves[3:])
            h.retain_grad()
            c.retain_grad()
            hs.append(h)
            cs.append(c)
        (h * grad_h_last).sum().backward()
    return torch.stack([s.grad.norm() for s in hs]).detach(), torch.stack([s.grad.norm() for s in cs]).detach()


def long_sequence(steps: int = 100, batch: int = 4, n_in: int = 3, n_h: int = 8, forget_bias: float = 3.0,
                  seed: int = 0, dtype: torch.dtype = torch.float64) -> tuple:
    """The Part 4 problem: a small LSTM with forget-gate bias ``forget_bias``, ``steps`` random inputs, and a loss
    on the last hidden state only. Returns ``(x, h0, c0, w_ih, w_hh, b_ih, b_hh, grad_h_last)``."""
    g = generator(seed)
    x = randn(g, steps, batch, n_in, dtype=dtype)
    h0, c0 = randn(g, batch, n_h, dtype=dtype, scale=0.1), randn(g, batch, n_h, dtype=dtype, scale=0.1)
    w_ih, w_hh = randn(g, 4 * n_h, n_in, dtype=dtype, scale=0.3), randn(g, 4 * n_h, n_h, dtype=dtype, scale=0.3)
    b_ih, b_hh = torch.zeros(4 * n_h, dtype=dtype), torch.zeros(4 * n_h, dtype=dtype)
    b_ih[n_h:2 * n_h] = forget_bias  # rows i, f, g, o: the forget gate's bias
    return x, h0, c0, w_ih, w_hh, b_ih, b_hh, randn(g, batch, n_h, dtype=dtype)


def _norm_cases() -> list[Case]:
    return [Case("T=100, batch of 4, forget bias 3, float64", long_sequence()),
            Case("T=30, batch of 2, forget bias 0, float64", long_sequence(30, 2, forget_bias=0.0, seed=1)),
            Case("T=1, batch of 1, float64", long_sequence(1, 1, seed=2)),
            Case("T=20, batch of 3, forget bias 1, float32", long_sequence(20, 3, forget_bias=1.0, seed=3,
                                                                          dtype=torch.float32))]


def gradient_path() -> str:
    """The computed answer of Part 4 on :func:`long_sequence`: ``"c"`` when ||dL/dc_0|| > ||dL/dh_0||."""
    dh, dc = _state_grad_norms(*long_sequence())
    return "c" if float(dc[0]) > float(dh[0]) else "h"


# ----------------------------------------------------------------------------- the checks (rules: specs/table.py)

def _register(name: str, make_cases, reference, keys: tuple[str, ...], summary: str) -> None:
    """A backward-pass check: a dict of gradients (leaves in sorted-key order), autograd switched off, the rule."""
    register(Spec(name, make_cases, reference, leaf_names=tuple(sorted(keys)), grad_enabled=False,
                  tolerances=_TOLERANCES, summary=summary))


_register("lstm_cell_backward", _lstm_cell_cases, _lstm_cell_backward, LSTM_CELL_KEYS,
          "one LSTM step backwards: gradients of x, h, c, w_ih, w_hh, b_ih, b_hh from dh', dc' "
          "(batched, B=1, unbatched, float32/64)")
_register("gru_cell_backward_reset_after", _gru_cell_cases(True), _gru_cell_backward, GRU_CELL_KEYS,
          "one GRU step backwards, PyTorch's formulation: r multiplies (W_hn h + b_hn)")
_register("gru_cell_backward_reset_before", _gru_cell_cases(False), _gru_cell_backward, GRU_CELL_KEYS,
          "one GRU step backwards, Cho et al.'s formulation: W_hn (r * h)")
_register("lstm_bptt", lambda: _bptt_cases(704, lstm=True), _lstm_bptt, LSTM_BPTT_KEYS,
          "BPTT through an LSTM layer over a padded batch with lengths: every parameter, x, h0, c0")
_register("gru_bptt", lambda: _bptt_cases(705, lstm=False), _gru_bptt, GRU_BPTT_KEYS,
          "BPTT through a GRU layer over a padded batch with lengths, both formulations")


register(Spec("lstm_state_grad_norms", _norm_cases, _state_grad_norms, leaf_names=("dh_norms", "dc_norms"),
              grad_enabled=False, tolerances={**_TOLERANCES, "torch.float64": (1e-6, 1e-12)},
              summary="per-step ||dL/dh_t|| and ||dL/dc_t|| of an LSTM, loss on the last state (100 steps)"))
register(Spec("gradient_path", lambda: [], gradient_path, kind="value", leaf_names=("GRADIENT_PATH",),
              summary="the computed answer: which state carries the gradient back 100 steps ('c')"))
