r"""Sampling from trained sequence models: temperature and top-k, to end-of-sequence, reproducible by seed.

Chapter 6 samples text from a character model and music from a piano-roll model with these functions, and plots
:func:`next_symbol_distribution` to show what temperature does:

.. math::  p_\tau(v) = \frac{\exp(z_v / \tau)}{\sum_{u} \exp(z_u / \tau)}

:math:`\tau < 1` sharpens the distribution towards the most likely symbol (:math:`\tau \to 0` is greedy argmax),
:math:`\tau > 1` flattens it towards uniform. Top-k keeps the :math:`k` largest logits and renormalises.

**The step protocol.** A model is sampled one step at a time, so it must expose (as
:class:`rnnkit.models.CharLM` does)::

    model.initial_state(batch_size) -> state          # any object the model understands (tensor, tuple, None)
    model.step(input_t, state) -> (logits, state)     # input_t: (B,) int64 token ids  -> logits (B, V)
                                                      #       or (B, K) float frames   -> logits (B, K) (Bernoulli)

Instead of a model you may pass a plain function ``step(input_t, state) -> (logits, state)`` and, if it needs one,
``initial_state=``. Modules are switched to ``eval()`` while sampling (dropout off) and restored afterwards.

**Reproducibility.** Every random draw comes from one ``torch.Generator``: pass ``seed`` or ``generator``. The same
seed gives the same sample. Draws happen on the generator's device (CPU by default) whatever device the model is on,
so a CPU seed reproduces a GPU model's sample up to floating-point differences in the logits.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from . import _checks

__all__ = ["next_symbol_distribution", "sample_sequence", "sample_piano_roll"]


def _check_temperature(temperature, fn: str) -> float:
    try:
        return _checks.positive_real(fn, "temperature", temperature)
    except ValueError as err:
        raise ValueError(f"{err} (for greedy output use a small temperature such as 1e-4)") from None


def next_symbol_distribution(logits: Tensor, temperature: float = 1.0, top_k: int | None = None) -> Tensor:
    r"""Probabilities :math:`\mathrm{softmax}(z/\tau)` over the last dimension, zero outside the ``top_k`` largest
    logits (ties at the k-th value are all kept). Same shape, device and dtype as ``logits``."""
    fn = "next_symbol_distribution"
    if not isinstance(logits, Tensor) or not logits.is_floating_point():
        raise TypeError(f"{fn}: expected a floating-point tensor of logits, got "
                        f"{logits.dtype if isinstance(logits, Tensor) else type(logits).__name__}")
    if logits.dim() == 0:
        raise ValueError(f"{fn}: expected logits with a vocabulary dimension (..., V), got a 0-d tensor")
    temperature = _check_temperature(temperature, fn)
    top_k = _checks.optional_int(fn, "top_k", top_k, 1)
    # A NaN, a +inf or a row of only -inf has no distribution: softmax would return NaN and the sampler would draw
    # garbage silently, so name the first bad row instead.
    bad = torch.isnan(logits).any(-1) | torch.isposinf(logits).any(-1) | torch.isneginf(logits).all(-1)  # (...,)
    if bool(bad.any()):
        row = tuple(int(i) for i in bad.nonzero()[0])
        raise ValueError(f"{fn}: expected finite logits (-inf allowed for masked symbols, but not a whole row); "
                         f"logits{list(row)} = {logits[row].tolist()[:8]}{' ...' if logits.shape[-1] > 8 else ''}")
    # Shift by the largest finite logit first: softmax is unchanged, and z <= 0 cannot overflow to inf (then NaN)
    # when tau is tiny or the logits are huge; tau -> 0 then gives the argmax (ties shared equally).
    top = logits.amax(dim=-1, keepdim=True)  # (..., 1)
    z = (logits - torch.where(torch.isfinite(top), top, torch.zeros_like(top))) / temperature  # (..., V)
    if top_k is not None and top_k < z.shape[-1]:
        kth = torch.topk(z, top_k, dim=-1).values[..., -1:]  # (..., 1) the k-th largest
        z = z.masked_fill(z < kth, float("-inf"))
    return torch.softmax(z, dim=-1)


def _resolve_step(model, initial_state, batch_size: int, fn: str):
    """(step function, initial state, module or None) from a model object or a bare step function."""
    if hasattr(model, "step") and callable(model.step):
        step = model.step
        if initial_state is None:
            if not callable(getattr(model, "initial_state", None)):
                raise TypeError(f"{fn}: expected the model to define initial_state(batch_size), or pass initial_state=")
            initial_state = model.initial_state(batch_size)
    elif callable(model):
        step = model
    else:
        raise TypeError(f"{fn}: expected a model with step(input_t, state) -> (logits, state) or such a function, "
                        f"got {type(model).__name__}")
    return step, initial_state, model if isinstance(model, nn.Module) else None


@contextlib.contextmanager
def _eval_mode(module: nn.Module | None):
    if module is None:
        yield
        return
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


def _check_logits(logits, batch: int, fn: str, width: int | None = None) -> Tensor:
    if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != batch or (
        width is not None and logits.shape[1] != width
    ):
        got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        want = f"({batch}, {'V' if width is None else width})"
        raise ValueError(f"{fn}: expected step() to return logits of shape {want}, got {got}")
    return logits


@torch.no_grad()
def sample_sequence(
    model: nn.Module | Callable,
    *,
    eos: int | None = None,
    prompt: Sequence[int] | Tensor | None = None,
    max_len: int = 200,
    temperature: float = 1.0,
    top_k: int | None = None,
    num_samples: int = 1,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    initial_state=None,
    device: torch.device | str | None = None,
) -> list[Tensor]:
    """Sample token sequences until ``eos`` or ``max_len`` new tokens.

    The ``prompt`` tokens (default ``[eos]``: EOS doubles as the start symbol, see :mod:`rnnkit.data.text`) are fed
    one by one; each further token is drawn from ``next_symbol_distribution(logits, temperature, top_k)`` and fed
    back. ``num_samples`` sequences are drawn in parallel as one batch.

    Returns a list of ``num_samples`` int64 CPU tensors holding the *new* tokens; a sample that stopped on its own
    ends with ``eos`` (``vocab.decode`` stops there), one that hit ``max_len`` does not.
    """
    fn = "sample_sequence"
    temperature = _check_temperature(temperature, fn)
    top_k = _checks.optional_int(fn, "top_k", top_k, 1)
    max_len = _checks.positive_int(fn, "max_len", max_len)
    num_samples = _checks.positive_int(fn, "num_samples", num_samples)
    eos = _checks.optional_int(fn, "eos", eos, 0)
    if prompt is None:
        if eos is None:
            raise ValueError(f"{fn}: expected a prompt or an eos id (the default start symbol), got neither")
        prompt = [eos]
    raw = torch.as_tensor(prompt).flatten()  # (P,) as given: a cast to long first would turn 1.5 into 1 silently
    if raw.numel() == 0:
        raise ValueError(f"{fn}: expected a non-empty prompt")
    fractional = raw.is_floating_point() and not bool((raw == raw.round()).all())
    if raw.is_complex() or raw.dtype == torch.bool or fractional:
        raise TypeError(f"{fn}: expected the prompt to hold integer token ids, got {raw.tolist()[:8]} ({raw.dtype})")
    prompt = raw.long()
    if bool((prompt < 0).any()):
        raise ValueError(f"{fn}: expected token ids >= 0 in the prompt, got {prompt.tolist()[:8]}")
    g = _checks.generator(fn, seed, generator)
    step, state, module = _resolve_step(model, initial_state, num_samples, fn)
    if device is None:
        param = next(module.parameters(), None) if module is not None else None
        device = param.device if param is not None else torch.device("cpu")
    prompt = prompt.to(device)

    with _eval_mode(module):
        for p in prompt:  # teacher-force the prompt
            logits, state = step(p.expand(num_samples), state)  # (B, V)
        out = torch.empty(num_samples, max_len, dtype=torch.long)  # (B, max_len) on CPU
        done = torch.zeros(num_samples, dtype=torch.bool)  # (B,)
        stop_at = torch.full((num_samples,), max_len, dtype=torch.long)  # (B,) length of each sample
        for t in range(max_len):
            logits = _check_logits(logits, num_samples, fn)
            if eos is not None and eos >= logits.shape[1]:  # it could never be drawn: sampling would never stop early
                raise ValueError(f"{fn}: expected eos < the vocabulary size {logits.shape[1]}, got {eos}")
            logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # half -> float32; float64 stays
            probs = next_symbol_distribution(logits, temperature, top_k)  # (B, V)
            token = torch.multinomial(probs.to(g.device), 1, generator=g).flatten().cpu()  # (B,)
            out[:, t] = token
            if eos is not None:
                finished_now = (token == eos) & ~done
                stop_at[finished_now] = t + 1
                done |= finished_now
                if bool(done.all()):
                    break
            if t + 1 < max_len:
                logits, state = step(token.to(device), state)
    return [out[b, : stop_at[b]].clone() for b in range(num_samples)]


@torch.no_grad()
def sample_piano_roll(
    model: nn.Module | Callable,
    num_steps: int,
    *,
    prime: Tensor | None = None,
    mode: str = "bernoulli",
    threshold: float = 0.5,
    temperature: float = 1.0,
    num_samples: int = 1,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    initial_state=None,
    num_keys: int = 88,
    device: torch.device | str | None = None,
) -> list[Tensor]:
    r"""Generate ``num_steps`` frames from a model with independent Bernoulli outputs per key
    (:class:`rnnkit.models.PianoRollModel`, Chung et al. 2014): ``step(frame (B, K), state) -> (logits (B, K), state)``.

    The model first reads a silent frame (its start convention, :math:`x_{-1} = 0`) and then ``prime`` ``(T_0, K)``
    if given; each new frame is drawn from :math:`p_k = \sigma(z_k / \tau)` and fed back:

    * ``mode="bernoulli"``: key ``k`` sounds with probability :math:`p_k`, independently (the model's own
      distribution, and what its NLL measures);
    * ``mode="threshold"``: key ``k`` sounds when :math:`p_k > ` ``threshold`` (deterministic; often gets stuck on
      a chord or in silence, which is instructive).

    Returns ``num_samples`` float32 CPU tensors ``(num_steps, K)`` of 0/1 — the format of
    :func:`rnnkit.data.chorales.load_chorales` — excluding the prime.
    """
    fn = "sample_piano_roll"
    temperature = _check_temperature(temperature, fn)
    if mode not in ("bernoulli", "threshold"):
        raise ValueError(f"{fn}: expected mode 'bernoulli' or 'threshold', got {mode!r}")
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"{fn}: expected 0 < threshold < 1, got {threshold}")
    num_steps = _checks.positive_int(fn, "num_steps", num_steps)
    num_samples = _checks.positive_int(fn, "num_samples", num_samples)
    num_keys = _checks.positive_int(fn, "num_keys", num_keys)
    if prime is not None and (not isinstance(prime, Tensor) or prime.dim() != 2 or prime.shape[1] != num_keys):
        got = tuple(prime.shape) if isinstance(prime, Tensor) else type(prime).__name__
        raise ValueError(f"{fn}: expected prime of shape (T0, {num_keys}), got {got}")
    g = _checks.generator(fn, seed, generator)
    step, state, module = _resolve_step(model, initial_state, num_samples, fn)
    param = next(module.parameters(), None) if module is not None else None
    if device is None:
        device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32

    frame = torch.zeros(num_samples, num_keys, device=device, dtype=dtype)  # (B, K) silent start frame
    with _eval_mode(module):
        logits, state = step(frame, state)
        if prime is not None:
            for row in prime.to(device=device, dtype=dtype):  # (K,)
                logits, state = step(row.expand(num_samples, num_keys), state)
        out = torch.empty(num_steps, num_samples, num_keys, dtype=torch.float32)  # (T, B, K) on CPU
        for t in range(num_steps):
            logits = _check_logits(logits, num_samples, fn, num_keys)
            if bool(torch.isnan(logits).any()):  # sigmoid(+-inf) is a certain key; NaN is no probability at all
                raise ValueError(f"{fn}: expected step() to return logits without NaN, got NaN at (sample, key) "
                                 f"{tuple(int(i) for i in torch.isnan(logits).nonzero()[0])} of frame {t}")
            probs = torch.sigmoid(logits.float() / temperature)  # (B, K)
            if mode == "bernoulli":
                frame = torch.bernoulli(probs.to(g.device), generator=g).cpu()  # (B, K) in {0, 1}
            else:
                frame = (probs > threshold).float().cpu()
            out[t] = frame
            if t + 1 < num_steps:
                logits, state = step(frame.to(device=device, dtype=dtype), state)
    return [out[:, b].clone() for b in range(num_samples)]
