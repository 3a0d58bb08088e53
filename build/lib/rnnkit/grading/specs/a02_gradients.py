"""Specs of assignment 2 (gradients): manual BPTT for a tanh RNN, a central-difference gradient checker, per-step
||dL/dh_t||, clipping by global norm and by value, and which clipping keeps the gradient's direction.
References: autograd through ``rnnkit.cells.rnn_cell`` and ``torch.nn.utils.clip_grad_*_``."""
from __future__ import annotations

import torch

from . import Case, Spec, generator, randn, register

_BPTT_KEYS = ("b", "h0", "w_hh", "w_ih", "x")


def _bptt_cases() -> list[Case]:
    g = generator(201)
    cases = []
    for label, steps, batch, dtype in (("T=4, batch of 3, float64", 4, 3, torch.float64),
                                       ("T=4, batch of 3, float32", 4, 3, torch.float32),
                                       ("T=1, batch of 2, float64", 1, 2, torch.float64),
                                       ("T=6, batch of 1, float64", 6, 1, torch.float64)):
        n_in, n_h = 3, 4
        cases.append(Case(label, (randn(g, steps, batch, n_in, dtype=dtype),
                                  randn(g, batch, n_h, dtype=dtype, scale=0.5),
                                  randn(g, n_h, n_in, dtype=dtype, scale=0.6),
                                  randn(g, n_h, n_h, dtype=dtype, scale=0.6),
                                  randn(g, n_h, dtype=dtype, scale=0.3),
                                  randn(g, steps, batch, n_h, dtype=dtype))))
    return cases


def _forward_with_states(x, h0, w_ih, w_hh, b):
    """The tanh RNN with every state kept in the autograd graph (reference only)."""
    from rnnkit.cells import rnn_cell

    states, h = [], h0
    for t in range(x.shape[0]):
        h = rnn_cell(x[t], h, w_ih, w_hh, b, None)  # (B, H)
        h.retain_grad()
        states.append(h)
    return states


def _bptt_reference(x, h0, w_ih, w_hh, b, grad_out):
    leaves = {"x": x, "h0": h0, "w_ih": w_ih, "w_hh": w_hh, "b": b}
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in leaves.items()}
    with torch.enable_grad():
        states = _forward_with_states(leaves["x"], leaves["h0"], leaves["w_ih"], leaves["w_hh"], leaves["b"])
        loss = sum((h * grad_out[t]).sum() for t, h in enumerate(states))
        grads = torch.autograd.grad(loss, [leaves[k] for k in _BPTT_KEYS])
    return dict(zip(_BPTT_KEYS, grads, strict=True))


def _hidden_norms_reference(x, h0, w_ih, w_hh, b, grad_out):
    leaves = [v.detach().clone().requires_grad_(True) for v in (x, h0, w_ih, w_hh, b)]
    with torch.enable_grad():
        states = _forward_with_states(*leaves)
        sum((h * grad_out[t]).sum() for t, h in enumerate(states)).backward()
    return torch.stack([h.grad.norm() for h in states]).detach()  # (T,)


def _scalar_function(seed: int, shape: tuple[int, ...]):
    g = generator(seed)
    weight = randn(g, shape[-1], 3)  # (D, 3)
    scale = randn(g, *shape[:-1], 3)

    def f(x):
        return (torch.tanh(x @ weight) * scale).sum()  # a 0-d tensor

    return f


def _numeric_cases() -> list[Case]:
    g = generator(202)
    return [Case(f"x of shape {shape}, float64", (_scalar_function(seed, shape), randn(g, *shape)), {"eps": 1e-6})
            for seed, shape in ((11, (3, 4)), (12, (5,)), (13, (2, 2, 2)), (14, (1, 1)))]


def _numeric_reference(f, x, eps=1e-6):
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(f(x), x)
    return grad


def _relative_error_reference(a, b):
    return float((a - b).norm() / max(float(a.norm() + b.norm()), 1e-12))


def _relative_cases() -> list[Case]:
    g = generator(203)
    a = randn(g, 4, 3)
    return [Case("two different tensors, float64", (a, randn(g, 4, 3))),
            Case("nearly equal tensors, float64", (a, a + 1e-7 * randn(g, 4, 3))),
            Case("identical tensors", (a, a.clone())),
            Case("both zero", (torch.zeros(3), torch.zeros(3))),
            Case("float32 vectors", (randn(g, 6, dtype=torch.float32), randn(g, 6, dtype=torch.float32)))]


def _grad_list_cases() -> list[Case]:
    g = generator(204)
    big = [randn(g, 3, 4, scale=3.0), randn(g, 4), randn(g, 2, 2, 2, scale=2.0)]
    return [Case("three tensors, total norm above the limit, float64", ([t.clone() for t in big], 1.0)),
            Case("three tensors, total norm below the limit, float64", ([t.clone() for t in big], 100.0)),
            Case("one tensor, float32", ([randn(g, 5, dtype=torch.float32, scale=4.0)], 2.5)),
            Case("limit 0.5, float64", ([randn(g, 6), randn(g, 1)], 0.5))]


def _as_params(grads):
    params = []
    for grad in grads:
        p = torch.nn.Parameter(torch.zeros_like(grad))
        p.grad = grad.detach().clone()
        params.append(p)
    return params


def _clip_norm_reference(grads, max_norm):
    params = _as_params(grads)
    torch.nn.utils.clip_grad_norm_(params, max_norm)
    return [p.grad for p in params]


def _clip_value_reference(grads, clip_value):
    params = _as_params(grads)
    torch.nn.utils.clip_grad_value_(params, clip_value)
    return [p.grad for p in params]


def _cosine(a: list, b: list) -> float:
    u, v = torch.cat([t.reshape(-1) for t in a]), torch.cat([t.reshape(-1) for t in b])
    return float(u @ v / (u.norm() * v.norm()))


def _cosines_reference(grads, max_norm, clip_value):
    return (_cosine(grads, _clip_norm_reference(grads, max_norm)),
            _cosine(grads, _clip_value_reference(grads, clip_value)))


def _cosine_cases() -> list[Case]:
    g = generator(205)
    grads = [randn(g, 3, 4, scale=3.0), randn(g, 4), randn(g, 2, 5, scale=0.2)]
    return [Case("three tensors, max_norm 1, clip_value 0.5", ([t.clone() for t in grads], 1.0, 0.5)),
            Case("three tensors, max_norm 5, clip_value 1", ([t.clone() for t in grads], 5.0, 1.0))]


register(Spec("rnn_bptt", _bptt_cases, _bptt_reference, leaf_names=_BPTT_KEYS, grad_enabled=False,
              summary="hand-written BPTT of a tanh RNN: gradients for x, h0, w_ih, w_hh, b (autograd switched off)"))
register(Spec("numeric_gradient", _numeric_cases, _numeric_reference, leaf_names=("gradient",),
              tolerances={"torch.float64": (1e-5, 1e-6)},
              summary="central-difference gradient of a scalar function, compared with autograd"))
register(Spec("relative_error", _relative_cases, _relative_error_reference, leaf_names=("relative error",),
              tolerances={"float": (1e-5, 1e-9)}, summary="||a - b|| / max(||a|| + ||b||, 1e-12) as a float"))
register(Spec("hidden_grad_norms", _bptt_cases, _hidden_norms_reference, leaf_names=("norms",), grad_enabled=False,
              summary="per-step ||dL/dh_t|| of the total gradient reaching each state"))
register(Spec("clip_grad_norm", _grad_list_cases, _clip_norm_reference,
              summary="clipping a list of gradients by their global norm, like torch.nn.utils.clip_grad_norm_"))
register(Spec("clip_grad_value", _grad_list_cases, _clip_value_reference,
              summary="clipping every gradient entry into [-v, v], like torch.nn.utils.clip_grad_value_"))
register(Spec("clip_cosines", _cosine_cases, _cosines_reference, leaf_names=("cos_norm", "cos_value"),
              summary="cosine between a gradient and its clipped version, for both clipping methods"))
register(Spec("keeps_direction", lambda: [], lambda: "norm", kind="value", leaf_names=("KEEPS_DIRECTION",),
              summary="the computed answer: which clipping keeps the direction ('norm')"))
