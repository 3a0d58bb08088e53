"""rnnkit.models: parameter arithmetic, the piano-roll loss, causality, step == forward, padding invariance."""

import pytest
import torch

from rnnkit import layers
from rnnkit.models import (
    CharLM,
    PianoRollModel,
    Seq2Seq,
    Tagger,
    count_parameters,
    piano_roll_parameter_count,
    recurrent_parameter_count,
    units_for_budget,
)
from rnnkit.sampling import sample_sequence

pytestmark = pytest.mark.usefixtures("float64")


@pytest.fixture
def float64():
    """float64 for exact comparisons, restored afterwards."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


CELLS = ("tanh", "gru", "lstm")


@pytest.mark.parametrize("cell", CELLS)
def test_parameter_formulas_match_the_modules(cell):
    for hidden in (1, 7, 36):
        model = PianoRollModel(cell, hidden, n_keys=88)
        assert count_parameters(model) == piano_roll_parameter_count(cell, 88, 88, hidden)
        assert count_parameters(model.rnn) == recurrent_parameter_count(cell, 88, hidden)


def test_paper_sizes_exact_counts():
    """Chung et al. 2014 call 100 tanh / 46 GRU / 36 LSTM units "about 20k"; exactly, with 88 keys in and out:"""
    exact = {cell: count_parameters(PianoRollModel(cell, h)) for cell, h in (("tanh", 100), ("gru", 46), ("lstm", 36))}
    assert exact == {"tanh": 27_888, "gru": 22_904, "lstm": 21_400}


@pytest.mark.parametrize("budget", [5_000, 20_000, 21_400, 60_000])
@pytest.mark.parametrize("cell", CELLS)
def test_units_for_budget_is_the_largest_fit(cell, budget):
    h = units_for_budget(cell, 88, 88, budget)
    assert count_parameters(PianoRollModel(cell, h)) <= budget < count_parameters(PianoRollModel(cell, h + 1))


def test_units_for_budget_20k_and_round_trip():
    assert {c: units_for_budget(c, 88, 88, 20_000) for c in CELLS} == {"tanh": 77, "gru": 41, "lstm": 34}
    # the paper's sizes come back from their own exact budgets, in the paper's order tanh > GRU > LSTM
    for cell, h in (("tanh", 100), ("gru", 46), ("lstm", 36)):
        assert units_for_budget(cell, 88, 88, piano_roll_parameter_count(cell, 88, 88, h)) == h
    with pytest.raises(ValueError, match="more than the budget 10"):
        units_for_budget("gru", 88, 88, 10)
    with pytest.raises(ValueError, match="expected cell"):
        units_for_budget("elman", 88, 88, 20_000)


def _rolls(lengths, keys=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(t, keys, generator=g) < 0.4).to(torch.get_default_dtype()) for t in lengths]


@pytest.mark.parametrize("cell", CELLS)
def test_piano_roll_loss_is_nll_per_frame_summed_over_keys(cell):
    torch.manual_seed(0)
    model = PianoRollModel(cell, 4, n_keys=5)
    seqs = _rolls([4, 2, 6])
    loss, count = model.loss(PianoRollModel.collate(seqs))
    assert count == 12
    # by hand, one sequence at a time: predict frame t from frames < t, starting from a silent frame
    total = 0.0
    for s in seqs:
        x = torch.cat([torch.zeros(1, 5), s[:-1]])[:, None]  # (T, 1, K)
        p = torch.sigmoid(model(x))[:, 0]  # (T, K)
        total += -(s * p.log() + (1 - s) * (1 - p).log()).sum()
    torch.testing.assert_close(loss, total / 12)


def test_piano_roll_is_causal_and_step_matches_forward():
    torch.manual_seed(0)
    model = PianoRollModel("lstm", 4, n_keys=5)
    (roll,) = _rolls([7])
    batch = PianoRollModel.collate([roll])
    logits = model(batch.inputs)  # (T, 1, K)
    changed = roll.clone()
    changed[4:] = 1 - changed[4:]  # change frames 4.. : predictions of frames 0..4 must not move
    logits2 = model(PianoRollModel.collate([changed]).inputs)
    torch.testing.assert_close(logits[:5], logits2[:5])
    assert not torch.allclose(logits[5:], logits2[5:])
    state = model.initial_state(1)
    frame = torch.zeros(1, 5)
    for t in range(7):
        step_logits, state = model.step(frame, state)
        torch.testing.assert_close(step_logits, logits[t])
        frame = roll[t : t + 1]


def test_charlm_step_equals_forward_and_samples_reproducibly():
    torch.manual_seed(0)
    model = CharLM(11, 8, embedding_dim=4, cell="gru", num_layers=2)
    tokens = torch.randint(0, 11, (6, 3))
    logits, _ = model(tokens)
    state = model.initial_state(3)
    for t in range(6):
        step_logits, state = model.step(tokens[t], state)
        torch.testing.assert_close(step_logits, logits[t])
    a = sample_sequence(model, eos=1, max_len=20, num_samples=2, seed=5)
    b = sample_sequence(model, eos=1, max_len=20, num_samples=2, seed=5)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("model_fn", [
    lambda: CharLM(9, 6, embedding_dim=3, cell="lstm"),
    lambda: Tagger(3, 5, 4, cell="gru", vocab_size=9),
])
def test_padding_does_not_change_the_loss(model_fn):
    """A batch's loss is the frame-weighted mean of its sequences' losses: padding adds nothing."""
    torch.manual_seed(0)
    model = model_fn()
    g = torch.Generator().manual_seed(1)
    if isinstance(model, CharLM):
        examples = [torch.randint(0, 9, (t,), generator=g) for t in (5, 3, 8)]
    else:
        examples = [(torch.randint(0, 9, (t,), generator=g), torch.randint(0, 4, (t,), generator=g)) for t in (5, 3, 8)]
    loss, count = model.loss(type(model).collate(examples))
    parts = [model.loss(type(model).collate([e])) for e in examples]
    assert count == sum(n for _, n in parts)
    torch.testing.assert_close(loss, sum(l * n for l, n in parts) / count)


def test_tagger_bidirectional_sees_the_future():
    torch.manual_seed(0)
    tagger = Tagger(2, 3, 4, cell="lstm")
    x = torch.randn(5, 1, 2)
    y1 = tagger(x)
    x2 = x.clone()
    x2[4] += 1.0
    y2 = tagger(x2)
    assert not torch.allclose(y1[0], y2[0])  # step 0 depends on step 4
    uni = Tagger(2, 3, 4, cell="lstm", bidirectional=False)
    torch.testing.assert_close(uni(x)[:4], uni(x2)[:4])  # a unidirectional tagger does not


def test_seq2seq_teacher_forcing_agrees_with_greedy_decoding():
    torch.manual_seed(0)
    model = Seq2Seq(7, 8, 6, embedding_dim=4, bos=1, eos=2)
    src = torch.randint(3, 7, (5, 3))
    decoded = model.greedy_decode(src, max_len=6)  # (T', B)
    assert decoded.shape[1] == 3 and 1 <= decoded.shape[0] <= 6
    # feeding the greedy tokens back with teacher forcing reproduces them as the argmax
    logits = model(src, decoded)
    assert torch.equal(logits.argmax(-1), decoded)
    loss, count = model.loss(Seq2Seq.collate([(src[:, b], decoded[:, b]) for b in range(3)]))
    assert count == decoded.numel() and torch.isfinite(loss)


def test_models_use_rnnkit_layers():
    assert isinstance(PianoRollModel("gru", 3).rnn, layers.GRU)
    assert isinstance(PianoRollModel("tanh", 3).rnn, layers.RNN)
    assert isinstance(CharLM(5, 3, cell="lstm").rnn, layers.LSTM)
    assert PianoRollModel("gru", 3, backend="torch").rnn.backend == "torch"


@pytest.mark.parametrize("make", [
    lambda **kw: PianoRollModel("gru", 4, n_keys=5, **kw),
    lambda **kw: CharLM(6, 4, embedding_dim=3, **kw),
    lambda **kw: Seq2Seq(5, 6, 4, embedding_dim=3, **kw),
    lambda **kw: Tagger(3, 4, 2, **kw),
])
def test_models_refuse_layer_options_that_break_their_layout(make):
    # The models are time-major: batch_first=True would read (T, B) as (B, T) and train on garbage without an error
    with pytest.raises(ValueError, match="batch_first"):
        make(batch_first=True)
    make(batch_first=False)


@pytest.mark.parametrize("make", [
    lambda **kw: PianoRollModel("lstm", 4, n_keys=5, **kw),
    lambda **kw: CharLM(6, 4, embedding_dim=3, **kw),
    lambda **kw: Seq2Seq(5, 6, 4, embedding_dim=3, **kw),
])
def test_left_to_right_models_refuse_bidirectional(make):
    # a next-step predictor or decoder that reads the future is not a model of p(x_t | x_<t)
    with pytest.raises(ValueError, match="bidirectional"):
        make(bidirectional=True)


def test_charlm_rejects_float_tokens():
    with pytest.raises(ValueError, match=r"expected tokens of shape \(T, B\) and dtype torch.int64"):
        CharLM(5, 3)(torch.zeros(4, 2))


def test_piano_roll_model_samples_with_rnnkit_sampling():
    from rnnkit.sampling import sample_piano_roll

    torch.manual_seed(0)
    model = PianoRollModel("gru", 4, n_keys=5)
    a = sample_piano_roll(model, 6, num_samples=2, seed=3, num_keys=5)
    b = sample_piano_roll(model, 6, num_samples=2, seed=3, num_keys=5)
    assert [tuple(r.shape) for r in a] == [(6, 5), (6, 5)]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert all(set(r.unique().tolist()) <= {0.0, 1.0} for r in a)


def test_charlm_names_out_of_range_tokens():
    # nn.Embedding says only "index out of range in self" (a device-side assert on CUDA)
    with pytest.raises(ValueError, match=r"expected token ids in 0..4 \(vocab_size 5\), got ids from 0 to 7"):
        CharLM(5, 3)(torch.tensor([[0], [7]]))


def test_charlm_collate_needs_two_tokens():
    with pytest.raises(ValueError, match="at least 2 tokens .* got 1 for sequence 1"):
        CharLM.collate([torch.tensor([1, 2, 3]), torch.tensor([4])])


def test_greedy_decode_max_len_must_be_positive():
    with pytest.raises(ValueError, match="max_len >= 1, got 0"):  # was 'stack expects a non-empty'
        Seq2Seq(5, 5, 4).greedy_decode(torch.zeros(3, 2, dtype=torch.long), 0)
    with pytest.raises(TypeError, match="max_len to be an int, got float"):  # a wrong type is a TypeError
        Seq2Seq(5, 5, 4).greedy_decode(torch.zeros(3, 2, dtype=torch.long), 2.0)


def test_seq_batch_lengths_may_be_a_list():
    model = PianoRollModel("gru", 3, n_keys=4)
    x = torch.rand(3, 2, 4).round()
    from rnnkit.models import SeqBatch

    as_list, as_tensor = SeqBatch(x, x, [3, 2]), SeqBatch(x, x, torch.tensor([3, 2]))
    assert model.loss(as_list)[0].item() == model.loss(as_tensor)[0].item()  # was AttributeError: list has no .to
