r"""Backward through time in chunks, for the fused cells' compiled steps (:mod:`rnnkit._kernels`).

The backward loop writes each step's pre-activation gradients ``dG[t]``; the weight gradients are sums over all
steps, :math:`\partial L/\partial W_{ih} = \sum_t dG_t^\top x_t`, so they need not wait for the whole loop: every
``K`` steps the chunk's gradients go through the large products (``dx``, ``dW_ih``, ``dW_hh``, the bias sums) and
the chunk's buffer is reused for the next ``K`` steps. So backward never holds a ``(T, B, G*H)`` gradient buffer:
at H=512 one would be 52 MB, which costs more in page faults on every call (a fresh allocation of that size is new
memory from the kernel) than all the element-wise arithmetic of the loop, and raises the peak memory above
torch.nn's. A chunk is at most :data:`CHUNK_BYTES`.

The chunk buffer is scratch memory that no result refers to, so on the CPU it is kept for the next call
(:func:`take_scratch`, :func:`give_scratch`: one spare per dtype, at most ``CHUNK_BYTES``): glibc returns a freed
block of megabytes to the kernel, and touching a fresh one again costs about 0.15 ms per MiB in page faults (measured
on a 2-core Xeon: a tenth of a whole backward at H=128). :func:`release_scratch` frees the spares (the bench does,
before it measures peak memory).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from ._fused_common import Plan
from ._fused_gemm import gram, matmul_for, matmul_into_for

__all__ = ["CHUNK_BYTES", "chunks", "visit", "walk", "take_scratch", "give_scratch", "release_scratch", "DoutSteps",
           "GradSums"]

CHUNK_BYTES = 8 * 2**20  # bytes of one chunk's gradient buffer at most (unless one step is larger)

_SPARE: dict[torch.dtype, Tensor] = {}  # CPU scratch kept between calls, one per dtype


def take_scratch(like: Tensor, *shape: int) -> Tensor:
    """An uninitialised ``shape`` tensor like ``like``: on the CPU the spare of its dtype if it has that size (a
    taken spare belongs to its caller alone, so threads never share one); hand it back with :func:`give_scratch`."""
    spare = _SPARE.pop(like.dtype, None) if like.device.type == "cpu" else None
    if spare is not None and spare.shape == torch.Size(shape):
        return spare
    return like.new_empty(shape)


def give_scratch(buf: Tensor) -> None:
    """Keep ``buf`` (from :func:`take_scratch`, referred to by nothing else) as the spare for the next call."""
    if buf.device.type == "cpu" and buf.numel() * buf.element_size() <= CHUNK_BYTES:
        _SPARE[buf.dtype] = buf


def release_scratch() -> None:
    """Free the scratch memory kept between calls."""
    _SPARE.clear()


def chunks(plan: Plan, step_bytes: int, state_bytes: int) -> list[tuple[int, int]]:
    """Time ranges ``[lo, hi)`` in the order backward visits them; within a chunk backward visits
    ``reversed(range(lo, hi))``, or ``range(lo, hi)`` if ``reverse``. A chunk's gradients take at most
    ``CHUNK_BYTES`` and at most ``state_bytes`` (one ``(T, B, H)`` state buffer, so that backward's peak stays within
    about one state buffer of what forward saved), but at least one step's ``step_bytes``."""
    K = max(1, min(plan.T, min(CHUNK_BYTES, state_bytes) // max(1, step_bytes)))
    bounds = [(lo, min(lo + K, plan.T)) for lo in range(0, plan.T, K)]
    return bounds if plan.reverse else bounds[::-1]


def visit(plan: Plan, lo: int, hi: int) -> range:
    """The steps of chunk ``[lo, hi)`` in backward order."""
    return range(lo, hi) if plan.reverse else range(hi - 1, lo - 1, -1)


def walk(plan: Plan, spans: list[tuple[int, int]], douts: DoutSteps
         ) -> Iterator[tuple[int, int, Iterator[tuple[int, int, int]]]]:
    """Backward's way through time: per chunk ``(lo, hi, steps)``, each step ``(t, i, dout)`` with ``i = t - lo``
    its row in the chunk buffers and ``dout`` the address of the output gradient at time ``t`` (made as the steps are
    taken, so a compiled loop over the chunk pays nothing for them)."""
    for lo, hi in spans:
        douts.stage(lo, hi)
        yield lo, hi, ((t, t - lo, douts[t]) for t in visit(plan, lo, hi))


class DoutSteps:
    """Addresses of the ``(B, H)`` steps of ``dL/d output`` (times the length mask), which each backward step adds to
    the gradient reaching its state through the next step, with the strides the kernels read them by (``su`` between
    rows, ``sj`` between columns: an ``out.sum()`` loss hands backward a ``dout`` of stride 0). Unmasked, ``dout`` is
    read where it is; masked, the product with the mask is staged one chunk at a time."""

    def __init__(self, dout: Tensor, plan: Plan, chunk_steps: int):
        self.dout, self.plan = dout, plan
        self.buf = None if plan.valid is None else dout.new_empty((chunk_steps, *dout.shape[1:]))  # (K, B, H)
        src = dout if self.buf is None else self.buf
        self.su, self.sj = src.stride(1), src.stride(2)
        self.step, self.base = src.stride(0) * src.element_size(), 0
        self.addr0 = dout.data_ptr()

    def stage(self, lo: int, hi: int) -> None:
        """Make chunk ``[lo, hi)``'s times addressable."""
        if self.buf is None or self.plan.valid is None:
            return
        torch.mul(self.dout[lo:hi], self.plan.valid[lo:hi], out=self.buf[: hi - lo])
        self.base, self.addr0 = lo, self.buf.data_ptr()

    def __getitem__(self, t: int) -> int:
        return self.addr0 + (t - self.base) * self.step


class GradSums:
    """``dx``, ``dW_ih``, ``dW_hh`` and the bias gradients of one direction, accumulated chunk by chunk.

    :meth:`add` takes a chunk's pre-activation gradients as ``(n, B, N_k)`` blocks (views are fine): ``inputs`` in
    ``W_ih``'s row order, ``hidden`` as ``(block, states)`` pairs in ``W_hh``'s row order, where ``states`` is the
    ``(n, B, H)`` chunk of what multiplied that block of ``W_hh`` (None: the previous hidden state, ``S`` shifted
    plus ``h0``), and ``biases`` whose column sums, concatenated, are accumulated as ``db``; or, where the backward
    kernels add each gradient to their thread's row of :meth:`bias_rows` as they write it, none."""

    def __init__(self, x: Tensor, w_ih: Tensor, h0: Tensor, S: Tensor, plan: Plan, need_x: bool, need_w_ih: bool,
                 need_w_hh: bool, need_b: bool):
        self.x, self.w_ih, self.h0, self.S, self.plan = x, w_ih, h0, S, plan
        self.need_w_ih, self.need_w_hh, self.need_b = need_w_ih, need_w_hh, need_b
        self.mm, self.mm_into = matmul_for(plan.bulk_onednn), matmul_into_for(plan.bulk_onednn)
        self.need_x = need_x
        self.dx: Tensor | None = None  # (T, B, I), made by the first chunk
        self.dw_ih: Tensor | None = None
        self.dw_hh: Tensor | None = None
        self.db: Tensor | None = None
        self.bias: tuple[Tensor, int] | None = None  # (threads, padded width) rows the kernels add to; the width

    def bias_rows(self, width: int, threads: int) -> int:
        """The address of zeroed ``(threads, width padded to 16)`` rows (``_kernels.c``'s ``BIAS_ROW``) into which
        the kernels sum the ``width`` bias gradients, one row per thread; 0 (no sums) where no bias needs them."""
        if not self.need_b:
            return 0
        if self.bias is None:
            self.bias = (self.x.new_zeros(threads, (width + 15) // 16 * 16), width)
        return self.bias[0].data_ptr()

    def add(self, lo: int, hi: int, inputs: list[Tensor], hidden: list[tuple[Tensor, Tensor | None]],
            biases: list[Tensor]) -> None:
        T, B, I = self.x.shape
        n = hi - lo
        flat = [d.reshape(n * B, d.shape[-1]) for d in inputs]  # (n*B, N_k) each
        if self.need_x:
            if self.dx is None and n < T:
                self.dx = self.x.new_empty(self.x.shape)
            dx = None if n == T else self.dx[lo:hi].view(n * B, I)  # type: ignore[index]
            rows = 0
            for k, d in enumerate(flat):
                w = self.w_ih[rows : rows + d.shape[1]]  # the rows of W_ih this block multiplies
                rows += d.shape[1]
                if dx is None:  # one chunk is the whole sequence: its first product is dx
                    dx = self.mm(d, w)  # (n*B, I)
                    self.dx = dx.view(T, B, I)
                else:
                    self.mm_into(dx, d, w, k > 0)  # into dx's rows
        if self.need_w_ih:
            x2 = self.x[lo:hi].reshape(n * B, I)
            self.dw_ih = _plus(self.dw_ih, [gram(d, x2) for d in flat])
        if self.need_w_hh:
            self.dw_hh = _plus(self.dw_hh, [self._hidden_gram(d, lo, hi) if s is None
                                            else gram(d.reshape(n * B, d.shape[-1]), s.reshape(n * B, s.shape[-1]))
                                            for d, s in hidden])
        if self.need_b and biases:
            self.db = _plus(self.db, [d.reshape(n * B, d.shape[-1]).sum(0) for d in biases])

    def _hidden_gram(self, d: Tensor, lo: int, hi: int) -> Tensor:
        """``sum_t d[t - lo]^T h_prev(t)`` over the chunk: ``h_prev`` is ``S`` one step back in the direction's
        order, and ``h0`` for its first step."""
        S, plan = self.S, self.plan
        B, H = S.shape[1], S.shape[2]
        if not plan.reverse:  # step t read S[t-1]
            first, d_rest, s_rest = (d[0], d[1:], S[: hi - 1]) if lo == 0 else (None, d, S[lo - 1 : hi - 1])
        else:  # step t read S[t+1]
            first, d_rest, s_rest = (d[-1], d[:-1], S[lo + 1 :]) if hi == plan.T else (None, d, S[lo + 1 : hi + 1])
        m = d_rest.shape[0]
        out = gram(d_rest.reshape(m * B, d.shape[-1]), s_rest.reshape(m * B, H)) if m else None
        if first is not None:
            part = first.t() @ self.h0  # (N, H)
            out = part if out is None else out.add_(part)
        return out  # type: ignore[return-value]  # a chunk has at least one step

    def result(self) -> tuple[Tensor | None, Tensor | None, Tensor | None, Tensor | None]:
        """``(dx, dW_ih, dW_hh, db)``; None for what was not needed."""
        if self.bias is not None:
            rows, width = self.bias
            self.db = rows.sum(0)[:width]
        return self.dx, self.dw_ih, self.dw_hh, self.db


def _plus(total: Tensor | None, parts: list[Tensor]) -> Tensor:
    """``total + cat(parts)`` along rows (or ``cat(parts)`` when there is no total yet)."""
    part = parts[0] if len(parts) == 1 else torch.cat(parts)
    return part if total is None else total.add_(part)
