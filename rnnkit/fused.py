r"""The fast backend: one direction of one recurrent layer as a single ``torch.autograd.Function``.

Same arguments and results as :func:`rnnkit.recurrence.run_direction` (the readable loop of chapter 1); layers pick it
with ``backend="fused"`` (the default). What makes it fast, as measured by ``python -m rnnkit.bench`` and shown in the
book page "How fast is rnnkit?":

* **One GEMM for every input projection** ``x.reshape(T*B, I) @ W_ih^T`` and **one small GEMM per step** for the
  hidden projection, each in the kernel measured fastest for the layer's shapes at its first call
  (:func:`gemm_choice`): oneDNN or MKL called from Python once per step, or MKL's gemm called from a compiled loop.
* **One compiled element-wise kernel per step** on the CPU (``rnnkit._kernels``, ``_kernels.c``, built with the
  system C compiler at first use): the gate non-linearities, the state update and, in backward, every gate gradient
  in one pass over the step, vectorised and split over PyTorch's own threads. Where the measurement chooses it, the
  whole direction (or backward chunk) runs in one compiled call instead: each thread takes its own batch rows
  through every step, its rows' product then the kernel, since a row's step needs only that row's previous state --
  no Python and no wait between steps. Where the compiled kernels are unavailable (CUDA, no compiler,
  ``RNNKIT_FUSED_KERNELS=torch``) the same equations run as a few PyTorch operators per step, with every factor that
  does not depend on the incoming gradient computed for all steps before the backward loop.
* **Hand-written backward through time.** Autograd would record every gate operation of every step; here backward is
  one loop over ``t = T-1, ..., 0`` with one GEMM per step (two for the reset-before GRU). The gradients are written
  over the buffers forward saved when the graph is not kept (no new memory), else into a reused buffer a chunk of
  steps at a time (``rnnkit._fused_chunks``).
* **Weight gradients as a few large GEMMs** over ``T*B`` rows: ``dW_hh = dG^T H_prev``, ``dW_ih = dG^T X``,
  ``dX = dG W_ih``.
* **No per-step autograd indexing,** which would cost O(T^2) memory traffic.

The cells live in ``_fused_rnn.py``, ``_fused_lstm.py`` and ``_fused_gru.py`` (PyTorch-operator steps) and
``_fused_compiled.py`` (compiled steps); the matrix products and the measured choice of their kernel in
``_fused_gemm.py``, the time bookkeeping and gradient products in ``_fused_common.py``. Double backward is not
implemented (the Functions are ``once_differentiable``). Where the fused path cannot run -- forward-mode AD or functorch
transforms (``vmap``, ``jvp``, ``grad``), which would need rules this module does not define -- the call falls back to
the reference loop and says so once with a ``RuntimeWarning``.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from . import recurrence
from ._fused_common import make_plan
from ._fused_gemm import gemm_choice
from ._fused_gru import FusedGRU, FusedGRUResetBefore
from ._fused_lstm import FusedLSTM
from ._fused_rnn import FusedRNN
from ._kernels import status as kernel_status
from ._recurrent import State

__all__ = ["run_direction", "gemm_choice", "kernel_status"]

try:
    from torch._C._functorch import is_functorch_wrapped_tensor
except ImportError:  # pragma: no cover - every supported torch has it
    is_functorch_wrapped_tensor = None  # type: ignore[assignment]

_warned: set[str] = set()  # reasons already reported: each fallback warns once per process


def _unfusable(tensors: list[Tensor]) -> str | None:
    """Why these inputs cannot go through the fused Functions, or None if they can."""
    for t in tensors:
        if is_functorch_wrapped_tensor is not None and is_functorch_wrapped_tensor(t):
            return "functorch transforms (vmap/grad/jvp)"
        if torch.autograd.forward_ad.unpack_dual(t).tangent is not None:
            return "forward-mode AD (dual tensors)"
    return None


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
    r"""Run one direction of one recurrent layer over a padded, time-major batch (fused).

    The :class:`rnnkit.backends.DirectionRunner` contract, as :func:`rnnkit.recurrence.run_direction`:
    ``x (T, B, I)``, ``hx (B, H)`` or ``(h_0, c_0)``, torch.nn parameter layout, ``lengths`` a CPU int64 ``(B,)``
    tensor or None; returns ``(output (T, B, H), h_n)`` with zeros in ``output`` past each length and ``h_n`` the state
    after each sequence's last valid step. Inputs are validated by the layer (mode, nonlinearity, shapes, dtypes,
    devices).
    """
    states = list(hx) if isinstance(hx, (tuple, list)) else [hx]
    tensors = [x, *states, w_ih, w_hh] + [b for b in (b_ih, b_hh) if b is not None]
    reason = _unfusable(tensors)
    if reason is not None:
        if reason not in _warned:
            _warned.add(reason)
            warnings.warn(
                f"rnnkit fused backend: {reason} not supported by the fused kernels; "
                "falling back to the reference loop (rnnkit.recurrence.run_direction)",
                RuntimeWarning,
                stacklevel=2,
            )
        return recurrence.run_direction(
            mode, x, hx, w_ih, w_hh, b_ih, b_hh,
            lengths=lengths, reverse=reverse, nonlinearity=nonlinearity, reset_after=reset_after,
        )

    # under no_grad (inference) no backward can follow: the cells keep no per-step values only backward reads
    saves = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    plan = make_plan(x, w_ih, w_hh, lengths, reverse, saves)
    if mode == "LSTM":
        h0, c0 = states
        out, h_n, c_n = FusedLSTM.apply(x, h0, c0, w_ih, w_hh, b_ih, b_hh, plan)
        return out, (h_n, c_n)
    if mode == "GRU":
        fn = FusedGRU if reset_after else FusedGRUResetBefore
        return fn.apply(x, states[0], w_ih, w_hh, b_ih, b_hh, plan)
    return FusedRNN.apply(x, states[0], w_ih, w_hh, b_ih, b_hh, plan, nonlinearity == "relu")
