"""Argument checks for every public function and class of rnnkit (layers, sampling, models, training, experiments,
and the seed/generator rule of the random functions): every mistake gets one exception type and a message naming what
was expected and what was given, prefixed with the class or function name.

* ``TypeError``: a value of the wrong Python type (``hidden_size=2.5``, ``hx`` not a tuple for an LSTM, ...).
* ``ValueError``: a value, shape, dtype or device that is wrong (``hidden_size=0``, 11 features instead of 10, ...).

Constructor arguments are checked once in ``__init__``; tensors are checked once per ``forward`` call, never per step.
"""

from __future__ import annotations

import math
import numbers
import operator
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence


def _type_name(value: object) -> str:
    return type(value).__name__


# ---------------------------------------------------------------- constructor arguments


def integer(name: str, arg: str, value: object, low: int | None = None) -> int:
    """``value`` must be an ``int`` (NumPy ints included, not a ``bool``), and at least ``low`` if given."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected {arg} to be an int, got {_type_name(value)} ({value!r})")
    if low is not None and value < low:
        raise ValueError(f"{name}: expected {arg} >= {low}, got {value}")
    return int(value)


def positive_int(name: str, arg: str, value: object) -> int:
    """``value`` must be an ``int`` (not a ``bool``) and at least 1."""
    return integer(name, arg, value, 1)


def optional_int(name: str, arg: str, value: object, low: int | None = None) -> int | None:
    """``None``, or an ``int`` as :func:`integer` checks it."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
        raise TypeError(f"{name}: expected {arg} to be an int or None, got {_type_name(value)} ({value!r})")
    return None if value is None else integer(name, arg, value, low)


def positive_real(name: str, arg: str, value: object) -> float:
    """``value`` must be a real number (not a ``bool``), finite and > 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected {arg} to be a number, got {_type_name(value)} ({value!r})")
    number = float(value)
    if not (number > 0 and math.isfinite(number)):
        raise ValueError(f"{name}: expected a finite {arg} > 0, got {value}")
    return number


def boolean(name: str, arg: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name}: expected {arg} to be a bool, got {_type_name(value)} ({value!r})")
    return value


def dropout(name: str, value: object, num_layers: int) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected dropout to be a float, got {_type_name(value)} ({value!r})")
    p = float(value)
    if not 0 <= p <= 1:
        raise ValueError(f"{name}: expected dropout in [0, 1] (the probability of zeroing an element), got {value}")
    if p > 0 and num_layers == 1:
        warnings.warn(
            f"{name}: dropout acts between stacked layers only, so dropout={value} does nothing with num_layers=1",
            stacklevel=4,
        )
    return p


def choice(name: str, arg: str, value: object, choices: Sequence[str]) -> str:
    expected = ", ".join(repr(c) for c in choices)
    if not isinstance(value, str):
        raise TypeError(f"{name}: expected {arg} to be a str (one of {expected}), got {_type_name(value)}")
    if value not in choices:
        raise ValueError(f"{name}: unknown {arg} {value!r}; expected one of {expected}")
    return value


def backend(name: str, value: object, reset_after: bool, choices: Sequence[str]) -> str:
    """A known backend (a key of :data:`rnnkit.backends.RUNNERS`) that computes this module: ``torch`` has no
    ``reset_after=False`` GRU."""
    value = choice(name, "backend", value, choices)
    if value == "torch" and not reset_after:
        raise ValueError(
            f"{name}: backend 'torch' computes only reset_after=True (PyTorch's GRU), got reset_after=False; "
            "use backend='reference' or 'fused' for the Cho et al. 2014 form"
        )
    return value


# ---------------------------------------------------------------- tensors in forward


def tensor(name: str, what: str, value: object) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"{name}: expected {what} to be a torch.Tensor, got {_type_name(value)}")
    return value


def dtype_device(name: str, what: str, t: Tensor, ref: Tensor, ref_what: str) -> None:
    """``t`` must have the dtype and device of ``ref`` (the parameters, or the input)."""
    if t.dtype != ref.dtype:
        raise ValueError(
            f"{name}: expected {what} of dtype {ref.dtype} ({ref_what} dtype), got {t.dtype}; "
            f"convert one of them, e.g. {what}.to({ref.dtype})"
        )
    if t.device != ref.device:
        raise ValueError(f"{name}: expected {what} on device {ref.device} ({ref_what} device), got {t.device}")


def input_tensor(name: str, x: Tensor, layouts: dict[int, str], input_size: int, weight: Tensor) -> int:
    """Check rank (a key of ``layouts``), feature size, dtype and device of an input; returns its rank."""
    tensor(name, "input", x)
    if x.dim() not in layouts:
        expected = " or ".join(f"{rank} dimensions {layout}" for rank, layout in layouts.items())
        raise ValueError(f"{name}: expected input with {expected}, "
                         f"got {x.dim()} dimensions with shape {tuple(x.shape)}")
    if x.shape[-1] != input_size:
        raise ValueError(f"{name}: expected input with {input_size} features (input_size), got {x.shape[-1]}")
    dtype_device(name, "input", x, weight, "the parameters'")
    return x.dim()


def state(name: str, what: str, t: object, shape: tuple[int, ...], layout: str, x: Tensor) -> Tensor:
    """An initial state must be a tensor of exactly ``shape`` with the input's dtype and device."""
    t = tensor(name, what, t)
    if tuple(t.shape) != shape:
        raise ValueError(f"{name}: expected {what} of shape {shape} {layout}, got {tuple(t.shape)}")
    dtype_device(name, what, t, x, "the input's")
    return t


def state_pair(name: str, hx: object) -> tuple[object, object]:
    if not isinstance(hx, (tuple, list)) or len(hx) != 2:
        got = f"a {_type_name(hx)} of length {len(hx)}" if isinstance(hx, (tuple, list)) else _type_name(hx)
        raise TypeError(f"{name}: expected hx as a tuple (h_0, c_0) of two tensors, got {got}")
    return hx[0], hx[1]


def initial_state(name: str, is_lstm: bool, hx: object, shape: tuple[int, ...], layout: str, x: Tensor,
                  c_shape: tuple[int, ...] | None = None):
    """Zeros like ``x`` if ``hx`` is None, else ``hx`` checked: a tensor of ``shape``, or ``(h_0, c_0)`` for an LSTM
    (``c_0`` of ``c_shape``, which defaults to ``shape``)."""
    c_shape = shape if c_shape is None else c_shape
    if hx is None:
        zeros = x.new_zeros(shape)
        return (zeros, zeros if c_shape == shape else x.new_zeros(c_shape)) if is_lstm else zeros
    if is_lstm:
        h0, c0 = state_pair(name, hx)
        return state(name, "h_0", h0, shape, layout, x), state(name, "c_0", c0, c_shape, layout, x)
    return state(name, "hx", hx, shape, layout, x)


def lengths(name: str, value: Any, batch: int, steps: int) -> Tensor | None:
    """Lengths of a padded batch as a CPU int64 tensor with ``batch`` entries, each in ``[1, steps]``.

    Given as an integer tensor (any device), a NumPy integer array, or a list/tuple of ints (NumPy ints included)."""
    if value is None:
        return None
    if type(value).__module__ == "numpy" and hasattr(value, "dtype") and getattr(value, "ndim", 0) > 0:
        value = torch.as_tensor(value.copy())  # NumPy, as pack_padded_sequence accepts (copy: no negative strides)
    if isinstance(value, Tensor):
        if value.dtype.is_floating_point or value.dtype.is_complex or value.dtype == torch.bool:
            raise ValueError(f"{name}: expected lengths of an integer dtype, got {value.dtype}")
        if value.dim() > 1:
            raise ValueError(f"{name}: expected lengths as a 1-D tensor, got shape {tuple(value.shape)}")
        out = value.detach().to("cpu", torch.int64).reshape(-1)
    else:
        items = [value] if isinstance(value, numbers.Integral) else value
        if not isinstance(items, (list, tuple)):
            raise TypeError(f"{name}: expected lengths as a 1-D integer tensor or a list of ints, "
                            f"got {_type_name(value)}")
        for v in items:
            if isinstance(v, bool):
                raise TypeError(f"{name}: expected lengths to be ints, got bool ({v!r})")
            try:
                operator.index(v)
            except TypeError:
                raise TypeError(f"{name}: expected lengths to be ints, got {_type_name(v)} ({v!r})") from None
        out = torch.tensor([operator.index(v) for v in items], dtype=torch.int64)
    if out.numel() != batch:
        raise ValueError(f"{name}: expected {batch} lengths (one per sequence in the batch), got {out.numel()}")
    if batch and (out.min() < 1 or out.max() > steps):
        raise ValueError(
            f"{name}: expected every length in [1, {steps}] (the padded sequence length), "
            f"got lengths from {int(out.min())} to {int(out.max())}"
        )
    return out


def packed(name: str, seq: PackedSequence) -> None:
    """A PackedSequence built by hand can be inconsistent; ``pack_*_sequence`` always passes these checks."""
    data, batch_sizes, sorted_indices, unsorted_indices = seq
    tensor(name, "packed data", data)
    if data.dim() != 2:
        raise ValueError(f"{name}: expected packed data with 2 dimensions (sum of lengths, H_in), "
                         f"got shape {tuple(data.shape)}")
    if batch_sizes.dim() != 1 or batch_sizes.numel() == 0 or batch_sizes.dtype != torch.int64:
        raise ValueError(f"{name}: expected batch_sizes as a non-empty 1-D int64 tensor, got shape "
                         f"{tuple(batch_sizes.shape)} and dtype {batch_sizes.dtype}")
    if batch_sizes.device.type != "cpu":
        raise ValueError(f"{name}: expected batch_sizes on the cpu, got {batch_sizes.device}")
    if int(batch_sizes.min()) < 1 or bool((batch_sizes[1:] > batch_sizes[:-1]).any()):
        raise ValueError(f"{name}: expected batch_sizes positive and non-increasing, got {batch_sizes.tolist()}")
    if int(batch_sizes.sum()) != data.shape[0]:
        raise ValueError(f"{name}: expected packed data with sum(batch_sizes) = {int(batch_sizes.sum())} rows, "
                         f"got {data.shape[0]}")
    for what, idx in (("sorted_indices", sorted_indices), ("unsorted_indices", unsorted_indices)):
        if idx is not None and idx.numel() != int(batch_sizes[0]):
            raise ValueError(f"{name}: expected {what} with {int(batch_sizes[0])} entries (the batch size), "
                             f"got {idx.numel()}")


# ---------------------------------------------------------------- randomness


def generator(fn: str, seed: object, gen: object, *, cpu_only: bool = False) -> torch.Generator:
    """The one generator a random function draws from: the caller's ``gen``, else ``Generator().manual_seed(seed)``,
    else one seeded from the global torch RNG (so ``torch.manual_seed`` still makes a script reproducible)."""
    if seed is not None and gen is not None:
        raise ValueError(f"{fn}: pass seed or generator, not both")
    if gen is not None:
        if not isinstance(gen, torch.Generator):
            raise TypeError(f"{fn}: expected generator to be a torch.Generator, got {_type_name(gen)}")
        if cpu_only and gen.device.type != "cpu":
            raise ValueError(f"{fn}: expected a CPU torch.Generator (data is made on the CPU), got {gen.device}")
        return gen
    if seed is None:
        seed = int(torch.randint(0, 2**62, (1,)).item())
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):  # NumPy ints are fine, 3.0 is not
        raise TypeError(f"{fn}: expected seed to be an int or None, got {_type_name(seed)}")
    return torch.Generator().manual_seed(int(seed))
