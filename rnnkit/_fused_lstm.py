r"""Fused LSTM: forward loop and hand-written backward through time.

.. math::
    \begin{aligned}
    (i, f, g, o) &= (\sigma, \sigma, \tanh, \sigma)(W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh}) \\
    c_t &= f \odot c_{t-1} + i \odot g, \qquad h_t = o \odot \tanh(c_t)
    \end{aligned}

Backward, with :math:`\bar h_t, \bar c_t` the total gradients reaching the states:

.. math::
    \begin{aligned}
    \bar c_t &\mathrel{+}= \bar h_t \odot o \odot (1 - \tanh^2 c_t) \\
    \delta_o &= \bar h_t \odot \tanh(c_t)\, o(1-o), \quad \delta_i = \bar c_t \odot g\, i(1-i), \quad
    \delta_f = \bar c_t \odot c_{t-1} f(1-f), \quad \delta_g = \bar c_t \odot i (1-g^2) \\
    \bar h_{t-1} &= \delta_t W_{hh} + \partial L/\partial \mathrm{out}_{t-1}, \qquad \bar c_{t-1} = \bar c_t \odot f
    \end{aligned}

Everything that does not depend on :math:`\bar h, \bar c` (the factors after each :math:`\bar c_t \odot`) is
computed for all steps at once before the loop, so each backward step is five kernels: one GEMM and four
element-wise.

Internally the gate rows are rolled from PyTorch's ``(i, f, g, o)`` to ``(o, i, f, g)``: then the three sigmoids are one
contiguous block and the tanh another (two kernels per step instead of three), and in backward ``delta_o`` (scaled by
:math:`\bar h`) is one block and ``(delta_i, delta_f, delta_g)`` (scaled by :math:`\bar c`) another. Gradients are
rolled back, so parameters keep torch.nn's layout.

On the CPU the element-wise half of each step is one compiled kernel (:mod:`rnnkit._kernels`, ``lstm_fwd`` and
``lstm_bwd`` in ``_kernels.c``) that evaluates the same equations in one pass in torch.nn's gate order; nothing is
precomputed and no rows are rolled. The PyTorch operators above run where it is unavailable (CUDA, no compiler).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd import Function
from torch.autograd.function import once_differentiable

from . import _fused_compiled as compiled
from . import _kernels
from ._fused_common import Plan, add_biases, hprev_grad, input_grads, mul_prev, one_minus_square, sigmoid_slope
from ._fused_gemm import input_projection, make_accumulate, make_linear


def _to_ofig(t: Tensor, H: int) -> Tensor:
    return torch.roll(t, H, 0)  # rows (i, f, g, o) -> (o, i, f, g)


def _from_ofig(t: Tensor, H: int) -> Tensor:
    return torch.roll(t, -H, 0)  # rows (o, i, f, g) -> (i, f, g, o)


class FusedLSTM(Function):
    @staticmethod
    def forward(ctx, x, h0, c0, w_ih, w_hh, b_ih, b_hh, plan: Plan):
        ctx.steps = _kernels.steps_for(x)
        if ctx.steps is not None:
            return compiled.lstm_forward(ctx, ctx.steps, x, h0.contiguous(), c0.contiguous(), w_ih, w_hh, b_ih, b_hh,
                                          plan)
        pack, _ = make_linear(plan.onednn, x.shape[1])
        acc = make_accumulate(plan.onednn)
        H = w_hh.shape[1]
        w_ih_p, w_hh_p = _to_ofig(w_ih, H), _to_ofig(w_hh, H)  # (4H, I), (4H, H) rows (o, i, f, g)
        b = add_biases(b_ih, b_hh)
        b_p = None if b is None else _to_ofig(b, H)
        G = input_projection(x, w_ih_p, b_p, plan.bulk_onednn)  # (T, B, 4H), becomes the gates
        T, B = x.shape[0], x.shape[1]
        S, C, TC = (x.new_empty(T, B, H) for _ in range(3))  # (T, B, H): h_t, c_t, tanh(c_t) in time order
        w = pack(w_hh_p)  # W_hh in the layout the per-step GEMM reads
        # per-step views, made once (slicing inside the loop would cost more than some of the kernels)
        G_, S_, C_, TC_ = G.unbind(0), S.unbind(0), C.unbind(0), TC.unbind(0)
        sig_, tanh_ = G[..., : 3 * H].unbind(0), G[..., 3 * H :].unbind(0)  # (o, i, f) and g, each (B, *)
        o_, i_, f_ = G[..., :H].unbind(0), G[..., H : 2 * H].unbind(0), G[..., 2 * H : 3 * H].unbind(0)
        keep = None if plan.keep is None else plan.keep.unbind(0)
        h, c = h0, c0
        for t in plan.steps:
            pre = acc(G_[t], h, w)  # (B, 4H) pre-activations (in G[t] where the kernel can), then activations
            torch.sigmoid(pre[:, : 3 * H], out=sig_[t])
            torch.tanh(pre[:, 3 * H :], out=tanh_[t])
            # c_t = f * c_{t-1} + i * g
            torch.mul(f_[t], c, out=C_[t]).addcmul_(i_[t], tanh_[t])
            # h_t = o * tanh(c_t)
            torch.tanh(C_[t], out=TC_[t])
            torch.mul(o_[t], TC_[t], out=S_[t])
            if keep is not None:  # finished rows keep their state
                torch.where(keep[t], C_[t], c, out=C_[t])
                torch.where(keep[t], S_[t], h, out=S_[t])
            h, c = S_[t], C_[t]
        out = S if plan.valid is None else S * plan.valid  # (T, B, H), zeros past each length
        ctx.save_for_backward(x, h0, c0, w_ih_p, w_hh_p, S, C, TC, G)
        ctx.plan = plan
        return out, S[plan.last].clone(), C[plan.last].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, dout: Tensor, dh_n: Tensor, dc_n: Tensor):
        if ctx.steps is not None:
            return compiled.lstm_backward(ctx, ctx.steps, dout, dh_n, dc_n)
        x, h0, c0, w_ih_p, w_hh_p, S, C, TC, G = ctx.saved_tensors
        plan: Plan = ctx.plan
        pack, linear = make_linear(plan.onednn, x.shape[1])
        need = ctx.needs_input_grad
        T, B, H = S.shape
        O, I, Fg, Gg = G[..., :H], G[..., H : 2 * H], G[..., 2 * H : 3 * H], G[..., 3 * H :]  # (T, B, H) each
        # Factors of the gate gradients for all steps at once, delta = (hbar or cbar) * A. The loop then overwrites
        # A[t] with delta_t in place, so A is also the gradient buffer (one (T, B, 4H) tensor, not two).
        A = torch.empty_like(G)  # (T, B, 4H) rows (o, i, f, g)
        sigmoid_slope(G[..., : 3 * H], out=A[..., : 3 * H])  # sigmoid' of o, i, f
        one_minus_square(Gg, out=A[..., 3 * H :])  # tanh' of g
        A[..., :H].mul_(TC)  # delta_o = hbar * tanh(c) o(1-o)
        A[..., H : 2 * H].mul_(Gg)  # delta_i = cbar * g i(1-i)
        mul_prev(A[..., 2 * H : 3 * H], C, c0, plan)  # delta_f = cbar * c_{t-1} f(1-f)
        A[..., 3 * H :].mul_(I)  # delta_g = cbar * i (1-g^2)
        K = one_minus_square(TC).mul_(O)  # (T, B, H): cbar_t += hbar_t * K_t
        Fc = Fg  # (T, B, H): cbar_{t-1} = cbar_t * Fc_t
        hold = None
        if plan.valid is not None:  # finished rows: no gradient into the cell, state gradients pass through
            A.mul_(plan.valid)
            K.mul_(plan.valid)
            Fc = Fg * plan.valid + (1 - plan.valid)
            hold = (1 - plan.valid).unbind(0)
            dout = dout * plan.valid
        w_back = pack(w_hh_p.t())  # linear(a, w_back) = a @ W_hh
        A_, K_, Fc_, dout_ = A.unbind(0), K.unbind(0), Fc.unbind(0), dout.unbind(0)
        Ao_, Aifg_ = A[..., :H].unbind(0), A[..., H:].unflatten(-1, (3, H)).unbind(0)  # (B, H), (B, 3, H)
        dS = dh_n + dout_[plan.last]  # (B, H) hbar at the last step
        dc = torch.empty_like(dS).copy_(dc_n)  # (B, H) cbar
        dc3 = dc.unsqueeze(1)  # (B, 1, H) view of dc for the three gates it scales
        for t in reversed(plan.steps):
            dc.addcmul_(dS, K_[t])
            Ao_[t].mul_(dS)  # delta_o
            Aifg_[t].mul_(dc3)  # delta_i, delta_f, delta_g
            add = None if t == plan.first else dout_[plan.prev(t)]
            if hold is not None:
                add = dS * hold[t] if add is None else torch.addcmul(add, dS, hold[t])
            dS = linear(A_[t], w_back, add=add)  # hbar_{t-1}
            dc.mul_(Fc_[t])  # cbar_{t-1}
        dG = A  # (T, B, 4H) pre-activation gradients, rows (o, i, f, g)
        dw_hh = _from_ofig(hprev_grad(dG, S, h0, plan), H) if need[4] else None
        dx, dw_ih, db = input_grads([dG.view(T * B, 4 * H)], x, w_ih_p, need[0], need[3], need[5] or need[6],
                                    plan.bulk_onednn)
        dw_ih = None if dw_ih is None else _from_ofig(dw_ih, H)
        db = None if db is None else _from_ofig(db, H)
        return (dx, dS if need[1] else None, dc if need[2] else None, dw_ih, dw_hh,
                db if need[5] else None, db if need[6] else None, None)
