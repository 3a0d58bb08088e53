"""What every reader of a recurrent layer shares, for ``rnnkit`` and ``torch.nn`` modules alike: the state type, the
kind of a layer, its weights per layer and direction, the time-major view of an input, and the initial state.

:mod:`rnnkit.layers`, :mod:`rnnkit.gates` and :mod:`rnnkit.diagnostics` all call these instead of rebuilding them, so
a layer is walked one way everywhere (torch.nn's parameter names ``weight_ih_l{k}[_reverse]``, ...).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from . import _checks

__all__ = ["State", "RecurrentLayer", "map_state", "state_at", "recurrent_kind", "num_directions", "layer_weights",
           "time_major", "initial_state"]

# a GRU/RNN state is one tensor, an LSTM state the pair (h, c)
State = Tensor | tuple[Tensor, Tensor]
# an RNN/LSTM/GRU layer of rnnkit or torch.nn: its sizes and weights are read by name (nn.Module's __getattr__ types
# every attribute as Tensor | Module, so the type checker cannot follow them)
RecurrentLayer = Any
Weights = tuple[Tensor, Tensor, "Tensor | None", "Tensor | None"]


def map_state(state: State, fn: Callable[[Tensor], Tensor]) -> State:
    """``fn`` applied to the tensor of a state, or to both tensors of an LSTM's ``(h, c)``."""
    return tuple(fn(t) for t in state) if isinstance(state, tuple) else fn(state)  # type: ignore[return-value]


def state_at(state: State, index: int) -> State:
    """Row ``index`` of a stacked state ``(L * D, B, H)`` (of both tensors for an LSTM): ``(B, H)``."""
    return map_state(state, lambda t: t[index])


def recurrent_kind(module: RecurrentLayer) -> str:
    """``"RNN"``, ``"LSTM"`` or ``"GRU"`` for a recurrent *layer* (torch.nn's ``mode`` is ``"RNN_TANH"``, ...)."""
    mode = getattr(module, "mode", None)
    if hasattr(module, "num_layers") and isinstance(mode, str) and mode.split("_")[0] in ("RNN", "LSTM", "GRU"):
        return mode.split("_")[0]
    # the single-step *Cell modules have another forward signature
    raise TypeError(f"expected an RNN, LSTM or GRU layer (rnnkit or torch.nn), got {type(module).__name__}")


def num_directions(module: RecurrentLayer) -> int:
    return 2 if module.bidirectional else 1


def layer_weights(module: RecurrentLayer, layer: int, direction: int) -> Weights:
    """``(w_ih, w_hh, b_ih, b_hh)`` of one layer and direction (0 forward, 1 reverse); biases are None without bias."""
    suffix = f"_l{layer}" + ("_reverse" if direction == 1 else "")
    return (getattr(module, "weight_ih" + suffix), getattr(module, "weight_hh" + suffix),
            getattr(module, "bias_ih" + suffix, None), getattr(module, "bias_hh" + suffix, None))


def time_major(x: Tensor, batch_first: bool, who: str) -> Tensor:
    """``(T, B, F)`` view of a batched input (``(B, T, F)`` with ``batch_first``) or of an unbatched ``(T, F)`` one."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{who}: expected input to be a Tensor, got {type(x).__name__}")
    if x.dim() == 2:  # unbatched (T, F)
        return x.unsqueeze(1)  # (T, 1, F)
    if x.dim() != 3:
        raise ValueError(f"{who}: expected input of shape (T, B, F) or (T, F), got {tuple(x.shape)}")
    return x.transpose(0, 1) if batch_first else x


def initial_state(who: str, module: RecurrentLayer, hx: object, x: Tensor, batched: bool) -> State:
    """The state a stacked layer starts from, batched: ``(L * D, B, H)`` (a pair for the LSTM).

    ``hx=None`` gives zeros like ``x`` (time-major ``(T, B, .)``); otherwise ``hx`` is checked against the shape the
    module takes -- ``(L * D, B, H)``, or ``(L * D, H)`` when the input is unbatched -- and made batched. A
    ``torch.nn.LSTM`` with ``proj_size = P`` carries ``h`` of size ``P`` and ``c`` of size ``H``.
    """
    is_lstm = recurrent_kind(module) == "LSTM"
    lead: tuple[int, ...] = (module.num_layers * num_directions(module),) + ((x.shape[1],) if batched else ())
    hidden: tuple[int, ...] = (module.hidden_size,)
    h_size: tuple[int, ...] = (getattr(module, "proj_size", 0) or module.hidden_size,)
    layout = ("(num_layers * num_directions, batch, hidden_size)" if batched
              else "(num_layers * num_directions, hidden_size) for unbatched input")
    state: State = _checks.initial_state(who, is_lstm, hx, lead + h_size, layout, x, c_shape=lead + hidden)
    return state if batched else map_state(state, lambda t: t.unsqueeze(1))  # (L * D, B, H)
