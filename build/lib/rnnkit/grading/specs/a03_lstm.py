"""Specs of assignment 3 (lstm): the cell in PyTorch gate order (i, f, g, o), a layer over a padded batch with
lengths, the parameter-count formula, and the forget-gate bias's effect on memory over a long sequence.
References: ``rnnkit.cells.lstm_cell``, ``rnnkit.recurrence.run_direction`` and ``rnnkit.LSTM``'s parameters."""
from __future__ import annotations

import torch

from . import Case, Spec, cell_cases, generator, layer_parameters, param_count_cases, randn, register, sequence_cases


def _lstm_cell(x, h, c, w_ih, w_hh, b_ih, b_hh):
    from rnnkit.cells import lstm_cell

    h_new, c_new = lstm_cell(x, (h, c), w_ih, w_hh, b_ih, b_hh)
    return h_new, c_new


def _lstm_forward(x, h0, c0, lengths, w_ih, w_hh, b_ih, b_hh):
    from rnnkit.recurrence import run_direction

    output, (h_n, c_n) = run_direction("LSTM", x, (h0, c0), w_ih, w_hh, b_ih, b_hh, lengths=lengths)
    return output, h_n, c_n


def _lstm_param_count(input_size, hidden_size, num_layers=1, bias=True, bidirectional=False):
    from rnnkit import LSTM

    return layer_parameters(LSTM, input_size, hidden_size, num_layers, bias, bidirectional)


def _retention_reference(w_ih, w_hh, forget_bias, steps):
    from rnnkit.cells import lstm_cell

    n_h, n_in = w_hh.shape[1], w_ih.shape[1]
    b_ih = torch.zeros(4 * n_h, dtype=w_ih.dtype)
    b_ih[n_h:2 * n_h] = forget_bias  # rows i, f, g, o: the forget gate's bias
    b_hh = torch.zeros(4 * n_h, dtype=w_ih.dtype)
    x = torch.zeros(1, n_in, dtype=w_ih.dtype)
    h, c = torch.zeros(1, n_h, dtype=w_ih.dtype), torch.ones(1, n_h, dtype=w_ih.dtype)
    c0 = c
    for _ in range(steps):
        h, c = lstm_cell(x, (h, c), w_ih, w_hh, b_ih, b_hh)
    return float(c.norm() / c0.norm())


def _retention_cases() -> list[Case]:
    g = generator(304)
    w_ih, w_hh = randn(g, 24, 2, scale=0.3), randn(g, 24, 6, scale=0.3)
    return [Case(f"forget bias {bias}, {steps} steps", (w_ih.clone(), w_hh.clone(), bias, steps))
            for bias, steps in ((0.0, 1), (0.0, 50), (1.0, 50), (2.0, 100), (-1.0, 10))]


register(Spec("lstm_cell_forward", lambda: cell_cases(301, 4, with_c=True), _lstm_cell, leaf_names=("h_new", "c_new"),
              summary="LSTM cell with rows i, f, g, o: batched, B=1, unbatched, float32/64"))
register(Spec("lstm_forward", lambda: sequence_cases(302, 4, with_c=True), _lstm_forward,
              leaf_names=("output", "h_n", "c_n"),
              summary="LSTM layer over a padded batch with lengths: zero output, frozen (h, c) after each end"))
register(Spec("lstm_param_count", param_count_cases, _lstm_param_count, leaf_names=("count",),
              summary="parameter count of torch.nn.LSTM / rnnkit.LSTM for layers, bias and directions"))
register(Spec("forget_bias_retention", _retention_cases, _retention_reference, leaf_names=("retention",),
              tolerances={"float": (1e-6, 0.0)},  # relative only: retentions span 1e-23 .. 1
              summary="||c_T|| / ||c_0|| of an LSTM fed zeros, for several forget-gate biases and lengths"))
