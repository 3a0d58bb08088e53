r"""``RNN``, ``LSTM``, ``GRU`` and their single-step ``*Cell`` modules: drop-in replacements for ``torch.nn``.

Same constructor arguments, parameter names (``weight_ih_l{k}[_reverse]``, ``weight_hh_l{k}``, ``bias_ih_l{k}``,
``bias_hh_l{k}``), gate order, initialisation and ``forward(input, hx=None)`` as ``torch.nn``, so a ``state_dict``
moves both ways. Three additions:

* ``backend``: ``"reference"`` (the per-step loop of :mod:`rnnkit.recurrence` over :mod:`rnnkit.cells`, chapter 1),
  ``"fused"`` (:mod:`rnnkit.fused`, same arguments and results, faster) or ``"torch"`` (``torch.nn``'s own kernels
  run on this module's parameters, for comparison) -- the table :data:`rnnkit.backends.RUNNERS`. It can be changed
  after construction: ``model.backend = "torch"``.
* ``GRU(..., reset_after=False)``: the Cho et al. (2014) / Chung et al. (2014) GRU (chapter 4), not in ``torch.nn``.
* ``forward(input, hx=None, *, lengths=None)``: a padded batch with per-sequence lengths, without packing.

Shapes, with torch.nn's letters (``L`` sequence length, ``N`` batch size, ``H_in`` input size, ``H_out`` hidden size,
``D`` = 2 if bidirectional else 1):

* input: ``(L, N, H_in)``, or ``(N, L, H_in)`` with ``batch_first=True``, or ``(L, H_in)`` unbatched;
* output: ``(L, N, D * H_out)``, or ``(N, L, D * H_out)`` with ``batch_first=True``, or ``(L, D * H_out)`` unbatched;
* ``h_0`` and ``h_n`` (and ``c_0``, ``c_n`` for the LSTM): ``(D * num_layers, N, H_out)``, or
  ``(D * num_layers, H_out)`` unbatched, whatever ``batch_first`` says.

Inside, everything is time-major ``(T, B, .)`` (``T = L``, ``B = N``), the layout the loop runs over.
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from . import _checks, _recurrent
from ._recurrent import State, map_state
from .backends import DEFAULT_BACKEND, RUNNERS

__all__ = ["DEFAULT_BACKEND", "RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell"]


class _Recurrent(nn.Module):
    """What layers and cells share: torch.nn's initialisation, the ``backend`` switch, the GRU variant."""

    mode: str  # "RNN", "LSTM" or "GRU"
    hidden_size: int

    def __init__(self, mode: str, input_size, hidden_size, bias, nonlinearity, reset_after, backend) -> None:
        """Check and store what every layer and cell has; the subclass then creates its parameters."""
        super().__init__()
        name = type(self).__name__
        self.mode = mode
        self.input_size = _checks.positive_int(name, "input_size", input_size)
        self.hidden_size = _checks.positive_int(name, "hidden_size", hidden_size)
        self.bias = _checks.boolean(name, "bias", bias)
        self.nonlinearity = _checks.choice(name, "nonlinearity", nonlinearity, ("tanh", "relu"))
        self.reset_after = _checks.boolean(name, "reset_after", reset_after)
        self.backend = DEFAULT_BACKEND if backend is None else backend
        self._gate_size = {"RNN": 1, "LSTM": 4, "GRU": 3}[mode] * self.hidden_size  # rows of weight_ih / weight_hh

    @property
    def backend(self) -> str:
        return self._backend

    @backend.setter
    def backend(self, value: str) -> None:
        self._backend = _checks.backend(type(self).__name__, value, self.reset_after, tuple(RUNNERS))

    def reset_parameters(self) -> None:
        """torch.nn's initialisation: every parameter uniform in :math:`(-1/\\sqrt{H}, 1/\\sqrt{H})`."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -bound, bound)

    def _extra(self) -> str:
        s = ""
        if self.mode == "RNN" and self.nonlinearity != "tanh":
            s += f", nonlinearity={self.nonlinearity!r}"
        if self.mode == "GRU" and not self.reset_after:
            s += ", reset_after=False"
        return s + f", backend={self.backend!r}"


class _RNNBase(_Recurrent):
    def __init__(self, mode, input_size, hidden_size, num_layers, nonlinearity, bias, batch_first, dropout,
                 bidirectional, device, dtype, backend, reset_after=True) -> None:
        super().__init__(mode, input_size, hidden_size, bias, nonlinearity, reset_after, backend)
        name = type(self).__name__
        self.num_layers = _checks.positive_int(name, "num_layers", num_layers)
        self.batch_first = _checks.boolean(name, "batch_first", batch_first)
        self.bidirectional = _checks.boolean(name, "bidirectional", bidirectional)
        self.dropout = _checks.dropout(name, dropout, self.num_layers)

        gate_size = self._gate_size
        num_directions = 2 if self.bidirectional else 1
        factory = {"device": device, "dtype": dtype}
        self._flat_weights_names: list[str] = []
        # registered in torch.nn's order, so the same seed gives the same initial weights as torch.nn
        for layer in range(self.num_layers):
            layer_input_size = self.input_size if layer == 0 else self.hidden_size * num_directions
            for direction in range(num_directions):
                suffix = f"_l{layer}" + ("_reverse" if direction == 1 else "")
                shapes: dict[str, tuple[int, ...]] = {"weight_ih": (gate_size, layer_input_size),
                                                      "weight_hh": (gate_size, self.hidden_size)}
                if self.bias:
                    shapes.update(bias_ih=(gate_size,), bias_hh=(gate_size,))
                for kind, shape in shapes.items():
                    setattr(self, kind + suffix, nn.Parameter(torch.empty(shape, **factory)))
                    self._flat_weights_names.append(kind + suffix)
        self.reset_parameters()

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        for arg, default in (("bias", True), ("batch_first", False), ("dropout", 0.0), ("bidirectional", False)):
            if getattr(self, arg) != default:
                s += f", {arg}={getattr(self, arg)}"
        return s + self._extra()

    def flatten_parameters(self) -> None:
        """No-op, kept so code written for ``torch.nn`` runs unchanged.

        rnnkit keeps every parameter a separate tensor (so ``.to()``, ``state_dict`` and the reference loop stay
        simple); with ``backend="torch"`` on a GPU, cuDNN therefore copies the weights into one buffer on each call.
        """

    @property
    def all_weights(self) -> list[list[Tensor]]:
        """Parameters grouped per layer and direction, like ``torch.nn.RNNBase.all_weights``."""
        D = _recurrent.num_directions(self)
        return [[w for w in _recurrent.layer_weights(self, k // D, k % D) if w is not None]
                for k in range(self.num_layers * D)]

    def forward(self, input, hx=None, *, lengths=None):
        """Run the whole sequence: ``(output, h_n)``, or ``(output, (h_n, c_n))`` for the LSTM, as ``torch.nn``.

        Args:
            input: a padded tensor (batched, or unbatched ``(L, H_in)``) or a ``PackedSequence``.
            hx: initial state(s) (zeros if ``None``), in the caller's batch order also for an unsorted packed batch.
            lengths: only for a padded tensor: ``N`` lengths in ``[1, L]`` (one for unbatched input), as a 1-D
                integer tensor on any device, a NumPy integer array, or a list of ints.
                Steps at or past ``lengths[n]`` are ignored, output zeros there, and ``h_n`` is each sequence's
                state after its own last step (the backward direction starts there), as with a packed batch.

        Returns:
            ``output`` in the input's form (a ``PackedSequence`` for a packed input, with the same indices) and the
            final state(s) ``(D * num_layers, N, H_out)``.
        """
        name = type(self).__name__
        is_packed = isinstance(input, PackedSequence)
        if is_packed:
            if lengths is not None:
                raise ValueError(f"{name}: lengths= is for a padded tensor; a PackedSequence carries its own lengths")
            _checks.packed(name, input)
            data, batch_sizes, sorted_indices, unsorted_indices = input
            _checks.input_tensor(name, data, {2: "(sum of lengths, H_in)"}, self.input_size, self.weight_ih_l0)
            # padded in the packed (decreasing length) order; lengths is a CPU int64 tensor
            x, lengths = pad_packed_sequence(PackedSequence(data, batch_sizes))  # (T, B, I)
            batched = True
        elif isinstance(input, Tensor):
            layout = "(N, L, H_in)" if self.batch_first else "(L, N, H_in)"
            rank = _checks.input_tensor(name, input, {3: layout, 2: "(L, H_in) (unbatched)"}, self.input_size,
                                        self.weight_ih_l0)
            batched = rank == 3
            if not batched:
                x = input.unsqueeze(1)  # (T, 1, I)
            else:
                x = input.transpose(0, 1) if self.batch_first else input  # (T, B, I)
            if x.shape[0] == 0:
                raise ValueError(f"{name}: expected at least one time step, got input of shape {tuple(input.shape)}")
            sorted_indices = unsorted_indices = None
            lengths = _checks.lengths(name, lengths, x.shape[1], x.shape[0])
        else:
            raise TypeError(f"{name}: expected input as a torch.Tensor or a PackedSequence, "
                            f"got {type(input).__name__}")

        hx = _recurrent.initial_state(name, self, hx, x, batched)  # (L * D, B, H)
        if sorted_indices is not None:  # the caller's hx rows follow the original batch order
            hx = _permute(hx, sorted_indices)
        output, h_n = self._forward_layers(x, hx, lengths)

        if is_packed:
            out_data = pack_padded_sequence(output, lengths).data  # (sum of lengths, D * H)
            output = PackedSequence(out_data, batch_sizes, sorted_indices, unsorted_indices)
            return output, _permute(h_n, unsorted_indices)  # h_n rows back in the caller's order
        if not batched:
            return output.squeeze(1), map_state(h_n, lambda t: t.squeeze(1))  # (T, D * H), (L * D, H)
        return (output.transpose(0, 1) if self.batch_first else output), h_n

    def _forward_layers(self, x: Tensor, hx, lengths: Tensor | None):
        """Layers bottom-up, each direction with the backend's runner (:data:`rnnkit.backends.RUNNERS`)."""
        run = RUNNERS[self.backend]
        D = _recurrent.num_directions(self)
        states = list(zip(*(t.unbind(0) for t in hx), strict=True)) if self.mode == "LSTM" else hx.unbind(0)
        layer_input, finals = x, []  # (T, B, I)
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(D):
                weights = _recurrent.layer_weights(self, layer, direction)
                out, final = run(self.mode, layer_input, states[layer * D + direction], *weights,
                                 lengths=lengths, reverse=direction == 1, nonlinearity=self.nonlinearity,
                                 reset_after=self.reset_after)  # out (T, B, H)
                outputs.append(out)
                finals.append(final)
            layer_input = torch.cat(outputs, dim=-1) if D == 2 else outputs[0]  # (T, B, D * H)
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                layer_input = F.dropout(layer_input, self.dropout, training=True)  # between layers, like torch.nn
        # (L * D, B, H) each; one layer and direction: a view of its own final state, no copy
        stack = (lambda ts: ts[0].unsqueeze(0)) if len(finals) == 1 else torch.stack
        h_n: State
        if self.mode == "LSTM":
            pairs = cast(list[tuple[Tensor, Tensor]], finals)
            h_n = (stack([h for h, _ in pairs]), stack([c for _, c in pairs]))
        else:
            h_n = stack(cast(list[Tensor], finals))
        return layer_input, h_n

def _permute(state, indices: Tensor | None):
    """Reorder the batch dimension (dim 1) of a state, as torch.nn does for PackedSequence batches."""
    return state if indices is None else map_state(state, lambda t: t.index_select(1, indices.to(t.device)))


class RNN(_RNNBase):
    r"""Elman RNN, :math:`h_t = \phi(W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh})` with :math:`\phi` tanh or ReLU.

    ``torch.nn.RNN``'s arguments, parameters and forward, plus ``backend`` and ``forward(..., lengths=)`` (module
    docstring). The step is :func:`rnnkit.cells.rnn_cell` (chapter 1).
    """

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, device=None, dtype=None, *, backend=None) -> None:
        super().__init__("RNN", input_size, hidden_size, num_layers, nonlinearity, bias, batch_first, dropout,
                         bidirectional, device, dtype, backend)


class LSTM(_RNNBase):
    r"""Long short-term memory; the step is :func:`rnnkit.cells.lstm_gates` (chapter 3).

    .. math::
        \begin{aligned}
        i_t &= \sigma(W_{ii} x_t + b_{ii} + W_{hi} h_{t-1} + b_{hi}), \quad
        f_t = \sigma(W_{if} x_t + b_{if} + W_{hf} h_{t-1} + b_{hf}) \\
        g_t &= \tanh(W_{ig} x_t + b_{ig} + W_{hg} h_{t-1} + b_{hg}), \quad
        o_t = \sigma(W_{io} x_t + b_{io} + W_{ho} h_{t-1} + b_{ho}) \\
        c_t &= f_t \odot c_{t-1} + i_t \odot g_t, \quad h_t = o_t \odot \tanh(c_t)
        \end{aligned}

    ``torch.nn.LSTM``'s arguments and forward (``hx`` is the pair ``(h_0, c_0)``), except ``proj_size``, which only
    accepts 0 (no projection).
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, proj_size=0, device=None, dtype=None, *, backend=None) -> None:
        if proj_size != 0:
            raise ValueError(f"LSTM: proj_size is not supported by rnnkit (expected 0, got {proj_size!r}); "
                             "use torch.nn.LSTM for projected LSTMs")
        super().__init__("LSTM", input_size, hidden_size, num_layers, "tanh", bias, batch_first, dropout,
                         bidirectional, device, dtype, backend)
        self.proj_size = 0


class GRU(_RNNBase):
    r"""Gated recurrent unit; the step is :func:`rnnkit.cells.gru_gates` (chapter 4).

    .. math::
        \begin{aligned}
        r_t &= \sigma(W_{ir} x_t + b_{ir} + W_{hr} h_{t-1} + b_{hr}), \quad
        z_t = \sigma(W_{iz} x_t + b_{iz} + W_{hz} h_{t-1} + b_{hz}) \\
        n_t &= \tanh(W_{in} x_t + b_{in} + r_t \odot (W_{hn} h_{t-1} + b_{hn})) \\
        n_t &= \tanh(W_{in} x_t + b_{in} + W_{hn} (r_t \odot h_{t-1}) + b_{hn}) \quad (\mathtt{reset\_after=False}) \\
        h_t &= (1 - z_t) \odot n_t + z_t \odot h_{t-1}
        \end{aligned}

    ``torch.nn.GRU``'s arguments and forward, plus ``reset_after`` (``True``: PyTorch/cuDNN; ``False``: Cho et al. 2014
    and Chung et al. 2014, not available with ``backend="torch"``).
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, device=None, dtype=None, *, reset_after=True, backend=None) -> None:
        super().__init__("GRU", input_size, hidden_size, num_layers, "tanh", bias, batch_first, dropout,
                         bidirectional, device, dtype, backend, reset_after)


class _CellBase(_Recurrent):
    def __init__(self, mode, input_size, hidden_size, bias, nonlinearity, device, dtype, backend,
                 reset_after=True) -> None:
        super().__init__(mode, input_size, hidden_size, bias, nonlinearity, reset_after, backend)
        gate_size = self._gate_size
        factory = {"device": device, "dtype": dtype}
        self.weight_ih = nn.Parameter(torch.empty(gate_size, self.input_size, **factory))
        self.weight_hh = nn.Parameter(torch.empty(gate_size, self.hidden_size, **factory))
        if self.bias:
            self.bias_ih = nn.Parameter(torch.empty(gate_size, **factory))
            self.bias_hh = nn.Parameter(torch.empty(gate_size, **factory))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}" + ("" if self.bias else ", bias=False") + self._extra()

    def forward(self, input, hx=None):
        """One step: ``h'`` (``(h', c')`` for the LSTM cell) with the shape of ``hx``; ``hx=None`` means zeros."""
        name = type(self).__name__
        rank = _checks.input_tensor(name, input, {2: "(N, H_in)", 1: "(H_in,) (unbatched)"}, self.input_size,
                                    self.weight_ih)
        batched = rank == 2
        x = input if batched else input.unsqueeze(0)  # (B, I)
        if batched:
            shape, layout = (x.shape[0], self.hidden_size), "(batch, hidden_size)"
        else:
            shape, layout = (self.hidden_size,), "(hidden_size,) for unbatched input"
        hx = _checks.initial_state(name, self.mode == "LSTM", hx, shape, layout, x)
        hx = hx if batched else map_state(hx, lambda t: t.unsqueeze(0))  # (B, H)
        params = (self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
        # a one-step sequence through the backend's runner
        _, h_new = RUNNERS[self.backend](self.mode, x.unsqueeze(0), hx, *params, nonlinearity=self.nonlinearity,
                                         reset_after=self.reset_after)  # (1, B, I) in, (B, H) out
        h_new = tuple(h_new) if self.mode == "LSTM" else h_new
        return h_new if batched else map_state(h_new, lambda t: t.squeeze(0))


class RNNCell(_CellBase):
    r"""One Elman RNN step, like ``torch.nn.RNNCell``: :math:`h' = \phi(W_{ih} x + b_{ih} + W_{hh} h + b_{hh})`."""

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", device=None, dtype=None, *,
                 backend=None) -> None:
        super().__init__("RNN", input_size, hidden_size, bias, nonlinearity, device, dtype, backend)


class LSTMCell(_CellBase):
    r"""One LSTM step, like ``torch.nn.LSTMCell``: ``forward(x, (h, c)) -> (h', c')``.

    The equations are in :func:`rnnkit.cells.lstm_gates`.
    """

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None, *, backend=None) -> None:
        super().__init__("LSTM", input_size, hidden_size, bias, "tanh", device, dtype, backend)


class GRUCell(_CellBase):
    r"""One GRU step, like ``torch.nn.GRUCell`` (``reset_after=True``); see :func:`rnnkit.cells.gru_gates`."""

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None, *, reset_after=True,
                 backend=None) -> None:
        super().__init__("GRU", input_size, hidden_size, bias, "tanh", device, dtype, backend, reset_after)
