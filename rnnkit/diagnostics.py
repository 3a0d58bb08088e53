r"""Gradient and gate diagnostics for recurrent networks: what chapters 2-4 of the book plot.

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

Chapters 3 and 4 (LSTM, GRU) use :func:`gate_traces` (gate activations over a sequence, for heatmaps) and
:func:`gate_saturation` (how often each gate sits near 0 or 1).

Every function works with ``rnnkit`` layers and with the matching ``torch.nn`` modules (same parameter names and gate
order) and follows the input's device and dtype. Sequences are time-major ``(T, B, F)``; pass ``batch_first=True``
for ``(B, T, F)``.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import torch
from torch import Tensor, nn

from . import _checks, cells

__all__ = [
    "StepGradNorms",
    "GateTraces",
    "SaturationStats",
    "hidden_grad_norms",
    "step_jacobians",
    "jacobian_product_norms",
    "spectral_radius",
    "with_spectral_radius",
    "gate_traces",
    "gate_saturation",
    "stack_gates",
]

State = Tensor | tuple[Tensor, Tensor]

# Gates squashed by a sigmoid (values in (0, 1)) and by a tanh (values in (-1, 1)), per cell type.
_SIGMOID_GATES = {"i", "f", "o", "r", "z"}
_TANH_GATES = {"g", "n"}


class StepGradNorms(NamedTuple):
    r"""Per-step gradient norms from :func:`hidden_grad_norms`.

    ``h[t, b]`` is :math:`\|\partial L / \partial h_t\|_2` for sequence ``b`` (the norm runs over every layer and
    direction of the state at step ``t``); ``c`` is the same for an LSTM's cell state and ``None`` otherwise.
    Both are gradients with respect to the state *carried to step t+1*: a loss that reads only the outputs ``h``
    gives ``c[T-1] == 0``, because the last cell state influences nothing after the last step.
    """

    h: Tensor  # (T, B)
    c: Tensor | None  # (T, B) for LSTM


class GateTraces(NamedTuple):
    """Gate activations over a sequence, from :func:`gate_traces`.

    ``kind`` is ``"LSTM"`` or ``"GRU"``; ``gates`` maps each field of :class:`rnnkit.cells.LSTMGates`
    (``i, f, g, o, c, h``) or :class:`rnnkit.cells.GRUGates` (``r, z, n, h``) to a ``(T, B, H)`` tensor.
    """

    kind: str
    gates: dict[str, Tensor]


class SaturationStats(NamedTuple):
    """Fractions of activations of one gate that are left-saturated (near the lower end of the range), right-saturated
    (near the upper end) or in between; the three add up to one. The thresholds follow Karpathy et al. (2015):
    a sigmoid gate below 0.1 / above 0.9, a tanh gate below -0.8 / above 0.8."""

    left: float
    right: float
    middle: float


# ----------------------------------------------------------------------------------------------------------------------
# helpers


def _recurrent_module_kind(module: nn.Module) -> str:
    """``"RNN"``, ``"LSTM"`` or ``"GRU"`` for a recurrent *layer* (torch.nn's ``mode`` is ``"RNN_TANH"``, ...)."""
    mode = getattr(module, "mode", None)
    if hasattr(module, "num_layers") and isinstance(mode, str) and mode.split("_")[0] in ("RNN", "LSTM", "GRU"):
        return mode.split("_")[0]
    # the single-step *Cell modules have another forward signature
    raise TypeError(f"expected an RNN, LSTM or GRU layer (rnnkit or torch.nn), got {type(module).__name__}")


def _time_major(x: Tensor, batch_first: bool, who: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{who}: expected input to be a Tensor, got {type(x).__name__}")
    if x.dim() == 2:  # unbatched (T, F)
        return x.unsqueeze(1)  # (T, 1, F)
    if x.dim() != 3:
        raise ValueError(f"{who}: expected input of shape (T, B, F) or (T, F), got {tuple(x.shape)}")
    return x.transpose(0, 1) if batch_first else x


def _state_tensors(state: State) -> tuple[Tensor, ...]:
    return tuple(state) if isinstance(state, (tuple, list)) else (state,)


# ----------------------------------------------------------------------------------------------------------------------
# chapter 2: gradients through time


def hidden_grad_norms(
    module: nn.Module,
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
    kind = _recurrent_module_kind(module)
    if getattr(module, "bidirectional", False):
        raise ValueError(f"hidden_grad_norms: expected a unidirectional {kind}, got bidirectional=True "
                         "(a backward direction has no per-step state to step through)")
    if batch_first is None:
        batch_first = bool(getattr(module, "batch_first", False))
    xs = _time_major(x, batch_first, "hidden_grad_norms")  # (T, B, I)
    if xs.size(0) == 0:
        raise ValueError("hidden_grad_norms: expected a sequence with at least one time step, got T = 0")
    module_batch_first = bool(getattr(module, "batch_first", False))

    if kind == "LSTM" and hx is not None:
        _checks.state_pair("hidden_grad_norms", hx)  # the module checks the shapes; a lone tensor must not be split
    if hx is None:
        zeros = xs.new_zeros(module.num_layers, xs.size(1), module.hidden_size)  # (layers, B, H)
        # torch.nn.LSTM(proj_size=P) carries h of size P and c of size H
        h0 = xs.new_zeros(module.num_layers, xs.size(1), getattr(module, "proj_size", 0) or module.hidden_size)
        hx = (h0, zeros) if kind == "LSTM" else zeros
    elif x.dim() == 2:  # unbatched state (layers, H) -> (layers, 1, H)
        hx = tuple(s.unsqueeze(1) for s in hx) if kind == "LSTM" else hx.unsqueeze(1)
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


# ----------------------------------------------------------------------------------------------------------------------
# chapters 3 and 4: gates


def _layer_weights(module: nn.Module, layer: int, suffix: str) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    w_ih = getattr(module, f"weight_ih_l{layer}{suffix}")
    w_hh = getattr(module, f"weight_hh_l{layer}{suffix}")
    b_ih = getattr(module, f"bias_ih_l{layer}{suffix}", None)
    b_hh = getattr(module, f"bias_hh_l{layer}{suffix}", None)
    return w_ih, w_hh, b_ih, b_hh


def _run_gates(kind: str, xs: Tensor, hx: State, weights, reset_after: bool, reverse: bool) -> dict[str, list[Tensor]]:
    steps = range(xs.size(0) - 1, -1, -1) if reverse else range(xs.size(0))
    trace: dict[str, list[Tensor]] = {}
    state = hx
    for t in steps:
        if kind == "LSTM":
            g = cells.lstm_gates(xs[t], state, *weights)
            state = (g.h, g.c)
        else:
            g = cells.gru_gates(xs[t], state, *weights, reset_after=reset_after)
            state = g.h
        for name, value in g._asdict().items():
            trace.setdefault(name, []).append(value)
    if reverse:
        for values in trace.values():
            values.reverse()
    return trace


@torch.no_grad()
def gate_traces(
    module: nn.Module,
    x: Tensor,
    hx: State | None = None,
    *,
    layer: int = 0,
    direction: int = 0,
    batch_first: bool | None = None,
) -> GateTraces:
    r"""Gate activations of one layer of an LSTM or GRU over a sequence, for heatmaps and saturation statistics.

    Recomputes the layer with :func:`rnnkit.cells.lstm_gates` / :func:`rnnkit.cells.gru_gates` from the module's
    parameters (``weight_ih_l{k}``, ... in torch.nn naming), so it works for ``rnnkit`` and ``torch.nn`` modules alike.
    Layers below ``layer`` are run to produce its input (dropout between layers is an evaluation-mode identity here).

    Args:
        module: an ``LSTM`` or ``GRU`` (``rnnkit`` or ``torch.nn``) without projections.
        x: input ``(T, B, I)`` (``(B, T, I)`` with ``batch_first``) or unbatched ``(T, I)``.
        hx: initial state as the module takes it (``(layers*dirs, B, H)``, a pair for LSTM) or ``None`` for zeros.
        layer: which layer to trace.
        direction: 0 (forward) or 1 (the reverse direction of a bidirectional module).

    Returns:
        :class:`GateTraces`; each tensor is ``(T, B, H)``, time-major, aligned with the input's time steps.
    """
    kind = _recurrent_module_kind(module)
    if kind not in ("LSTM", "GRU"):
        raise ValueError(f"gate_traces: expected an LSTM or GRU module, got {kind} (a plain RNN has no gates)")
    if getattr(module, "proj_size", 0):
        raise ValueError("gate_traces: LSTM with proj_size > 0 is not supported")
    num_layers = int(module.num_layers)
    num_dirs = 2 if module.bidirectional else 1
    if not 0 <= layer < num_layers:
        raise ValueError(f"gate_traces: expected 0 <= layer < {num_layers}, got {layer}")
    if direction not in range(num_dirs):
        raise ValueError(f"gate_traces: expected direction in {list(range(num_dirs))} for this module, got {direction}")
    if batch_first is None:
        batch_first = bool(getattr(module, "batch_first", False))
    xs = _time_major(x, batch_first, "gate_traces")  # (T, B, I)
    if xs.size(-1) != module.input_size:
        raise ValueError(f"gate_traces: expected input with {module.input_size} features (input_size), "
                         f"got {xs.size(-1)}")
    _checks.dtype_device("gate_traces", "input", xs, module.weight_ih_l0, "the parameters'")
    B, H = xs.size(1), module.hidden_size
    if x.dim() == 2:
        shape, layout = (num_layers * num_dirs, H), "(num_layers * num_directions, hidden_size) for unbatched input"
    else:
        shape, layout = (num_layers * num_dirs, B, H), "(num_layers * num_directions, batch, hidden_size)"
    hx = _checks.initial_state("gate_traces", kind == "LSTM", hx, shape, layout, xs)  # zeros if None
    if x.dim() == 2:  # unbatched state (layers*dirs, H) -> (layers*dirs, 1, H)
        hx = tuple(s.unsqueeze(1) for s in hx) if kind == "LSTM" else hx.unsqueeze(1)
    reset_after = bool(getattr(module, "reset_after", True))

    inp = xs
    for k in range(layer + 1):
        outs = []
        for d in range(num_dirs):
            if k == layer and d != direction:
                continue
            idx = k * num_dirs + d
            h0 = (hx[0][idx], hx[1][idx]) if kind == "LSTM" else hx[idx]
            weights = _layer_weights(module, k, "_reverse" if d == 1 else "")
            trace = _run_gates(kind, inp, h0, weights, reset_after, reverse=d == 1)
            if k == layer:
                gates = {name: torch.stack(values) for name, values in trace.items()}  # (T, B, H) each
                if x.dim() == 2:
                    gates = {name: v.squeeze(1) for name, v in gates.items()}
                return GateTraces(kind, gates)
            outs.append(torch.stack(trace["h"]))  # (T, B, H)
        inp = torch.cat(outs, dim=-1)  # (T, B, dirs*H)
    raise AssertionError("unreachable")


def gate_saturation(
    traces: GateTraces,
    *,
    sigmoid_thresholds: tuple[float, float] = (0.1, 0.9),
    tanh_thresholds: tuple[float, float] = (-0.8, 0.8),
    mask: Tensor | None = None,
) -> dict[str, SaturationStats]:
    """Fraction of left-saturated, right-saturated and unsaturated activations of every gate in ``traces``.

    Args:
        traces: from :func:`gate_traces`.
        sigmoid_thresholds: (low, high) for the sigmoid gates ``i, f, o`` (LSTM) and ``r, z`` (GRU).
        tanh_thresholds: (low, high) for the tanh candidates ``g`` (LSTM) and ``n`` (GRU).
        mask: optional ``(T, B)`` boolean tensor of valid steps (padding excluded).

    Returns:
        ``{gate name: SaturationStats}`` for the gates only (the states ``c`` and ``h`` are not gates).
    """
    stats: dict[str, SaturationStats] = {}
    for name, values in traces.gates.items():
        if name in _SIGMOID_GATES:
            lo, hi = sigmoid_thresholds
        elif name in _TANH_GATES:
            lo, hi = tanh_thresholds
        else:
            continue
        if not lo < hi:
            raise ValueError(f"gate_saturation: expected low < high thresholds, got ({lo}, {hi})")
        v = values
        if mask is not None:
            if mask.shape != values.shape[:-1]:
                raise ValueError(f"gate_saturation: expected mask of shape {tuple(values.shape[:-1])}, "
                                 f"got {tuple(mask.shape)}")
            v = values[mask.to(device=values.device, dtype=torch.bool)]  # (N_valid, H)
        n = v.numel()
        if n == 0:
            raise ValueError("gate_saturation: no activations to count (empty sequence or all-False mask)")
        left = float((v < lo).sum()) / n
        right = float((v > hi).sum()) / n
        stats[name] = SaturationStats(left, right, 1.0 - left - right)
    return stats


def stack_gates(traces: GateTraces, names: Sequence[str], batch: int = 0) -> Tensor:
    """``(len(names), T, H)`` tensor of the chosen gates of sequence ``batch`` -- the rows of a gate heatmap."""
    missing = [n for n in names if n not in traces.gates]
    if missing:
        raise ValueError(f"stack_gates: {traces.kind} traces have gates {list(traces.gates)}, not {missing}")
    return torch.stack([traces.gates[n][:, batch] if traces.gates[n].dim() == 3 else traces.gates[n] for n in names])
