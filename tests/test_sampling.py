"""rnnkit.sampling: temperature / top-k sampling to EOS, reproducible by seed; piano-roll sampling."""

import pytest
import torch
from torch import nn

from rnnkit.sampling import next_symbol_distribution, sample_piano_roll, sample_sequence

V, EOS = 6, 1


class MarkovModel:
    """Next-token logits depend only on the current token (a table), plus a step counter as the state."""

    def __init__(self, table):
        self.table = table  # (V, V)
        self.seen = []

    def initial_state(self, batch_size):
        return torch.zeros(batch_size, dtype=torch.long)

    def step(self, token, state):
        assert token.dtype == torch.long and token.dim() == 1
        self.seen.append(token.clone())
        return self.table[token], state + 1


def _table(seed=0, eos_bias=-2.0):
    t = torch.randn(V, V, generator=torch.Generator().manual_seed(seed)) * 2
    t[:, EOS] += eos_bias
    return t


def test_same_seed_same_sample_different_seed_differs():
    model = MarkovModel(_table())
    a = sample_sequence(model, eos=EOS, max_len=50, num_samples=4, seed=0)
    b = sample_sequence(model, eos=EOS, max_len=50, num_samples=4, seed=0)
    c = sample_sequence(model, eos=EOS, max_len=50, num_samples=4, seed=1)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert any(len(x) != len(y) or not torch.equal(x, y) for x, y in zip(a, c, strict=True))
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    first, second = sample_sequence(model, eos=EOS, generator=g1), sample_sequence(model, eos=EOS, generator=g2)
    assert torch.equal(first[0], second[0])


def test_stops_at_eos_or_length_limit():
    table = torch.full((V, V), -10.0)
    table[EOS, 3] = 10.0  # start -> 3
    table[3, 4] = 10.0  # 3 -> 4
    table[4, EOS] = 10.0  # 4 -> EOS
    model = MarkovModel(table)
    (out,) = sample_sequence(model, eos=EOS, max_len=50, seed=0)
    assert out.tolist() == [3, 4, EOS]
    assert len(model.seen) == 3  # prompt EOS, then 3 and 4 fed back; nothing after EOS
    (cut,) = sample_sequence(model, eos=EOS, max_len=2, seed=0)
    assert cut.tolist() == [3, 4]  # hit the limit: no EOS at the end
    loop = torch.full((V, V), -10.0)
    loop[:, 2] = 10.0  # never emits EOS
    (long,) = sample_sequence(MarkovModel(loop), eos=EOS, max_len=17, seed=0)
    assert long.tolist() == [2] * 17


def test_batch_samples_stop_independently():
    model = MarkovModel(_table(eos_bias=1.0))
    outs = sample_sequence(model, eos=EOS, max_len=30, num_samples=16, seed=0)
    assert len(outs) == 16 and len({len(o) for o in outs}) > 1
    for o in outs:
        assert (o[:-1] != EOS).all()  # EOS only ever at the end
        assert o[-1] == EOS or len(o) == 30


def test_prompt_is_fed_first():
    model = MarkovModel(_table())
    sample_sequence(model, prompt=[1, 4, 2], max_len=3, seed=0)
    assert [t.item() for t in model.seen[:3]] == [1, 4, 2]


def _greedy(table, start, n):
    out, tok = [], start
    for _ in range(n):
        tok = int(table[tok].argmax())
        out.append(tok)
    return out


def test_low_temperature_approaches_argmax():
    table = _table(seed=5, eos_bias=-50.0)
    (cold,) = sample_sequence(MarkovModel(table), eos=EOS, max_len=20, temperature=1e-4, seed=0)
    assert cold.tolist() == _greedy(table, EOS, 20)
    logits = torch.tensor([1.0, 2.0, 0.5, 1.9])
    p = next_symbol_distribution(logits, 1e-3)
    assert torch.allclose(p, torch.tensor([0.0, 1.0, 0.0, 0.0]), atol=1e-6)
    assert torch.allclose(next_symbol_distribution(logits, 1.0), torch.softmax(logits, -1))
    hot = next_symbol_distribution(logits, 1e3)
    assert torch.allclose(hot, torch.full((4,), 0.25), atol=1e-3)  # high temperature: towards uniform
    entropies = [-(q * q.log()).sum() for q in (next_symbol_distribution(logits, t) for t in (0.5, 1.0, 2.0))]
    assert entropies[0] < entropies[1] < entropies[2]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_extreme_temperature_and_logits_stay_finite(dtype):
    # z / tau overflows to inf for a tiny tau or huge logits; the result must still be a distribution, not NaN
    logits = torch.tensor([[1.0, 2.0, 2.0, -3.0], [1e38, 3e38, 0.0, -1e38]], dtype=dtype)
    for tau in (1e-300 if dtype == torch.float64 else 1e-40, 1e-3):
        p = next_symbol_distribution(logits, tau)
        assert torch.isfinite(p).all()
        assert torch.allclose(p, torch.tensor([[0.0, 0.5, 0.5, 0.0], [0.0, 1.0, 0.0, 0.0]], dtype=dtype))
    (cold,) = sample_sequence(lambda tok, s: (logits[:1].expand(1, 4), s), prompt=[0], max_len=5,
                              temperature=1e-40, seed=0)
    assert set(cold.tolist()) <= {1, 2}


def test_top_k_restricts_support():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0, -1.0], [5.0, 4.0, 3.0, 2.0, 1.0]], dtype=torch.float64)
    p = next_symbol_distribution(logits, 1.0, top_k=2)
    assert p.dtype == torch.float64
    assert (p[0, [0, 2, 4]] == 0).all() and (p[1, 2:] == 0).all()
    assert torch.allclose(p[0, [1, 3]], torch.softmax(logits[0, [1, 3]], -1))
    assert torch.allclose(p.sum(-1), torch.ones(2, dtype=torch.float64))
    assert torch.equal(next_symbol_distribution(logits, 1.0, top_k=99), next_symbol_distribution(logits, 1.0))
    table = _table(seed=2, eos_bias=0.0)
    model = MarkovModel(table)
    outs = sample_sequence(model, eos=EOS, max_len=40, num_samples=8, top_k=2, seed=0)
    allowed = torch.topk(table, 2, dim=-1).indices  # (V, 2)
    for o in outs:
        prev = EOS
        for tok in o.tolist():
            assert tok in allowed[prev].tolist()
            prev = tok
    (greedy,) = sample_sequence(MarkovModel(table), eos=EOS, max_len=10, top_k=1, seed=0)
    expected = _greedy(table, EOS, 10)
    if EOS in expected:
        expected = expected[: expected.index(EOS) + 1]
    assert greedy.tolist() == expected


def test_sample_frequencies_match_distribution():
    logits = torch.tensor([0.0, 1.0, 2.0, -1.0])

    def step(token, state):
        return logits.expand(token.shape[0], 4), state

    out = sample_sequence(step, prompt=[0], max_len=1, num_samples=20000, temperature=1.5, seed=0)
    freq = torch.bincount(torch.cat(out), minlength=4).double() / 20000
    assert torch.allclose(freq, next_symbol_distribution(logits, 1.5).double(), atol=0.015)


class TinyCharModel(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed, self.rnn, self.out = nn.Embedding(V, 8), nn.GRUCell(8, 16), nn.Linear(16, V)
        self.drop = nn.Dropout(0.5)
        self.modes = []

    def initial_state(self, batch_size):
        return torch.zeros(batch_size, 16, device=self.out.weight.device)

    def step(self, token, state):
        self.modes.append(self.training)
        h = self.rnn(self.drop(self.embed(token)), state)
        return self.out(h), h


def test_module_sampled_in_eval_mode_without_grad():
    model = TinyCharModel().train()
    a = sample_sequence(model, eos=EOS, max_len=30, num_samples=3, seed=7)
    assert model.training and not any(model.modes)  # eval while sampling (no dropout), restored after
    b = sample_sequence(model, eos=EOS, max_len=30, num_samples=3, seed=7)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert all(o.dtype == torch.long and o.device.type == "cpu" for o in a)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_sampling_follows_model_device(device):
    model = TinyCharModel().to(device)
    cpu = sample_sequence(TinyCharModel(), eos=EOS, max_len=20, seed=1)
    there = sample_sequence(model, eos=EOS, max_len=20, seed=1)
    assert torch.equal(cpu[0], there[0])  # the draws happen on the seed's CPU generator


def test_charlm_from_models():
    from rnnkit import models  # a broken import must fail here, not skip

    torch.manual_seed(0)
    lm = models.CharLM(V, 16, cell="gru")
    a = sample_sequence(lm, eos=EOS, max_len=25, num_samples=2, seed=0)
    b = sample_sequence(lm, eos=EOS, max_len=25, num_samples=2, seed=0)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True)) and all(1 <= len(x) <= 25 for x in a)


def test_sample_sequence_takes_numpy_ints():
    np = pytest.importorskip("numpy")
    a = sample_sequence(MarkovModel(_table()), eos=np.int64(EOS), max_len=np.int32(5), num_samples=np.int64(2), seed=0)
    b = sample_sequence(MarkovModel(_table()), eos=EOS, max_len=5, num_samples=2, seed=0)
    assert len(a) == 2 and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("temperature", [0, -1.0, float("nan")])
def test_sample_sequence_temperature_hint(temperature):
    with pytest.raises(ValueError, match="small temperature such as 1e-4"):
        sample_sequence(MarkovModel(_table()), eos=EOS, max_len=5, seed=0, temperature=temperature)


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(temperature=0), ValueError, "temperature > 0, got 0"),
    (dict(temperature=-1.0), ValueError, "temperature > 0"),
    (dict(temperature=float("nan")), ValueError, "temperature > 0"),
    (dict(temperature=float("inf")), ValueError, "finite temperature"),
    (dict(temperature="hot"), TypeError, "temperature to be a number"),
    (dict(top_k=0), ValueError, "top_k >= 1"),
    (dict(top_k=-3), ValueError, "top_k >= 1"),
    (dict(top_k=2.5), TypeError, "top_k to be an int"),
    (dict(max_len=0), ValueError, "max_len >= 1, got 0"),
    (dict(max_len=5.0), TypeError, "max_len to be an int, got float"),  # a wrong type is a TypeError
    (dict(max_len="5"), TypeError, "max_len to be an int, got str"),
    (dict(num_samples=0), ValueError, "num_samples >= 1, got 0"),
    (dict(eos=-1), ValueError, "eos >= 0, got -1"),
    (dict(eos=True), TypeError, "eos to be an int or None, got bool"),
    (dict(eos=None), ValueError, "prompt or an eos"),
    (dict(seed=1, generator=torch.Generator()), ValueError, "seed or generator"),
    (dict(prompt=[]), ValueError, "non-empty prompt"),
    (dict(prompt=[1, 2.5]), TypeError, "prompt to hold integer token ids"),  # was cast to [1, 2] silently
    (dict(prompt=[-1]), ValueError, "token ids >= 0 in the prompt"),
    (dict(eos=V, prompt=[0]), ValueError, f"eos < the vocabulary size {V}, got {V}"),  # could never be drawn
])
def test_sample_sequence_errors(kwargs, exc, match):
    """One exception type per kind of mistake (TypeError for a wrong type), messages from rnnkit._checks."""
    args = dict(eos=EOS, max_len=5, seed=0)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        sample_sequence(MarkovModel(_table()), **args)


def test_bad_models_and_logits():
    with pytest.raises(TypeError, match="step"):
        sample_sequence(42, eos=EOS)
    with pytest.raises(ValueError, match=r"logits of shape \(2, V\), got \(3, 6\)"):
        sample_sequence(lambda tok, s: (torch.zeros(3, V), s), eos=EOS, num_samples=2, seed=0)
    for bad in (dict(temperature=0.0), dict(top_k=0)):
        with pytest.raises(ValueError):
            next_symbol_distribution(torch.zeros(3), **bad)
    with pytest.raises(TypeError, match="floating-point"):
        next_symbol_distribution(torch.zeros(3, dtype=torch.long))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_logits_without_a_distribution_are_named(bad):
    logits = torch.zeros(3, 4)
    logits[1, 2] = bad
    with pytest.raises(ValueError, match=r"finite logits.*logits\[1\]"):
        next_symbol_distribution(logits)
    with pytest.raises(ValueError, match="finite logits"):
        sample_sequence(lambda tok, s: (logits[1:2], s), prompt=[0], max_len=3, seed=0)


def test_masked_symbols_are_fine_but_not_a_fully_masked_row():
    logits = torch.tensor([[0.0, float("-inf"), 1.0], [float("-inf")] * 3])
    assert torch.equal(next_symbol_distribution(logits[:1])[0, 1], torch.tensor(0.0))
    with pytest.raises(ValueError, match=r"not a whole row.*logits\[1\]"):
        next_symbol_distribution(logits)


# ---------------------------------------------------------------------------------------------- piano rolls
class FixedRollModel:
    def __init__(self, logits):
        self.logits, self.seen = logits, []

    def initial_state(self, batch_size):
        return None

    def step(self, frame, state):
        self.seen.append(frame.clone())
        return self.logits.expand(frame.shape[0], -1), state


def test_piano_roll_bernoulli_frequencies_and_reproducible():
    logits = torch.linspace(-3, 3, 88)
    model = FixedRollModel(logits)
    rolls = sample_piano_roll(model, 400, num_samples=5, seed=0)
    assert len(rolls) == 5 and all(r.shape == (400, 88) and r.dtype == torch.float32 for r in rolls)
    stacked = torch.stack(rolls)
    assert set(stacked.unique().tolist()) <= {0.0, 1.0}
    assert torch.allclose(stacked.mean((0, 1)), torch.sigmoid(logits), atol=0.05)
    again = sample_piano_roll(model, 400, num_samples=5, seed=0)
    other = sample_piano_roll(model, 400, num_samples=5, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(rolls, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(rolls, other, strict=True))
    sharp = torch.stack(sample_piano_roll(model, 200, num_samples=2, temperature=0.1, seed=0))
    assert torch.equal(sharp.mean((0, 1)) > 0.5, logits > 0)  # low temperature: nearly deterministic


def test_piano_roll_is_float32_whatever_the_default_dtype():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        rolls = sample_piano_roll(FixedRollModel(torch.zeros(88)), 3, seed=0)
    finally:
        torch.set_default_dtype(previous)
    assert rolls[0].dtype == torch.float32  # the documented format of load_chorales / load_bl_file


def test_piano_roll_threshold_prime_and_feedback():
    logits = torch.full((88,), -5.0)
    logits[[39, 43, 46]] = 5.0  # a C major triad
    model = FixedRollModel(logits)
    prime = torch.zeros(2, 88)
    prime[0, 10] = prime[1, 20] = 1
    (roll,) = sample_piano_roll(model, 3, prime=prime, mode="threshold")
    assert torch.equal(roll, (torch.sigmoid(logits) > 0.5).float().expand(3, 88))
    # fed: silent start frame, the two prime rows, then the sampled frames (all but the last)
    assert len(model.seen) == 1 + 2 + 2
    assert model.seen[0].sum() == 0
    assert torch.equal(model.seen[1][0], prime[0]) and torch.equal(model.seen[2][0], prime[1])
    assert torch.equal(model.seen[3][0], roll[0])


@pytest.mark.parametrize("kwargs,match", [
    (dict(mode="argmax"), "mode 'bernoulli' or 'threshold'"),
    (dict(threshold=1.0), "0 < threshold < 1"),
    (dict(temperature=0.0), "temperature > 0"),
    (dict(num_steps=0), "num_steps >= 1, got 0"),
    (dict(prime=torch.zeros(3, 12)), r"prime of shape \(T0, 88\), got \(3, 12\)"),
])
def test_piano_roll_errors(kwargs, match):
    args = dict(num_steps=4, seed=0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        sample_piano_roll(FixedRollModel(torch.zeros(88)), **args)


def test_piano_roll_model_from_models():
    from rnnkit import models  # a broken import must fail here, not skip

    torch.manual_seed(0)
    model = models.PianoRollModel("gru", 12)
    a = sample_piano_roll(model, 16, num_samples=2, seed=0)
    b = sample_piano_roll(model, 16, num_samples=2, seed=0)
    assert all(torch.equal(x, y) and x.shape == (16, 88) for x, y in zip(a, b, strict=True))


def test_piano_roll_nan_logits_are_named():
    logits = torch.zeros(1, 6)
    logits[0, 4] = float("nan")
    with pytest.raises(ValueError, match=r"without NaN.*\(0, 4\) of frame 0"):
        sample_piano_roll(FixedRollModel(logits), 3, num_keys=6, seed=0)


def test_integral_float_prompt_is_accepted():
    a = sample_sequence(MarkovModel(_table()), prompt=[1.0, 2.0], max_len=5, seed=0, eos=EOS)
    b = sample_sequence(MarkovModel(_table()), prompt=[1, 2], max_len=5, seed=0, eos=EOS)
    assert torch.equal(a[0], b[0])
