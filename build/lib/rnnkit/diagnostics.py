r"""Gradient diagnostics for recurrent networks: what chapter 2 of the book plots (gates: :mod:`rnnkit.gates`).

Chapter 2 (vanishing and exploding gradients) uses

* :func:`hidden_grad_norms` -- the per-time-step norm :math:`\|\partial L / \partial h_t\|` of a loss read at the
  end of a sequence, computed by stepping the module itself one time step at a time;
* :func:`step_jacobians`, :func:`jacobian_product_norms` -- the Jacobians :math:`\partial h_t / \partial h_{t-1}` whose
  product carries that gradient back in time (backpropagation through time),

  .. math::
     \frac{\partial L}{\partial h_t} = \frac{\partial L}{\partial h_T}
        \prod_{k=t+1}^{T} \frac{\partial h_k}{\partial h_{k-1}};

* :func:`spectral_radius`, :func:`with_spectral_radius` -- to set the recurrent matrix's spectral radius below, at
  or above one.

Chapters 3 and 4 also call :func:`hidden_grad_norms` on LSTM and GRU layers; their gate plots use
:mod:`rnnkit.gates`.

Every function works with ``rnnkit`` layers and with the matching ``torch.nn`` modules (same parameter names and gate
order) and follows the input's device and dtype. Sequences are time-major ``(T, B, F)``; pass ``batch_first=True``
for ``(B, T, F)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from . import _recurrent
from ._recurrent import RecurrentLayer, State

__all__ = [
    "StepGradNorms",
    "hidden_grad_norms",
    "step_jacobians",
    "jacobian_product_norms",
    "spectral_radius",
    "with_spectral_radius",
]

class StepGradNorms(NamedTuple):
    r"""Per-step gradient norms from :func:`hidden_grad_norms`.

    ``h[t, b]`` is :math:`\|\partial L / \partial h_t\|_2` for sequence ``b`` (the norm runs over every layer and
    direction of the state at step ``t``); ``c`` is the same for an LSTM's cell state and ``None`` otherwise.
    Both are gradients with respect to the state *carried to step t+1*: a loss that reads only the outputs ``h``
    gives ``c[T-1] == 0``, because the last cell state influences nothing after the last step.
    """

    h: Tensor  # (T, B)
    c: Tensor | None  # (T, B) for LSTM


# ----------------------------------------------------------------------------------------------------------------------
# helpers


def _state_tensors(state: State) -> tuple[Tensor, ...]:
    return tuple(state) if isinstance(state, (tuple, list)) else (state,)


# ----------------------------------------------------------------------------------------------------------------------
# chapter 2: gradients through time


def hidden_grad_norms(
    module: RecurrentLayer,
    x: Tensor,
    hx: State | None = None,
    loss_fn: Callable[[Tensor], Tensor] | None = None,
    *,
    batch_first: bool | None = None,
) -> StepGradNorms:
    r"""Norm of the gradient of a loss with respect to the hidden state at every time step.

    The module (``rnnkit`` or ``torch.nn`` ``RNN``/``LSTM``/``GRU``, unidirectional, any number of layers) is run one
    step at a time with its own ``forward``, so that each state :math:`h_t` is a tensor of the graph whose gradient
    autograd can return; the loss sees only the outputs. With the default loss :math:`L = \sum_b \sum_j h_{T,j}^{(b)}`
    (read at the last step only) the curve shows how far back in time the error signal reaches:
    :math:`\partial L / \partial h_t` is the product of the step Jacobians from :math:`T` down to :math:`t+1`.

    Args:
        module: the recurrent layer; not modified (its parameters' ``.grad`` is left untouched).
        x: input ``(T, B, I)`` (or ``(B, T, I)`` with ``batch_first``) or unbatched ``(T, I)``.
        hx: initial state as the module takes it, or ``None`` for zeros.
        loss_fn: maps the top-layer outputs ``(T, B, H)`` to a scalar; default ``outputs[-1].sum()``.
        batch_first: defaults to the module's own ``batch_first``.

    Returns:
        :class:`StepGradNorms` with ``h`` (and ``c`` for an LSTM) of shape ``(T, B)``; ``h[t]`` is the gradient with
        respect to the state *after* step ``t``.
    """
    kind = _recurrent.recurrent_kind(module)
    if getattr(module, "bidirectional", False):
        raise ValueError(f"hidden_grad_norms: expected a unidirectional {kind}, got bidirectional=True "
                         "(a backward direction has no per-step state to step through)")
    if batch_first is None:
        batch_first = bool(getattr(module, "batch_first", False))
    xs = _recurrent.time_major(x, batch_first, "hidden_grad_norms")  # (T, B, I)
    if xs.size(0) == 0:
        raise ValueError("hidden_grad_norms: expected a sequence with at least one time step, got T = 0")
    module_batch_first = bool(getattr(module, "batch_first", False))

    hx = _recurrent.initial_state("hidden_grad_norms", module, hx, xs, batched=x.dim() == 3)  # (layers, B, H)
    # a state that requires grad keeps every h_t in the graph even when the parameters are frozen
    start = tuple(s.detach().requires_grad_(True) for s in _state_tensors(hx))
    state = start if kind == "LSTM" else start[0]
    states: list[tuple[Tensor, ...]] = []
    outputs = []
    with torch.enable_grad():
        for t in range(xs.size(0)):
            step_in = xs[t : t + 1]  # (1, B, I)
            if module_batch_first:
                step_in = step_in.transpose(0, 1)  # (B, 1, I)
            _, state = module(step_in, state)
            parts = _state_tensors(state)  # each (layers, B, H); autograd.grad returns their gradients below
            states.append(parts)
            state = parts if kind == "LSTM" else parts[0]
            outputs.append(state[0][-1] if kind == "LSTM" else state[-1])  # top layer (B, H)
        out_seq = torch.stack(outputs)  # (T, B, H)
        loss = out_seq[-1].sum() if loss_fn is None else loss_fn(out_seq)
        if not isinstance(loss, Tensor) or loss.dim() != 0:
            got = f"shape {tuple(loss.shape)}" if isinstance(loss, Tensor) else type(loss).__name__
            raise ValueError(f"hidden_grad_norms: expected loss_fn to return a scalar Tensor, got {got}")
        flat = [p for parts in states for p in parts]
        grads = torch.autograd.grad(loss, flat, allow_unused=True)

    def norms(which: int) -> Tensor:
        rows = []
        n_parts = len(states[0])
        for t in range(len(states)):
            g = grads[t * n_parts + which]
            ref = states[t][which]  # (layers, B, H)
            if g is None:
                g = torch.zeros_like(ref)
            rows.append(g.transpose(0, 1).reshape(ref.size(1), -1).norm(dim=1))  # (B,)
        return torch.stack(rows).detach()  # (T, B)

    h = norms(0)
    c = norms(1) if kind == "LSTM" else None
    return StepGradNorms(h, c)


def step_jacobians(
    step_fn: Callable[[Tensor, Tensor], Tensor],
    x: Tensor,
    h0: Tensor,
) -> Tensor:
    r"""Jacobians :math:`J_t = \partial h_t / \partial h_{t-1}` along a trajectory.

    Args:
        step_fn: one recurrence step ``h_new = step_fn(x_t, h)`` with ``x_t`` ``(B, I)`` and ``h`` ``(B, S)``, e.g.
            ``lambda x, h: rnnkit.cells.rnn_cell(x, h, w_ih, w_hh)``. For an LSTM pass the state as one ``(B, 2H)``
            tensor ``[h, c]`` and split it inside ``step_fn`` to get the full state Jacobian.
        x: inputs ``(T, B, I)``.
        h0: initial state ``(B, S)``.

    Returns:
        ``(T, B, S, S)``: ``J[t, b]`` is the Jacobian of step ``t`` (taken at the state it was applied to) for
        sequence ``b``. Row ``i`` holds the derivatives of output unit ``i``.
    """
    if x.dim() != 3:
        raise ValueError(f"step_jacobians: expected x of shape (T, B, I), got {tuple(x.shape)}")
    if h0.dim() != 2 or h0.size(0) != x.size(1):
        raise ValueError(f"step_jacobians: expected h0 of shape (B, S) with B = {x.size(1)}, got {tuple(h0.shape)}")
    jacs = []
    h = h0.detach()
    with torch.enable_grad():
        for t in range(x.size(0)):
            x_t = x[t].detach()

            def f(h_in: Tensor, x_t: Tensor = x_t) -> Tensor:
                # summing over the batch keeps per-sequence Jacobians separate: sequences do not interact
                return step_fn(x_t, h_in).sum(0)  # (S,)

            jac = torch.autograd.functional.jacobian(f, h, vectorize=True)  # (S, B, S)
            jacs.append(jac.permute(1, 0, 2))  # (B, S, S)
            h = step_fn(x_t, h).detach()
    return torch.stack(jacs)  # (T, B, S, S)


def jacobian_product_norms(jacobians: Tensor) -> Tensor:
    r"""Spectral norms of the backward products :math:`\|J_T J_{T-1} \cdots J_{t+1}\|_2` for every ``t``.

    Args:
        jacobians: ``(T, B, S, S)`` from :func:`step_jacobians`.

    Returns:
        ``(T, B)``: entry ``t`` is the norm of the product of the Jacobians of the steps after ``t``
        (entry ``T-1``, the empty product, is 1). It bounds how much :math:`\partial L / \partial h_{T-1}` can be
        amplified or shrunk on its way back to :math:`h_t`.
    """
    if jacobians.dim() != 4 or jacobians.size(-1) != jacobians.size(-2):
        raise ValueError(f"jacobian_product_norms: expected (T, B, S, S), got {tuple(jacobians.shape)}")
    T, B, S, _ = jacobians.shape
    prod = torch.eye(S, dtype=jacobians.dtype, device=jacobians.device).expand(B, S, S)
    out = jacobians.new_empty(T, B)
    out[T - 1] = 1.0
    for t in range(T - 1, 0, -1):
        prod = prod @ jacobians[t]  # (B, S, S): dh_{T-1} / dh_{t-1}
        out[t - 1] = torch.linalg.matrix_norm(prod, ord=2)
    return out


def spectral_radius(weight: Tensor) -> float:
    r"""Largest absolute eigenvalue :math:`\rho(W) = \max_i |\lambda_i(W)|` of a square matrix.

    For a tanh RNN, :math:`\rho(W_{hh}) < 1` is sufficient for gradients to vanish over long spans
    (:math:`|\tanh'| \le 1`), and :math:`\rho(W_{hh}) > 1` is necessary for them to explode
    (Pascanu et al., 2013).
    """
    if weight.dim() != 2 or weight.size(0) != weight.size(1):
        raise ValueError(f"spectral_radius: expected a square matrix, got shape {tuple(weight.shape)}")
    return float(torch.linalg.eigvals(weight.detach().to(torch.float64)).abs().max())


def with_spectral_radius(weight: Tensor, rho: float) -> Tensor:
    """Return ``weight`` rescaled so that its spectral radius is ``rho`` (same device and dtype)."""
    if rho < 0:
        raise ValueError(f"with_spectral_radius: expected rho >= 0, got {rho}")
    current = spectral_radius(weight)
    if current == 0.0:
        raise ValueError("with_spectral_radius: the matrix has spectral radius 0 and cannot be rescaled")
    return weight * (rho / current)
