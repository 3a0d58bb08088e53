r"""Fused Elman RNN (tanh or ReLU): forward loop and hand-written backward through time.

.. math::
    h_t = f(W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh}), \qquad
    \delta_t = (\bar h_t) \odot f'(\cdot), \qquad
    \bar h_{t-1} = \delta_t W_{hh} + \partial L / \partial \mathrm{out}_{t-1}

where :math:`\bar h_t` is the total gradient reaching state :math:`h_t`. For tanh, :math:`f' = 1 - h_t^2`; for ReLU,
:math:`f' = [h_t > 0]`, both read off the saved states, so nothing but the states is kept for backward.

On the CPU the element-wise half of each step is one compiled kernel (:mod:`rnnkit._kernels`, ``rnn_fwd`` and
``rnn_bwd`` in ``_kernels.c``) and backward runs in time chunks (:mod:`rnnkit._fused_chunks`); the PyTorch operators
below run where it is unavailable (CUDA, no compiler).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd import Function
from torch.autograd.function import once_differentiable

from . import _fused_compiled as compiled
from . import _kernels
from ._fused_common import Plan, add_biases, hprev_grad, input_grads, one_minus_square
from ._fused_gemm import input_projection, make_accumulate, make_linear


class FusedRNN(Function):
    @staticmethod
    def forward(ctx, x, h0, w_ih, w_hh, b_ih, b_hh, plan: Plan, relu: bool):
        ctx.steps = _kernels.steps_for(x)
        if ctx.steps is not None:
            return compiled.rnn_forward(ctx, ctx.steps, x, h0.contiguous(), w_ih, w_hh, b_ih, b_hh, plan, relu)
        pack, _ = make_linear(plan.onednn, x.shape[1])
        acc = make_accumulate(plan.onednn)
        w = pack(w_hh)  # W_hh in the layout the per-step GEMM reads
        # (T, B, H): one GEMM for all input projections; each state is written over its step's projection
        S = input_projection(x, w_ih, add_biases(b_ih, b_hh), plan.bulk_onednn)
        S_ = S.unbind(0)  # per-step views, made once
        keep = None if plan.keep is None else plan.keep.unbind(0)
        h = h0
        for t in plan.steps:
            pre = acc(S_[t], h, w)  # (B, H) = x_t W_ih^T + b + h W_hh^T, in place where the kernel can
            if relu:
                torch.clamp_min(pre, 0, out=S_[t])
            else:
                torch.tanh(pre, out=S_[t])
            if keep is not None:  # finished rows keep their state
                torch.where(keep[t], S_[t], h, out=S_[t])
            h = S_[t]
        out = S if plan.valid is None else S * plan.valid  # (T, B, H), zeros past each length
        h_n = S[plan.last].clone()  # (B, H)
        ctx.save_for_backward(x, h0, w_ih, w_hh, S)
        ctx.plan, ctx.relu = plan, relu
        return out, h_n

    @staticmethod
    @once_differentiable
    def backward(ctx, dout: Tensor, dh_n: Tensor):
        if ctx.steps is not None:
            return compiled.rnn_backward(ctx, ctx.steps, dout, dh_n)
        x, h0, w_ih, w_hh, S = ctx.saved_tensors
        plan: Plan = ctx.plan
        pack, linear = make_linear(plan.onednn, x.shape[1])
        need = ctx.needs_input_grad
        # f'(pre) for every step at once, from the saved states; overwritten by delta_t during the loop
        if ctx.relu:
            dG = (S > 0).to(S.dtype)  # (T, B, H)
        else:
            dG = one_minus_square(S)  # (T, B, H) 1 - h^2
        hold = None
        if plan.valid is not None:
            dG.mul_(plan.valid)  # finished rows pass no gradient into the cell ...
            dout = dout * plan.valid
            hold = (1 - plan.valid).unbind(0)  # ... and pass their state's gradient straight through
        w_back = pack(w_hh.t())  # linear(a, w_back) = a @ W_hh
        dG_, dout_ = dG.unbind(0), dout.unbind(0)
        dS = dh_n + dout_[plan.last]  # (B, H) total gradient reaching the last state
        for t in reversed(plan.steps):
            dG_[t].mul_(dS)  # delta_t = hbar_t * f'(pre_t)
            add = None if t == plan.first else dout_[plan.prev(t)]
            if hold is not None:
                add = dS * hold[t] if add is None else torch.addcmul(add, dS, hold[t])
            dS = linear(dG_[t], w_back, add=add)  # gradient reaching the previous state
        T, B, H = S.shape
        # the weight gradients as the floor computes them: no (T, B, I + H) concatenation, which cost memory
        dw_hh = hprev_grad(dG, S, h0, plan) if need[3] else None
        dx, dw_ih, db = input_grads([dG.view(T * B, H)], x, w_ih, need[0], need[2], need[4] or need[5],
                                    plan.bulk_onednn)
        return dx, dS if need[1] else None, dw_ih, dw_hh, db if need[4] else None, db if need[5] else None, None, None
