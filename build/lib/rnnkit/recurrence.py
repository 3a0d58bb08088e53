r"""The reference recurrence: one direction of one layer, one readable loop over :mod:`rnnkit.cells`.

This is the loop the book shows (chapter 1) and the reference for the contract every backend implements
(:class:`rnnkit.backends.DirectionRunner`): ``rnnkit.fused.run_direction`` takes the same arguments and must return the
same tensors. :mod:`rnnkit.layers` stacks layers and directions on top.

Two details keep it correct and fast enough to train with:

* **No O(T^2) autograd.** The input is split once with ``unbind`` and the step outputs are collected in a Python list
  and stacked once at the end. Indexing ``x[t]`` or writing ``out[t] = h`` into a preallocated tensor on every step
  makes backward allocate a full ``(T, B, H)`` gradient per step, which is quadratic in ``T``.
* **Variable lengths without sorting.** A padded batch carries ``lengths``; at step ``t`` sequence ``b`` is *valid*
  while ``t < lengths[b]``. Invalid steps leave the state unchanged (so after the loop each row holds the state after
  its own last step) and output zeros. Running backwards over ``t = T-1, ..., 0`` with the same rule starts each
  sequence at its own last valid step, because the state stays at ``h_0`` until ``t`` first becomes valid.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from ._recurrent import State
from .cells import gru_cell, lstm_cell, rnn_cell

__all__ = ["run_direction", "scan"]


def run_direction(
    mode: str,
    x: Tensor,
    hx: State,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None,
    b_hh: Tensor | None,
    *,
    lengths: Tensor | None = None,
    reverse: bool = False,
    nonlinearity: str = "tanh",
    reset_after: bool = True,
) -> tuple[Tensor, State]:
    r"""Run one direction of one recurrent layer over a padded, time-major batch.

    Args:
        mode: ``"RNN"``, ``"LSTM"`` or ``"GRU"``.
        x: input ``(T, B, I)``; rows past ``lengths[b]`` are ignored.
        hx: initial state ``(B, H)``, or ``(h_0, c_0)`` for ``"LSTM"``.
        w_ih, w_hh, b_ih, b_hh: the layer's parameters in ``torch.nn`` layout (biases may be ``None``).
        lengths: ``(B,)`` int64 on the CPU with ``1 <= lengths[b] <= T``, or ``None`` for "all ``T``".
        reverse: run from each sequence's last valid step back to step 0 (the backward half of a bidirectional layer).
        nonlinearity: ``"tanh"`` or ``"relu"`` (``"RNN"`` only).
        reset_after: GRU variant, see :func:`rnnkit.cells.gru_gates` (``"GRU"`` only).

    Returns:
        ``(output, h_n)``: ``output`` is ``(T, B, H)`` with ``output[t, b] = 0`` for ``t >= lengths[b]``;
        ``h_n`` is the state after each sequence's last valid step (``(h_n, c_n)`` for ``"LSTM"``).
    """
    step: Callable[[Tensor, Any], Any]  # (x_t, state) -> new state: a tensor, or (h, c) for the LSTM
    if mode == "RNN":
        def step(x_t: Tensor, state: Tensor) -> Tensor:
            return rnn_cell(x_t, state, w_ih, w_hh, b_ih, b_hh, nonlinearity)
    elif mode == "LSTM":
        def step(x_t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
            return lstm_cell(x_t, state, w_ih, w_hh, b_ih, b_hh)
    elif mode == "GRU":
        def step(x_t: Tensor, state: Tensor) -> Tensor:
            return gru_cell(x_t, state, w_ih, w_hh, b_ih, b_hh, reset_after)
    else:
        raise ValueError(f"run_direction: expected mode 'RNN', 'LSTM' or 'GRU', got {mode!r}")

    T = x.shape[0]
    valid = None
    if lengths is not None:
        steps = torch.arange(T, device=x.device)
        valid = steps[:, None] < lengths.to(x.device)[None, :]  # (T, B) bool

    def masked_step(t: int, x_t: Tensor, state: Any) -> tuple[State, Tensor]:
        new_state: Any = step(x_t, state)
        if valid is None:
            return new_state, (new_state[0] if mode == "LSTM" else new_state)  # (B, H)
        keep = valid[t].unsqueeze(1)  # (B, 1): True while sequence b is still running
        # past its end a sequence keeps its state and outputs zeros
        if mode == "LSTM":
            new_state = (torch.where(keep, new_state[0], state[0]), torch.where(keep, new_state[1], state[1]))
        else:
            new_state = torch.where(keep, new_state, state)
        h_t = new_state[0] if mode == "LSTM" else new_state
        return new_state, torch.where(keep, h_t, torch.zeros_like(h_t))  # (B, H)

    # unbind: one autograd node for the whole sequence
    outputs, state = scan(masked_step, x.unbind(0), hx, reverse=reverse)
    return torch.stack(outputs), state  # (T, B, H), state after each sequence's last valid step


def scan(step: Callable[[int, Tensor, Any], tuple[Any, Any]], xs: Sequence[Tensor], state: Any, *,
         reverse: bool = False) -> tuple[list[Any], Any]:
    """``state, out_t = step(t, xs[t], state)`` for ``t = 0, ..., T-1`` (``T-1, ..., 0`` when ``reverse``).

    Returns the per-step outputs **in time order** (``outputs[t]`` belongs to ``xs[t]``, also when ``reverse``) and
    the last state. ``xs`` should come from ``x.unbind(0)``, not ``x[t]`` per step (see the module docstring)."""
    outputs: list[Any] = []
    for t in reversed(range(len(xs))) if reverse else range(len(xs)):
        state, out = step(t, xs[t], state)
        outputs.append(out)
    if reverse:
        outputs.reverse()  # back to time order: outputs[t] belongs to input xs[t]
    return outputs, state
