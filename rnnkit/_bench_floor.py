"""The GEMM-only floor of ``python -m rnnkit.bench``: the fused backend's matrix products alone, called the way the
fused layer calls them, with no gate arithmetic. It prices what the fused backend adds to its own products."""

from __future__ import annotations

from typing import Any

import torch

from . import _kernels
from ._fused_common import hprev_grad, input_grads, make_plan
from ._fused_gemm import input_projection, make_linear, make_product

__all__ = ["floor_workload"]


def floor_workload(net: Any, x: torch.Tensor):
    """The fused backend's matrix products alone: the same helpers, shapes and kernels (:mod:`rnnkit._fused_gemm`),
    with random stand-ins for the states and gate gradients and no element-wise work. A step's product goes into one
    of two reused buffers and adds nothing (a fused step adds the input projection to it, or the kernel reads it):
    calling ``torch.addmm(add, a, w)`` instead would allocate, copy ``add`` and read it again in every step, work a
    layer can avoid, and then the fused backend could beat its "floor". Where the layer runs the compiled
    whole-sequence loops, so do the floor's products (``gemm_steps``: the same per-thread rows, no Python per step)."""
    T, B, I = x.shape
    w_ih, w_hh, b = net.weight_ih_l0.detach(), net.weight_hh_l0.detach(), net.bias_ih_l0.detach()
    GH, H = w_hh.shape
    x = x.detach()
    h0 = torch.randn(B, H, device=x.device)
    S = torch.randn(T, B, H, device=x.device)  # stands in for the states
    d = torch.randn(T, B, GH, device=x.device)  # stands in for the gate gradients
    plan = make_plan(x, w_ih, w_hh, None, False)  # the kernels the fused layer would choose for these shapes
    pack, _ = make_linear(plan.onednn, B)
    product = make_product(plan.onednn)
    outs = (x.new_empty(B, GH), x.new_empty(B, GH))  # the steps' products, in turn
    grads = (x.new_empty(B, H), x.new_empty(B, H))
    if plan.loop:
        return _floor_loops(x, w_ih, w_hh, b, h0, S, d, plan)

    def fwd():
        input_projection(x, w_ih, b, plan.bulk_onednn)  # all input projections
        w = pack(w_hh)
        for t in range(T):
            product(outs[t & 1], S[t], w)  # (B, GH) h_{t-1} W_hh^T

    def fwd_bwd():
        fwd()
        w_back = pack(w_hh.t())
        for t in range(T):
            product(grads[t & 1], d[t], w_back)  # (B, H) gradient reaching h_{t-1} through step t
        dx, dw_ih, _ = input_grads([d.view(T * B, GH)], x, w_ih, True, True, False, plan.bulk_onednn)
        return dx, dw_ih, hprev_grad(d, S, h0, plan)

    return fwd, fwd_bwd


def _floor_loops(x, w_ih, w_hh, b, h0, S, d, plan):
    """:func:`floor_workload` for a layer that runs the compiled loops: each step's product of every thread's rows
    into one reused buffer, all steps in one call, as the loops issue them."""
    T, B, _ = x.shape
    GH, H = w_hh.shape
    k = _kernels.steps_for(x)
    assert k is not None
    w = w_hh.contiguous()  # the closures hold it: the products read it by address
    out, grad = x.new_empty(B, GH), x.new_empty(B, H)

    def fwd():
        input_projection(x, w_ih, b, plan.bulk_onednn)  # all input projections
        product = k.product(w, True, H, GH, False)
        k.gemm_steps(T, B, S.data_ptr(), B * H, out.data_ptr(), 0, *product)  # per step (B, GH) h_{t-1} W_hh^T

    def fwd_bwd():
        fwd()
        product = k.product(w, False, GH, H, False)
        k.gemm_steps(T, B, d.data_ptr(), B * GH, grad.data_ptr(), 0, *product)  # per step (B, H) d_t W_hh
        dx, dw_ih, _ = input_grads([d.view(T * B, GH)], x, w_ih, True, True, False, plan.bulk_onednn)
        return dx, dw_ih, hprev_grad(d, S, h0, plan)

    return fwd, fwd_bwd
