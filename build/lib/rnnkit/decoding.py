r"""Beam search: the most likely output sequences of a generative RNN, beside greedy decoding and sampling
(:mod:`rnnkit.sampling`). Chapter 6 compares the three on its encoder-decoder.

Greedy decoding takes the argmax at every step; it can walk into a prefix whose best continuation is poor. Beam search
keeps the ``beam_width`` best prefixes (by log-probability) at every step: each is extended by every token and the
extensions are ranked; an extension ending in ``eos`` that ranks among the best ``beam_width`` is **finished** and set
aside (a finished hypothesis is never extended), and the best ``beam_width`` extensions not ending in ``eos`` stay
alive. The search ends once ``beam_width`` hypotheses have finished (as in fairseq and OpenNMT), when no prefix is
alive, or after ``max_len`` steps. ``beam_width=1`` is greedy decoding.

**Length normalisation.** A sum of log-probabilities only falls as a sequence grows, so raw scores prefer short
outputs. Hypotheses are ranked by

.. math::  \mathrm{score}(y) = \frac{\log p(y \mid x)}{|y|^{\alpha}}

with :math:`|y|` the number of generated tokens (``eos`` included) and :math:`\alpha` = ``length_penalty``
(0: the raw log-probability; 1: the mean log-probability per token). Pruning keeps prefixes by log-probability
(all alive prefixes of a step have the same length, so the normaliser does not change their order); the score ranks
the finished hypotheses, whose lengths differ.

**The step protocol** is :mod:`rnnkit.sampling`'s: ``step(tokens, state) -> (logits, state)`` with ``tokens`` of shape
``(K,)`` int64 and ``logits`` ``(K, V)``. ``state`` is a tensor, or a tuple of tensors, whose dimension
``state_batch_dim`` (1 for ``torch.nn``-style ``(layers, K, H)`` states) indexes the ``K`` hypotheses; beam search
reorders it with ``index_select`` when prefixes are pruned or duplicated. :func:`seq2seq_step` gives both for a
:class:`rnnkit.models.Seq2Seq` and one source sentence.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Hypothesis", "beam_search", "seq2seq_step"]


@dataclass(frozen=True)
class Hypothesis:
    """One decoded sequence: ``tokens`` (generated ids, ending in ``eos`` if ``finished``), its ``log_prob``
    (natural log of :math:`p(y \\mid x)`) and its length-normalised ``score``."""

    tokens: tuple[int, ...]
    log_prob: float
    score: float
    finished: bool


def _score(log_prob: float, length: int, alpha: float) -> float:
    return log_prob / length**alpha


def _reorder(state, index: Tensor, dim: int):
    if state is None:
        return None
    if isinstance(state, Tensor):
        return state.index_select(dim, index.to(state.device))
    if isinstance(state, tuple):
        return tuple(_reorder(s, index, dim) for s in state)
    raise TypeError(f"beam_search: expected the state to be a tensor, a tuple of tensors or None, "
                    f"got {type(state).__name__}")


def _check_int(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"beam_search: expected {name} to be an int, got {type(value).__name__}")
    if value < low:
        raise ValueError(f"beam_search: expected {name} >= {low}, got {value}")
    return value


@torch.no_grad()
def beam_search(step: Callable, state, *, bos: int, eos: int, beam_width: int = 4, max_len: int = 50,
                length_penalty: float = 1.0, state_batch_dim: int = 1) -> list[Hypothesis]:
    """The ``beam_width`` best hypotheses, best first, for one input whose encoding is ``state`` (batch of one).

    Finished hypotheses (ending in ``eos``) are returned first, ranked by score; if fewer than ``beam_width``
    finished, the best unfinished prefixes of length ``max_len`` fill the list (``finished=False``).
    """
    for name, value in (("bos", bos), ("eos", eos)):
        _check_int(name, value, 0)
    _check_int("beam_width", beam_width, 1)
    _check_int("max_len", max_len, 1)
    if isinstance(length_penalty, bool) or not isinstance(length_penalty, (int, float)):
        raise TypeError(f"beam_search: expected length_penalty to be a number, got {type(length_penalty).__name__}")
    if not (math.isfinite(length_penalty) and length_penalty >= 0):
        raise ValueError(f"beam_search: expected length_penalty >= 0 (0: raw log-probability), got {length_penalty}")
    device = next((s.device for s in (state if isinstance(state, tuple) else (state,)) if isinstance(s, Tensor)),
                  torch.device("cpu"))

    prefixes: list[tuple[int, ...]] = [()]  # alive hypotheses, without bos
    log_probs = torch.zeros(1, dtype=torch.float64)  # (K,) log p of each alive prefix
    tokens = torch.full((1,), bos, dtype=torch.long, device=device)  # (K,) the last token of each prefix
    finished: list[Hypothesis] = []
    for t in range(1, max_len + 1):
        logits, state = step(tokens, state)  # (K, V)
        if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != len(prefixes):
            got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
            raise ValueError(f"beam_search: expected step() to return logits of shape ({len(prefixes)}, V), got {got}")
        if eos >= logits.shape[1]:
            raise ValueError(f"beam_search: expected eos < the vocabulary size {logits.shape[1]}, got {eos}")
        vocab = logits.shape[1]
        total = log_probs[:, None] + torch.log_softmax(logits.double().cpu(), dim=-1)  # (K, V) log p of extensions
        flat = total.flatten()  # (K * V,)
        ranked = flat.argsort(descending=True, stable=True)[: 2 * beam_width].tolist()  # enough for K non-eos
        keep: list[int] = []  # flat indices k * V + v of the surviving extensions
        for rank, j in enumerate(ranked):
            lp = float(flat[j])
            if lp == -math.inf:  # a token of probability 0 is not a hypothesis
                break
            k, v = divmod(j, vocab)
            if v == eos:
                if rank < beam_width:  # an eos among the best beam_width extensions finishes its prefix
                    finished.append(Hypothesis(prefixes[k] + (eos,), lp, _score(lp, t, length_penalty), True))
            elif len(keep) < beam_width:
                keep.append(j)
        if len(finished) >= beam_width or not keep or t == max_len:
            break
        index = torch.tensor(keep)
        origin, token = index // vocab, index % vocab  # (K',) which prefix each survivor extends, with which token
        prefixes = [prefixes[k] + (v,) for k, v in zip(origin.tolist(), token.tolist(), strict=True)]
        log_probs = flat[index]
        state = _reorder(state, origin, state_batch_dim)
        tokens = token.to(device)
    finished.sort(key=lambda h: -h.score)
    if len(finished) < beam_width and t == max_len and keep:  # prefixes cut off at max_len fill the list
        cut = [(prefixes[j // vocab] + (j % vocab,), float(flat[j])) for j in keep]
        finished += sorted((Hypothesis(p, lp, _score(lp, max_len, length_penalty), False) for p, lp in cut),
                           key=lambda h: -h.score)
    return finished[:beam_width]


def seq2seq_step(model, src: Tensor, src_length: int | None = None) -> tuple[Callable, Tensor]:
    """``(step, state)`` for decoding one source sentence ``src`` ``(S,)`` with a :class:`rnnkit.models.Seq2Seq`:
    ``state`` is the encoder's final state ``(1, 1, H)``, ``step`` runs one decoder step for ``K`` hypotheses
    (expanding a one-hypothesis state to ``K`` copies when asked, as :func:`rnnkit.sampling.sample_sequence` does
    for ``num_samples``). Call ``model.eval()`` first."""
    if not isinstance(src, Tensor) or src.dim() != 1:
        got = tuple(src.shape) if isinstance(src, Tensor) else type(src).__name__
        raise ValueError(f"seq2seq_step: expected one source sentence of shape (S,), got {got}")
    lengths = None if src_length is None else torch.tensor([src_length])
    with torch.no_grad():
        h = model.encode(src[:, None], lengths)  # (1, 1, H)

    def step(tokens: Tensor, state: Tensor):
        if state.shape[1] == 1 and tokens.shape[0] > 1:
            state = state.expand(-1, tokens.shape[0], -1).contiguous()  # (1, K, H)
        out, state = model.decoder(model.tgt_embed(tokens)[None], state)  # (1, K, H)
        return model.out(out[0]), state  # (K, V)

    return step, h
