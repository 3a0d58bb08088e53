r"""Shared plumbing of the fused backend (:mod:`rnnkit.fused`): the time bookkeeping for ``reverse`` and ``lengths``,
and the gradient products that run once after the backward loop (their kernels come from :mod:`rnnkit._fused_gemm`).

Every fused cell stores its states in a ``(T, B, H)`` buffer ``S`` **in time order**: ``S[t]`` is the state after
the step that reads ``x[t]``. A forward direction steps ``t = 0, ..., T-1`` and reads ``h_{prev} = S[t-1]``; a
reverse direction steps ``t = T-1, ..., 0`` and reads ``S[t+1]``; the first step of either reads ``h_0``. So the
"previous state" of every step is a shifted view of ``S`` plus ``h_0``, and
:math:`\partial L / \partial W_{hh} = \sum_t \delta_t^\top h_{prev}(t)` is two matrix products, not ``T``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ._fused_gemm import bulk_path, gemm_path, gram, input_projection, matmul_for

__all__ = [
    "Plan", "make_plan", "hprev_grad", "input_grads", "mul_prev", "sub_prev", "add_biases",
    "one_minus_square", "sigmoid_slope", "reset_before_projections", "addresses", "prev_addresses", "keep_addresses",
]


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
    loop: bool = False  # the steps run in the compiled whole-sequence loops (gemm_path "loop")
    saves: bool = True  # a backward may follow (grad mode on, an input requires grad): keep what it needs

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


def make_plan(x: Tensor, w_ih: Tensor, w_hh: Tensor, lengths: Tensor | None, reverse: bool,
              saves: bool = True) -> Plan:
    T, B = x.shape[0], x.shape[1]
    path = gemm_path(x, w_hh)
    H = w_hh.shape[1]
    # the GRU's input gradient is (d_r, d_z), a strided view beside d_hn, then d_n (rnnkit._fused_compiled)
    bulk = bulk_path(x, w_ih, 2 * H if w_hh.shape[0] == 3 * H else 0) == "onednn"
    if lengths is None or bool((lengths >= T).all()):
        return Plan(T, reverse, None, None, path == "onednn", bulk, path == "loop", saves)
    keep = torch.arange(T)[:, None] < lengths.reshape(1, B)  # (T, B) on the CPU, like lengths
    keep = keep.to(x.device).unsqueeze(2)  # (T, B, 1)
    return Plan(T, reverse, keep.to(x.dtype), keep, path == "onednn", bulk, path == "loop", saves)


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
        out += gram(d_rest.reshape((T - 1) * B, N), s_rest.reshape((T - 1) * B, H))
    return out


def input_grads(
    blocks: list[Tensor], x: Tensor, w_ih: Tensor, need_x: bool, need_w: bool, need_b: bool, onednn: bool
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """Gradients of ``x @ w_ih.T + b`` given ``dL/d(pre-activation)`` as ``(T*B, N_k)`` column blocks that match
    consecutive row blocks of ``w_ih`` (strided views are fine, so no block is copied): ``(dx, dw_ih, db)``."""
    T, B, I = x.shape
    x2 = x.reshape(T * B, I)  # (T*B, I)
    mm = matmul_for(onednn)
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
