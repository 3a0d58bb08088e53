r"""The backends: one table from a backend's name to the function that runs one direction of one recurrent layer.

Layers (:mod:`rnnkit.layers`) stack layers and directions and call ``RUNNERS[backend]`` for each; the ``*Cell``
modules call it for a one-step sequence. A new backend is one entry here that keeps the contract below
(:class:`DirectionRunner`); ``tests/test_backends.py`` holds every entry to it.

* ``"reference"``: :func:`rnnkit.recurrence.run_direction`, the readable loop over :mod:`rnnkit.cells` (chapter 1);
* ``"fused"``: :func:`rnnkit.fused.run_direction`, one ``autograd.Function`` with a hand-written backward (the default);
* ``"torch"``: :func:`run_direction_torch`, PyTorch's own kernels (``torch._VF``: oneDNN on the CPU, cuDNN on a GPU)
  on the layer's parameters, for comparison.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import _VF, Tensor
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from . import fused, recurrence
from ._recurrent import State, map_state

__all__ = ["DirectionRunner", "RUNNERS", "DEFAULT_BACKEND", "run_direction_torch"]


class DirectionRunner(Protocol):
    r"""One direction of one recurrent layer over a padded, time-major batch -- the contract of every backend.

    Args:
        mode: ``"RNN"``, ``"LSTM"`` or ``"GRU"`` (the layer has checked it, and ``nonlinearity``).
        x: input ``(T, B, I)``; rows past ``lengths[b]`` are ignored.
        hx: initial state ``(B, H)``, or ``(h_0, c_0)`` for ``"LSTM"``, with ``x``'s dtype and device.
        w_ih, w_hh, b_ih, b_hh: the layer's parameters in ``torch.nn`` layout and gate order (biases may be None).
        lengths: ``(B,)`` int64 on the CPU with ``1 <= lengths[b] <= T``, or None for "all ``T``".
        reverse: run from each sequence's last valid step back to step 0 (the backward half of a bidirectional layer).
        nonlinearity: ``"tanh"`` or ``"relu"`` (``"RNN"`` only).
        reset_after: the GRU variant, see :func:`rnnkit.cells.gru_gates` (``"GRU"`` only).

    Returns:
        ``(output, h_n)``: ``output`` ``(T, B, H)`` with zeros at ``t >= lengths[b]``, in time order also when
        ``reverse``; ``h_n`` the state after each sequence's last valid step (``(h_n, c_n)`` for ``"LSTM"``).
        Values and gradients equal :func:`rnnkit.recurrence.run_direction`'s within floating-point rounding.
    """

    def __call__(self, mode: str, x: Tensor, hx: State, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None,
                 b_hh: Tensor | None, *, lengths: Tensor | None = None, reverse: bool = False,
                 nonlinearity: str = "tanh", reset_after: bool = True) -> tuple[Tensor, State]: ...


def _reversal_index(x: Tensor, lengths: Tensor | None) -> Tensor:
    """``(T, B, I)`` gather index that reverses each sequence within its own length (padding stays in place); it is
    its own inverse, so the same index puts the outputs back in time order."""
    T, B = x.shape[:2]
    t = torch.arange(T, device=x.device)[:, None].expand(T, B)  # (T, B)
    n = torch.full((B,), T, device=x.device) if lengths is None else lengths.to(x.device)
    index = torch.where(t < n[None, :], n[None, :] - 1 - t, t)  # (T, B)
    return index[:, :, None].expand(x.shape[0], x.shape[1], x.shape[2])


def run_direction_torch(mode: str, x: Tensor, hx: State, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None,
                        b_hh: Tensor | None, *, lengths: Tensor | None = None, reverse: bool = False,
                        nonlinearity: str = "tanh", reset_after: bool = True) -> tuple[Tensor, State]:
    """The :class:`DirectionRunner` contract on ``torch._VF``'s one-layer kernels (those behind ``torch.nn``)."""
    if mode == "GRU" and not reset_after:
        raise ValueError("backend 'torch' computes only reset_after=True (PyTorch's GRU)")
    rnn = _VF.rnn_tanh if nonlinearity == "tanh" else _VF.rnn_relu
    kernel: Any = {"LSTM": _VF.lstm, "GRU": _VF.gru, "RNN": rnn}[mode]
    params = [w for w in (w_ih, w_hh, b_ih, b_hh) if w is not None]
    options = (params, b_ih is not None, 1, 0.0, False, False)  # one layer, no dropout, unidirectional
    if reverse:
        index = _reversal_index(x, lengths)
        x = x.gather(0, index)  # each sequence backwards within its length
    state = map_state(hx, lambda t: t.unsqueeze(0))  # (1, B, H): one layer
    if lengths is None:
        result = kernel(x, state, *options, False)  # batch_first=False
        output = result[0]
        h_n = (result[1][0], result[2][0]) if mode == "LSTM" else result[1][0]
    else:
        packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
        order = packed.sorted_indices
        assert order is not None  # enforce_sorted=False always sorts
        state = map_state(state, lambda t: t.index_select(1, order.to(t.device)))
        result = kernel(packed.data, packed.batch_sizes, state, *options)
        output, _ = pad_packed_sequence(
            PackedSequence(result[0], packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices),
            total_length=x.shape[0])  # (T, B, H)
        assert packed.sorted_indices is not None and packed.unsorted_indices is not None  # enforce_sorted=False
        back = packed.unsorted_indices.to(x.device)
        h_n = (result[1][0], result[2][0]) if mode == "LSTM" else result[1][0]
        h_n = map_state(h_n, lambda t: t.index_select(0, back))  # rows back in the caller's order
    if reverse:
        output = output.gather(0, index[..., :1].expand(output.shape))  # back to time order
    return output, h_n


#: backend name -> its :class:`DirectionRunner`; layers and cells look their backend up here
RUNNERS: dict[str, DirectionRunner] = {
    "reference": recurrence.run_direction,
    "fused": fused.run_direction,
    "torch": run_direction_torch,
}

DEFAULT_BACKEND = "fused"  # the backend used when none is given; one place to change it
