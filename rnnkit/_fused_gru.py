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
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd import Function
from torch.autograd.function import once_differentiable

from ._fused_common import (
    Plan,
    add_biases,
    hprev_grad,
    input_grads,
    input_projection,
    make_linear,
    mul_prev,
    one_minus_square,
    sigmoid_slope,
    sub_prev,
)


class FusedGRU(Function):
    """``reset_after=True``: the form of torch.nn.GRU."""

    @staticmethod
    def forward(ctx, x, h0, w_ih, w_hh, b_ih, b_hh, plan: Plan):
        pack, linear = make_linear(plan.onednn, x.shape[1])
        T, B, H = x.shape[0], x.shape[1], w_hh.shape[1]
        G = input_projection(x, w_ih, b_ih, plan.onednn)  # (T, B, 3H) input parts, become the gates (r, z, n)
        S = x.new_empty(T, B, H)  # (T, B, H) states in time order
        RHN = x.new_empty(T, B, H)  # (T, B, H) r * (W_hn h + b_hn), kept for delta_r
        w = pack(w_hh)  # W_hh in the layout the per-step GEMM reads
        # per-step views, made once
        rz_, r_, z_, n_ = (G[..., a:b].unbind(0) for a, b in ((0, 2 * H), (0, H), (H, 2 * H), (2 * H, 3 * H)))
        S_, RHN_ = S.unbind(0), RHN.unbind(0)
        keep = None if plan.keep is None else plan.keep.unbind(0)
        h = h0
        for t in plan.steps:
            hg = linear(h, w, bias=b_hh)  # (B, 3H)
            rz_[t].add_(hg[:, : 2 * H]).sigmoid_()  # r, z
            torch.mul(r_[t], hg[:, 2 * H :], out=RHN_[t])
            n_[t].add_(RHN_[t]).tanh_()  # n = tanh(x_n + r * (W_hn h + b_hn))
            torch.lerp(n_[t], h, z_[t], out=S_[t])  # h' = n + z (h - n)
            if keep is not None:  # finished rows keep their state
                torch.where(keep[t], S_[t], h, out=S_[t])
            h = S_[t]
        out = S if plan.valid is None else S * plan.valid  # (T, B, H), zeros past each length
        ctx.save_for_backward(x, h0, w_ih, w_hh, S, G, RHN)
        ctx.plan = plan
        return out, S[plan.last].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, dout: Tensor, dh_n: Tensor):
        x, h0, w_ih, w_hh, S, G, RHN = ctx.saved_tensors
        plan: Plan = ctx.plan
        pack, linear = make_linear(plan.onednn, x.shape[1])
        need = ctx.needs_input_grad
        T, B, H = S.shape
        R, Z, N = G[..., :H], G[..., H : 2 * H], G[..., 2 * H :]
        # Factors for all steps at once: the hidden-side gate gradients are hbar * Ah, and the input side is the same
        # except delta_n = hbar * An (no factor r). The loop overwrites Ah[t] with the gradient in place.
        An = one_minus_square(N)  # (T, B, H) 1 - n^2
        An.addcmul_(An, Z, value=-1)  # (1 - z)(1 - n^2)
        Ah = x.new_empty(T, B, 3 * H)  # (T, B, 3H) rows (r, z, n)
        torch.addcmul(RHN, RHN, R, value=-1, out=Ah[..., :H]).mul_(An)  # delta_r = hbar An r (W_hn h + b_hn)(1 - r)
        sub_prev(S, h0, N, plan, out=Ah[..., H : 2 * H]).mul_(sigmoid_slope(Z))  # delta_z = hbar (h - n) z(1-z)
        torch.mul(An, R, out=Ah[..., 2 * H :])  # gradient of W_hn h + b_hn: hbar An r
        Zc = Z  # (T, B, H): hbar_prev gets hbar * Zc directly
        dout = dout.contiguous()
        if plan.valid is not None:  # finished rows: no gradient into the cell, state gradients pass through
            Ah.mul_(plan.valid)
            An.mul_(plan.valid)
            Zc = Z * plan.valid + (1 - plan.valid)
            dout = dout * plan.valid
        w_back = pack(w_hh.t())  # linear(a, w_back) = a @ W_hh
        Ah_, Ah3_, Zc_, dout_ = Ah.unbind(0), Ah.unflatten(-1, (3, H)).unbind(0), Zc.unbind(0), dout.unbind(0)
        dSs: list[Tensor] = []
        dS = dh_n + dout_[plan.last]  # (B, H)
        for t in reversed(plan.steps):
            dSs.append(dS)
            Ah3_[t].mul_(dS.unsqueeze(1))  # gradient of W_hh h + b_hh at step t
            add = dS * Zc_[t] if t == plan.first else torch.addcmul(dout_[plan.prev(t)], dS, Zc_[t])
            dS = linear(Ah_[t], w_back, add=add)  # hbar_prev
        if not plan.reverse:
            dSs.reverse()  # time order
        dGh = Ah  # (T, B, 3H)
        dN = An.mul_(torch.stack(dSs))  # (T, B, H) delta_n, input side
        dGh2 = dGh.view(T * B, 3 * H)
        blocks = [dGh2[:, : 2 * H], dN.view(T * B, H)]  # r, z as on the hidden side; n without the factor r
        dx, dw_ih, db_ih = input_grads(blocks, x, w_ih, need[0], need[2], need[4], plan.onednn)
        dw_hh = hprev_grad(dGh, S, h0, plan) if need[3] else None
        db_hh = dGh2.sum(0) if need[5] else None
        return dx, dS if need[1] else None, dw_ih, dw_hh, db_ih, db_hh, None


class FusedGRUResetBefore(Function):
    """``reset_after=False``: the form of Cho et al. (2014) and Chung et al. (2014); two GEMMs per step."""

    @staticmethod
    def forward(ctx, x, h0, w_ih, w_hh, b_ih, b_hh, plan: Plan):
        pack, linear = make_linear(plan.onednn, x.shape[1])
        T, B, H = x.shape[0], x.shape[1], w_hh.shape[1]
        b = add_biases(b_ih, b_hh)  # every bias is additive in this form
        b_rz, b_n = (None, None) if b is None else (b[: 2 * H], b[2 * H :])
        RZ = input_projection(x, w_ih[: 2 * H], b_rz, plan.onednn)  # (T, B, 2H) -> r, z
        N = input_projection(x, w_ih[2 * H :], b_n, plan.onednn)  # (T, B, H) -> n
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
        dout = dout.contiguous()
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
                                    plan.onednn)
        dw_hh = None
        if need[3]:
            dw_hh = torch.cat([hprev_grad(dRZ, S, h0, plan), dN2.t() @ RH.reshape(T * B, H)])  # (3H, H)
        return dx, dS if need[1] else None, dw_ih, dw_hh, db if need[4] else None, db if need[5] else None, None
