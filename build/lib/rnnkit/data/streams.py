r"""Truncated backpropagation through time (TBPTT) with stateful minibatches (chapter 2).

A long token stream (a corpus read as one text) is cut into ``B`` contiguous *streams*, one per batch row, and each
stream into consecutive windows of ``k`` steps ("sequential partitioning", d2l.ai 9.6). Window ``j`` of row ``b``
continues exactly where window ``j - 1`` of row ``b`` stopped, so the final state of one minibatch is the right
initial state of the next: the forward pass sees the whole stream, while the backward pass stops at each window's
start, where the state is cut off from the graph with :func:`detach_state`::

    state = None
    for x, y in stream_windows(tokens, batch_size=32, window=k):    # x, y: (k, B)
        logits, state = model(x, state)                              # the state carries over ...
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        loss.backward(); opt.step(); opt.zero_grad()
        state = detach_state(state)                                  # ... its gradient does not

A loss at window step ``s`` (0-based) therefore receives gradient from at most ``s`` earlier steps: the gradient
reach is at most ``k - 1`` steps, ``(k - 1) / 2`` on average.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from .. import _checks

__all__ = ["stream_windows", "detach_state"]


def stream_windows(tokens: Tensor, batch_size: int, window: int) -> Iterator[tuple[Tensor, Tensor]]:
    """Consecutive ``(inputs, targets)`` windows ``(window, B)`` of a 1-D token stream cut into ``B`` rows.

    Row ``b`` holds tokens ``b * N .. (b + 1) * N`` of the stream (``N = (len - 1) // B``; the few tokens left over
    at the end are dropped); the targets are the inputs shifted by one token. The last window is shorter when ``N``
    is not a multiple of ``window``. Tensors stay on ``tokens``' device.
    """
    name = "stream_windows"
    tokens = _checks.tensor(name, "tokens", tokens)
    batch_size = _checks.positive_int(name, "batch_size", batch_size)
    window = _checks.positive_int(name, "window", window)
    if tokens.dim() != 1 or tokens.dtype != torch.long:
        raise ValueError(f"{name}: expected a 1-D int64 token stream, got shape {tuple(tokens.shape)} {tokens.dtype}")
    n = (tokens.shape[0] - 1) // batch_size  # steps per row
    if n < 1:
        raise ValueError(f"{name}: expected at least batch_size + 1 = {batch_size + 1} tokens, got {tokens.shape[0]}")
    inputs = tokens[: batch_size * n].view(batch_size, n).T  # (N, B): column b is row b's stream
    targets = tokens[1 : batch_size * n + 1].view(batch_size, n).T  # (N, B)
    for start in range(0, n, window):
        yield inputs[start : start + window], targets[start : start + window]  # (k, B) each


def detach_state(state):
    """``state`` cut off from the autograd graph: a tensor, a tuple of tensors (LSTM's ``(h, c)``), or ``None``."""
    if state is None:
        return None
    if isinstance(state, Tensor):
        return state.detach()
    if isinstance(state, tuple) and all(isinstance(s, Tensor) for s in state):
        return tuple(s.detach() for s in state)
    raise TypeError(f"detach_state: expected a Tensor, a tuple of Tensors or None, got {type(state).__name__}")
