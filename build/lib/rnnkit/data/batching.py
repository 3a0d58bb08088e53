r"""Batching variable-length sequences: pad + lengths, or pack, time-major, on any device.

rnnkit layers are time-major like ``torch.nn``: a padded batch is ``(T, B, F)`` with ``T = max(lengths)``, and
``lengths[b]`` says how many leading steps of column ``b`` are real. Layers accept either form:
``layer(padded, lengths=lengths)`` or ``layer(pack_batch(seqs))`` (a ``PackedSequence``).

Chapter 5 batches chorales with :func:`iterate_batches`; chapter 6 batches character sequences the same way.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

from .. import _checks

__all__ = ["pad_batch", "pack_batch", "iterate_batches"]  # move_to, default_collate: documented in rnnkit.train


def _check_sequences(seqs, fn: str) -> list[torch.Tensor]:
    if isinstance(seqs, torch.Tensor) or not isinstance(seqs, Sequence):
        raise TypeError(f"{fn}: expected a list of tensors of shape (T_i, *F), got {type(seqs).__name__}")
    if len(seqs) == 0:
        raise ValueError(f"{fn}: expected at least one sequence, got an empty list")
    seqs = list(seqs)
    first = seqs[0]
    for b, s in enumerate(seqs):
        if not isinstance(s, torch.Tensor):
            raise TypeError(f"{fn}: expected sequence {b} to be a torch.Tensor, got {type(s).__name__}")
        if s.dim() < 1:
            raise ValueError(f"{fn}: expected sequence {b} to have a time dimension (T_i, *F), got a 0-d tensor")
        if s.shape[0] == 0:
            raise ValueError(f"{fn}: expected sequence {b} to have at least one time step, got length 0")
        if s.shape[1:] != first.shape[1:]:
            raise ValueError(
                f"{fn}: expected every sequence to have feature shape {tuple(first.shape[1:])} "
                f"(that of sequence 0), got {tuple(s.shape[1:])} for sequence {b}"
            )
        if s.dtype != first.dtype:
            raise ValueError(f"{fn}: expected every sequence to have dtype {first.dtype}, "
                             f"got {s.dtype} for sequence {b}")
    return seqs


def pad_batch(
    seqs: Sequence[torch.Tensor],
    device: torch.device | str | None = None,
    *,
    padding_value: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack sequences ``(T_i, *F)`` into a time-major padded batch.

    Returns ``(padded, lengths)``: ``padded`` is ``(T_max, B, *F)`` with ``padding_value`` at ``t >= lengths[b]``, on
    ``device`` (default: the device of the first sequence) with the sequences' dtype; ``lengths`` is an int64 CPU
    tensor ``(B,)`` — CPU because ``pack_padded_sequence`` and rnnkit's loops index with it on the host.
    """
    seqs = _check_sequences(seqs, "pad_batch")
    dtype = seqs[0].dtype
    # torch.full would cast silently: 0.5 -> 0 in an int64 batch, 2 -> True in a bool one
    if dtype == torch.bool and padding_value not in (0, 1):
        raise ValueError(f"pad_batch: expected padding_value 0/1 (False/True) for bool sequences, "
                         f"got {padding_value!r}")
    if not (dtype.is_floating_point or dtype.is_complex) and dtype != torch.bool and (
            not math.isfinite(padding_value) or padding_value != int(padding_value)):
        raise ValueError(f"pad_batch: expected an integer padding_value for {dtype} sequences, got {padding_value!r}")
    device = torch.device(device) if device is not None else seqs[0].device
    lengths = torch.tensor([s.shape[0] for s in seqs], dtype=torch.long)  # (B,) on CPU
    t_max = int(lengths.max())
    feature_shape = tuple(seqs[0].shape[1:])
    padded = torch.full((t_max, len(seqs), *feature_shape), padding_value, dtype=seqs[0].dtype,
                        device=device)  # (T, B, *F)
    for b, s in enumerate(seqs):
        padded[: s.shape[0], b] = s.to(device)
    return padded, lengths


def pack_batch(seqs: Sequence[torch.Tensor], device: torch.device | str | None = None) -> PackedSequence:
    """Pack sequences ``(T_i, *F)`` into a ``PackedSequence`` (any order; ``enforce_sorted=False`` keeps the
    original order recoverable through ``unsorted_indices``)."""
    padded, lengths = pad_batch(seqs, device)
    return pack_padded_sequence(padded, lengths, enforce_sorted=False)


def iterate_batches(
    seqs: Sequence[torch.Tensor],
    batch_size: int,
    *,
    targets: Sequence[torch.Tensor] | torch.Tensor | None = None,
    shuffle: bool = True,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    bucket: bool = False,
    drop_last: bool = False,
    device: torch.device | str | None = None,
) -> Iterator[tuple]:
    """Yield padded time-major batches ``(padded (T, B, *F), lengths (B,))``, or, with ``targets``,
    ``(padded, lengths, batch_targets)``.

    ``targets`` is either a list of per-sequence tensors (padded like the inputs, e.g. next-step targets) or one
    tensor whose first dimension indexes sequences (e.g. class labels, gathered and moved to ``device``).

    ``shuffle`` permutes the order with ``generator`` (or ``torch.Generator().manual_seed(seed)``): the same seed gives
    the same batches. ``bucket=True`` sorts by length inside windows of ``50 * batch_size`` after shuffling, so batches
    hold similar lengths and waste less padding while the batch order stays random.
    """
    fn = "iterate_batches"
    seqs = _check_sequences(seqs, fn)
    batch_size = _checks.positive_int(fn, "batch_size", batch_size)  # numpy.int64 too
    if targets is not None and not isinstance(targets, torch.Tensor) and all(
            isinstance(t, numbers.Number) for t in targets):
        targets = torch.as_tensor(targets)  # a plain list of labels [0, 1, ...]: one per sequence, like a tensor
    if targets is not None and len(targets) != len(seqs):
        raise ValueError(f"{fn}: expected {len(seqs)} targets (one per sequence), got {len(targets)}")
    if seed is not None and generator is not None:
        raise ValueError(f"{fn}: pass seed or generator, not both")
    n = len(seqs)
    if shuffle:
        g = generator if generator is not None else torch.Generator().manual_seed(
            seed if seed is not None else int(torch.randint(0, 2**62, (1,)).item())
        )
        order = torch.randperm(n, generator=g).tolist()
    else:
        order = list(range(n))
    if bucket:
        window = 50 * batch_size
        order = [
            i for w in range(0, n, window) for i in sorted(order[w : w + window], key=lambda k: seqs[k].shape[0])
        ]
    batches = [order[s : s + batch_size] for s in range(0, n, batch_size)]
    if drop_last and batches and len(batches[-1]) < batch_size:
        batches.pop()
    if bucket and shuffle:
        # Sorting made neighbouring batches similar in length; shuffle the batch order again with the same stream.
        batches = [batches[k] for k in torch.randperm(len(batches), generator=g).tolist()]
    for idx in batches:
        padded, lengths = pad_batch([seqs[i] for i in idx], device)
        if targets is None:
            yield padded, lengths
        elif isinstance(targets, torch.Tensor):
            yield padded, lengths, targets[torch.tensor(idx)].to(padded.device)
        else:
            yield padded, lengths, pad_batch([targets[i] for i in idx], padded.device)[0]


# ------------------------------------------------------------------ datasets and batches for rnnkit.train.Trainer
def move_to(batch: Any, device: torch.device) -> Any:
    """Move every tensor in ``batch`` (nested tuples / lists / dicts) to ``device``. Objects with their own
    ``.to(device)`` (e.g. :class:`rnnkit.models.SeqBatch`, which keeps ``lengths`` on the CPU) decide for themselves."""
    if isinstance(batch, torch.Tensor) or hasattr(batch, "to"):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: move_to(v, device) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        moved = [move_to(v, device) for v in batch]
        return type(batch)(*moved) if hasattr(batch, "_fields") else type(batch)(moved)
    return batch


def default_collate(items: list) -> Any:
    """Stack equally shaped examples: tensors -> one tensor, tuples of tensors -> a tuple of stacked tensors."""
    try:
        return torch.utils.data.default_collate(items)
    except RuntimeError as err:  # most often: sequences of different lengths
        raise ValueError(
            f"Trainer: could not stack a batch of {len(items)} examples ({err}); for variable-length sequences pass "
            "collate_fn= (e.g. one built on rnnkit.data.pad_batch) or use a model with a collate() method"
        ) from err


class _TensorTuple:
    """Index a tuple of tensors that share their first dimension, like ``TensorDataset`` (example i = tuple of rows)."""

    def __init__(self, tensors: tuple[torch.Tensor, ...]):
        n = tensors[0].shape[0]
        for k, t in enumerate(tensors):
            if t.shape[0] != n:
                raise ValueError(f"Trainer: expected every tensor of the dataset tuple to have {n} rows, "
                                 f"got {t.shape[0]} for tensor {k}")
        self.tensors = tensors

    def __len__(self) -> int:
        return self.tensors[0].shape[0]

    def __getitem__(self, i: int):
        return tuple(t[i] for t in self.tensors)


def as_dataset(data, name: str):
    if isinstance(data, tuple) and data and all(isinstance(t, torch.Tensor) for t in data):
        if any(t.dim() == 0 for t in data):
            raise ValueError(f"Trainer: expected the {name} tuple to hold tensors with a first (example) dimension, "
                             f"got shapes {[tuple(t.shape) for t in data]}")
        return _TensorTuple(data)
    if isinstance(data, tuple) and len(data) > 1 and all(isinstance(t, list) for t in data) and len(
            {len(t) for t in data}) == 1 and len(data[0]) > len(data):
        # (inputs, targets) as two lists would be read as 2 examples, each a whole list: say how to pair them
        raise TypeError(f"Trainer: got the {name} set as a tuple of {len(data)} lists of {len(data[0])} items; "
                        "pass a list of examples instead, e.g. list(zip(inputs, targets))")
    if not (hasattr(data, "__len__") and hasattr(data, "__getitem__")):
        raise TypeError(f"Trainer: expected {name} to be a list of examples or a tuple of tensors, "
                        f"got {type(data).__name__}")
    if len(data) == 0:
        raise ValueError(f"Trainer: expected a non-empty {name} set, got 0 examples")
    return data
