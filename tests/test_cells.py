"""rnnkit.cells: each step function equals torch.nn's cell (values and gradients, float64), the gate tuples are
consistent with the equations, and gru_cell(reset_after=False) equals Chung et al. (2014) transcribed by hand."""

import pytest
import torch
from references import chung2014_gru_step

from rnnkit import cells

DT = torch.float64
ATOL = 1e-10


def _params(gates, I, H, bias, gen):
    w_ih = torch.randn(gates * H, I, dtype=DT, generator=gen)
    w_hh = torch.randn(gates * H, H, dtype=DT, generator=gen)
    b = [torch.randn(gates * H, dtype=DT, generator=gen) for _ in range(2)] if bias else [None, None]
    return [w_ih, w_hh, *b]


def _leaves(tensors):
    return [None if t is None else t.clone().requires_grad_(True) for t in tensors]


def _assert_same_with_grads(ours, theirs, inputs_a, inputs_b, gen):
    """Equal values, and equal gradients of a random linear functional of the outputs w.r.t. every input."""
    ours = tuple(ours) if isinstance(ours, (tuple, list)) else (ours,)
    theirs = tuple(theirs) if isinstance(theirs, (tuple, list)) else (theirs,)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)
    weights = [torch.randn(a.shape, dtype=DT, generator=gen) for a in ours]
    sum((w * a).sum() for w, a in zip(weights, ours, strict=True)).backward()
    sum((w * b).sum() for w, b in zip(weights, theirs, strict=True)).backward()
    for a, b in zip(inputs_a, inputs_b, strict=True):
        if a is not None:
            torch.testing.assert_close(a.grad, b.grad, atol=ATOL, rtol=0)


CASES = [(seed, batched, bias) for seed in range(3) for batched in (True, False) for bias in (True, False)]


@pytest.mark.parametrize("seed,batched,bias", CASES)
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_rnn_cell_equals_torch(seed, batched, bias, nonlinearity):
    gen = torch.Generator().manual_seed(seed)
    B, I, H = 3, 4, 5
    shape = (B,) if batched else ()
    args = [torch.randn(*shape, I, dtype=DT, generator=gen), torch.randn(*shape, H, dtype=DT, generator=gen)]
    args += _params(1, I, H, bias, gen)
    a, b = _leaves(args), _leaves(args)
    torch_cell = torch.rnn_tanh_cell if nonlinearity == "tanh" else torch.rnn_relu_cell
    ours = cells.rnn_cell(*a, nonlinearity=nonlinearity)
    theirs = torch_cell(b[0] if batched else b[0][None], b[1] if batched else b[1][None], *b[2:])
    assert ours.shape == args[1].shape
    _assert_same_with_grads(ours, theirs.reshape(ours.shape), a, b, gen)


@pytest.mark.parametrize("seed,batched,bias", CASES)
def test_lstm_cell_equals_torch(seed, batched, bias):
    gen = torch.Generator().manual_seed(seed)
    B, I, H = 2, 3, 4
    shape = (B,) if batched else ()
    x, h, c = (torch.randn(*shape, n, dtype=DT, generator=gen) for n in (I, H, H))
    args = [x, h, c, *_params(4, I, H, bias, gen)]
    a, b = _leaves(args), _leaves(args)
    ours = cells.lstm_cell(a[0], (a[1], a[2]), *a[3:])
    if batched:
        theirs = torch.lstm_cell(b[0], (b[1], b[2]), *b[3:])
    else:
        theirs = tuple(t[0] for t in torch.lstm_cell(b[0][None], (b[1][None], b[2][None]), *b[3:]))
    assert ours[0].shape == ours[1].shape == h.shape
    _assert_same_with_grads(ours, theirs, a, b, gen)


def _gru_leaves(seed, batched, bias):
    """Two independent copies (ours, the reference's) of seeded GRU-step arguments x, h, w_ih, w_hh[, b_ih, b_hh]."""
    gen = torch.Generator().manual_seed(seed)
    B, I, H = 2, 3, 4
    shape = (B,) if batched else ()
    args = [torch.randn(*shape, I, dtype=DT, generator=gen), torch.randn(*shape, H, dtype=DT, generator=gen)]
    args += _params(3, I, H, bias, gen)
    return _leaves(args), _leaves(args), gen


@pytest.mark.parametrize("seed,batched,bias", CASES)
def test_gru_cell_reset_after_equals_torch(seed, batched, bias):
    a, b, gen = _gru_leaves(seed, batched, bias)
    ours = cells.gru_cell(*a, reset_after=True)
    theirs = torch.gru_cell(b[0] if batched else b[0][None], b[1] if batched else b[1][None], *b[2:])
    _assert_same_with_grads(ours, theirs.reshape(ours.shape), a, b, gen)


@pytest.mark.parametrize("seed,batched,bias", CASES)
def test_gru_cell_reset_before_equals_chung2014(seed, batched, bias):
    a, b, gen = _gru_leaves(seed, batched, bias)
    ours = cells.gru_cell(*a, reset_after=False)
    theirs = chung2014_gru_step(*b)
    _assert_same_with_grads(ours, theirs, a, b, gen)


def test_reset_after_variants_differ():
    """The two GRU forms are different functions (the book compares them), equal only when r = 1 everywhere."""
    gen = torch.Generator().manual_seed(0)
    x, h = torch.randn(3, 2, dtype=DT, generator=gen), torch.randn(3, 4, dtype=DT, generator=gen)
    params = _params(3, 2, 4, True, gen)
    after, before = cells.gru_cell(x, h, *params, reset_after=True), cells.gru_cell(x, h, *params, reset_after=False)
    assert (after - before).abs().max() > 1e-3
    params[2] = params[2].clone()
    params[2][:4] = 1e3  # reset gate saturated open: r = 1, so r * (W h + b) = W (r * h) + b
    after, before = cells.gru_cell(x, h, *params, reset_after=True), cells.gru_cell(x, h, *params, reset_after=False)
    torch.testing.assert_close(after, before, atol=ATOL, rtol=0)


def test_lstm_gates_follow_the_equations():
    gen = torch.Generator().manual_seed(1)
    B, I, H = 3, 2, 4
    x, h, c = (torch.randn(B, n, dtype=DT, generator=gen) for n in (I, H, H))
    w_ih, w_hh, b_ih, b_hh = _params(4, I, H, True, gen)
    gates = cells.lstm_gates(x, (h, c), w_ih, w_hh, b_ih, b_hh)
    assert gates._fields == ("i", "f", "g", "o", "c", "h")
    # gate k reads rows [k H, (k+1) H) of the weights: PyTorch's order i, f, g, o
    pre = [x @ w_ih[k * H : (k + 1) * H].T + b_ih[k * H : (k + 1) * H] + h @ w_hh[k * H : (k + 1) * H].T
           + b_hh[k * H : (k + 1) * H] for k in range(4)]
    torch.testing.assert_close(gates.i, torch.sigmoid(pre[0]), atol=ATOL, rtol=0)
    torch.testing.assert_close(gates.f, torch.sigmoid(pre[1]), atol=ATOL, rtol=0)
    torch.testing.assert_close(gates.g, torch.tanh(pre[2]), atol=ATOL, rtol=0)
    torch.testing.assert_close(gates.o, torch.sigmoid(pre[3]), atol=ATOL, rtol=0)
    torch.testing.assert_close(gates.c, gates.f * c + gates.i * gates.g, atol=ATOL, rtol=0)
    torch.testing.assert_close(gates.h, gates.o * torch.tanh(gates.c), atol=ATOL, rtol=0)
    h_new, c_new = cells.lstm_cell(x, (h, c), w_ih, w_hh, b_ih, b_hh)
    assert torch.equal(h_new, gates.h) and torch.equal(c_new, gates.c)


@pytest.mark.parametrize("reset_after", [True, False])
def test_gru_gates_follow_the_equations(reset_after):
    gen = torch.Generator().manual_seed(2)
    B, I, H = 3, 2, 4
    x, h = torch.randn(B, I, dtype=DT, generator=gen), torch.randn(B, H, dtype=DT, generator=gen)
    w_ih, w_hh, b_ih, b_hh = _params(3, I, H, True, gen)
    gates = cells.gru_gates(x, h, w_ih, w_hh, b_ih, b_hh, reset_after=reset_after)
    assert gates._fields == ("r", "z", "n", "h")
    rows = [slice(k * H, (k + 1) * H) for k in range(3)]
    r = torch.sigmoid(x @ w_ih[rows[0]].T + b_ih[rows[0]] + h @ w_hh[rows[0]].T + b_hh[rows[0]])
    z = torch.sigmoid(x @ w_ih[rows[1]].T + b_ih[rows[1]] + h @ w_hh[rows[1]].T + b_hh[rows[1]])
    torch.testing.assert_close(gates.r, r, atol=ATOL, rtol=0)
    torch.testing.assert_close(gates.z, z, atol=ATOL, rtol=0)
    torch.testing.assert_close(gates.h, (1 - gates.z) * gates.n + gates.z * h, atol=ATOL, rtol=0)
    assert torch.equal(cells.gru_cell(x, h, w_ih, w_hh, b_ih, b_hh, reset_after=reset_after), gates.h)


def test_rnn_cell_rejects_unknown_nonlinearity():
    x, h = torch.zeros(1, 2), torch.zeros(1, 3)
    with pytest.raises(ValueError, match=r"rnn_cell: expected nonlinearity 'tanh' or 'relu', got 'sigmoid'"):
        cells.rnn_cell(x, h, torch.zeros(3, 2), torch.zeros(3, 3), nonlinearity="sigmoid")


def test_cells_follow_input_dtype():
    gen = torch.Generator().manual_seed(3)
    x, h, c = (torch.randn(2, 3, generator=gen) for _ in range(3))  # float32
    w4 = [torch.randn(12, 3, generator=gen), torch.randn(12, 3, generator=gen)]
    h_new, c_new = cells.lstm_cell(x, (h, c), *w4)
    assert h_new.dtype == c_new.dtype == torch.float32
    assert cells.gru_cell(x, h, w4[0][:9], w4[1][:9], reset_after=False).dtype == torch.float32
    assert cells.rnn_cell(x, h, w4[0][:3], w4[1][:3]).dtype == torch.float32
