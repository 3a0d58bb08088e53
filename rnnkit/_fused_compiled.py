r"""The fused cells' forward and backward loops with compiled element-wise steps (:mod:`rnnkit._kernels`).

The same equations as the PyTorch-operator versions in ``_fused_rnn.py``, ``_fused_lstm.py`` and ``_fused_gru.py``
(whose docstrings derive them), organised around one compiled kernel call per step and direction (two for the GRU
with the reset gate before its product):

* **forward**: one GEMM for all input projections, then per step the hidden product (in place into the step's slot
  of the projection buffer where ``torch.addmm`` computes it) and one kernel that applies the gates and writes the
  states; the kernels keep torch.nn's gate order, so no weight or gradient is reordered.
* **backward**: per step one kernel that adds the step's output gradient to the state gradient that came through
  the next step's product and turns the sum into the step's pre-activation gradients (nothing is precomputed for
  all steps), and one GEMM for the gradient reaching the previous state, in time chunks whose large products run
  as each chunk ends (:mod:`rnnkit._fused_chunks`). Where every row runs to the end, the RNN's and the LSTM's
  products write their result (``torch.mm(..., out=)``) instead of adding to a buffer the kernel filled: one
  ``(B, H)`` pass fewer per step.

Where the measured choice of product kernel is ``"loop"`` (``plan.loop``), the same steps go to the kernel's compiled
whole-sequence form instead (``k.seq_*``, one call per direction and backward chunk): the arguments the one-step
call would get, plus the addresses its product reads and writes, are described once as columns over the run
(:class:`_Run`); each thread then runs its own batch rows through every step, product and kernel, with no Python and
no wait between steps.

Each function is called from its cell's ``torch.autograd.Function`` with that Function's ``ctx``; every address
handed to a kernel points into a tensor that the function keeps alive for the call.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from . import _kernels
from ._fused_chunks import DoutSteps, GradSums, chunks, give_scratch, take_scratch, walk
from ._fused_common import Plan, add_biases, addresses, keep_addresses, prev_addresses, reset_before_projections
from ._fused_gemm import input_projection, make_accumulate, make_linear, make_product

Product = Callable[[Tensor, Tensor, Tensor], Tensor]  # (out, a, w) -> a @ w.T, (+ out for make_accumulate's)


def _keeps_graph() -> bool:
    """Whether the running backward keeps the graph (``retain_graph=True``), so that what forward saved must come
    through it unchanged; without PyTorch's probe for it, assume so."""
    probe = getattr(torch._C._autograd, "_get_current_graph_task_keep_graph", None)
    return True if probe is None else bool(probe())


def _span(spans: list[tuple[int, int]]) -> int:
    """The most steps in one chunk."""
    return max(hi - lo for lo, hi in spans)


def _backward_setup(ctx, x: Tensor, S: Tensor, mask: Tensor | None, dout: Tensor, dh_n: Tensor, step_elems: int,
                    room: bool = True):
    """What every backward starts from: ``(plan, acc, pack, spans, in_place, douts, adds, keep, dh)``.

    When the graph is not kept, forward's saved buffers die with this backward, so where they have ``room`` for the
    gradients each step's are written over the values the step has just read (``in_place``) and the whole sequence is
    one chunk: no new buffer. Otherwise gradients go to a reused scratch buffer, in chunks of steps of ``step_elems``
    elements. ``adds`` are the two ``(B, H)`` buffers the steps' products add into, in turn (one holds the gradient
    the next step reads); ``keep`` the addresses of the length mask's steps; ``dh`` the gradient reaching the last
    step's state from after it (``dL/dh_n``; the kernels add each step's output gradient)."""
    plan: Plan = ctx.plan
    pack, _ = make_linear(plan.onednn, x.shape[1])
    T, B, H = S.shape
    in_place = room and not _keeps_graph()
    # a cell that saved only its output (no room) holds the chunk beside it at every backward: half a state buffer
    state_bytes = S.numel() * S.element_size() // (1 if room else 2)
    spans = [(0, T)] if in_place else chunks(plan, step_elems * S.element_size(), state_bytes)
    adds = (x.new_empty(B, H), x.new_empty(B, H))
    keep = [None] * T if mask is None else addresses(mask)
    dh = dh_n.contiguous()  # (B, H)
    douts = DoutSteps(dout, plan, _span(spans))
    return plan, make_accumulate(plan.onednn), pack, spans, in_place, douts, adds, keep, dh


def _carry(plan: Plan, acc: Product, adds: tuple[Tensor, Tensor]) -> tuple[Product, tuple[int | None, int | None]]:
    """``(step, add addresses)`` for a cell whose kernel fills ``add`` only to carry the gradient of rows that have
    ended (RNN, LSTM): with every row running there is nothing to carry, the kernel writes no ``add`` (None) and
    ``step`` writes the product itself; otherwise ``step`` is ``acc``, adding the product to what the kernel wrote."""
    if plan.keep is None:
        return make_product(plan.onednn), (None, None)
    return acc, (adds[0].data_ptr(), adds[1].data_ptr())


def _forward_product(plan: Plan, projections: list[int]) -> tuple[Product, list[int] | list[None]]:
    """``(step, proj)`` for a per-step forward whose kernel reads the step's pre-activations (RNN, LSTM):
    ``step(P[t], h, w)`` adds ``h W_hh^T`` to the step's input projection ``P[t]`` in place (``torch.addmm``), and
    ``proj[t]`` is None; oneDNN adds only into a new tensor, so there ``step`` returns the product alone and the kernel
    adds ``proj[t]``, the projection's address, itself (one pass fewer than oneDNN's add and the kernel's read)."""
    if plan.onednn:
        return make_product(True), projections
    return make_accumulate(False), [None] * len(projections)


def _input_steps(k: _kernels.Steps, x: Tensor, w_ih: Tensor, bias: Tensor | None
                 ) -> tuple[tuple[Tensor, Tensor, Tensor | None], tuple[int, ...]]:
    """``((x', W_ih', bias'), product)`` for a compiled forward that makes each step's input projection
    ``bias + x_t W_ih^T`` itself, for each thread's rows just before the step reads them (``k.run``'s ``inputs``):
    where one GEMM over the whole sequence wrote them first, the steps read them back from memory (at H=128 a GRU's
    loop took 0.6 ms longer with its projections out of cache than in it). The tensors are the operands the product
    reads by address, which the caller keeps for the call; ``x'`` is ``x`` with unit column stride (a
    ``batch_first`` input's rows are read in place), ``x'[t]`` the step's ``A``."""
    x = x if x.stride(2) == 1 else x.contiguous()
    w, b = w_ih.contiguous(), None if bias is None else bias.contiguous()
    return (x, w, b), k.product(w, True, x.stride(1), w.shape[0], False, b)


def _steps_buffer(x: Tensor, T: int, B: int, N: int, saves: bool) -> Tensor:
    """A ``(T, B, N)`` buffer of every step's values, or, where no backward will read them, one step's ``(B, N)``
    seen as ``T`` steps (time stride 0): every step of a compiled run then writes and reads the same rows."""
    return x.new_empty(T, B, N) if saves else x.new_empty(1, B, N).expand(T, B, N)


class _Run:
    """The argument columns (:mod:`rnnkit._kernels`' ``fixed``, ``stepping``, ``alternating``) of one compiled run
    over the times ``t0, t0 + dt, ...``: a forward direction, or one backward chunk in backward's order."""

    def __init__(self, plan: Plan, t0: int, dt: int, steps: int):
        self.plan, self.t0, self.dt, self.steps = plan, t0, dt, steps

    @classmethod
    def forward(cls, plan: Plan) -> _Run:
        return cls(plan, plan.first, -1 if plan.reverse else 1, plan.T)

    @classmethod
    def backward(cls, plan: Plan, lo: int, hi: int) -> _Run:
        """Chunk ``[lo, hi)`` in the order backward visits it (see ``_fused_chunks.visit``)."""
        return cls(plan, lo, 1, hi - lo) if plan.reverse else cls(plan, hi - 1, -1, hi - lo)

    @property
    def last(self) -> int:
        return self.t0 + self.dt * (self.steps - 1)

    def at(self, buf: Tensor, lo: int = 0) -> _kernels.Column:
        """``buf[t - lo]``: a step of a ``(T, ...)`` buffer, or of a chunk buffer that starts at time ``lo``."""
        step = buf.stride(0) * buf.element_size()
        return _kernels.stepping(buf.data_ptr() + (self.t0 - lo) * step, self.dt * step)

    def prev(self, buf: Tensor, first: Tensor) -> _kernels.Column:
        """``buf[plan.prev(t)]``, what step ``t`` reads of the previous step, and ``first`` (``h_0``, ``c_0``) at the
        direction's first step."""
        step, back = buf.stride(0) * buf.element_size(), 1 if self.plan.reverse else -1
        s = (self.plan.first - self.t0) * self.dt  # the run's step at the direction's first time (dt is +-1)
        return _kernels.stepping(buf.data_ptr() + (self.t0 + back) * step, self.dt * step,
                                 s if 0 <= s < self.steps else -1, first.data_ptr())

    def keep(self, mask: Tensor | None) -> _kernels.Column:
        """The length mask's ``(B,)`` bytes of step ``t``, or NULL when every row runs."""
        return _kernels.fixed(0) if mask is None else self.at(mask)

    def dout(self, douts: DoutSteps) -> _kernels.Column:
        return _kernels.stepping(douts[self.t0], self.dt * douts.step)

    def turns(self, adds: tuple[Tensor, Tensor]) -> _kernels.Column:
        """``adds[t & 1]``: of two buffers used in turn, the one step ``t`` writes (a product, a state gradient, or
        the cell state of a forward that keeps no states for backward)."""
        return _kernels.alternating(adds[self.t0 & 1].data_ptr(), adds[(self.t0 + 1) & 1].data_ptr())

    def reads(self, dh: Tensor, adds: tuple[Tensor, Tensor]) -> _kernels.Column:
        """What step ``t`` reads of two buffers used in turn: ``dh`` (``dL/dh_n``, or ``c_0``) at the run's first
        step, then what the step before wrote."""
        return _kernels.alternating(adds[(self.t0 + 1) & 1].data_ptr(), adds[self.t0 & 1].data_ptr(), 0, dh.data_ptr())


# ------------------------------------------------------------------------------------------------ Elman RNN
def rnn_forward(ctx, k: _kernels.Steps, x, h0, w_ih, w_hh, b_ih, b_hh, plan: Plan, relu: bool):
    T, B, H = x.shape[0], x.shape[1], w_hh.shape[1]
    # (T, B, H): the steps' input projections (each step's state is then written over its own: an RNN needs no
    # pre-activation in backward, so the states take no second buffer, and no fresh pages)
    mask, keep = keep_addresses(plan)
    if plan.loop:  # S[t] = x_t W_ih^T + b, pre = S[t] += h_prev W_hh^T, then h_t = f(pre) over it
        S = x.new_empty(T, B, H)
        operands, inputs = _input_steps(k, x, w_ih, add_biases(b_ih, b_hh))
        wc, run, f = w_hh.contiguous(), _Run.forward(plan), _kernels.fixed  # wc: read by address in the loop
        k.run(k.seq_rnn_fwd, [f(B), f(H), f(relu), run.at(S), f(0), run.at(S), run.prev(S, h0), run.keep(mask),
                              run.prev(S, h0), run.at(S), run.at(operands[0]), run.at(S)], T, True,
              k.product(wc, True, H, H, True), inputs)
    else:
        S = input_projection(x, w_ih, add_biases(b_ih, b_hh), plan.bulk_onednn)  # one GEMM for all steps
        pack, _ = make_linear(plan.onednn, B)
        S_, Sa = S.unbind(0), addresses(S)
        step, proj = _forward_product(plan, Sa)
        w, h, hp = pack(w_hh), h0, h0.data_ptr()
        for t in plan.steps:
            pre = step(S_[t], h, w)  # (B, H) h W_hh^T, plus x_t W_ih^T + b in place unless proj[t] is added
            k.rnn_fwd(B, H, relu, pre.data_ptr(), proj[t], Sa[t], hp, keep[t])  # h_t = f(pre (+ proj)), over S[t]
            h, hp = S_[t], Sa[t]
    out = S if plan.valid is None else S * plan.valid  # (T, B, H), zeros past each length
    ctx.save_for_backward(x, h0, w_ih, w_hh, S, mask)
    ctx.plan, ctx.relu = plan, relu
    return out, S[plan.last].clone()


def rnn_backward(ctx, k: _kernels.Steps, dout: Tensor, dh_n: Tensor):
    x, h0, w_ih, w_hh, S, mask = ctx.saved_tensors
    need = ctx.needs_input_grad
    T, B, H = S.shape
    # forward saves only the states, which are the layer's output: no room for the gradients, always a scratch chunk
    plan, acc, pack, spans, _, douts, adds, keep, dh = _backward_setup(ctx, x, S, mask, dout, dh_n, B * H, room=False)
    dG = take_scratch(x, _span(spans), B, H)  # delta_t = hbar_t f'(pre_t), a chunk at a time
    sums = GradSums(x, w_ih, h0, S, plan, need[0], need[2], need[3], need[4] or need[5])
    bias = sums.bias_rows(H, k.max_threads())  # the kernels sum the bias gradient as they go
    if plan.loop:
        wc, f = w_hh.contiguous(), _kernels.fixed  # wc: read by address in the loop
        product = k.product(wc, False, H, H, plan.keep is not None)  # dh_{t-1} (+)= delta_t W_hh
    else:
        w_back = pack(w_hh.t())  # acc(out, a, w_back) = out + a @ W_hh
        Sa, dGa, dG_ = addresses(S), addresses(dG), dG.unbind(0)
        step, adda = _carry(plan, acc, adds)
    for lo, hi, steps in walk(plan, spans, douts):
        if plan.loop:  # the same steps in one call: the kernel, then the product into adds[t & 1]
            run = _Run.backward(plan, lo, hi)
            carry = run.turns(adds) if plan.keep is not None else f(0)
            k.run(k.seq_rnn_bwd, [f(B), f(H), f(ctx.relu), run.at(S), run.reads(dh, adds), run.at(dG, lo),
                                  run.dout(douts), f(douts.su), f(douts.sj), carry, run.keep(mask), f(bias),
                                  run.at(dG, lo), run.turns(adds)], hi - lo, False, product)
            dh = adds[run.last & 1]
        else:
            for t, i, du in steps:
                k.rnn_bwd(B, H, ctx.relu, Sa[t], dh.data_ptr(), dGa[i], du, douts.su, douts.sj, adda[t & 1], keep[t],
                          bias)
                dh = step(adds[t & 1], dG_[i], w_back)  # the part of hbar_{t-1} that comes through step t: d_t W_hh
        chunk = dG[: hi - lo]
        sums.add(lo, hi, [chunk], [(chunk, None)], [])
    dx, dw_ih, dw_hh, db = sums.result()  # both biases get db
    give_scratch(dG)
    return dx, dh if need[1] else None, dw_ih, dw_hh, db if need[4] else None, db if need[5] else None, None, None


# ------------------------------------------------------------------------------------------------ LSTM
def lstm_forward(ctx, k: _kernels.Steps, x, h0, c0, w_ih, w_hh, b_ih, b_hh, plan: Plan):
    T, B, H = x.shape[0], x.shape[1], w_hh.shape[1]
    S = x.new_empty(T, B, H)  # (T, B, H): h_t in time order
    # c_t in time order for backward; without one, two (B, H) buffers in turn (step t writes C[t & 1])
    C = x.new_empty(T if plan.saves else 2, B, H)
    mask, keep = keep_addresses(plan)
    if plan.loop:  # G[t] = x_t W_ih^T + b, G[t] += h_prev W_hh^T, then the kernel
        # (T, B, 4H) rows (i, f, g, o), over which the kernel writes the gates for backward; without one, one step's
        G = _steps_buffer(x, T, B, 4 * H, plan.saves)
        wc, run, f = w_hh.contiguous(), _Run.forward(plan), _kernels.fixed  # wc: read by address in the loop
        operands, inputs = _input_steps(k, x, w_ih, add_biases(b_ih, b_hh))
        if plan.saves:
            c_prev, c_at = run.prev(C, c0), run.at(C)
        else:
            c_prev, c_at = run.reads(c0, (C[0], C[1])), run.turns((C[0], C[1]))
        at_g = run.at(G)
        gates = at_g if plan.saves else f(0)  # the gates over G's pre-activations, for backward
        k.run(k.seq_lstm_fwd, [f(B), f(H), at_g, f(0), gates, c_prev, c_at,
                               run.prev(S, h0), run.at(S), run.keep(mask), run.prev(S, h0), at_g,
                               run.at(operands[0]), at_g],
              T, True, k.product(wc, True, H, 4 * H, True), inputs)
    else:
        G = input_projection(x, w_ih, add_biases(b_ih, b_hh), plan.bulk_onednn)  # (T, B, 4H) rows (i, f, g, o)
        pack, _ = make_linear(plan.onednn, B)
        G_, S_ = G.unbind(0), S.unbind(0)
        Ga, Sa = addresses(G), addresses(S)
        Ca = addresses(C) if plan.saves else [C[t & 1].data_ptr() for t in range(T)]
        gates_at = Ga if plan.saves else [None] * T  # the gates over G's pre-activations, for backward
        step, proj = _forward_product(plan, Ga)
        w, h, hp, cp = pack(w_hh), h0, h0.data_ptr(), c0.data_ptr()
        for t in plan.steps:
            pre = step(G_[t], h, w)  # (B, 4H) h W_hh^T, plus the projection in place unless proj[t] is added
            k.lstm_fwd(B, H, pre.data_ptr(), proj[t], gates_at[t], cp, Ca[t], hp, Sa[t], keep[t])  # c_t, h_t (gates)
            h, hp, cp = S_[t], Sa[t], Ca[t]
    out = S if plan.valid is None else S * plan.valid  # (T, B, H), zeros past each length
    ctx.save_for_backward(x, h0, c0, w_ih, w_hh, S, C, G, mask)
    ctx.plan = plan
    return out, S[plan.last].clone(), C[plan.last if plan.saves else plan.last & 1].clone()


def lstm_backward(ctx, k: _kernels.Steps, dout: Tensor, dh_n: Tensor, dc_n: Tensor):
    x, h0, c0, w_ih, w_hh, S, C, G, mask = ctx.saved_tensors
    need = ctx.needs_input_grad
    T, B, H = S.shape
    plan, acc, pack, spans, in_place, douts, adds, keep, dh = _backward_setup(ctx, x, S, mask, dout, dh_n, B * 4 * H)
    dG = G if in_place else take_scratch(x, _span(spans), B, 4 * H)  # pre-activation gradients, rows (i, f, g, o)
    sums = GradSums(x, w_ih, h0, S, plan, need[0], need[3], need[4], need[5] or need[6])
    bias = sums.bias_rows(4 * H, k.max_threads())  # the kernels sum the bias gradient as they go
    dc = dc_n.clone(memory_format=torch.contiguous_format)  # (B, H) cbar
    dcp = dc.data_ptr()
    if plan.loop:
        wc, f = w_hh.contiguous(), _kernels.fixed  # wc: read by address in the loop
        product = k.product(wc, False, 4 * H, H, plan.keep is not None)  # dh_{t-1} (+)= dG_t W_hh
    else:
        w_back = pack(w_hh.t())  # acc(out, a, w_back) = out + a @ W_hh
        Ga, Ca, dGa, dG_ = addresses(G), addresses(C), addresses(dG), dG.unbind(0)
        cprev = prev_addresses(plan, Ca, c0.data_ptr())
        step, adda = _carry(plan, acc, adds)
    for lo, hi, steps in walk(plan, spans, douts):
        if plan.loop:  # the same steps in one call
            run = _Run.backward(plan, lo, hi)
            carry = run.turns(adds) if plan.keep is not None else f(0)
            k.run(k.seq_lstm_bwd, [f(B), f(H), run.at(G), run.at(dG, lo), run.prev(C, c0), run.at(C),
                                   run.reads(dh, adds), f(dcp), run.dout(douts), f(douts.su), f(douts.sj), carry,
                                   run.keep(mask), f(bias), run.at(dG, lo), run.turns(adds)],
                  hi - lo, False, product)
            dh = adds[run.last & 1]
        else:
            for t, i, du in steps:
                k.lstm_bwd(B, H, Ga[t], dGa[i], cprev[t], Ca[t], dh.data_ptr(), dcp, du, douts.su, douts.sj,
                           adda[t & 1], keep[t], bias)  # dG[i]; cbar <- cbar_{t-1}
                dh = step(adds[t & 1], dG_[i], w_back)  # through step t: dG_t W_hh
        chunk = dG[: hi - lo]
        sums.add(lo, hi, [chunk], [(chunk, None)], [])
    dx, dw_ih, dw_hh, db = sums.result()  # both biases get db
    if not in_place:
        give_scratch(dG)
    return (dx, dh if need[1] else None, dc if need[2] else None, dw_ih, dw_hh,
            db if need[5] else None, db if need[6] else None, None)


# ------------------------------------------------------------------------------------------------ GRU, reset after
def gru_forward(ctx, k: _kernels.Steps, x, h0, w_ih, w_hh, b_ih, b_hh, plan: Plan):
    T, B, H = x.shape[0], x.shape[1], w_hh.shape[1]
    # the input projection carries every additive bias (b_ih and b_hh's r, z rows); b_hn goes to the kernel
    b_x = add_biases(b_ih, None if b_hh is None else torch.cat([b_hh[: 2 * H], b_hh.new_zeros(H)]))
    b_hn = x.new_zeros(H) if b_hh is None else b_hh[2 * H :].contiguous()
    S = x.new_empty(T, B, H)  # (T, B, H): h in time order
    # n in time order for backward; without one the kernels keep neither n nor (r, z, hW_n) over X
    N = x.new_empty(T if plan.saves else 0, B, H)
    mask, keep = keep_addresses(plan)
    bufs = (x.new_empty(B, 3 * H), x.new_empty(B, 3 * H))  # torch.mm writes each step's product into one, in turn
    bn = b_hn.data_ptr()
    if plan.loop:  # X[t] = x_t W_ih^T + b_x, bufs[0] = h_prev W_hh^T (each thread its rows), then the kernel
        # (T, B, 3H) input projections that become (r, z, hW_n) for backward; without one, one step's
        X = _steps_buffer(x, T, B, 3 * H, plan.saves)
        wc, run, f = w_hh.contiguous(), _Run.forward(plan), _kernels.fixed  # wc: read by address in the loop
        operands, inputs = _input_steps(k, x, w_ih, b_x)
        product_out = f(bufs[0].data_ptr())  # one (B, 3H) buffer: each thread writes and reads only its rows
        at_x = run.at(X)
        k.run(k.seq_gru_fwd, [f(B), f(H), product_out, f(bn), at_x, run.at(N) if plan.saves else f(0),
                              run.prev(S, h0), run.at(S), run.keep(mask), run.prev(S, h0), product_out,
                              run.at(operands[0]), at_x],
              T, True, k.product(wc, True, H, 3 * H, False), inputs)
    else:
        X = input_projection(x, w_ih, b_x, plan.bulk_onednn)  # (T, B, 3H) input projections, become (r, z, hW_n)
        pack, linear = make_linear(plan.onednn, B)
        w, S_, Xa, Sa = pack(w_hh), S.unbind(0), addresses(X), addresses(S)
        Na = addresses(N) if plan.saves else [None] * T
        h, hp = h0, h0.data_ptr()
        for t in plan.steps:
            hW = linear(h, w) if plan.onednn else torch.mm(h, w, out=bufs[t & 1])  # (B, 3H) h W_hh^T
            k.gru_fwd(B, H, hW.data_ptr(), bn, Xa[t], Na[t], hp, Sa[t], keep[t])  # X[t] <- (r, z, hW_n); N[t] <- n
            h, hp = S_[t], Sa[t]
    out = S if plan.valid is None else S * plan.valid  # (T, B, H), zeros past each length
    ctx.save_for_backward(x, h0, w_ih, w_hh, S, X, N, mask)
    ctx.plan = plan
    return out, S[plan.last].clone()


def gru_backward(ctx, k: _kernels.Steps, dout: Tensor, dh_n: Tensor):
    x, h0, w_ih, w_hh, S, X, N, mask = ctx.saved_tensors
    need = ctx.needs_input_grad
    T, B, H = S.shape
    plan, acc, pack, spans, in_place, douts, adds, keep, dh = _backward_setup(ctx, x, S, mask, dout, dh_n, B * 4 * H)
    if in_place:  # (d_r, d_z, d_hn) over X = (r, z, hW_n), d_n over N = n
        dP, dN = X, N
    else:  # one chunk of (B, 4H) rows (d_r, d_z, d_hn, d_n)
        scratch = take_scratch(x, _span(spans), B, 4 * H)
        dP, dN = scratch[..., : 3 * H], scratch[..., 3 * H :]
    sums = GradSums(x, w_ih, h0, S, plan, need[0], need[2], need[3], need[4] or need[5])
    bias = sums.bias_rows(4 * H, k.max_threads())  # the kernels sum (d_r, d_z, d_hn, d_n) as they go
    sp, sn = dP.stride(1), dN.stride(1)
    if plan.loop:
        wc, f = w_hh.contiguous(), _kernels.fixed  # wc: read by address in the loop
        product = k.product(wc, False, sp, H, True)  # dh_{t-1} = hbar z + (d_r, d_z, d_hn) W_hh
    else:
        w_back = pack(w_hh.t())  # acc(out, a, w_back) = out + a @ W_hh
        Xa, Na, dPa, dNa = addresses(X), addresses(N), addresses(dP), addresses(dN)
        hprev = prev_addresses(plan, addresses(S), h0.data_ptr())
        dP_ = dP.unbind(0)  # (B, 3H) the hidden side of each step
    for lo, hi, steps in walk(plan, spans, douts):
        if plan.loop:  # the same steps in one call
            run = _Run.backward(plan, lo, hi)
            k.run(k.seq_gru_bwd, [f(B), f(H), run.at(X), run.at(N), run.at(dP, lo), f(sp), run.at(dN, lo), f(sn),
                                  run.prev(S, h0), run.reads(dh, adds), run.dout(douts), f(douts.su), f(douts.sj),
                                  run.turns(adds), run.keep(mask), f(bias), run.at(dP, lo), run.turns(adds)],
                  hi - lo, False, product)
            dh = adds[run.last & 1]
        else:
            for t, i, du in steps:
                add = adds[t & 1]
                k.gru_bwd(B, H, Xa[t], Na[t], dPa[i], sp, dNa[i], sn, hprev[t], dh.data_ptr(), du, douts.su,
                          douts.sj, add.data_ptr(), keep[t], bias)
                dh = acc(add, dP_[i], w_back)  # through step t: (d_r, d_z, d_hn) W_hh + hbar z
        hidden, n_rows = dP[: hi - lo], dN[: hi - lo]
        sums.add(lo, hi, [hidden[..., : 2 * H], n_rows], [(hidden, None)], [])
    dx, dw_ih, dw_hh, db = sums.result()  # db = (sums of d_r, d_z, d_hn, d_n)
    if not in_place:
        give_scratch(scratch)
    db_ih = None if db is None or not need[4] else torch.cat([db[: 2 * H], db[3 * H :]])
    db_hh = None if db is None or not need[5] else db[: 3 * H]
    return dx, dh if need[1] else None, dw_ih, dw_hh, db_ih, db_hh, None


# ------------------------------------------------------------------------------------------------ GRU, reset before
def gru_reset_before_forward(ctx, k: _kernels.Steps, x, h0, w_ih, w_hh, b_ih, b_hh, plan: Plan):
    pack, _ = make_linear(plan.onednn, x.shape[1])
    acc = make_accumulate(plan.onednn)
    T, B, H = x.shape[0], x.shape[1], w_hh.shape[1]
    RZ, N = reset_before_projections(x, w_ih, b_ih, b_hh, plan.bulk_onednn)  # (T, B, 2H) -> r, z; (T, B, H) -> n
    RH, S = x.new_empty(T, B, H), x.new_empty(T, B, H)  # (T, B, H): r * h_prev, h
    w_rz, w_n = pack(w_hh[: 2 * H]), pack(w_hh[2 * H :])  # W_hr;W_hz (2H, H) and W_hn (H, H)
    RZ_, N_, RH_, S_ = RZ.unbind(0), N.unbind(0), RH.unbind(0), S.unbind(0)
    RZa, Na, RHa, Sa = addresses(RZ), addresses(N), addresses(RH), addresses(S)
    mask, keep = keep_addresses(plan)
    h, hp = h0, h0.data_ptr()
    for t in plan.steps:
        pre = acc(RZ_[t], h, w_rz)  # (B, 2H)
        k.grurb_gates(B, H, pre.data_ptr(), RZa[t], hp, RHa[t])  # RZ[t] <- (r, z); RH[t] <- r h_prev
        pre = acc(N_[t], RH_[t], w_n)  # (B, H)
        k.grurb_out(B, H, pre.data_ptr(), Na[t], RZa[t], hp, Sa[t], keep[t])  # N[t] <- n; h_t
        h, hp = S_[t], Sa[t]
    out = S if plan.valid is None else S * plan.valid
    ctx.save_for_backward(x, h0, w_ih, w_hh, S, RZ, N, RH, mask)
    ctx.plan = plan
    return out, S[plan.last].clone()


def gru_reset_before_backward(ctx, k: _kernels.Steps, dout: Tensor, dh_n: Tensor):
    x, h0, w_ih, w_hh, S, RZ, N, RH, mask = ctx.saved_tensors
    need = ctx.needs_input_grad
    T, B, H = S.shape
    plan, acc, _, spans, in_place, douts, adds, keep, dh = _backward_setup(ctx, x, S, mask, dout, dh_n, B * 3 * H)
    pack, linear = make_linear(plan.onednn, B)
    if in_place:  # (d_r, d_z) over RZ = (r, z), d_n over N = n
        dRZ, dN = RZ, N
    else:
        K = _span(spans)
        scratch = take_scratch(x, K * B * 3 * H)
        dRZ, dN = scratch[: K * B * 2 * H].view(K, B, 2 * H), scratch[K * B * 2 * H :].view(K, B, H)
    sums = GradSums(x, w_ih, h0, S, plan, need[0], need[2], need[3], need[4] or need[5])
    w_rz_back = pack(w_hh[: 2 * H].t())  # acc(out, a, w_rz_back) = out + a @ [W_hr; W_hz]
    w_n_back = pack(w_hh[2 * H :].t())  # linear(a, w_n_back) = a @ W_hn
    RZa, Na, dRZa, dNa = addresses(RZ), addresses(N), addresses(dRZ), addresses(dN)
    hprev = prev_addresses(plan, addresses(S), h0.data_ptr())
    dRZ_, dN_ = dRZ.unbind(0), dN.unbind(0)
    for lo, hi, steps in walk(plan, spans, douts):
        for t, i, du in steps:
            add = adds[t & 1]
            k.grurb_bwd1(B, H, RZa[t], Na[t], dRZa[i], dNa[i], hprev[t], dh.data_ptr(), du, douts.su, douts.sj,
                         add.data_ptr(), keep[t])  # d_z, d_n; add = hbar z
            drh = linear(dN_[i], w_n_back)  # (B, H) gradient of r h_prev
            k.grurb_bwd2(B, H, RZa[t], dRZa[i], hprev[t], drh.data_ptr(), add.data_ptr(), keep[t])  # d_r; add
            dh = acc(add, dRZ_[i], w_rz_back)  # hbar_prev
        m = hi - lo
        sums.add(lo, hi, [dRZ[:m], dN[:m]], [(dRZ[:m], None), (dN[:m], RH[lo:hi])], [dRZ[:m], dN[:m]])
    dx, dw_ih, dw_hh, db = sums.result()  # both biases get db
    if not in_place:
        give_scratch(scratch)
    return dx, dh if need[1] else None, dw_ih, dw_hh, db if need[4] else None, db if need[5] else None, None
