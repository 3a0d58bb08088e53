"""rnnkit.diagnostics: per-step gradient norms, Jacobians and spectral radius.

References are independent of the code under test: full-sequence autograd through torch.nn modules, the closed-form
tanh-RNN Jacobian diag(1 - h_t^2) W_hh.
"""

import pytest
import torch
from torch import nn

import rnnkit
from rnnkit import cells
from rnnkit import diagnostics as dg

DT = torch.float64


def _seeded(module_cls, *args, **kwargs):
    torch.manual_seed(0)
    return module_cls(*args, **kwargs).to(DT)


def _full_sequence_state_grads(module, x):
    """dL/dh_t for L = sum(out[-1]), via retain_grad on a hand-unrolled torch.nn module (T single-step calls)."""
    state, hs = None, []
    for t in range(x.size(0)):
        _, state = module(x[t : t + 1], state)
        h = state[0] if isinstance(state, tuple) else state
        h.retain_grad()
        hs.append(h)
    hs[-1][-1].sum().backward()
    return torch.stack([h.grad.transpose(0, 1).reshape(x.size(1), -1).norm(dim=1) for h in hs])


@pytest.mark.parametrize("cls", [nn.RNN, nn.LSTM, nn.GRU])
def test_hidden_grad_norms_match_autograd_on_torch_modules(cls):
    module = _seeded(cls, 3, 5, num_layers=2)
    x = torch.randn(7, 4, 3, dtype=DT)
    got = dg.hidden_grad_norms(module, x)
    assert all(p.grad is None for p in module.parameters()), "diagnostics must not touch parameter gradients"
    want = _full_sequence_state_grads(module, x)
    assert got.h.shape == (7, 4)
    torch.testing.assert_close(got.h, want)
    assert (got.c is not None) == (cls is nn.LSTM)


def test_hidden_grad_norms_tanh_rnn_equals_jacobian_product():
    """For a 1-layer tanh RNN, dL/dh_t = (J_T ... J_{t+1})^T dL/dh_T with J_k = diag(1 - h_k^2) W_hh."""
    rnn = _seeded(nn.RNN, 2, 4)
    x = torch.randn(6, 1, 2, dtype=DT)
    out, _ = rnn(x)
    w = rnn.weight_hh_l0.detach()
    g = torch.ones(4, dtype=DT)  # dL/dh_T for L = sum(h_T)
    expected = [g.norm()]
    for t in range(5, 0, -1):
        g = (torch.diag(1 - out[t, 0].detach() ** 2) @ w).T @ g
        expected.append(g.norm())
    expected = torch.stack(expected[::-1])
    torch.testing.assert_close(dg.hidden_grad_norms(rnn, x).h[:, 0], expected)


def test_hidden_grad_norms_batch_first_and_custom_loss():
    gru = _seeded(nn.GRU, 3, 4, batch_first=True)
    x = torch.randn(2, 5, 3, dtype=DT)  # (B, T, I)
    res = dg.hidden_grad_norms(gru, x, loss_fn=lambda out: out[0].pow(2).sum())  # loss at the first step only
    assert res.h.shape == (5, 2)
    assert torch.all(res.h[1:] == 0) and torch.all(res.h[0] > 0)  # later states do not affect it


def test_hidden_grad_norms_rejects_bidirectional_and_bad_input():
    with pytest.raises(ValueError, match="unidirectional"):
        dg.hidden_grad_norms(nn.GRU(3, 4, bidirectional=True), torch.randn(5, 2, 3))
    with pytest.raises(ValueError, match=r"\(T, B, F\)"):
        dg.hidden_grad_norms(nn.GRU(3, 4), torch.randn(5))
    with pytest.raises(TypeError, match="RNN, LSTM or GRU"):
        dg.hidden_grad_norms(nn.Linear(3, 4), torch.randn(5, 2, 3))


def test_step_jacobians_match_closed_form_and_product_norms():
    torch.manual_seed(1)
    w_ih, w_hh = torch.randn(4, 2, dtype=DT), torch.randn(4, 4, dtype=DT) * 0.5
    x, h0 = torch.randn(5, 3, 2, dtype=DT), torch.randn(3, 4, dtype=DT)
    step = lambda x_t, h: cells.rnn_cell(x_t, h, w_ih, w_hh)  # noqa: E731
    jac = dg.step_jacobians(step, x, h0)
    assert jac.shape == (5, 3, 4, 4)
    h = h0
    for t in range(5):
        h = step(x[t], h)
        for b in range(3):
            torch.testing.assert_close(jac[t, b], torch.diag(1 - h[b] ** 2) @ w_hh)
    norms = dg.jacobian_product_norms(jac)
    assert norms.shape == (5, 3)
    torch.testing.assert_close(norms[-1], torch.ones(3, dtype=DT))
    torch.testing.assert_close(norms[1], torch.linalg.matrix_norm(jac[4] @ jac[3] @ jac[2], ord=2))
    with pytest.raises(ValueError, match=r"\(T, B, S, S\)"):
        dg.jacobian_product_norms(torch.zeros(3, 4, 4))


def test_spectral_radius_and_rescaling():
    w = torch.tensor([[0.0, 2.0], [-2.0, 0.0]], dtype=torch.float32)  # eigenvalues +-2i
    assert dg.spectral_radius(w) == pytest.approx(2.0)
    w2 = dg.with_spectral_radius(w, 0.5)
    assert w2.dtype == torch.float32 and dg.spectral_radius(w2) == pytest.approx(0.5, rel=1e-6)
    with pytest.raises(ValueError, match="square"):
        dg.spectral_radius(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="spectral radius 0"):
        dg.with_spectral_radius(torch.zeros(2, 2), 1.0)


def test_follows_input_dtype():
    gru = nn.GRU(3, 4)  # float32
    x = torch.randn(4, 2, 3)
    assert dg.hidden_grad_norms(gru, x).h.dtype == torch.float32


def test_hidden_grad_norms_names_a_lone_tensor_state_of_an_lstm():
    lstm, x = nn.LSTM(3, 4, num_layers=2), torch.randn(5, 2, 3)
    with pytest.raises(TypeError, match=r"expected hx as a tuple \(h_0, c_0\)"):
        dg.hidden_grad_norms(lstm, x, torch.zeros(2, 2, 4))


@pytest.mark.parametrize("reset_after", [True, False])
def test_works_on_rnnkit_layers_including_cho_gru(reset_after):
    gru = _seeded(rnnkit.GRU, 3, 4, num_layers=2, reset_after=reset_after)
    x = torch.randn(6, 2, 3, dtype=DT)
    torch.testing.assert_close(dg.hidden_grad_norms(gru, x).h, _full_sequence_state_grads(gru, x))
    with pytest.raises(TypeError, match="layer"):
        dg.hidden_grad_norms(rnnkit.GRUCell(3, 4), x)


@pytest.mark.cuda
@pytest.mark.parametrize("cls", [nn.LSTM, rnnkit.GRU])
def test_cuda_matches_cpu(cls):
    module = _seeded(cls, 3, 4)
    x = torch.randn(5, 2, 3, dtype=DT)
    cpu_norms = dg.hidden_grad_norms(module, x).h
    module_gpu, x_gpu = module.to("cuda"), x.to("cuda")
    gpu_norms = dg.hidden_grad_norms(module_gpu, x_gpu).h
    assert gpu_norms.device.type == "cuda"
    torch.testing.assert_close(gpu_norms.cpu(), cpu_norms)
    w = dg.with_spectral_radius(module_gpu.weight_hh_l0[:4], 0.5)
    assert w.device.type == "cuda" and dg.spectral_radius(w) == pytest.approx(0.5)


def test_hidden_grad_norms_with_frozen_parameters_and_given_state():
    rnn = _seeded(nn.RNN, 3, 4).requires_grad_(False)
    x, h0 = torch.randn(5, 2, 3, dtype=DT), torch.randn(1, 2, 4, dtype=DT)
    res = dg.hidden_grad_norms(rnn, x, h0)
    assert res.h.shape == (5, 2) and torch.all(res.h > 0)
    assert not h0.requires_grad, "the caller's state must not be modified"


def test_hidden_grad_norms_on_projected_torch_lstm():
    # torch.nn.LSTM(proj_size=P): h is (layers, B, P), c is (layers, B, H); the zero start must have both sizes
    lstm = _seeded(nn.LSTM, 3, 5, proj_size=2, num_layers=2)
    norms = dg.hidden_grad_norms(lstm, torch.randn(4, 2, 3, dtype=DT))
    assert norms.h.shape == norms.c.shape == (4, 2)
    assert (norms.h[:-1] > 0).all() and norms.c[-1].abs().max() == 0  # the last c influences nothing


def test_hidden_grad_norms_names_a_bad_loss():
    gru, x = _seeded(nn.GRU, 3, 4), torch.randn(5, 2, 3, dtype=DT)
    with pytest.raises(ValueError, match=r"expected loss_fn to return a scalar Tensor, got shape \(2, 4\)"):
        dg.hidden_grad_norms(gru, x, loss_fn=lambda out: out[-1])
    with pytest.raises(ValueError, match=r"got float"):
        dg.hidden_grad_norms(gru, x, loss_fn=lambda out: 1.0)
