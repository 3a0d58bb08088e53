r"""Shared plumbing of the fused backend (:mod:`rnnkit.fused`): the per-step matrix product, the time bookkeeping
for ``reverse`` and ``lengths``, and the weight-gradient products that run once after the backward loop.

Every fused cell stores its states in a ``(T, B, H)`` buffer ``S`` **in time order**: ``S[t]`` is the state after
the step that reads ``x[t]``. A forward direction steps ``t = 0, ..., T-1`` and reads ``h_{prev} = S[t-1]``; a
reverse direction steps ``t = T-1, ..., 0`` and reads ``S[t+1]``; the first step of either reads ``h_0``. So the
"previous state" of every step is a shifted view of ``S`` plus ``h_0``, and
:math:`\partial L / \partial W_{hh} = \sum_t \delta_t^\top h_{prev}(t)` is two matrix products, not ``T``.
"""

from __future__ import annotations

import os
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "Plan", "make_plan", "make_linear", "make_accumulate", "gemm_path", "bulk_path", "gemm_choice", "hprev_grad",
    "input_grads",
    "mul_prev", "sub_prev", "input_projection", "add_biases", "matmul_for", "gram_for",
    "one_minus_square", "sigmoid_slope", "reset_before_projections", "addresses", "prev_addresses", "keep_addresses",
]


# --------------------------------------------------------------------------------------------------------------------
# The one small product per step, and which kernel computes it.
#
# On the CPU in float32, PyTorch's own nn.LSTM runs its GEMMs in oneDNN (brgemm kernels on a weight reordered once).
# For the short, wide products of a recurrence (64 x 256 times 256 x 1024) that took half the time of the MKL sgemm
# behind torch.addmm on one machine and was slower than it on another: which is faster depends on the CPU. So the
# kernel is chosen by measurement, once per (device, dtype, batch, hidden, gate rows) in a process: both candidates
# run the real per-step products (forward and backward) for a few milliseconds and the faster one is kept
# (gemm_choice() lists the choices). torch.ops.mkldnn._linear_pointwise and _reorder_linear_weight are the PyTorch
# operators Inductor emits for the same product; they are internal API, so they are probed once, and torch.addmm is
# used whenever they are missing, fail or disagree (with a warning when they exist but fail). RNNKIT_FUSED_GEMM
# = "addmm" or "onednn" overrides the measurement. Float64 and CUDA always use torch.addmm / torch.mm.
# --------------------------------------------------------------------------------------------------------------------
_ONEDNN_OK: bool | None = None
_CHOICES: dict[tuple, str] = {}  # ("step", batch, hidden, gate rows) or ("bulk", rows, inputs) -> "onednn" | "addmm"
_MEASURE_SECONDS = 0.004  # per candidate and shape: a few milliseconds at a layer's first call
_BULK_ROWS = 512  # rows of the probe for the whole-sequence products


def _onednn_available() -> bool:
    global _ONEDNN_OK
    if _ONEDNN_OK is None:
        _ONEDNN_OK = False
        op = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)
        if op is not None and torch.backends.mkldnn.is_available():
            problem = None
            try:
                g = torch.Generator().manual_seed(0)
                a, w, add = (torch.randn(s, generator=g) for s in ((4, 8), (12, 8), (4, 12)))
                b = torch.randn(12, generator=g)
                ok1 = torch.allclose(op(a, w, b, "none", [], ""), torch.addmm(b, a, w.t()), atol=1e-5)
                ok2 = torch.allclose(op.binary(a, add, w, None, "add"), torch.addmm(add, a, w.t()), atol=1e-5)
                packed = torch.ops.mkldnn._reorder_linear_weight(w, 4)
                ok3 = torch.allclose(op.binary(a, add, packed, None, "add"), torch.addmm(add, a, w.t()), atol=1e-5)
                _ONEDNN_OK = bool(ok1 and ok2 and ok3)
                if not _ONEDNN_OK:
                    problem = "its results differ from torch.addmm"
            except Exception as err:  # any failure of an internal op means: use the public one
                problem = f"it raised {type(err).__name__}: {err}"
            if problem is not None:
                warnings.warn(f"rnnkit fused backend: oneDNN's linear operator is present but unusable ({problem}); "
                              "using torch.addmm", RuntimeWarning, stacklevel=3)
    return _ONEDNN_OK


def _seconds_per_step(onednn: bool, batch: int, hidden: int, rows: int) -> float:
    """Median seconds of one forward plus one backward per-step product with this kernel, on these shapes."""
    g = torch.Generator().manual_seed(0)
    h, d = torch.randn(batch, hidden, generator=g), torch.randn(batch, rows, generator=g)
    w = torch.randn(rows, hidden, generator=g)
    out_f, out_b = torch.randn(batch, rows, generator=g), torch.empty(batch, hidden)
    pack, _ = make_linear(onednn, batch)
    accumulate, product = make_accumulate(onednn), make_product(onednn)
    w_f, w_b = pack(w), pack(w.t())
    times: list[float] = []
    deadline = time.perf_counter() + _MEASURE_SECONDS
    while len(times) < 3 or (time.perf_counter() < deadline and len(times) < 200):
        start = time.perf_counter()
        accumulate(out_f, h, w_f)  # (B, rows): a forward step, adding to the step's input projection
        product(out_b, d, w_b)  # (B, H): a backward step
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])  # the first call pays for warm-up


def _forced_or_none(x: Tensor, w: Tensor) -> str | None:
    """The kernel every product of this layer uses whatever the timings (CUDA, float64, empty, override), or None."""
    if x.device.type != "cpu" or x.dtype != torch.float32 or x.numel() == 0 or w.numel() == 0:
        return "addmm"
    forced = os.environ.get("RNNKIT_FUSED_GEMM", "auto").lower()
    if forced == "addmm" or not _onednn_available():
        return "addmm"
    return "onednn" if forced == "onednn" else None


def gemm_path(x: Tensor, w_hh: Tensor) -> str:
    """``"onednn"`` or ``"addmm"``: the kernel of the per-step products of a layer whose input is like
    ``x (T, B, I)`` and recurrent weight is ``w_hh (G*H, H)``; measured on first use, then cached."""
    forced = _forced_or_none(x, w_hh)
    if forced is not None:
        return forced
    key = ("step", x.shape[1], w_hh.shape[1], w_hh.shape[0])
    if key not in _CHOICES:
        with torch.no_grad():
            onednn, addmm = (_seconds_per_step(k, *key[1:]) for k in (True, False))
        _CHOICES[key] = "onednn" if onednn < addmm else "addmm"
    return _CHOICES[key]


def _seconds_bulk(onednn: bool, rows: int, inputs: int) -> float:
    """Best seconds of the three whole-sequence products (input projection, ``dx``, ``dW_ih``) on a probe of
    ``_BULK_ROWS`` rows of ``T*B``, for ``W_ih (rows, inputs)``."""
    g = torch.Generator().manual_seed(0)
    x, d = torch.randn(_BULK_ROWS, inputs, generator=g), torch.randn(_BULK_ROWS, rows, generator=g)
    w = torch.randn(rows, inputs, generator=g)
    mm, gram = matmul_for(onednn), gram_for(onednn)
    times: list[float] = []
    for _ in range(4):
        start = time.perf_counter()
        input_projection(x.unsqueeze(0), w, None, onednn)
        mm(d, w)
        gram(d, x)
        times.append(time.perf_counter() - start)
    return min(times[1:])  # the first call pays for warm-up


def bulk_path(x: Tensor, w_ih: Tensor) -> str:
    """``"onednn"`` or ``"addmm"`` (``torch.mm``): the kernel of the products over all ``T*B`` rows of a layer with
    input like ``x`` and ``w_ih (G*H, I)``; measured once per shape like :func:`gemm_path` (on the machine this was
    written on, MKL ran them faster than oneDNN, whose operator also copies transposed operands)."""
    forced = _forced_or_none(x, w_ih)
    if forced is not None:
        return forced
    key = ("bulk", w_ih.shape[0], w_ih.shape[1])
    if key not in _CHOICES:
        with torch.no_grad():
            onednn, addmm = (_seconds_bulk(k, *key[1:]) for k in (True, False))
        _CHOICES[key] = "onednn" if onednn < addmm else "addmm"
    return _CHOICES[key]


def gemm_choice() -> dict[str, str]:
    """The kernels chosen by measurement so far in this process, per-step products by batch, hidden size and gate
    rows, whole-sequence products by ``W_ih``'s shape: ``{"cpu float32 step B=64 H=256 rows=1024": "onednn",
    "cpu float32 sequence W_ih=1024x256": "addmm"}``."""
    out = {}
    for key, path in sorted(_CHOICES.items()):
        if key[0] == "step":
            out["cpu float32 step B={} H={} rows={}".format(*key[1:])] = path
        else:
            out["cpu float32 sequence W_ih={}x{}".format(*key[1:])] = path
    return out


def make_linear(onednn: bool, batch: int) -> tuple[Callable[[Tensor], Tensor], Callable[..., Tensor]]:
    """``(pack, linear)`` for the per-step product: ``linear(a, pack(w), bias=None, add=None)`` is
    ``a @ w.T (+ bias) (+ add)`` for ``a (batch, K)``, ``w (N, K)``, ``add (batch, N)``, a new ``(batch, N)`` tensor.

    ``pack`` runs once per weight and call of a Function: for oneDNN it reorders ``w`` into the blocked layout its
    GEMM micro-kernel reads (as nn.LSTM's oneDNN kernel does), for ``torch.addmm`` it is ``w.T``. Both are resolved
    here, so the loop pays no look-ups."""
    if onednn:
        plain, binary = torch.ops.mkldnn._linear_pointwise.default, torch.ops.mkldnn._linear_pointwise.binary
        reorder = torch.ops.mkldnn._reorder_linear_weight.default

        def pack(w: Tensor) -> Tensor:
            return reorder(w.contiguous(), batch)

        def linear(a: Tensor, w: Tensor, bias: Tensor | None = None, add: Tensor | None = None) -> Tensor:
            return plain(a, w, bias, "none", [], "") if add is None else binary(a, add, w, bias, "add")
    else:
        def pack(w: Tensor) -> Tensor:
            return w.t()

        def linear(a: Tensor, w: Tensor, bias: Tensor | None = None, add: Tensor | None = None) -> Tensor:
            if add is not None:
                return torch.addmm(add if bias is None else add + bias, a, w)
            return torch.mm(a, w) if bias is None else torch.addmm(bias, a, w)
    return pack, linear


def make_accumulate(onednn: bool) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    """``acc(out, a, w) = out + a @ w.T`` for ``w`` from :func:`make_linear`'s ``pack``: written into ``out`` itself
    with ``torch.addmm`` (no new tensor, ``out`` is returned), a new tensor with oneDNN (its operator has no ``out=``).
    ``out`` is a contiguous ``(batch, N)`` step of a preallocated buffer."""
    if onednn:
        binary = torch.ops.mkldnn._linear_pointwise.binary
        return lambda out, a, w: binary(a, out, w, None, "add")
    return lambda out, a, w: out.addmm_(a, w)


def make_product(onednn: bool) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    """``prod(out, a, w) = a @ w.T`` like :func:`make_accumulate`, written over ``out`` with ``torch.mm``."""
    if onednn:
        plain = torch.ops.mkldnn._linear_pointwise.default
        return lambda out, a, w: plain(a, w, None, "none", [], "")
    return lambda out, a, w: torch.mm(a, w, out=out)


# --------------------------------------------------------------------------------------------------------------------
# Time bookkeeping
# --------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    """Which time index each step reads, and which rows are still running (``lengths``)."""

    T: int
    reverse: bool
    valid: Tensor | None  # (T, B, 1) in the input's dtype: 1 while t < lengths[b]; None when every row runs T steps
    keep: Tensor | None  # (T, B, 1) bool, the same mask for torch.where
    onednn: bool = False  # the per-step products go through oneDNN (gemm_path), else torch.addmm
    bulk_onednn: bool = False  # the whole-sequence products go through oneDNN (bulk_path), else torch.mm

    @property
    def steps(self) -> range:
        """Time indices in the order the forward pass visits them."""
        return range(self.T - 1, -1, -1) if self.reverse else range(self.T)

    @property
    def first(self) -> int:
        return self.T - 1 if self.reverse else 0

    @property
    def last(self) -> int:
        return 0 if self.reverse else self.T - 1

    def prev(self, t: int) -> int:
        """The time index whose state step ``t`` reads (only for ``t != first``)."""
        return t + 1 if self.reverse else t - 1


def make_plan(x: Tensor, w_ih: Tensor, w_hh: Tensor, lengths: Tensor | None, reverse: bool) -> Plan:
    T, B = x.shape[0], x.shape[1]
    onednn = gemm_path(x, w_hh) == "onednn"
    bulk = bulk_path(x, w_ih) == "onednn"
    if lengths is None or bool((lengths >= T).all()):
        return Plan(T, reverse, None, None, onednn, bulk)
    keep = torch.arange(T)[:, None] < lengths.reshape(1, B)  # (T, B) on the CPU, like lengths
    keep = keep.to(x.device).unsqueeze(2)  # (T, B, 1)
    return Plan(T, reverse, keep.to(x.dtype), keep, onednn, bulk)


def addresses(buf: Tensor) -> list[int]:
    """The address of every ``buf[t]`` of a contiguous buffer, for the compiled steps (:mod:`rnnkit._kernels`); the
    caller keeps ``buf`` alive while they are used."""
    step, base = buf.stride(0) * buf.element_size(), buf.data_ptr()
    return [base + t * step for t in range(buf.shape[0])]


def prev_addresses(plan: Plan, states: list[int], first: int) -> list[int]:
    """Per time index ``t``, the address of the state step ``t`` reads: ``states[plan.prev(t)]``, or ``first``
    (``h_0``'s address) for the first step."""
    return [first if t == plan.first else states[plan.prev(t)] for t in range(plan.T)]


def keep_addresses(plan: Plan) -> tuple[Tensor | None, list[int | None]]:
    """``(mask, address of mask[t] or None per step)``: the rows still running at each step as one byte each."""
    if plan.keep is None:
        return None, [None] * plan.T
    mask = plan.keep.reshape(plan.T, -1).contiguous()  # (T, B) bool, one byte per row
    return mask, list(addresses(mask))


def mul_prev(A: Tensor, S: Tensor, h0: Tensor, plan: Plan) -> Tensor:
    """``A[t] *= h_prev(t)`` in place for every step (``A``, ``S`` ``(T, B, H)``): the previous state of step ``t``
    is ``S`` shifted by one step, and ``h0`` for the first step; no ``(T, B, H)`` copy of the shifted states."""
    if plan.reverse:
        A[:-1].mul_(S[1:])
    else:
        A[1:].mul_(S[:-1])
    A[plan.first].mul_(h0)
    return A


def sub_prev(S: Tensor, h0: Tensor, N: Tensor, plan: Plan, out: Tensor) -> Tensor:
    """``out[t] = h_prev(t) - N[t]`` for every step, written into ``out`` (see :func:`mul_prev`)."""
    if plan.reverse:
        torch.sub(S[1:], N[:-1], out=out[:-1])
    else:
        torch.sub(S[:-1], N[1:], out=out[1:])
    torch.sub(h0, N[plan.first], out=out[plan.first])
    return out


# --------------------------------------------------------------------------------------------------------------------
# The large products over all T*B rows: the input projection before the loop, the gradients after it.
# --------------------------------------------------------------------------------------------------------------------
_PIECES = 4  # oneDNN's products over all T*B rows run in this many pieces (see matmul_for)


def matmul_for(onednn: bool) -> Callable[[Tensor, Tensor], Tensor]:
    """``mm(a, b) = a @ b`` for the large 2-D operands of a layer: oneDNN where its per-step products use it (on one
    machine MKL's sgemm ran these shapes 1.5-3x slower), ``torch.mm`` otherwise. Operands may be strided views.

    oneDNN's operator copies an operand whose rows are not contiguous (a gate block of a wider buffer) before it
    multiplies; so such an ``a`` goes through in row pieces, and each copy is a fraction of it."""
    if not onednn:
        return torch.mm
    plain = torch.ops.mkldnn._linear_pointwise.default

    def mm(a: Tensor, b: Tensor) -> Tensor:
        if a.is_contiguous() or a.shape[0] < _PIECES:
            return plain(a, b.t(), None, "none", [], "")  # a @ b = linear(a, weight=b.T)
        out = a.new_empty(a.shape[0], b.shape[1])
        for rows in torch.arange(a.shape[0]).tensor_split(_PIECES):
            lo, hi = int(rows[0]), int(rows[-1]) + 1
            out[lo:hi] = plain(a[lo:hi], b.t(), None, "none", [], "")
        return out

    return mm


def gram_for(onednn: bool) -> Callable[[Tensor, Tensor], Tensor]:
    """``gram(a, b) = a.T @ b`` for ``a (M, N)``, ``b (M, K)`` that reduce over their ``M = T*B`` rows (the weight
    gradients). ``torch.mm`` reads the transposed operand in place; oneDNN's operator would copy both operands whole,
    so it gets them in ``_PIECES`` row pieces (partial sums added), and its extra memory is a fraction of theirs."""
    if not onednn:
        return lambda a, b: torch.mm(a.t(), b)
    plain = torch.ops.mkldnn._linear_pointwise.default

    def gram(a: Tensor, b: Tensor) -> Tensor:
        out = None
        for a_k, b_k in zip(a.tensor_split(_PIECES), b.tensor_split(_PIECES), strict=True):
            if a_k.shape[0]:
                part = plain(a_k.t(), b_k.t(), None, "none", [], "")  # (N, K) = a_k^T b_k
                out = part if out is None else out.add_(part)
        return a.new_zeros(a.shape[1], b.shape[1]) if out is None else out

    return gram


def hprev_grad(d: Tensor, S: Tensor, h0: Tensor, plan: Plan) -> Tensor:
    r"""``sum_t d[t]^T h_prev(t)``: ``d (T, B, N)``, ``S (T, B, H)`` -> ``(N, H)``, two GEMMs instead of ``T``."""
    T, B, N = d.shape
    H = S.shape[2]
    if plan.reverse:  # step t read S[t+1]; the first step (t = T-1) read h0
        d_rest, s_rest, d_first = d[:-1], S[1:], d[-1]
    else:  # step t read S[t-1]; the first step (t = 0) read h0
        d_rest, s_rest, d_first = d[1:], S[:-1], d[0]
    out = torch.mm(d_first.t(), h0)  # (N, H), small
    if T > 1:
        out += gram_for(plan.bulk_onednn)(d_rest.reshape((T - 1) * B, N), s_rest.reshape((T - 1) * B, H))
    return out


def input_grads(
    blocks: list[Tensor], x: Tensor, w_ih: Tensor, need_x: bool, need_w: bool, need_b: bool, onednn: bool
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """Gradients of ``x @ w_ih.T + b`` given ``dL/d(pre-activation)`` as ``(T*B, N_k)`` column blocks that match
    consecutive row blocks of ``w_ih`` (strided views are fine, so no block is copied): ``(dx, dw_ih, db)``."""
    T, B, I = x.shape
    x2 = x.reshape(T * B, I)  # (T*B, I)
    mm, gram = matmul_for(onednn), gram_for(onednn)
    dx = dw = db = None
    rows = 0
    for d in blocks:
        w = w_ih[rows : rows + d.shape[1]]  # (N_k, I)
        rows += d.shape[1]
        if need_x:
            dx = mm(d, w) if dx is None else dx.add_(mm(d, w))  # (T*B, I)
    if need_w:
        dw = torch.cat([gram(d, x2) for d in blocks])  # (N, I)
    if need_b:
        db = torch.cat([d.sum(0) for d in blocks])  # (N,)
    return (None if dx is None else dx.view(T, B, I)), dw, db


def input_projection(x: Tensor, w_ih: Tensor, b: Tensor | None, onednn: bool) -> Tensor:
    """All input projections of the sequence in one GEMM: ``x @ w_ih.T + b``, ``(T, B, I)`` -> ``(T, B, N)``."""
    T, B, I = x.shape
    x2 = x.reshape(T * B, I)  # (T*B, I)
    if onednn:
        out = torch.ops.mkldnn._linear_pointwise.default(x2, w_ih, b, "none", [], "")  # (T*B, N)
    else:
        out = torch.mm(x2, w_ih.t()) if b is None else torch.addmm(b, x2, w_ih.t())  # (T*B, N)
    return out.view(T, B, w_ih.shape[0])


def reset_before_projections(x: Tensor, w_ih: Tensor, b_ih: Tensor | None, b_hh: Tensor | None, onednn: bool
                             ) -> tuple[Tensor, Tensor]:
    """The GRU with the reset gate before its product (every bias additive): ``x W_i(r,z)^T + b_(r,z)`` as
    ``(T, B, 2H)`` and ``x W_in^T + b_n`` as ``(T, B, H)``, two buffers the steps then fill with r, z and n."""
    H = w_ih.shape[0] // 3
    b = add_biases(b_ih, b_hh)
    b_rz, b_n = (None, None) if b is None else (b[: 2 * H], b[2 * H :])
    return input_projection(x, w_ih[: 2 * H], b_rz, onednn), input_projection(x, w_ih[2 * H :], b_n, onednn)


def one_minus_square(t: Tensor, out: Tensor | None = None) -> Tensor:
    """``1 - t^2`` (tanh' from tanh) in one pass over memory."""
    return torch.addcmul(t.new_ones(()), t, t, value=-1, out=out)


def sigmoid_slope(t: Tensor, out: Tensor | None = None) -> Tensor:
    """``t (1 - t) = t - t^2`` (sigmoid' from sigmoid) in one pass over memory."""
    return torch.addcmul(t, t, t, value=-1, out=out)


def add_biases(b_ih: Tensor | None, b_hh: Tensor | None) -> Tensor | None:
    """``b_ih + b_hh`` where both are purely additive (None when the layer has no bias)."""
    if b_ih is None:
        return b_hh
    return b_ih if b_hh is None else b_ih + b_hh
