r"""Fused GRU in both published forms: forward loop and hand-written backward through time.

.. math::
    \begin{aligned}
    r &= \sigma(W_{ir} x + b_{ir} + W_{hr} h + b_{hr}), \qquad z = \sigma(W_{iz} x + b_{iz} + W_{hz} h + b_{hz}) \\
    n &= \tanh(W_{in} x + b_{in} + r \odot (W_{hn} h + b_{hn})) && \text{reset\_after=True (torch.nn, cuDNN)} \\
    n &= \tanh(W_{in} x + b_{in} + W_{hn} (r \odot h) + b_{hn}) && \text{reset\_after=False (Cho et al. 2014)} \\
    h' &= (1 - z) \odot n + z \odot h = n + z \odot (h - n)
    \end{aligned}

Backward, with :math:`\bar h` the total gradient reaching :math:`h'`:

.. math::
    \delta_n = \bar h (1-z)(1-n^2), \quad \delta_z = \bar h (h - n) z (1-z), \quad
    \bar h_{prev} = \bar h \odot z + (\text{gate gradients}) W_{hh} + \partial L / \partial \mathrm{out}_{prev}

and :math:`\delta_r = \delta_n \odot (W_{hn} h + b_{hn}) r(1-r)` (reset after) or
:math:`\delta_r = (\delta_n W_{hn}) \odot h\, r(1-r)` (reset before, which also adds :math:`(\delta_n W_{hn}) \odot r`
to :math:`\bar h_{prev}`). With the reset gate after the product every gate gradient is :math:`\bar h` times a factor
known before the loop, so a backward step is three kernels; before the product it needs a second GEMM per step.

On the CPU the element-wise half of each step is one compiled kernel (two with the reset gate before the product;
:mod:`rnnkit._kernels`, ``gru_*`` and ``grurb_*`` in ``_kernels.c``), and backward runs in time chunks
(:mod:`rnnkit._fused_chunks`). The PyTorch operators below run where it is unavailable (CUDA, no compiler).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd import Function
from torch.autograd.function import once_differentiable

from . import _fused_compiled as compiled
from . import _kernels
from ._fused_common import (
    Plan,
    add_biases,
    hprev_grad,
    input_grads,
    mul_prev,
    one_minus_square,
    reset_before_projections,
    sigmoid_slope,
    sub_prev,
)
from ._fused_gemm import input_projection, make_accumulate, make_linear


class FusedGRU(Function):
    """``reset_after=True``: the form of torch.nn.GRU."""

    @staticmethod
    def forward(ctx, x, h0, w_ih, w_hh, b_ih, b_hh, plan: Plan):
        ctx.steps = _kernels.steps_for(x)
        if ctx.steps is not None:
            return compiled.gru_forward(ctx, ctx.steps, x, h0.contiguous(), w_ih, w_hh, b_ih, b_hh, plan)
        pack, _ = make_linear(plan.onednn, x.shape[1])
        acc = make_accumulate(plan.onednn)
        T, B, H = x.shape[0], x.shape[1], w_hh.shape[1]
        # P[t] = [x_r + b_ir + b_hr, x_z + b_iz + b_hz, b_hn] is what the step's GEMM adds to h W_hh^T, so the product
        # lands as (pre_r, pre_z, W_hn h + b_hn) with no separate additions; x_n + b_in goes to N, which becomes n.
        b_x = b_hn = None
        if b_ih is not None or b_hh is not None:
            b_x = add_biases(b_ih, None if b_hh is None else torch.cat([b_hh[: 2 * H], b_hh.new_zeros(H)]))
            b_hn = None if b_hh is None else b_hh[2 * H :]
        P = input_projection(x, w_ih, b_x, plan.bulk_onednn)  # (T, B, 3H), becomes (r, z, W_hn h + b_hn)
        N = P[..., 2 * H :].clone(memory_format=torch.contiguous_format)  # (T, B, H) x_n + b_in, becomes n
        if b_hn is None:
            P[..., 2 * H :].zero_()
        else:
            P[..., 2 * H :].copy_(b_hn)
        S = x.new_empty(T, B, H)  # (T, B, H) states in time order
        w = pack(w_hh)  # W_hh in the layout the per-step GEMM reads
        # per-step views, made once
        P_, rz_, r_, z_, hn_ = (P[..., a:b].unbind(0) for a, b in ((0, 3 * H), (0, 2 * H), (0, H), (H, 2 * H),
                                                                      (2 * H, 3 * H)))
        N_, S_ = N.unbind(0), S.unbind(0)
        keep = None if plan.keep is None else plan.keep.unbind(0)
        in_place = not plan.onednn  # torch.addmm writes the product into P[t]; oneDNN returns a new tensor
        h = h0
        for t in plan.steps:
            pre = acc(P_[t], h, w)  # (B, 3H) = P[t] + h W_hh^T
            torch.sigmoid(pre[:, : 2 * H], out=rz_[t])  # r, z
            if not in_place:
                hn_[t].copy_(pre[:, 2 * H :])  # kept for delta_r
            N_[t].addcmul_(r_[t], hn_[t]).tanh_()  # n = tanh(x_n + b_in + r * (W_hn h + b_hn))
            torch.lerp(N_[t], h, z_[t], out=S_[t])  # h' = n + z (h - n)
            if keep is not None:  # finished rows keep their state
                torch.where(keep[t], S_[t], h, out=S_[t])
            h = S_[t]
        out = S if plan.valid is None else S * plan.valid  # (T, B, H), zeros past each length
        ctx.save_for_backward(x, h0, w_ih, w_hh, S, P, N)
        ctx.plan = plan
        return out, S[plan.last].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, dout: Tensor, dh_n: Tensor):
        if ctx.steps is not None:
            return compiled.gru_backward(ctx, ctx.steps, dout, dh_n)
        x, h0, w_ih, w_hh, S, P, N = ctx.saved_tensors
        plan: Plan = ctx.plan
        pack, linear = make_linear(plan.onednn, x.shape[1])
        need = ctx.needs_input_grad
        T, B, H = S.shape
        R, Z, HN = P[..., :H], P[..., H : 2 * H], P[..., 2 * H :]
        # Every gate gradient is hbar times a factor known before the loop, so the factors are computed for all
        # steps at once into F, rows (n_h, r, z, n): n_h is the gradient of W_hn h + b_hn (hidden side), n that of
        # the input side's x_n (no factor r). One in-place multiply per step turns F[t] into the gradients; the
        # hidden side is then the first 3H columns (W_hh's rows rolled to (n, r, z) to match) and the input side
        # the last 3H, in W_ih's row order (r, z, n).
        F = x.new_empty(T, B, 4 * H)  # (T, B, 4H)
        Fnh, Fr, Fz, Fn = F[..., :H], F[..., H : 2 * H], F[..., 2 * H : 3 * H], F[..., 3 * H :]
        one_minus_square(N, out=Fn).addcmul_(Fn, Z, value=-1)  # delta_n = hbar (1 - z)(1 - n^2)
        torch.mul(Fn, R, out=Fnh)  # gradient of W_hn h + b_hn: delta_n r
        sigmoid_slope(R, out=Fr).mul_(HN).mul_(Fn)  # delta_r = delta_n (W_hn h + b_hn) r(1 - r)
        sub_prev(S, h0, N, plan, out=Fz).mul_(Z)
        Fz.addcmul_(Fz, Z, value=-1)  # delta_z = hbar (h - n) z(1 - z)
        Zc = Z  # (T, B, H): hbar_prev gets hbar * Zc directly
        if plan.valid is not None:  # finished rows: no gradient into the cell, state gradients pass through
            F.mul_(plan.valid)
            Zc = Z * plan.valid + (1 - plan.valid)
            dout = dout * plan.valid
        w_back = pack(torch.roll(w_hh, H, 0).t())  # linear(a, w_back) = a @ W_hh with rows (n, r, z)
        F4_, Fh_ = F.unflatten(-1, (4, H)).unbind(0), F[..., : 3 * H].unbind(0)  # (B, 4, H), (B, 3H) per step
        Zc_, dout_ = Zc.unbind(0), dout.unbind(0)
        dS = dh_n + dout_[plan.last]  # (B, H)
        for t in reversed(plan.steps):
            F4_[t].mul_(dS.unsqueeze(1))  # the four gate gradients of step t
            add = dS * Zc_[t] if t == plan.first else torch.addcmul(dout_[plan.prev(t)], dS, Zc_[t])
            dS = linear(Fh_[t], w_back, add=add)  # hbar_prev
        F2 = F.view(T * B, 4 * H)
        dx, dw_ih, db_ih = input_grads([F2[:, H:]], x, w_ih, need[0], need[2], need[4], plan.bulk_onednn)
        dw_hh = torch.roll(hprev_grad(F[..., : 3 * H], S, h0, plan), -H, 0) if need[3] else None  # rows (r, z, n)
        db_hh = torch.roll(F2[:, : 3 * H].sum(0), -H, 0) if need[5] else None
        return dx, dS if need[1] else None, dw_ih, dw_hh, db_ih, db_hh, None



class FusedGRUResetBefore(Function):
    """``reset_after=False``: the form of Cho et al. (2014) and Chung et al. (2014); two GEMMs per step."""

    @staticmethod
    def forward(ctx, x, h0, w_ih, w_hh, b_ih, b_hh, plan: Plan):
        ctx.steps = _kernels.steps_for(x)
        if ctx.steps is not None:
            return compiled.gru_reset_before_forward(ctx, ctx.steps, x, h0.contiguous(), w_ih, w_hh, b_ih, b_hh,
                                                     plan)
        pack, linear = make_linear(plan.onednn, x.shape[1])
        T, B, H = x.shape[0], x.shape[1], w_hh.shape[1]
        RZ, N = reset_before_projections(x, w_ih, b_ih, b_hh, plan.bulk_onednn)  # (T, B, 2H) -> r, z; (T, B, H) -> n
        RH, S = x.new_empty(T, B, H), x.new_empty(T, B, H)  # (T, B, H): r * h_prev, h
        w_rz, w_n = pack(w_hh[: 2 * H]), pack(w_hh[2 * H :])  # W_hr;W_hz (2H, H) and W_hn (H, H), packed
        RZ_, r_, z_ = RZ.unbind(0), RZ[..., :H].unbind(0), RZ[..., H:].unbind(0)
        N_, RH_, S_ = N.unbind(0), RH.unbind(0), S.unbind(0)
        keep = None if plan.keep is None else plan.keep.unbind(0)
        h = h0
        for t in plan.steps:
            torch.sigmoid(linear(h, w_rz, add=RZ_[t]), out=RZ_[t])  # r, z
            torch.mul(r_[t], h, out=RH_[t])  # r * h
            torch.tanh(linear(RH_[t], w_n, add=N_[t]), out=N_[t])  # n
            torch.lerp(N_[t], h, z_[t], out=S_[t])  # h' = n + z (h - n)
            if keep is not None:
                torch.where(keep[t], S_[t], h, out=S_[t])
            h = S_[t]
        out = S if plan.valid is None else S * plan.valid
        ctx.save_for_backward(x, h0, w_ih, w_hh, S, RZ, N, RH)
        ctx.plan = plan
        return out, S[plan.last].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, dout: Tensor, dh_n: Tensor):
        if ctx.steps is not None:
            return compiled.gru_reset_before_backward(ctx, ctx.steps, dout, dh_n)
        x, h0, w_ih, w_hh, S, RZ, N, RH = ctx.saved_tensors
        plan: Plan = ctx.plan
        pack, linear = make_linear(plan.onednn, x.shape[1])
        need = ctx.needs_input_grad
        T, B, H = S.shape
        R, Z = RZ[..., :H], RZ[..., H:]
        An = one_minus_square(N)
        An.addcmul_(An, Z, value=-1)  # delta_n = hbar (1-z)(1-n^2), overwritten by delta_n in the loop
        dRZ = x.new_empty(T, B, 2 * H)  # (T, B, 2H): factors, then gradients of r, z
        sub_prev(S, h0, N, plan, out=dRZ[..., H:]).mul_(sigmoid_slope(Z))  # delta_z = hbar (h - n) z(1-z)
        sigmoid_slope(R, out=dRZ[..., :H])
        mul_prev(dRZ[..., :H], S, h0, plan)  # delta_r = (delta_n W_hn) h r(1-r)
        Zc = Z
        if plan.valid is not None:
            An.mul_(plan.valid)  # delta_r vanishes with delta_n
            dRZ[..., H:].mul_(plan.valid)
            Zc = Z * plan.valid + (1 - plan.valid)
            dout = dout * plan.valid
        w_rz_back = pack(w_hh[: 2 * H].t())  # linear(a, w_rz_back) = a @ [W_hr; W_hz]
        w_n_back = pack(w_hh[2 * H :].t())  # linear(a, w_n_back) = a @ W_hn
        An_, dRZ_, dr_, dz_ = An.unbind(0), dRZ.unbind(0), dRZ[..., :H].unbind(0), dRZ[..., H:].unbind(0)
        R_, Zc_, dout_ = R.unbind(0), Zc.unbind(0), dout.unbind(0)
        dS = dh_n + dout_[plan.last]
        for t in reversed(plan.steps):
            An_[t].mul_(dS)  # delta_n
            dz_[t].mul_(dS)  # delta_z
            d_rh = linear(An_[t], w_n_back)  # (B, H) gradient of r * h
            dr_[t].mul_(d_rh)  # delta_r
            add = dS * Zc_[t] if t == plan.first else torch.addcmul(dout_[plan.prev(t)], dS, Zc_[t])
            add.addcmul_(d_rh, R_[t])
            dS = linear(dRZ_[t], w_rz_back, add=add)  # hbar_prev
        dN2 = An.view(T * B, H)
        dx, dw_ih, db = input_grads([dRZ.view(T * B, 2 * H), dN2], x, w_ih, need[0], need[2], need[4] or need[5],
                                    plan.bulk_onednn)
        dw_hh = None
        if need[3]:
            dw_hh = torch.cat([hprev_grad(dRZ, S, h0, plan), dN2.t() @ RH.reshape(T * B, H)])  # (3H, H)
        return dx, dS if need[1] else None, dw_ih, dw_hh, db if need[4] else None, db if need[5] else None, None
