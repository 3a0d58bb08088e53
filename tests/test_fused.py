"""The fused backend (rnnkit/fused.py) against two independent oracles: torch.nn (packed sequences for lengths, a
per-sequence time reversal for ``reverse``) and a plain autograd loop written here; plus gradcheck, the fallback
warning, partial ``requires_grad``, the float32 oneDNN path, backward in time chunks and strided output gradients.
Values and gradients in float64 to 1e-10. Every test runs three times: with the compiled element-wise steps called
once per step (rnnkit/_kernels.c), with the compiled whole-sequence loops that also run the products (MKL's gemm per
thread's rows), and with PyTorch operators (the path CUDA and machines without a C compiler take)."""

from __future__ import annotations

import contextlib
import random
import shutil
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnnkit import _fused_chunks, _fused_common, _fused_compiled, _fused_gemm, _kernels, fused, recurrence

DT = torch.float64
ATOL = 1e-10
GATES = {"RNN": 1, "LSTM": 4, "GRU": 3}


@pytest.fixture(autouse=True, params=["compiled", "loop", "torch-ops"])
def elementwise(request, monkeypatch):
    """Which steps run: RNNKIT_FUSED_KERNELS=c fails loudly if the compiled ones cannot be built; "compiled" calls
    them once per step (products in PyTorch), "loop" runs whole sequences in them (a test that sets
    RNNKIT_FUSED_GEMM itself chooses for itself)."""
    if request.param != "torch-ops" and shutil.which("gcc") is None:
        pytest.skip("no C compiler (gcc) on this machine: only the PyTorch-operator steps run")
    if request.param == "loop" and not torch.backends.mkl.is_available():
        pytest.skip("this PyTorch links no MKL: no whole-sequence loops")
    monkeypatch.setenv("RNNKIT_FUSED_KERNELS", "torch" if request.param == "torch-ops" else "c")
    monkeypatch.setenv("RNNKIT_FUSED_GEMM", {"compiled": "addmm", "loop": "loop"}.get(request.param, "auto"))
    if request.param == "loop":
        assert _kernels.loop_available(torch.zeros(1)), _kernels.status()
    return request.param


# ------------------------------------------------------------------------------------------------ test inputs
def make_case(mode, T, B, I, H, *, bias=True, lengths=None, dtype=DT, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)

    def leaf(*shape, scale=0.5):
        return (torch.randn(*shape, generator=g, dtype=dtype) * scale).to(device).requires_grad_()

    G = GATES[mode]
    x = leaf(T, B, I, scale=1.0)
    h0 = leaf(B, H)
    hx = (h0, leaf(B, H)) if mode == "LSTM" else h0
    params = [leaf(G * H, I), leaf(G * H, H), leaf(G * H) if bias else None, leaf(G * H) if bias else None]
    lens = None if lengths is None else torch.tensor(lengths, dtype=torch.long)
    return x, hx, params, lens


def leaves(x, hx, params):
    hs = list(hx) if isinstance(hx, tuple) else [hx]
    return [t for t in [x, *hs, *params] if t is not None]


def outputs_and_grads(fn, mode, x, hx, params, lens, *, seed=1, retain_graph=False, **kw):
    """Run fn, then backprop a random linear function of output and every final state (keeping the graph if asked:
    then the fused backend's compiled path runs backward in chunks, else in one pass over forward's buffers)."""
    out, hn = fn(mode, x, hx, *params, lengths=lens, **kw)
    hs = list(hn) if isinstance(hn, tuple) else [hn]
    g = torch.Generator().manual_seed(seed)
    loss = sum((t * torch.randn(t.shape, generator=g, dtype=t.dtype).to(t.device)).sum() for t in [out, *hs])
    grads = torch.autograd.grad(loss, leaves(x, hx, params), retain_graph=retain_graph)
    return [out.detach(), *[h.detach() for h in hs], *grads]


def assert_all_close(got, want, atol=ATOL, rtol=0.0):
    assert len(got) == len(want)
    for k, (a, b) in enumerate(zip(got, want, strict=True)):
        assert a.shape == b.shape, f"tensor {k}: shape {tuple(a.shape)} vs {tuple(b.shape)}"
        err = (a - b).abs().max().item() if a.numel() else 0.0
        assert torch.allclose(a, b, atol=atol, rtol=rtol), f"tensor {k}: max error {err:.3g}"


# ------------------------------------------------------------------------------------------------ oracle 1: torch.nn
def torch_nn_direction(mode, x, hx, w_ih, w_hh, b_ih, b_hh, *, lengths=None, reverse=False, nonlinearity="tanh"):
    """One direction through torch.nn's own kernels. ``reverse`` flips each sequence within its length, runs the
    forward layer and flips the output back: exactly what the backward half of a bidirectional layer computes."""
    T, B, I = x.shape
    H = w_hh.shape[1]
    kw = {"nonlinearity": nonlinearity} if mode == "RNN" else {}
    layer = getattr(torch.nn, mode)(I, H, bias=b_ih is not None, dtype=x.dtype, device=x.device, **kw)
    params = {"weight_ih_l0": w_ih, "weight_hh_l0": w_hh}
    if b_ih is not None:
        params.update(bias_ih_l0=b_ih, bias_hh_l0=b_hh)
    lens = torch.full((B,), T, dtype=torch.long) if lengths is None else lengths
    if reverse:
        t = torch.arange(T)[:, None]
        idx = torch.where(t < lens[None, :], lens[None, :] - 1 - t, t).to(x.device)  # (T, B), an involution
        x = x.gather(0, idx[:, :, None].expand(T, B, I))
    hx3 = tuple(h.unsqueeze(0) for h in hx) if mode == "LSTM" else hx.unsqueeze(0)
    packed = pack_padded_sequence(x, lens, enforce_sorted=False)
    out, hn = torch.func.functional_call(layer, params, (packed, hx3))
    out, _ = pad_packed_sequence(out, total_length=T)
    if reverse:
        out = out.gather(0, idx[:, :, None].expand(T, B, H))
    hn = tuple(h.squeeze(0) for h in hn) if mode == "LSTM" else hn.squeeze(0)
    return out, hn


# ------------------------------------------------------------------------------------------------ oracle 2: a loop
def loop_direction(mode, x, hx, w_ih, w_hh, b_ih, b_hh, *, lengths=None, reverse=False, nonlinearity="tanh",
                   reset_after=True):
    """The textbook equations, one step at a time, differentiated by autograd (also covers GRU reset_after=False)."""
    T, B, _ = x.shape
    H = w_hh.shape[1]
    act = torch.tanh if nonlinearity == "tanh" else torch.relu
    state, outs = hx, [None] * T
    for t in (reversed(range(T)) if reverse else range(T)):
        xi = F.linear(x[t], w_ih, b_ih)
        h = state[0] if mode == "LSTM" else state
        if mode == "RNN":
            new = act(xi + F.linear(h, w_hh, b_hh))
        elif mode == "LSTM":
            i, f, g, o = (xi + F.linear(h, w_hh, b_hh)).chunk(4, 1)
            c = torch.sigmoid(f) * state[1] + torch.sigmoid(i) * torch.tanh(g)
            new = (torch.sigmoid(o) * torch.tanh(c), c)
        else:
            xr, xz, xn = xi.chunk(3, 1)
            if reset_after:
                hr, hz, hn = F.linear(h, w_hh, b_hh).chunk(3, 1)
                r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
                n = torch.tanh(xn + r * hn)
            else:
                bh = [None, None] if b_hh is None else [b_hh[: 2 * H], b_hh[2 * H:]]
                hr, hz = F.linear(h, w_hh[: 2 * H], bh[0]).chunk(2, 1)
                r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
                n = torch.tanh(xn + F.linear(r * h, w_hh[2 * H:], bh[1]))
            new = (1 - z) * n + z * h
        if lengths is not None:
            keep = (t < lengths).to(x.device)[:, None]  # (B, 1)
            if mode == "LSTM":
                new = (torch.where(keep, new[0], state[0]), torch.where(keep, new[1], state[1]))
            else:
                new = torch.where(keep, new, state)
        state = new
        h_t = state[0] if mode == "LSTM" else state
        outs[t] = h_t if lengths is None else torch.where(keep, h_t, torch.zeros_like(h_t))
    return torch.stack(outs), state


# ------------------------------------------------------------------------------------------------ random configurations
def random_configs(n, seed):
    rng = random.Random(seed)
    variants = [("RNN", "tanh", True), ("RNN", "relu", True), ("LSTM", "tanh", True), ("GRU", "tanh", True),
                ("GRU", "tanh", False)]
    configs = []
    for k in range(n):
        mode, nl, ra = variants[k % len(variants)]
        T, B = rng.randint(1, 7), rng.randint(1, 5)
        lengths = [rng.randint(1, T) for _ in range(B)] if rng.random() < 0.6 else None
        configs.append(dict(mode=mode, nonlinearity=nl, reset_after=ra, T=T, B=B, I=rng.randint(1, 6),
                            H=rng.randint(1, 6), bias=rng.random() < 0.8, lengths=lengths,
                            reverse=rng.random() < 0.5, seed=k))
    return configs


def config_id(c):
    return "{mode}-{nonlinearity}-ra{reset_after:d}-T{T}B{B}I{I}H{H}-b{bias:d}-L{0}-r{reverse:d}".format(
        c["lengths"] is not None, **c)


def run_both(c, oracle, device="cpu", retain_graph=False):
    x, hx, params, lens = make_case(c["mode"], c["T"], c["B"], c["I"], c["H"], bias=c["bias"], lengths=c["lengths"],
                                    device=device, seed=c["seed"])
    kw = dict(reverse=c["reverse"], nonlinearity=c["nonlinearity"])
    oracle_kw = dict(kw) if oracle is torch_nn_direction else dict(kw, reset_after=c["reset_after"])
    got = outputs_and_grads(fused.run_direction, c["mode"], x, hx, params, lens, reset_after=c["reset_after"],
                            retain_graph=retain_graph, **kw)
    want = outputs_and_grads(oracle, c["mode"], x, hx, params, lens, **oracle_kw)
    return got, want


@pytest.mark.parametrize("c", [c for c in random_configs(30, seed=7) if c["reset_after"]], ids=config_id)
def test_matches_torch_nn(c):
    got, want = run_both(c, torch_nn_direction)
    assert_all_close(got, want)


@pytest.mark.parametrize("c", random_configs(20, seed=11), ids=config_id)
def test_matches_autograd_loop(c):
    got, want = run_both(c, loop_direction)
    assert_all_close(got, want)


def test_matches_reference_backend():
    """Same results as the reference loop the layers use (rnnkit.recurrence), over every variant."""
    for c in random_configs(10, seed=3):
        x, hx, params, lens = make_case(c["mode"], c["T"], c["B"], c["I"], c["H"], bias=c["bias"],
                                        lengths=c["lengths"], seed=c["seed"])
        kw = dict(reverse=c["reverse"], nonlinearity=c["nonlinearity"], reset_after=c["reset_after"])
        got = outputs_and_grads(fused.run_direction, c["mode"], x, hx, params, lens, **kw)
        want = outputs_and_grads(recurrence.run_direction, c["mode"], x, hx, params, lens, **kw)
        assert_all_close(got, want)


def test_lengths_semantics_explicitly():
    """Zeros past each length; h_n is the state after the last valid step; reverse starts at each sequence's end."""
    x, hx, params, _ = make_case("GRU", 6, 3, 2, 4, seed=5)
    lens = torch.tensor([6, 2, 4])
    for reverse in (False, True):
        out, hn = fused.run_direction("GRU", x, hx, *params, lengths=lens, reverse=reverse)
        for b, L in enumerate(lens.tolist()):
            assert torch.all(out[L:, b] == 0)
            # the same sequence alone, cut at its length, with no padding at all
            ob, hb = fused.run_direction("GRU", x[:L, b:b + 1], hx[b:b + 1], *params, reverse=reverse)
            assert torch.allclose(out[:L, b], ob[:, 0], atol=ATOL, rtol=0)
            assert torch.allclose(hn[b], hb[0], atol=ATOL, rtol=0)


# ------------------------------------------------------------------------------------------------ gradcheck
@pytest.mark.parametrize("mode,nl,ra", [("RNN", "tanh", True), ("RNN", "relu", True), ("LSTM", "tanh", True),
                                        ("GRU", "tanh", True), ("GRU", "tanh", False)])
@pytest.mark.parametrize("lengths,reverse", [(None, False), ([3, 1], True)])
def test_gradcheck(mode, nl, ra, lengths, reverse):
    x, hx, params, lens = make_case(mode, 3, 2, 2, 3, lengths=lengths, seed=9)
    hs = list(hx) if isinstance(hx, tuple) else [hx]
    n_state = len(hs)

    def f(x, *rest):
        state = tuple(rest[:n_state]) if mode == "LSTM" else rest[0]
        out, hn = fused.run_direction(mode, x, state, *rest[n_state:], lengths=lens, reverse=reverse,
                                      nonlinearity=nl, reset_after=ra)
        return (out, *hn) if mode == "LSTM" else (out, hn)

    assert torch.autograd.gradcheck(f, (x, *hs, *params), eps=1e-6, atol=1e-7)


# ------------------------------------------------------------------------------------------------ partial grads, misuse
@pytest.mark.parametrize("mode", ["RNN", "LSTM", "GRU"])
def test_only_some_inputs_need_grad(mode):
    x, hx, params, lens = make_case(mode, 4, 3, 2, 3, lengths=[4, 2, 3], seed=2)
    want = outputs_and_grads(loop_direction, mode, x, hx, params, lens)
    x.requires_grad_(False)
    for h in (hx if isinstance(hx, tuple) else [hx]):
        h.requires_grad_(False)
    params[0].requires_grad_(False)
    out, hn = fused.run_direction(mode, x, hx, *params, lengths=lens)
    g = torch.autograd.grad(out.sum(), params[1:])
    out_ref, _ = loop_direction(mode, x, hx, *params, lengths=lens)
    g_ref = torch.autograd.grad(out_ref.sum(), params[1:])
    assert_all_close(list(g), list(g_ref))
    assert torch.allclose(out, want[0], atol=ATOL, rtol=0)


def test_modifying_output_in_place_is_caught():
    """The returned output doubles as the saved state buffer: an in-place edit must fail loudly, not corrupt grads."""
    x, hx, params, _ = make_case("GRU", 3, 2, 2, 3)
    out, _ = fused.run_direction("GRU", x, hx, *params)
    out.mul_(2)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


# ------------------------------------------------------------------------------------------------ fallback
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")  # torch's own make_dual
def test_forward_ad_falls_back_with_one_warning(monkeypatch):
    monkeypatch.setattr(fused, "_warned", set())
    x, hx, params, _ = make_case("LSTM", 3, 2, 2, 3)
    import torch.autograd.forward_ad as fwAD

    tangent = torch.randn_like(x)
    with fwAD.dual_level():
        dual = fwAD.make_dual(x.detach(), tangent)
        with pytest.warns(RuntimeWarning, match="forward-mode AD .* falling back to the reference loop"):
            out, _ = fused.run_direction("LSTM", dual, tuple(h.detach() for h in hx), *[p.detach() for p in params])
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a second call must not warn again
            out2, _ = fused.run_direction("LSTM", dual, tuple(h.detach() for h in hx), *[p.detach() for p in params])
        jvp = fwAD.unpack_dual(out).tangent
    ref, _ = recurrence.run_direction("LSTM", x.detach(), tuple(h.detach() for h in hx), *[p.detach() for p in params])
    assert torch.allclose(fwAD.unpack_dual(out).primal, ref, atol=ATOL, rtol=0)
    assert jvp is not None and jvp.shape == ref.shape


# ------------------------------------------------------------------------------------------------ float32 GEMM paths
@pytest.mark.parametrize("gemm", ["auto", "addmm", "loop"])
@pytest.mark.parametrize("mode", ["RNN", "LSTM", "GRU"])
def test_float32_matches_torch_nn(mode, gemm, monkeypatch):
    """float32 runs the per-step products through the kernel measured fastest ("auto"), oneDNN, torch.addmm or the
    compiled loops (addmm where those cannot run)."""
    monkeypatch.setenv("RNNKIT_FUSED_GEMM", gemm)
    c = dict(mode=mode, nonlinearity="tanh", reset_after=True, T=9, B=5, I=7, H=16, bias=True,
             lengths=[9, 4, 7, 1, 9], reverse=True, seed=4)
    x, hx, params, lens = make_case(mode, 9, 5, 7, 16, lengths=c["lengths"], dtype=torch.float32, seed=4)
    got = outputs_and_grads(fused.run_direction, mode, x, hx, params, lens, reverse=True)
    want = outputs_and_grads(torch_nn_direction, mode, x, hx, params, lens, reverse=True)
    assert_all_close(got, want, atol=1e-4, rtol=1e-4)


# ------------------------------------------------------------------------------------------------ CUDA
@pytest.mark.cuda
@pytest.mark.parametrize("c", random_configs(10, seed=13), ids=config_id)
def test_cuda_matches_autograd_loop(c):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    got, want = run_both(c, loop_direction, device="cuda")
    assert all(t.device.type == "cuda" for t in got)
    assert_all_close(got, want)


@pytest.mark.parametrize("mode", ["RNN", "LSTM", "GRU"])
def test_empty_batch(mode):
    """A batch of zero sequences (an empty last batch) runs forward and backward like torch.nn."""
    x, hx, params, _ = make_case(mode, 4, 0, 3, 2)
    out, hn = fused.run_direction(mode, x, hx, *params)
    assert out.shape == (4, 0, 2)
    grads = torch.autograd.grad(out.sum() + sum(h.sum() for h in (hn if isinstance(hn, tuple) else [hn])),
                                [x, params[1]])
    assert grads[0].shape == (4, 0, 3) and torch.all(grads[1] == 0)


@pytest.mark.parametrize("mode,ra", [("RNN", True), ("LSTM", True), ("GRU", True), ("GRU", False)])
def test_backward_twice_with_retain_graph(mode, ra):
    """A backward that keeps the graph leaves what forward saved intact, so a second backward through the same graph
    gives the same grads (the compiled path sums them in other chunks the first time: equal up to rounding)."""
    x, hx, params, lens = make_case(mode, 4, 3, 2, 3, lengths=[4, 1, 3], seed=6)
    out, _ = fused.run_direction(mode, x, hx, *params, lengths=lens, reset_after=ra)
    first = torch.autograd.grad(out.sum(), [x, *params], retain_graph=True)
    second = torch.autograd.grad(out.sum(), [x, *params], retain_graph=True)
    third = torch.autograd.grad(out.sum(), [x, *params])  # the last one may write over the saved buffers
    assert_all_close(list(second), list(first), atol=0)
    assert_all_close(list(third), list(first), atol=1e-13)


def test_vmap_falls_back_and_matches(monkeypatch):
    """functorch transforms cannot see inside the Function: the reference loop runs instead, once announced."""
    monkeypatch.setattr(fused, "_warned", set())
    x, hx, params, _ = make_case("GRU", 3, 2, 2, 3)
    xs = torch.stack([x.detach(), 2 * x.detach()])  # a vmapped dimension of 2
    p = [q.detach() for q in params]
    with pytest.warns(RuntimeWarning, match="functorch transforms"):
        got = torch.func.vmap(lambda xi: fused.run_direction("GRU", xi, hx.detach(), *p)[0])(xs)
    for k in range(2):
        want, _ = loop_direction("GRU", xs[k], hx.detach(), *p)
        assert torch.allclose(got[k], want, atol=ATOL, rtol=0)


@pytest.mark.parametrize("mode,ra", [("RNN", True), ("LSTM", True), ("GRU", True), ("GRU", False)])
def test_every_tensor_follows_the_input_device(mode, ra):
    """Runs forward and backward on the 'meta' device: any tensor made on the CPU by mistake (a mask, a buffer, a
    constant) would raise a device mismatch. A stand-in for CUDA, which this machine does not have."""
    x, hx, params, _ = make_case(mode, 4, 3, 2, 5, device="meta")
    for lens in (None, torch.tensor([4, 2, 3])):
        for reverse in (False, True):
            out, hn = fused.run_direction(mode, x, hx, *params, lengths=lens, reverse=reverse, reset_after=ra)
            grads = torch.autograd.grad(out.sum(), leaves(x, hx, params))
            assert out.device.type == "meta" and all(g.device.type == "meta" for g in grads)


# ------------------------------------------------------------------------------------------------ GEMM kernel choice
@pytest.mark.parametrize("mode", ["RNN", "LSTM", "GRU"])
def test_float32_onednn_kernel_matches_torch_nn(mode, monkeypatch):
    """The oneDNN kernel itself (forced, so the measurement cannot route around it) equals torch.nn; the RNN's
    backward runs in two chunks, whose ``dx`` rows oneDNN writes in pieces."""
    if not _fused_gemm._onednn_available():
        pytest.skip("this PyTorch build has no usable oneDNN linear operator")
    test_float32_matches_torch_nn(mode, "onednn", monkeypatch)


def test_auto_records_a_measured_choice_that_the_plan_follows(monkeypatch):
    monkeypatch.setenv("RNNKIT_FUSED_GEMM", "auto")
    monkeypatch.setattr(_fused_gemm, "_CHOICES", {})
    x, hx, params, _ = make_case("GRU", 4, 3, 2, 5, dtype=torch.float32)
    fused.run_direction("GRU", x, hx, *params)
    choice = fused.gemm_choice()
    step, bulk = "cpu float32 step B=3 H=5 rows=15", "cpu float32 sequence W_ih=15x2 split=10"  # a GRU
    if _fused_gemm._onednn_available():
        assert choice[step] in {"onednn", "addmm", "loop"} and choice[bulk] in {"onednn", "addmm"}
    elif _kernels.loop_available(x):
        assert list(choice) == [step] and choice[step] in {"addmm", "loop"}
    else:
        assert choice == {}  # nothing to choose between
        return
    plan = _fused_common.make_plan(x, params[0], params[1], None, False)
    assert plan.onednn == (choice[step] == "onednn") and plan.loop == (choice[step] == "loop")
    assert plan.bulk_onednn == (choice.get(bulk) == "onednn")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_candidate_step_can_be_timed(dtype, elementwise):
    """The measurement runs each candidate's step (its product and, with compiled kernels, the element-wise pass as
    the layer makes it) on odd shapes, with and without the compiled kernels."""
    x = torch.zeros(1, dtype=dtype)
    paths = ["addmm"] + (["onednn"] if dtype == torch.float32 and _fused_gemm._onednn_available() else [])
    paths += ["loop"] if _kernels.loop_available(x) else []
    for path in paths:
        seconds = _fused_gemm._seconds_per_step(path, dtype, 3, 5, 15)
        assert 0 < seconds < 0.1, (path, seconds)


def test_the_whole_sequence_probe_has_the_cells_layout(monkeypatch):
    """The GRU's input gradient comes in two blocks, the first a strided view (oneDNN copies it, MKL does not), so its
    whole-sequence products are timed in that layout; the other cells' in one contiguous block."""
    monkeypatch.setenv("RNNKIT_FUSED_GEMM", "auto")
    monkeypatch.setattr(_fused_gemm, "_CHOICES", {})
    monkeypatch.setattr(_fused_gemm, "_ONEDNN_OK", True)
    monkeypatch.setattr(_fused_gemm, "_seconds_per_step", lambda *a: 1.0)
    probes = []
    monkeypatch.setattr(_fused_gemm, "_seconds_bulk", lambda onednn, *shape: probes.append(shape) or 1.0)
    x = torch.zeros(4, 8, 3)
    for gates in (1, 3, 4):
        _fused_common.make_plan(x, torch.zeros(gates * 5, 3), torch.zeros(gates * 5, 5), None, False)
    rounds = 2 * _fused_gemm._ROUNDS  # both kernels, in turn
    assert probes == [(5, 3, 0)] * rounds + [(15, 3, 10)] * rounds + [(20, 3, 0)] * rounds  # each cell
    g = torch.Generator().manual_seed(0)
    d, w = torch.randn(7, 6, generator=g), torch.randn(6, 3, generator=g)
    for onednn in (False, True) if _fused_gemm._onednn_available() else (False,):
        out = _fused_gemm.matmul_for(onednn)(d[:, :4], w[:4])  # the probe's two blocks: the split product is exact
        _fused_gemm.matmul_into_for(onednn)(out, d[:, 4:].contiguous(), w[4:], True)
        assert torch.allclose(out, d @ w, atol=1e-5)


@pytest.mark.parametrize("faster", ["onednn", "addmm", "loop"])
def test_the_faster_kernel_is_chosen(faster, monkeypatch):
    monkeypatch.setenv("RNNKIT_FUSED_GEMM", "auto")
    monkeypatch.setattr(_fused_gemm, "_CHOICES", {})
    monkeypatch.setattr(_fused_gemm, "_ONEDNN_OK", True)
    x, w_ih, w_hh = torch.zeros(4, 8, 3), torch.zeros(12, 3), torch.zeros(12, 4)
    if faster == "loop" and not _kernels.loop_available(x):
        pytest.skip("no whole-sequence loops with these element-wise steps")
    monkeypatch.setattr(_fused_gemm, "_seconds_per_step", lambda path, *shape: 1.0 if path == faster else 2.0)
    other = "addmm" if faster == "onednn" else "onednn"  # the bulk products: the other one is faster
    monkeypatch.setattr(_fused_gemm, "_seconds_bulk", lambda onednn, *shape: 1.0 if onednn == (other == "onednn")
                        else 2.0)
    assert _fused_gemm.gemm_path(x, w_hh) == faster and _fused_gemm.bulk_path(x, w_ih) == other
    assert fused.gemm_choice() == {"cpu float32 step B=8 H=4 rows=12": faster, "cpu float32 sequence W_ih=12x3": other}


@pytest.mark.parametrize("forced", ["addmm", "onednn", "loop"])
def test_the_environment_overrides_the_measurement(forced, monkeypatch):
    monkeypatch.setenv("RNNKIT_FUSED_GEMM", forced)
    monkeypatch.setattr(_fused_gemm, "_ONEDNN_OK", True)
    monkeypatch.setattr(_fused_gemm, "_seconds_per_step", lambda *a: pytest.fail("measured despite the override"))
    monkeypatch.setattr(_fused_gemm, "_seconds_bulk", lambda *a: pytest.fail("measured despite the override"))
    x = torch.zeros(4, 8, 3)
    loop = _kernels.loop_available(x)
    assert _fused_gemm.gemm_path(x, torch.zeros(12, 4)) == ("addmm" if forced == "loop" and not loop else forced)
    assert _fused_gemm.bulk_path(x, torch.zeros(12, 3)) == ("addmm" if forced == "loop" else forced)


def test_an_unknown_gemm_override_is_an_error(monkeypatch):
    monkeypatch.setenv("RNNKIT_FUSED_GEMM", "mkl")
    with pytest.raises(ValueError, match="RNNKIT_FUSED_GEMM must be 'auto', 'addmm', 'onednn' or 'loop', got 'mkl'"):
        _fused_gemm.gemm_path(torch.zeros(4, 8, 3), torch.zeros(12, 4))


def test_float64_and_empty_inputs_never_use_onednn(monkeypatch):
    monkeypatch.setenv("RNNKIT_FUSED_GEMM", "onednn")
    f64 = torch.float64
    assert _fused_gemm.gemm_path(torch.zeros(4, 8, 3, dtype=f64), torch.zeros(12, 4, dtype=f64)) == "addmm"
    assert _fused_gemm.gemm_path(torch.zeros(4, 0, 3), torch.zeros(12, 4)) == "addmm"
    assert _fused_gemm.bulk_path(torch.zeros(4, 8, 3, dtype=f64), torch.zeros(12, 3, dtype=f64)) == "addmm"


def test_a_broken_onednn_operator_warns_and_falls_back(monkeypatch):
    if getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None) is None:
        pytest.skip("this PyTorch build has no oneDNN linear operator")

    def broken(*args, **kwargs):
        raise RuntimeError("no kernel for this CPU")

    monkeypatch.setattr(_fused_gemm, "_ONEDNN_OK", None)
    monkeypatch.setattr(torch.ops.mkldnn, "_reorder_linear_weight", broken)
    with pytest.warns(RuntimeWarning, match="present but unusable .*RuntimeError: no kernel for this CPU"):
        assert not _fused_gemm._onednn_available()
    monkeypatch.setenv("RNNKIT_FUSED_GEMM", "auto")
    monkeypatch.setattr(_fused_gemm, "_CHOICES", {})
    assert _fused_gemm.gemm_path(torch.zeros(4, 8, 3), torch.zeros(12, 4)) in {"addmm", "loop"}
    assert _fused_gemm.bulk_path(torch.zeros(4, 8, 3), torch.zeros(12, 3)) == "addmm"


# ------------------------------------------------------------------------------------------------ chunks, strides
@pytest.mark.parametrize("chunk_steps", [1, 2, 3])
@pytest.mark.parametrize("c", random_configs(15, seed=17), ids=config_id)
def test_backward_in_chunks_matches(c, chunk_steps, monkeypatch, elementwise):
    """Backward in chunks of 1-3 steps (the weight gradients summed chunk by chunk, dout staged per chunk; the
    compiled path's way when the graph is kept) gives the same values as the autograd loop; the chunk size is set
    through the byte budget the backend reads."""
    G = GATES[c["mode"]] + (1 if c["mode"] == "GRU" and c["reset_after"] else 0)
    monkeypatch.setattr(_fused_chunks, "CHUNK_BYTES", chunk_steps * c["B"] * G * c["H"] * 8)
    spans = []
    monkeypatch.setattr(_fused_compiled, "walk", _recording(_fused_chunks.walk, spans))
    got, want = run_both(c, loop_direction, retain_graph=True)
    assert_all_close(got, want)
    if elementwise != "torch-ops":  # the chunks really were that small (or smaller: one state buffer at most)
        assert max(hi - lo for lo, hi in spans) <= chunk_steps and (len(spans) > 1 or c["T"] <= chunk_steps)


def _recording(walk, spans):
    """``walk`` that also notes the chunks it was given."""
    def recorded(plan, chunk_spans, douts):
        spans.extend(chunk_spans)
        return walk(plan, chunk_spans, douts)
    return recorded


@pytest.mark.parametrize("mode,ra", [("RNN", True), ("LSTM", True), ("GRU", True), ("GRU", False)])
@pytest.mark.parametrize("layout", ["broadcast", "batch-major", "sliced"])
def test_strided_output_gradients(mode, ra, layout, monkeypatch):
    """dL/d output as out.sum() hands it over (stride 0), from a batch-major view, or every other column of a wider
    tensor: read in place, and equal to the same gradient made contiguous."""
    monkeypatch.setattr(_fused_chunks, "CHUNK_BYTES", 2 * 3 * 4 * 5 * 8)  # several chunks
    x, hx, params, lens = make_case(mode, 7, 3, 4, 5, seed=8)
    if layout == "broadcast":
        g = torch.ones((), dtype=DT).expand(7, 3, 5)
    elif layout == "batch-major":
        g = torch.randn(3, 7, 5, dtype=DT).transpose(0, 1)
    else:
        g = torch.randn(7, 3, 10, dtype=DT)[..., ::2]
    assert not g.is_contiguous()
    grads = []
    for dout, retain in ((g, False), (g, True), (g.contiguous(), False)):  # in one pass, in chunks; contiguous
        out, _ = fused.run_direction(mode, x, hx, *params, reset_after=ra)
        grads.append(torch.autograd.grad(out, leaves(x, hx, params), dout, retain_graph=retain))
    assert_all_close(list(grads[0]), list(grads[2]), atol=1e-12)
    assert_all_close(list(grads[1]), list(grads[2]), atol=1e-12)


@pytest.mark.parametrize("mode,ra", [("RNN", True), ("LSTM", True), ("GRU", True), ("GRU", False)])
@pytest.mark.parametrize("layout", ["batch-major", "sliced"])
def test_strided_inputs_and_weights(mode, ra, layout):
    """x as a batch-major view (what a batch_first layer hands over: rows T*I apart) or every other feature of a
    wider tensor, W_ih as a transposed copy: each step's input projection reads them in place or from a copy, and
    the results equal the textbook loop's (values and gradients), with lengths, both directions."""
    x, hx, params, lens = make_case(mode, 6, 5, 3, 4, lengths=[6, 2, 5, 1, 6], seed=18)
    with torch.no_grad():
        if layout == "batch-major":
            x_in = x.detach().transpose(0, 1).contiguous().transpose(0, 1)  # (T, B, I), strides (I, T*I, 1)
        else:
            x_in = torch.stack([x.detach(), torch.zeros_like(x)], dim=3).flatten(2)[..., ::2]  # stride 2 features
        w_ih = params[0].detach().t().contiguous().t()  # (G*H, I), strides (1, G*H)
    x_in, w_ih = x_in.requires_grad_(), w_ih.requires_grad_()
    assert torch.equal(x_in, x) and not x_in.is_contiguous() and not w_ih.is_contiguous()
    params = [w_ih, *params[1:]]
    for reverse in (False, True):
        kw = dict(reverse=reverse, reset_after=ra)
        got = outputs_and_grads(fused.run_direction, mode, x_in, hx, params, lens, **kw)
        want = outputs_and_grads(loop_direction, mode, x_in, hx, params, lens, **kw)
        assert_all_close(got, want)
    with torch.no_grad():  # inference: the LSTM's and GRU's projections go to one step's buffer
        got_out, _ = fused.run_direction(mode, x_in, hx, *params, lengths=lens, reset_after=ra)
    want_out, _ = loop_direction(mode, x_in, hx, *params, lengths=lens, reset_after=ra)
    assert_all_close([got_out], [want_out.detach()])


@pytest.mark.parametrize("mode", ["RNN", "LSTM", "GRU"])
def test_non_contiguous_initial_state(mode):
    """h_0 (and c_0) as strided views: the same results as contiguous copies."""
    x, hx, params, lens = make_case(mode, 5, 3, 2, 4, lengths=[5, 2, 4], seed=12)
    wide = tuple(torch.stack([h, h], 2)[..., 0] for h in (hx if isinstance(hx, tuple) else (hx,)))  # stride 2
    assert not wide[0].is_contiguous()
    strided = wide if mode == "LSTM" else wide[0]
    got = fused.run_direction(mode, x, strided, *params, lengths=lens)
    want = fused.run_direction(mode, x, hx, *params, lengths=lens)
    assert torch.equal(got[0], want[0])


def test_scratch_reused_between_calls_never_leaks_into_results():
    """The chunk buffer kept for the next backward is not part of any gradient returned by the previous one."""
    x, hx, params, lens = make_case("LSTM", 6, 3, 2, 4, seed=14)
    first = outputs_and_grads(fused.run_direction, "LSTM", x, hx, params, lens)
    kept = [t.clone() for t in first]
    second = outputs_and_grads(fused.run_direction, "LSTM", x, hx, params, lens, seed=2)  # other output gradients
    assert_all_close(first, kept, atol=0.0)
    assert not all(torch.equal(a, b) for a, b in zip(first[3:], second[3:], strict=True))


@pytest.mark.parametrize("mode,ra", [("RNN", True), ("LSTM", True), ("GRU", True), ("GRU", False)])
def test_steps_large_enough_to_split_over_threads(mode, ra):
    """B*H = 4096 elements per step: the compiled kernels split the rows over OpenMP threads (small test steps run
    on one); lengths and reverse included."""
    lengths = [4, 1, 3, 2] * 16
    x, hx, params, lens = make_case(mode, 4, 64, 8, 64, lengths=lengths, seed=15)
    kw = dict(reverse=True, reset_after=ra)
    got = outputs_and_grads(fused.run_direction, mode, x, hx, params, lens, **kw)
    want = outputs_and_grads(loop_direction, mode, x, hx, params, lens, **kw)
    assert_all_close(got, want)


@pytest.mark.parametrize("grad", ["no_grad", "no input requires grad"])
@pytest.mark.parametrize("mode,ra", [("RNN", True), ("LSTM", True), ("GRU", True), ("GRU", False)])
def test_inference_keeps_nothing_for_backward_and_matches(mode, ra, grad):
    """Where no backward can follow, the cells keep no per-step values for it (the LSTM's cell states go to two
    buffers in turn, the GRU's n to one): the same output and final states, with lengths, both directions."""
    x, hx, params, lens = make_case(mode, 7, 5, 3, 6, lengths=[7, 2, 5, 1, 7], seed=17)
    if grad != "no_grad":
        x, params = x.detach(), [p.detach() for p in params]
        hx = tuple(h.detach() for h in hx) if isinstance(hx, tuple) else hx.detach()
    for reverse in (False, True):
        kw = dict(lengths=lens, reverse=reverse, reset_after=ra)
        with torch.no_grad() if grad == "no_grad" else contextlib.nullcontext():
            out, hn = fused.run_direction(mode, x, hx, *params, **kw)
        want_out, want_hn = loop_direction(mode, x, hx, *params, **kw)
        hs, want_hs = (hn, want_hn) if isinstance(hn, tuple) else ((hn,), (want_hn,))
        assert_all_close([out, *hs], [t.detach() for t in (want_out, *want_hs)])


@pytest.mark.parametrize("mode,ra", [("LSTM", True), ("GRU", True), ("GRU", False)])
def test_saturated_gates(mode, ra):
    """Pre-activations in the hundreds (gates pinned at 0 or 1, where a vector exp would leave its fast path): the
    same values as the autograd loop."""
    x, hx, params, lens = make_case(mode, 5, 4, 3, 6, lengths=[5, 3, 5, 1], seed=16)
    with torch.no_grad():
        for p in params[:2]:
            p.mul_(300)
    kw = dict(reverse=False, reset_after=ra)
    got = outputs_and_grads(fused.run_direction, mode, x, hx, params, lens, **kw)
    want = outputs_and_grads(loop_direction, mode, x, hx, params, lens, **kw)
    assert_all_close(got, want)
