r"""Gate activity of LSTM and GRU layers: what the heatmaps and saturation tables of chapters 3 and 4 show.

* :func:`gate_traces` recomputes one layer step by step with :func:`rnnkit.cells.lstm_gates` /
  :func:`rnnkit.cells.gru_gates` and keeps every gate activation, ``(T, B, H)`` each;
* :func:`gate_saturation` counts how often each gate sits near the ends of its range (Karpathy et al. 2015);
* :func:`stack_gates` picks the rows of a heatmap.

Every function works with ``rnnkit`` layers and with the matching ``torch.nn`` modules (same parameter names and gate
order) and follows the input's device and dtype. Sequences are time-major ``(T, B, F)``; pass ``batch_first=True``
for ``(B, T, F)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from . import _checks, _recurrent, cells
from ._recurrent import RecurrentLayer, State
from .cells import GRUGates, LSTMGates
from .recurrence import scan

__all__ = ["GateTraces", "SaturationStats", "gate_traces", "gate_saturation", "stack_gates"]

# Gates squashed by a sigmoid (values in (0, 1)) and by a tanh (values in (-1, 1)), per cell type.
_SIGMOID_GATES = {"i", "f", "o", "r", "z"}
_TANH_GATES = {"g", "n"}


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



def _run_gates(kind: str, xs: Tensor, hx: State, weights, reset_after: bool, reverse: bool) -> dict[str, Tensor]:
    """Every gate and state of one direction over ``xs (T, B, I)``: ``{name: (T, B, H)}`` in time order."""
    def step(t: int, x_t: Tensor, state: Any) -> tuple[State, LSTMGates | GRUGates]:
        if kind == "LSTM":
            lstm = cells.lstm_gates(x_t, state, *weights)
            return (lstm.h, lstm.c), lstm
        gru = cells.gru_gates(x_t, state, weights[0], weights[1], weights[2], weights[3], reset_after=reset_after)
        return gru.h, gru

    per_step, _ = scan(step, xs.unbind(0), hx, reverse=reverse)
    return {name: torch.stack([getattr(g, name) for g in per_step]) for name in per_step[0]._fields}


@torch.no_grad()
def gate_traces(
    module: RecurrentLayer,
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
    kind = _recurrent.recurrent_kind(module)
    if kind not in ("LSTM", "GRU"):
        raise ValueError(f"gate_traces: expected an LSTM or GRU module, got {kind} (a plain RNN has no gates)")
    if getattr(module, "proj_size", 0):
        raise ValueError("gate_traces: LSTM with proj_size > 0 is not supported")
    num_layers = int(module.num_layers)
    num_dirs = _recurrent.num_directions(module)
    if not 0 <= layer < num_layers:
        raise ValueError(f"gate_traces: expected 0 <= layer < {num_layers}, got {layer}")
    if direction not in range(num_dirs):
        raise ValueError(f"gate_traces: expected direction in {list(range(num_dirs))} for this module, got {direction}")
    if batch_first is None:
        batch_first = bool(getattr(module, "batch_first", False))
    xs = _recurrent.time_major(x, batch_first, "gate_traces")  # (T, B, I)
    if xs.size(-1) != module.input_size:
        raise ValueError(f"gate_traces: expected input with {module.input_size} features (input_size), "
                         f"got {xs.size(-1)}")
    _checks.dtype_device("gate_traces", "input", xs, module.weight_ih_l0, "the parameters'")
    hx = _recurrent.initial_state("gate_traces", module, hx, xs, batched=x.dim() == 3)  # (L * D, B, H)
    reset_after = bool(getattr(module, "reset_after", True))

    inp = xs
    for k in range(layer):  # the layers below feed the traced one
        outs = []
        for d in range(num_dirs):
            h0 = _recurrent.state_at(hx, k * num_dirs + d)  # (B, H)
            weights = _recurrent.layer_weights(module, k, d)
            outs.append(_run_gates(kind, inp, h0, weights, reset_after, reverse=d == 1)["h"])  # (T, B, H)
        inp = torch.cat(outs, dim=-1)  # (T, B, dirs*H)
    h0 = _recurrent.state_at(hx, layer * num_dirs + direction)
    weights = _recurrent.layer_weights(module, layer, direction)
    gates = _run_gates(kind, inp, h0, weights, reset_after, reverse=direction == 1)  # (T, B, H) each
    if x.dim() == 2:
        gates = {name: v.squeeze(1) for name, v in gates.items()}
    return GateTraces(kind, gates)


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
