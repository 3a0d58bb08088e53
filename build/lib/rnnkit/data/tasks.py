r"""Synthetic long-range tasks: the adding problem, the copy (memory) task and parity.

Chapter 5 ("LSTM vs GRU") trains on these at growing lengths to show where a tanh-RNN stops learning and gated
units keep going; assignment 5 asks students to re-implement them, so the recipes below are a contract: every
random draw happens in exactly the order written here, from one ``torch.Generator``.

All three are *batch-first* at the edge, ``(N, T, ...)``, like the datasets students build by hand; transpose to
time-major ``(T, N, ...)`` before an rnnkit layer with ``batch_first=False``.

Randomness: pass ``seed`` (a fresh ``torch.Generator().manual_seed(seed)`` is made) or ``generator`` (drawn from,
so consecutive calls continue its stream), not both. With neither, a generator seeded from the global torch RNG
is used, so ``torch.manual_seed`` still makes a script reproducible.
"""

from __future__ import annotations

import torch

from .. import _checks

__all__ = ["adding_problem", "copy_task", "parity_task"]


def adding_problem(
    num_samples: int,
    seq_len: int,
    *,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The adding problem (Hochreiter & Schmidhuber 1997, experiment 4; Le et al. 2015's variant).

    Each sample is a sequence of ``T`` pairs ``(value, marker)``: values are uniform on ``[0, 1)``; exactly two
    markers are 1, one in the first half and one in the second half. The target is the sum of the two marked values:

    .. math::  y_n = v_{n, i_n} + v_{n, j_n}, \qquad i_n \in [0, \lfloor T/2 \rfloor),\ j_n \in [\lfloor T/2 \rfloor, T)

    Predicting the mean (1.0) gives MSE :math:`\operatorname{Var}(v_i + v_j) = 2/12 = 1/6`, the baseline a model
    must beat to show it carries information across :math:`T/2` steps.

    Recipe (draw order is part of the contract)::

        g = generator or torch.Generator().manual_seed(seed)
        values = torch.rand(N, T, generator=g)
        i = torch.randint(0, T // 2, (N,), generator=g)
        j = torch.randint(T // 2, T, (N,), generator=g)
        markers = zeros(N, T); markers[n, i[n]] = markers[n, j[n]] = 1
        x = torch.stack([values, markers], -1)        # (N, T, 2)
        y = values[n, i[n]] + values[n, j[n]]          # (N,)

    Returns ``x`` of shape ``(N, T, 2)`` and ``y`` of shape ``(N,)``, both of ``dtype``. ``seq_len >= 2``.
    """
    fn = "adding_problem"
    n = _checks.integer(fn, "num_samples", num_samples, 1)
    t = _checks.integer(fn, "seq_len", seq_len, 2)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"{fn}: expected a floating-point dtype, got {dtype}")
    g = _checks.generator(fn, seed, generator, cpu_only=True)
    values = torch.rand(n, t, generator=g)  # (N, T) uniform [0, 1)
    i = torch.randint(0, t // 2, (n,), generator=g)  # (N,) first marker, first half
    j = torch.randint(t // 2, t, (n,), generator=g)  # (N,) second marker, second half
    rows = torch.arange(n)
    markers = torch.zeros(n, t)  # (N, T)
    markers[rows, i] = 1.0
    markers[rows, j] = 1.0
    x = torch.stack([values, markers], dim=-1)  # (N, T, 2)
    y = values[rows, i] + values[rows, j]  # (N,)
    return x.to(dtype), y.to(dtype)


def copy_task(
    num_samples: int,
    seq_len: int,
    delay: int,
    *,
    num_symbols: int = 8,
    seed: int | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The copy (memory) task (Hochreiter & Schmidhuber 1997; Arjovsky et al. 2016's layout).

    The network reads ``L = seq_len`` symbols from ``{1..K}`` (``K = num_symbols``), waits ``delay - 1`` blank
    steps, sees a delimiter ``K + 1``, and must then output the ``L`` symbols in order while reading blanks.
    Token ids: ``0`` blank, ``1..K`` symbols, ``K + 1`` delimiter, so an embedding needs ``K + 2`` entries; the
    output alphabet is ``0..K``. Total length ``2L + delay``::

        x = [ s_1 .. s_L | 0 x (delay - 1) | K+1 | 0 x L  ]
        y = [ 0 x (L + delay)                    | s_1 .. s_L ]

    Always outputting blank scores cross-entropy :math:`L \ln K / (2L + \text{delay})` per step — the baseline
    a memoryless model reaches.

    Recipe: ``symbols = torch.randint(1, num_symbols + 1, (N, L), generator=g)`` is the only random draw.
    Returns ``x`` and ``y`` as int64 tensors of shape ``(N, 2L + delay)``.
    """
    fn = "copy_task"
    n = _checks.integer(fn, "num_samples", num_samples, 1)
    length = _checks.integer(fn, "seq_len", seq_len, 1)
    delay = _checks.integer(fn, "delay", delay, 1)
    k = _checks.integer(fn, "num_symbols", num_symbols, 1)
    g = _checks.generator(fn, seed, generator, cpu_only=True)
    symbols = torch.randint(1, k + 1, (n, length), generator=g)  # (N, L) in 1..K
    blank, delimiter = 0, k + 1
    x = torch.full((n, 2 * length + delay), blank, dtype=torch.long)  # (N, 2L + delay)
    x[:, :length] = symbols
    x[:, length + delay - 1] = delimiter  # after delay - 1 blanks
    y = torch.full((n, 2 * length + delay), blank, dtype=torch.long)  # (N, 2L + delay)
    y[:, length + delay :] = symbols
    return x, y


def parity_task(
    num_samples: int,
    seq_len: int,
    *,
    seed: int | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Parity (XOR of a bit string): the label depends on *every* bit, so no suffix of the sequence suffices.

    Recipe::

        bits = torch.randint(0, 2, (N, T), generator=g)
        x = bits.float().unsqueeze(-1)     # (N, T, 1) float32
        y = bits.sum(1) % 2                # (N,) int64 class labels

    A classifier that ignores the input scores 50 %.
    """
    fn = "parity_task"
    n = _checks.integer(fn, "num_samples", num_samples, 1)
    t = _checks.integer(fn, "seq_len", seq_len, 1)
    g = _checks.generator(fn, seed, generator, cpu_only=True)
    bits = torch.randint(0, 2, (n, t), generator=g)  # (N, T) in {0, 1}
    x = bits.to(torch.float32).unsqueeze(-1)  # (N, T, 1)
    y = bits.sum(1) % 2  # (N,) long
    return x, y
