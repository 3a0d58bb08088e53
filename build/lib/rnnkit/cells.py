r"""One time step of each recurrent cell, as plain functions of tensors.

These are the equations the book derives (chapter 1: :func:`rnn_cell`, chapter 3: :func:`lstm_cell`,
chapter 4: :func:`gru_cell`), written so that each line of code sits directly below the equation it computes.
The layers in :mod:`rnnkit.layers` loop over these functions (see :mod:`rnnkit.recurrence`), and the grader
builds its fixtures from them.

Parameters follow ``torch.nn`` exactly, so weights can be moved between ``torch.nn.LSTM`` and these functions:

=========  ===============  ==================================================
cell       ``w_ih`` rows     gate order (blocks of ``H`` rows each)
=========  ===============  ==================================================
RNN        ``H``             --
LSTM       ``4H``            input ``i``, forget ``f``, cell ``g``, output ``o``
GRU        ``3H``            reset ``r``, update ``z``, new ``n``
=========  ===============  ==================================================

Shapes: ``x`` is ``(B, I)`` (or ``(I,)`` unbatched), ``h`` and ``c`` are ``(B, H)`` (or ``(H,)``),
``w_ih`` is ``(G*H, I)``, ``w_hh`` is ``(G*H, H)``, biases are ``(G*H,)`` or ``None``.
Inputs are not validated here (the layers do that once per sequence, not once per step).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["LSTMGates", "GRUGates", "rnn_cell", "lstm_gates", "lstm_cell", "gru_gates", "gru_cell"]


class LSTMGates(NamedTuple):
    """Every activation of one LSTM step (each ``(B, H)``); what the book's gate heatmaps plot."""

    i: Tensor  # input gate, in (0, 1)
    f: Tensor  # forget gate, in (0, 1)
    g: Tensor  # candidate cell value, in (-1, 1)
    o: Tensor  # output gate, in (0, 1)
    c: Tensor  # new cell state
    h: Tensor  # new hidden state


class GRUGates(NamedTuple):
    """Every activation of one GRU step (each ``(B, H)``)."""

    r: Tensor  # reset gate, in (0, 1)
    z: Tensor  # update gate, in (0, 1): how much of the old state is kept
    n: Tensor  # candidate ("new") state, in (-1, 1)
    h: Tensor  # new hidden state


def rnn_cell(
    x: Tensor,
    h: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None = None,
    b_hh: Tensor | None = None,
    nonlinearity: str = "tanh",
) -> Tensor:
    r"""One step of the Elman RNN (``torch.nn.RNNCell``).

    .. math::
        h' = \phi(W_{ih} x + b_{ih} + W_{hh} h + b_{hh}), \qquad \phi \in \{\tanh, \mathrm{ReLU}\}

    Returns the new hidden state ``h'`` with the shape of ``h``.
    """
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"rnn_cell: expected nonlinearity 'tanh' or 'relu', got {nonlinearity!r}")
    # a = W_{ih} x + b_{ih} + W_{hh} h + b_{hh}
    a = F.linear(x, w_ih, b_ih) + F.linear(h, w_hh, b_hh)  # (B, H)
    # h' = \phi(a)
    return torch.tanh(a) if nonlinearity == "tanh" else torch.relu(a)


def lstm_gates(
    x: Tensor,
    hc: tuple[Tensor, Tensor],
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None = None,
    b_hh: Tensor | None = None,
) -> LSTMGates:
    r"""One LSTM step (Hochreiter & Schmidhuber 1997 with the forget gate of Gers et al. 2000), every activation kept.

    .. math::
        \begin{aligned}
        i &= \sigma(W_{ii} x + b_{ii} + W_{hi} h + b_{hi}) \\
        f &= \sigma(W_{if} x + b_{if} + W_{hf} h + b_{hf}) \\
        g &= \tanh(W_{ig} x + b_{ig} + W_{hg} h + b_{hg}) \\
        o &= \sigma(W_{io} x + b_{io} + W_{ho} h + b_{ho}) \\
        c' &= f \odot c + i \odot g \\
        h' &= o \odot \tanh(c')
        \end{aligned}

    ``W_{ii}, W_{if}, W_{ig}, W_{io}`` are the four ``H``-row blocks of ``w_ih`` in that order (PyTorch's order).
    """
    h, c = hc
    # all four pre-activations at once: W_{ih} x + b_{ih} + W_{hh} h + b_{hh}
    gates = F.linear(x, w_ih, b_ih) + F.linear(h, w_hh, b_hh)  # (B, 4H)
    a_i, a_f, a_g, a_o = gates.chunk(4, dim=-1)  # 4 x (B, H)
    # i = \sigma(W_{ii} x + b_{ii} + W_{hi} h + b_{hi})
    i = torch.sigmoid(a_i)
    # f = \sigma(W_{if} x + b_{if} + W_{hf} h + b_{hf})
    f = torch.sigmoid(a_f)
    # g = \tanh(W_{ig} x + b_{ig} + W_{hg} h + b_{hg})
    g = torch.tanh(a_g)
    # o = \sigma(W_{io} x + b_{io} + W_{ho} h + b_{ho})
    o = torch.sigmoid(a_o)
    # c' = f \odot c + i \odot g
    c_new = f * c + i * g  # (B, H)
    # h' = o \odot \tanh(c')
    h_new = o * torch.tanh(c_new)  # (B, H)
    return LSTMGates(i, f, g, o, c_new, h_new)


def lstm_cell(
    x: Tensor,
    hc: tuple[Tensor, Tensor],
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None = None,
    b_hh: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    r"""One LSTM step (``torch.nn.LSTMCell``): returns ``(h', c')``. The equations are in :func:`lstm_gates`."""
    gates = lstm_gates(x, hc, w_ih, w_hh, b_ih, b_hh)
    return gates.h, gates.c


def gru_gates(
    x: Tensor,
    h: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None = None,
    b_hh: Tensor | None = None,
    reset_after: bool = True,
) -> GRUGates:
    r"""One GRU step (Cho et al. 2014), every activation kept, in either of its two published forms.

    .. math::
        \begin{aligned}
        r &= \sigma(W_{ir} x + b_{ir} + W_{hr} h + b_{hr}) \\
        z &= \sigma(W_{iz} x + b_{iz} + W_{hz} h + b_{hz}) \\
        n &= \tanh(W_{in} x + b_{in} + r \odot (W_{hn} h + b_{hn})) \\
        n &= \tanh(W_{in} x + b_{in} + W_{hn} (r \odot h) + b_{hn}) \\
        h' &= (1 - z) \odot n + z \odot h
        \end{aligned}

    The first ``n`` is ``reset_after=True`` (PyTorch, cuDNN), the second ``reset_after=False`` (Cho et al. 2014,
    Chung et al. 2014).

    The two forms differ only in where the reset gate acts: after the recurrent matrix product (one matrix
    product per step for all three gates, which is why cuDNN chose it) or before it (the papers' form).
    Both use PyTorch's convention that ``z`` is the fraction of the *old* state kept; Chung et al. (2014)
    write :math:`h' = (1 - z) h + z \tilde h`, so their :math:`z` is our :math:`1 - z`.
    """
    # input contributions for all three gates: W_{ir} x + b_{ir}, W_{iz} x + b_{iz}, W_{in} x + b_{in}
    xr, xz, xn = F.linear(x, w_ih, b_ih).chunk(3, dim=-1)  # 3 x (B, H)
    H = h.shape[-1]
    if reset_after:
        # recurrent contributions W_{hr} h + b_{hr}, W_{hz} h + b_{hz}, W_{hn} h + b_{hn} in one product
        hr, hz, hn = F.linear(h, w_hh, b_hh).chunk(3, dim=-1)  # 3 x (B, H)
    else:
        # only r and z read h directly; n reads r * h, which needs r first
        b_hrz, b_hn = (None, None) if b_hh is None else (b_hh[: 2 * H], b_hh[2 * H :])
        hr, hz = F.linear(h, w_hh[: 2 * H], b_hrz).chunk(2, dim=-1)  # 2 x (B, H)
    # r = \sigma(W_{ir} x + b_{ir} + W_{hr} h + b_{hr})
    r = torch.sigmoid(xr + hr)
    # z = \sigma(W_{iz} x + b_{iz} + W_{hz} h + b_{hz})
    z = torch.sigmoid(xz + hz)
    if reset_after:
        # n = \tanh(W_{in} x + b_{in} + r \odot (W_{hn} h + b_{hn}))
        n = torch.tanh(xn + r * hn)
    else:
        # n = \tanh(W_{in} x + b_{in} + W_{hn} (r \odot h) + b_{hn})
        n = torch.tanh(xn + F.linear(r * h, w_hh[2 * H :], b_hn))
    # h' = (1 - z) \odot n + z \odot h
    h_new = (1 - z) * n + z * h  # (B, H)
    return GRUGates(r, z, n, h_new)


def gru_cell(
    x: Tensor,
    h: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None = None,
    b_hh: Tensor | None = None,
    reset_after: bool = True,
) -> Tensor:
    r"""One GRU step (``torch.nn.GRUCell`` when ``reset_after=True``): returns ``h'``, see :func:`gru_gates`."""
    return gru_gates(x, h, w_ih, w_hh, b_ih, b_hh, reset_after=reset_after).h
