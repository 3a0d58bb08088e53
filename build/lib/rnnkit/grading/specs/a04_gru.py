"""Specs of assignment 4 (gru): the cell in both formulations (``reset_after`` True as in PyTorch/cuDNN, False as in
Cho et al. 2014), a layer over a padded batch, the parameter count, and the student's cell driven by the weights of a
``torch.nn.GRUCell``. References: ``rnnkit.cells.gru_cell``, ``rnnkit.recurrence.run_direction``, ``rnnkit.GRU``
and ``rnnkit.GRUCell``."""
from __future__ import annotations

import torch

from . import Case, Spec, cell_cases, generator, layer_parameters, param_count_cases, randn, register, sequence_cases


def _with_flag(cases: list[Case], reset_after: bool) -> list[Case]:
    return [Case(f"{case.label}, reset_after={reset_after}", case.args, {"reset_after": reset_after}) for case in cases]


def _gru_cell(x, h, w_ih, w_hh, b_ih, b_hh, reset_after=True):
    from rnnkit.cells import gru_cell

    return gru_cell(x, h, w_ih, w_hh, b_ih, b_hh, reset_after=reset_after)


def _gru_forward(x, h0, lengths, w_ih, w_hh, b_ih, b_hh, reset_after=True):
    from rnnkit.recurrence import run_direction

    output, h_n = run_direction("GRU", x, h0, w_ih, w_hh, b_ih, b_hh, lengths=lengths, reset_after=reset_after)
    return output, h_n


def _gru_forward_cases() -> list[Case]:
    cases = sequence_cases(403, 3)
    return _with_flag(cases[:3], True) + _with_flag(cases[3:], False)


def _gru_param_count(input_size, hidden_size, num_layers=1, bias=True, bidirectional=False):
    from rnnkit import GRU

    return layer_parameters(GRU, input_size, hidden_size, num_layers, bias, bidirectional)


def _torch_cell_cases() -> list[Case]:
    g = generator(405)
    cases = []
    for label, n_in, n_h, batch, bias, dtype in (
        ("torch.nn.GRUCell(4, 5), batch of 3, float32", 4, 5, 3, True, torch.float32),
        ("torch.nn.GRUCell(4, 5), batch of 1, float64", 4, 5, 1, True, torch.float64),
        ("torch.nn.GRUCell(3, 2, bias=False), batch of 2, float32", 3, 2, 2, False, torch.float32),
        ("torch.nn.GRUCell(2, 6), unbatched, float64", 2, 6, None, True, torch.float64),
    ):
        cell = torch.nn.GRUCell(n_in, n_h, bias=bias, dtype=dtype)
        with torch.no_grad():
            for p in cell.parameters():
                p.copy_(randn(g, *p.shape, dtype=dtype, scale=0.5))
        lead = () if batch is None else (batch,)
        x = randn(g, *lead, n_in, dtype=dtype)
        h = randn(g, *lead, n_h, dtype=dtype, scale=0.5)
        cases.append(Case(label, (cell, x, h)))
    return cases


def _torch_cell_reference(cell, x, h):
    from rnnkit import GRUCell

    mine = GRUCell(cell.input_size, cell.hidden_size, bias=cell.bias, dtype=x.dtype)
    mine.load_state_dict(cell.state_dict())
    with torch.no_grad():
        return mine(x, h)


register(Spec("gru_cell_reset_after", lambda: _with_flag(cell_cases(401, 3), True), _gru_cell, leaf_names=("h_new",),
              summary="GRU cell, PyTorch formulation n = tanh(W_in x + b_in + r * (W_hn h + b_hn))"))
register(Spec("gru_cell_reset_before", lambda: _with_flag(cell_cases(402, 3), False), _gru_cell, leaf_names=("h_new",),
              summary="GRU cell, Cho et al. 2014 formulation n = tanh(W_in x + b_in + W_hn (r * h) + b_hn)"))
register(Spec("gru_forward", _gru_forward_cases, _gru_forward, leaf_names=("output", "h_n"),
              summary="GRU layer over a padded batch with lengths, both formulations"))
register(Spec("gru_param_count", param_count_cases, _gru_param_count, leaf_names=("count",),
              summary="parameter count of torch.nn.GRU / rnnkit.GRU for layers, bias and directions"))
register(Spec("gru_cell_from_torch", _torch_cell_cases, _torch_cell_reference, leaf_names=("h_new",),
              summary="the student's cell run with the weights copied out of a torch.nn.GRUCell"))
