"""rnnkit.layers equal torch.nn: over seeded random configurations, torch.nn's weights loaded into rnnkit give the same
outputs, final states and gradients (inputs, initial states, every parameter) in float64 to 1e-10, for every backend.
GRU(reset_after=False), which torch.nn lacks, is checked against Chung et al. (2014) transcribed in test_cells.py."""

import random

import pytest
import torch
from references import chung2014_gru_step
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnnkit
from rnnkit import backends

DT = torch.float64
ATOL = 1e-10
BACKENDS = ["reference", "torch", "fused"]
INPUT_KINDS = ["padded", "unbatched", "lengths", "packed_sorted", "packed_unsorted"]
NUM_CONFIGS = 60


def random_config(seed):
    """One seeded configuration: layer type, sizes, flags and the kind of input batch."""
    rng = random.Random(seed)
    # seeds 0-19 and 20-39 each hold every (layer type, input kind) pair once; hx is given in 20-39
    mode = ["LSTM", "GRU", "RNN_TANH", "RNN_RELU"][seed % 4]
    return dict(
        mode=mode, I=rng.randint(1, 5), H=rng.randint(1, 5), num_layers=rng.randint(1, 3),
        bidirectional=rng.random() < 0.5, batch_first=rng.random() < 0.5, bias=rng.random() < 0.75,
        kind=INPUT_KINDS[(seed // 4) % len(INPUT_KINDS)], give_hx=(seed // 20) % 2 == 1,
        T=rng.randint(1, 7), B=rng.randint(1, 4), seed=seed,
    )


def make_pair(cfg, backend, device="cpu", **extra):
    """A torch.nn layer and an rnnkit layer holding the torch layer's weights (loaded with strict=True)."""
    kw = dict(num_layers=cfg["num_layers"], bias=cfg["bias"], batch_first=cfg["batch_first"],
              bidirectional=cfg["bidirectional"], dtype=DT, device=device)
    if cfg["mode"].startswith("RNN"):
        kw["nonlinearity"] = "tanh" if cfg["mode"] == "RNN_TANH" else "relu"
    name = cfg["mode"].split("_")[0]
    torch.manual_seed(cfg["seed"])
    theirs = getattr(nn, name)(cfg["I"], cfg["H"], **kw)
    ours = getattr(rnnkit, name)(cfg["I"], cfg["H"], backend=backend, **kw, **extra)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return ours, theirs


def make_inputs(cfg, device="cpu"):
    """Input x (padded, in the layer's layout), lengths or None, hx or None; all float64 leaves."""
    gen = torch.Generator().manual_seed(1000 + cfg["seed"])
    T, B, I, H = cfg["T"], cfg["B"], cfg["I"], cfg["H"]
    unbatched = cfg["kind"] == "unbatched"
    shape = (T, I) if unbatched else ((B, T, I) if cfg["batch_first"] else (T, B, I))
    x = torch.randn(shape, dtype=DT, generator=gen)
    lengths = None
    if cfg["kind"] in ("lengths", "packed_sorted", "packed_unsorted"):
        lengths = torch.randint(1, T + 1, (B,), generator=gen)
        lengths[torch.randint(0, B, (1,), generator=gen)] = T  # the padded length is used by someone
        if cfg["kind"] == "packed_sorted":
            lengths = lengths.sort(descending=True).values
    hx = None
    if cfg["give_hx"]:
        D = 2 if cfg["bidirectional"] else 1
        hshape = (cfg["num_layers"] * D, H) if unbatched else (cfg["num_layers"] * D, B, H)
        hx = [torch.randn(hshape, dtype=DT, generator=gen) for _ in range(2 if cfg["mode"] == "LSTM" else 1)]
    leaves = [x] + (hx or [])
    leaves = [t.to(device).requires_grad_(True) for t in leaves]
    x, hx = leaves[0], leaves[1:] or None
    if hx is not None:
        hx = tuple(hx) if cfg["mode"] == "LSTM" else hx[0]
    return x, lengths, hx


def run(module, cfg, x, lengths, hx, how):
    """Forward in the way `how` says; returns padded output (the layer's layout) and the final state."""
    bf = cfg["batch_first"]
    if cfg["kind"] in ("packed_sorted", "packed_unsorted"):
        packed = pack_padded_sequence(x, lengths, batch_first=bf, enforce_sorted=cfg["kind"] == "packed_sorted")
        out, h_n = module(packed, hx)
        assert isinstance(out, nn.utils.rnn.PackedSequence)
        assert torch.equal(out.batch_sizes, packed.batch_sizes)
        for a, b in ((out.sorted_indices, packed.sorted_indices), (out.unsorted_indices, packed.unsorted_indices)):
            assert (a is None and b is None) or torch.equal(a, b)
        return pad_packed_sequence(out, batch_first=bf, total_length=cfg["T"])[0], h_n
    if cfg["kind"] == "lengths" and how == "lengths":
        return module(x, hx, lengths=lengths)
    if cfg["kind"] == "lengths":  # torch.nn has no lengths=: pack, run, pad back
        out, h_n = module(pack_padded_sequence(x, lengths, batch_first=bf, enforce_sorted=False), hx)
        return pad_packed_sequence(out, batch_first=bf, total_length=cfg["T"])[0], h_n
    return module(x, hx)


def flat(state):
    return list(state) if isinstance(state, tuple) else [state]


def assert_equal_forward_backward(ours, theirs, cfg, device="cpu"):
    """Outputs, final states, input/state gradients and every parameter gradient agree to ATOL."""
    results = []
    for module, how in ((ours, "lengths"), (theirs, "torch")):
        x, lengths, hx = make_inputs(cfg, device)
        out, h_n = run(module, cfg, x, lengths, hx, how)
        gen = torch.Generator().manual_seed(7)
        tensors = [out, *flat(h_n)]
        loss = sum((torch.randn(t.shape, dtype=DT, generator=gen).to(device) * t).sum() for t in tensors)
        loss.backward()
        grads = [x.grad] + [h.grad for h in (flat(hx) if hx is not None else [])]
        results.append((tensors, grads))
    (out_a, grads_a), (out_b, grads_b) = results
    assert [t.shape for t in out_a] == [t.shape for t in out_b]
    for a, b in zip(out_a + grads_a, out_b + grads_b, strict=True):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)
    params_b = dict(theirs.named_parameters())
    assert set(dict(ours.named_parameters())) == set(params_b)
    for name, p in ours.named_parameters():
        assert p.grad is not None, name
        torch.testing.assert_close(p.grad, params_b[name].grad, atol=ATOL, rtol=0,
                                   msg=lambda m, name=name: f"{name}: {m}")


def test_configurations_cover_the_required_cases():
    cfgs = [random_config(s) for s in range(NUM_CONFIGS)]
    for key in ("bidirectional", "batch_first", "bias", "give_hx"):
        assert {c[key] for c in cfgs} == {True, False}, key
    assert {c["num_layers"] for c in cfgs} == {1, 2, 3}
    modes = ("LSTM", "GRU", "RNN_TANH", "RNN_RELU")
    combos = {(m, k, h) for m in modes for k in INPUT_KINDS for h in (True, False)}
    assert {(c["mode"], c["kind"], c["give_hx"]) for c in cfgs} == combos


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed", range(NUM_CONFIGS))
def test_layer_equals_torch(seed, backend):
    cfg = random_config(seed)
    ours, theirs = make_pair(cfg, backend)
    assert_equal_forward_backward(ours, theirs, cfg)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed", range(0, NUM_CONFIGS, 3))
def test_layer_equals_torch_cuda(seed, backend):
    cfg = random_config(seed)
    ours, theirs = make_pair(cfg, backend, device="cuda")
    assert_equal_forward_backward(ours, theirs, cfg, device="cuda")


# --------------------------------------------------------------- GRU(reset_after=False) against the paper


def chung2014_gru(module, x, lengths):
    """Multi-layer (bi)directional GRU from chung2014_gru_step, one sequence at a time, no masks. x is (T, B, I)."""
    D = 2 if module.bidirectional else 1
    outputs, finals = [], []
    for b in range(x.shape[1]):
        seq = x[: int(lengths[b]), b]  # (T_b, I)
        h_last = []
        for layer in range(module.num_layers):
            per_dir = []
            for d in range(D):
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                params = [getattr(module, n + sfx, None) for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
                h = torch.zeros(module.hidden_size, dtype=x.dtype)
                steps = []
                for t in (reversed(range(len(seq))) if d else range(len(seq))):
                    h = chung2014_gru_step(seq[t], h, *params)
                    steps.append(h)
                per_dir.append(torch.stack(steps[::-1] if d else steps))  # (T_b, H)
                h_last.append(h)
            seq = torch.cat(per_dir, dim=-1)  # (T_b, D * H)
        pad = seq.new_zeros(x.shape[0] - seq.shape[0], seq.shape[1])
        outputs.append(torch.cat([seq, pad]))
        finals.append(torch.stack(h_last))  # (L * D, H)
    return torch.stack(outputs, dim=1), torch.stack(finals, dim=1)  # (T, B, D * H), (L * D, B, H)


@pytest.mark.parametrize("backend", ["reference", "fused"])
@pytest.mark.parametrize("seed", range(12))
def test_gru_reset_before_equals_chung2014(seed, backend):
    rng = random.Random(seed)
    T, B, I, H = rng.randint(1, 6), rng.randint(1, 4), rng.randint(1, 4), rng.randint(1, 5)
    torch.manual_seed(seed)
    gru = rnnkit.GRU(I, H, num_layers=rng.randint(1, 3), bias=rng.random() < 0.7, bidirectional=seed % 2 == 1,
                     dtype=DT, reset_after=False, backend=backend)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(T, B, I, dtype=DT, generator=gen)
    lengths = torch.randint(1, T + 1, (B,), generator=gen) if seed % 3 else torch.full((B,), T)
    weights = [torch.randn(T, B, (2 if gru.bidirectional else 1) * H, dtype=DT, generator=gen),
               torch.randn(gru.num_layers * (2 if gru.bidirectional else 1), B, H, dtype=DT, generator=gen)]
    results = []
    for fn in (lambda xx: gru(xx, lengths=lengths), lambda xx: chung2014_gru(gru, xx, lengths)):
        gru.zero_grad()
        xx = x.clone().requires_grad_(True)
        out, h_n = fn(xx)
        ((weights[0] * out).sum() + (weights[1] * h_n).sum()).backward()
        results.append([out, h_n, xx.grad] + [p.grad.clone() for p in gru.parameters()])
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)


@pytest.mark.parametrize("backend", ["reference", "fused"])
def test_gru_cell_reset_before_equals_chung2014(backend):
    torch.manual_seed(0)
    cell = rnnkit.GRUCell(3, 4, dtype=DT, reset_after=False, backend=backend)
    x, h = torch.randn(2, 3, dtype=DT), torch.randn(2, 4, dtype=DT)
    expected = chung2014_gru_step(x, h, cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
    torch.testing.assert_close(cell(x, h), expected, atol=ATOL, rtol=0)
    torch.testing.assert_close(cell(x[0], h[0]), expected[0], atol=ATOL, rtol=0)


# --------------------------------------------------------------- cells as modules


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed", range(16))
def test_cell_module_equals_torch(seed, backend):
    rng = random.Random(seed)
    name = ["RNNCell", "LSTMCell", "GRUCell"][seed % 3]
    I, H, B = rng.randint(1, 5), rng.randint(1, 5), rng.randint(1, 4)
    kw = dict(bias=rng.random() < 0.7, dtype=DT)
    if name == "RNNCell":
        kw["nonlinearity"] = rng.choice(["tanh", "relu"])
    torch.manual_seed(seed)
    theirs = getattr(nn, name)(I, H, **kw)
    ours = getattr(rnnkit, name)(I, H, backend=backend, **kw)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    batched, give_hx = seed % 4 < 2, seed % 2 == 0
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(*((B,) if batched else ()), I, dtype=DT, generator=gen)
    hx = [torch.randn(*((B,) if batched else ()), H, dtype=DT, generator=gen) for _ in range(2)] if give_hx else None
    results = []
    for module in (ours, theirs):
        xx = x.clone().requires_grad_(True)
        hh = None if hx is None else [h.clone().requires_grad_(True) for h in hx]
        arg = None if hh is None else (tuple(hh) if name == "LSTMCell" else hh[0])
        out = flat(module(xx, arg))
        sum((torch.ones_like(t) * torch.arange(t.numel()).reshape(t.shape) * t).sum() for t in out).backward()
        grads = [xx.grad] + ([] if hh is None else [h.grad for h in hh if h.grad is not None])
        results.append(out + grads + [p.grad for p in module.parameters()])
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)


# --------------------------------------------------------------- torch.nn compatibility


@pytest.mark.parametrize("name", ["RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell"])
def test_same_seed_same_init_and_state_dict_round_trips(name):
    kw = {} if name.endswith("Cell") else dict(num_layers=2, bidirectional=True)
    torch.manual_seed(3)
    theirs = getattr(nn, name)(3, 4, **kw)
    torch.manual_seed(3)
    ours = getattr(rnnkit, name)(3, 4, **kw)
    sd_ours, sd_theirs = ours.state_dict(), theirs.state_dict()
    assert list(sd_ours) == list(sd_theirs)  # same names in the same order
    for key in sd_ours:
        assert torch.equal(sd_ours[key], sd_theirs[key]), key  # same init from the same seed
    bound = 1 / 4**0.5
    assert all(p.abs().max() <= bound for p in ours.parameters())
    # rnnkit -> torch.nn and torch.nn -> rnnkit, strict
    fresh_theirs, fresh_ours = getattr(nn, name)(3, 4, **kw), getattr(rnnkit, name)(3, 4, **kw)
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(1.0)
    fresh_theirs.load_state_dict(ours.state_dict(), strict=True)
    fresh_ours.load_state_dict(fresh_theirs.state_dict(), strict=True)
    for key, value in ours.state_dict().items():
        assert torch.equal(fresh_theirs.state_dict()[key], value)
        assert torch.equal(fresh_ours.state_dict()[key], value)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["LSTM", "GRU", "RNN"])
def test_inter_layer_dropout(name, backend):
    torch.manual_seed(0)
    theirs = getattr(nn, name)(3, 4, num_layers=3, dropout=1.0, dtype=DT)
    ours = getattr(rnnkit, name)(3, 4, num_layers=3, dropout=1.0, dtype=DT, backend=backend)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(5, 2, 3, dtype=DT)
    # dropout=1 zeroes every layer's output before the next layer: deterministic, so it must equal torch.nn exactly
    for a, b in zip(flat(ours(x)[1]) + [ours(x)[0]], flat(theirs(x)[1]) + [theirs(x)[0]], strict=True):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)
    # eval mode switches it off
    ours.eval(), theirs.eval()
    torch.testing.assert_close(ours(x)[0], theirs(x)[0], atol=ATOL, rtol=0)
    # p = 0.5 in training: a fresh mask on every call
    ours.train()
    ours.dropout = 0.5
    assert not torch.equal(ours(x)[0], ours(x)[0])


def test_dropout_with_one_layer_warns_like_torch():
    with pytest.warns(UserWarning, match="dropout acts between stacked layers only"):
        rnnkit.GRU(2, 3, dropout=0.5)


def test_backend_switch_and_default():
    gru = rnnkit.GRU(2, 3)
    assert gru.backend == backends.DEFAULT_BACKEND
    x = torch.randn(4, 2, 2)
    out_default = gru(x)[0]
    gru.backend = "torch"
    torch.testing.assert_close(gru(x)[0], out_default, atol=1e-6, rtol=0)  # float32 here
    assert "backend='torch'" in repr(gru)
    with pytest.raises(ValueError, match="unknown backend 'cudnn'"):
        gru.backend = "cudnn"


@pytest.mark.parametrize("name", ["LSTM", "GRUCell"])
def test_float32_and_outputs_follow_input(name):
    module = getattr(rnnkit, name)(3, 4)  # default dtype float32
    x = torch.randn(2, 3) if name.endswith("Cell") else torch.randn(5, 2, 3)
    for t in flat(module(x)[1] if name == "LSTM" else module(x)):
        assert t.dtype == torch.float32 and t.device == x.device


def test_lengths_equal_running_each_sequence_alone():
    """lengths= is the same as running each sequence unpadded (the definition, without torch.nn)."""
    torch.manual_seed(0)
    lstm = rnnkit.LSTM(3, 4, num_layers=2, bidirectional=True, batch_first=True, dtype=DT)
    x = torch.randn(3, 6, 3, dtype=DT)
    lengths = [2, 6, 4]
    out, (h_n, c_n) = lstm(x, lengths=lengths)
    for b, n in enumerate(lengths):
        out_b, (h_b, c_b) = lstm(x[b, :n])  # unbatched, unpadded
        torch.testing.assert_close(out[b, :n], out_b, atol=ATOL, rtol=0)
        assert torch.equal(out[b, n:], torch.zeros_like(out[b, n:]))
        torch.testing.assert_close(h_n[:, b], h_b, atol=ATOL, rtol=0)
        torch.testing.assert_close(c_n[:, b], c_b, atol=ATOL, rtol=0)


def _autograd_node_names(*tensors):
    seen, names, stack = set(), set(), [t.grad_fn for t in tensors]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return names


@pytest.mark.parametrize("name", ["RNN", "LSTM", "GRU"])
def test_reference_loop_has_no_per_step_indexing(name):
    """x[t] or out[t] = h in the loop would put a Select/CopySlices node per step in the graph, each of whose backward
    allocates a full (T, B, .) gradient: O(T^2). The reference splits once (unbind) and stacks once."""
    module = getattr(rnnkit, name)(3, 4, num_layers=2, bidirectional=True, backend="reference")
    x = torch.randn(6, 2, 3, requires_grad=True)
    out, h_n = module(x, lengths=[6, 3])
    names = _autograd_node_names(out, *flat(h_n))
    assert {"UnbindBackward0", "StackBackward0"} <= names
    assert not names & {"SelectBackward0", "CopySlices", "IndexPutBackward0", "IndexBackward0"}, names


@pytest.mark.parametrize("backend", sorted(backends.RUNNERS))
@pytest.mark.parametrize("mode", ["RNN", "LSTM", "GRU"])
@pytest.mark.parametrize("reverse", [False, True])
def test_run_direction_contract(mode, reverse, backend):
    """Every entry of the backend table keeps the DirectionRunner contract: on a padded batch = each sequence alone
    through rnnkit.cells, forwards or from its own last step backwards; zeros past each length; h_n the state after
    each sequence's last valid step."""
    run = backends.RUNNERS[backend]
    gen = torch.Generator().manual_seed(5)
    T, B, I, H = 6, 4, 3, 2
    G = {"RNN": 1, "LSTM": 4, "GRU": 3}[mode]
    x = torch.randn(T, B, I, dtype=DT, generator=gen)
    w = [torch.randn(shape, dtype=DT, generator=gen) for shape in ((G * H, I), (G * H, H), (G * H,), (G * H,))]
    h0 = torch.randn(B, H, dtype=DT, generator=gen)
    hx = (h0, torch.randn(B, H, dtype=DT, generator=gen)) if mode == "LSTM" else h0
    lengths = torch.tensor([6, 1, 4, 3])
    out, h_n = run(mode, x, hx, *w, lengths=lengths, reverse=reverse)
    step = {"RNN": rnnkit.rnn_cell, "LSTM": rnnkit.lstm_cell, "GRU": rnnkit.gru_cell}[mode]
    for b, n in enumerate(lengths.tolist()):
        state = tuple(s[b] for s in hx) if mode == "LSTM" else hx[b]
        expected = [None] * n
        for t in (reversed(range(n)) if reverse else range(n)):
            state = step(x[t, b], state, *w)
            expected[t] = state[0] if mode == "LSTM" else state
        torch.testing.assert_close(out[:n, b], torch.stack(expected), atol=ATOL, rtol=0)
        assert torch.equal(out[n:, b], torch.zeros(T - n, H, dtype=DT))
        for got, want in zip(flat(h_n), flat(state), strict=True):
            torch.testing.assert_close(got[b], want, atol=ATOL, rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["RNN", "LSTM", "GRU"])
def test_empty_batch_like_torch(name, backend):
    """torch.nn accepts a batch of zero sequences (e.g. an empty last batch); so must every backend."""
    ours = getattr(rnnkit, name)(3, 4, num_layers=2, bidirectional=True, backend=backend)
    out, h_n = ours(torch.randn(5, 0, 3))
    assert out.shape == (5, 0, 8)
    assert all(h.shape == (4, 0, 4) for h in flat(h_n))


@pytest.mark.parametrize("backend", BACKENDS)
def test_unbatched_input_with_one_length_is_the_cut_sequence(backend):
    layer = rnnkit.LSTM(3, 4, num_layers=2, bidirectional=True, backend=backend, dtype=torch.float64)
    x = torch.randn(6, 3, dtype=torch.float64)
    out, (h, c) = layer(x, lengths=[4])
    cut, (h_cut, c_cut) = layer(x[:4])
    torch.testing.assert_close(out[:4], cut)
    assert out[4:].abs().max() == 0  # zeros past the end, as for a padded batch
    torch.testing.assert_close(h, h_cut)
    torch.testing.assert_close(c, c_cut)
