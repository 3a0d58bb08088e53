"""The GEMM-only floor of ``python -m rnnkit.bench``: the fused backend's matrix products alone, called the way the
fused layer calls them, with no gate arithmetic. It prices what the fused backend adds to its own products."""

from __future__ import annotations

from typing import Any

import torch

from . import _kernels
from ._fused_common import Plan, hprev_grad, input_grads, make_plan
from ._fused_gemm import input_projection, make_linear, make_product

__all__ = ["floor_workload"]


def floor_workload(net: Any, x: torch.Tensor):
    """The fused backend's matrix products alone: the same helpers, shapes and kernels (:mod:`rnnkit._fused_gemm`),
    with random stand-ins for the states and gate gradients and no element-wise work. A step's product goes into one
    of two reused buffers and adds nothing (a fused step adds the input projection to it, or the kernel reads it):
    calling ``torch.addmm(add, a, w)`` instead would allocate, copy ``add`` and read it again in every step, work a
    layer can avoid, and then the fused backend could beat its "floor". The input projections go where the layer's
    do: a new ``(T, B, G*H)`` buffer, which the layer keeps for backward (and which is the tanh RNN's output). Where
    the layer runs the compiled whole-sequence loops, so do the floor's products (``gemm_steps``: the same per-thread
    rows, no Python per step), the input projections step by step as the loops make them, into one step's buffer
    where the layer keeps none (an LSTM's or GRU's forward under ``no_grad``)."""
    T, B, I = x.shape
    w_ih, w_hh, b = net.weight_ih_l0.detach(), net.weight_hh_l0.detach(), net.bias_ih_l0.detach()
    GH, H = w_hh.shape
    x = x.detach()
    h0 = torch.randn(B, H, device=x.device)
    S = torch.randn(T, B, H, device=x.device)  # stands in for the states
    d = torch.randn(T, B, GH, device=x.device)  # stands in for the gate gradients
    plan = make_plan(x, w_ih, w_hh, None, False)  # the kernels the fused layer would choose for these shapes
    if plan.loop:
        forward, backward_steps = _loop_products(x, w_ih, b, w_hh, S, d)
    else:
        forward_steps, backward_steps = _step_products(w_hh, S, d, plan)

        def forward(saves: bool) -> None:
            input_projection(x, w_ih, b, plan.bulk_onednn)  # all input projections in one GEMM
            forward_steps()

    def fwd():
        forward(False)

    def fwd_bwd():
        forward(True)
        backward_steps()
        dx, dw_ih, _ = input_grads([d.view(T * B, GH)], x, w_ih, True, True, False, plan.bulk_onednn)
        return dx, dw_ih, hprev_grad(d, S, h0, plan)

    return fwd, fwd_bwd


def _step_products(w_hh: torch.Tensor, S: torch.Tensor, d: torch.Tensor, plan: Plan):
    """``(forward, backward)``: every step's product called from Python, as the per-step fused loops call it."""
    T, B, H = S.shape
    GH = w_hh.shape[0]
    pack, _ = make_linear(plan.onednn, B)
    product = make_product(plan.onednn)
    outs = (S.new_empty(B, GH), S.new_empty(B, GH))  # the steps' products, in turn
    grads = (S.new_empty(B, H), S.new_empty(B, H))

    def forward():
        w = pack(w_hh)
        for t in range(T):
            product(outs[t & 1], S[t], w)  # (B, GH) h_{t-1} W_hh^T

    def backward():
        w_back = pack(w_hh.t())
        for t in range(T):
            product(grads[t & 1], d[t], w_back)  # (B, H) gradient reaching h_{t-1} through step t

    return forward, backward


def _loop_products(x: torch.Tensor, w_ih: torch.Tensor, b: torch.Tensor, w_hh: torch.Tensor, S: torch.Tensor,
                   d: torch.Tensor):
    """``(forward(saves), backward)`` for a layer that runs the compiled loops: each step's products of every
    thread's rows, all steps in one call, as the loops issue them -- in forward the step's input projection
    ``b + x_t W_ih^T`` (the loops make it step by step: into a new sequence buffer, or into one step's where the
    layer keeps none, see :func:`floor_workload`), then ``h_{t-1} W_hh^T`` into a reused buffer."""
    T, B, H = S.shape
    GH, I = w_hh.shape[0], x.shape[2]
    k = _kernels.steps_for(S)
    assert k is not None
    w, wi, xc = w_hh.contiguous(), w_ih.contiguous(), x.contiguous()  # the closures hold them: read by address
    out, grad = S.new_empty(B, GH), S.new_empty(B, H)
    step_proj = S.new_empty(1, B, GH).expand(T, B, GH)  # one step's buffer, time stride 0

    def forward(saves: bool) -> None:
        inputs = k.product(wi, True, I, GH, False, b)
        proj = S.new_empty(T, B, GH) if saves or GH == H else step_proj
        k.gemm_steps(T, B, xc.data_ptr(), B * I, proj.data_ptr(), proj.stride(0), *inputs)  # (B, GH) b + x_t W_ih^T
        product = k.product(w, True, H, GH, False)
        k.gemm_steps(T, B, S.data_ptr(), B * H, out.data_ptr(), 0, *product)  # per step (B, GH) h_{t-1} W_hh^T

    def backward():
        product = k.product(w, False, GH, H, False)
        k.gemm_steps(T, B, d.data_ptr(), B * GH, grad.data_ptr(), 0, *product)  # per step (B, H) d_t W_hh

    return forward, backward
