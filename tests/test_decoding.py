"""rnnkit.decoding: beam search is exact when the beam holds everything, equals greedy at width 1, escapes a greedy
trap, normalises by length, handles eos, keeps each hypothesis's state with it (checked by rescoring with teacher
forcing), and names bad arguments."""

import itertools
import math

import pytest
import torch

from rnnkit.decoding import Hypothesis, beam_search, seq2seq_step
from rnnkit.models import Seq2Seq

BOS, EOS = 0, 1


def markov(table):
    """A step function whose next-token logits depend only on the last token: ``table[prev]`` (V,)."""
    table = torch.as_tensor(table, dtype=torch.float64)

    def step(tokens, state):
        return table[tokens], state

    return step, table


def log_p(table, seq):
    lp, prev = 0.0, BOS
    for tok in seq:
        lp += float(torch.log_softmax(table[prev], -1)[tok])
        prev = tok
    return lp


def exhaustive(table, max_len, alpha):
    """Every finished sequence (ending in its only eos) of at most max_len tokens, best score first."""
    vocab = table.shape[1]
    out = []
    for n in range(1, max_len + 1):
        for body in itertools.product([v for v in range(vocab) if v != EOS], repeat=n - 1):
            seq = body + (EOS,)
            lp = log_p(table, seq)
            out.append((lp / n**alpha, seq))
    return sorted(out, reverse=True)


@pytest.mark.parametrize("alpha", [0.0, 0.6, 1.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_beam_that_holds_everything_is_exhaustive_search(alpha, seed):
    g = torch.Generator().manual_seed(seed)
    step, table = markov(torch.randn(4, 4, generator=g, dtype=torch.float64) * 2)
    hyps = beam_search(step, None, bos=BOS, eos=EOS, beam_width=200, max_len=4, length_penalty=alpha)
    best = exhaustive(table, 4, alpha)[:5]
    assert [h.tokens for h in hyps[:5]] == [seq for _, seq in best]
    assert [h.score for h in hyps[:5]] == pytest.approx([s for s, _ in best])
    assert all(h.log_prob == pytest.approx(log_p(table, h.tokens)) for h in hyps)


def test_width_one_is_greedy_decoding():
    g = torch.Generator().manual_seed(3)
    step, table = markov(torch.randn(6, 6, generator=g, dtype=torch.float64))
    greedy, prev = [], BOS
    for _ in range(10):
        prev = int(table[prev].argmax())
        greedy.append(prev)
        if prev == EOS:
            break
    (hyp,) = beam_search(step, None, bos=BOS, eos=EOS, beam_width=1, max_len=10)
    assert list(hyp.tokens) == greedy and hyp.finished == (greedy[-1] == EOS)


def test_beam_escapes_the_greedy_trap():
    # from bos: 'a' (2) has p=0.6, 'b' (3) p=0.4; after 'a' every token is equally likely (eos 1/4);
    # after 'b', eos is certain. Greedy: a, then eos at best -> 0.6 * 1/4 = 0.15. Best: b, eos -> 0.4.
    neg = -1e9
    table = [[neg, neg, math.log(0.6), math.log(0.4)],
             [0.0, 0.0, 0.0, 0.0],
             [0.0, 0.0, 0.0, 0.0],
             [neg, 0.0, neg, neg]]
    step, _ = markov(table)
    (greedy,) = beam_search(step, None, bos=BOS, eos=EOS, beam_width=1, max_len=5, length_penalty=0.0)
    best = beam_search(step, None, bos=BOS, eos=EOS, beam_width=2, max_len=5, length_penalty=0.0)[0]
    assert greedy.tokens[0] == 2 and best.tokens == (3, EOS)
    assert best.log_prob == pytest.approx(math.log(0.4)) and best.log_prob > greedy.log_prob


def test_length_normalisation_changes_the_winner():
    # 'eos' at once has p=0.3; else 'a' then a nearly certain eos: raw p 0.7 * 0.99 ... per token it wins
    table = [[-1e9, math.log(0.3), math.log(0.7)],
             [0.0, 0.0, 0.0],
             [-1e9, math.log(0.99), math.log(0.01)]]
    step, _ = markov(table)
    raw = beam_search(step, None, bos=BOS, eos=EOS, beam_width=3, max_len=4, length_penalty=0.0)
    assert raw[0].tokens == (2, EOS)  # 0.693 > 0.3 even unnormalised
    # now 'a' (2) then eos has raw p 0.7 * 0.4 = 0.28 < 0.3, but a mean log p of -0.64 per token against -1.2;
    # after 'a' the other way on is 'b' (3), after which eos is rare
    table = [[-1e9, math.log(0.3), math.log(0.7), -1e9],
             [0.0, 0.0, 0.0, 0.0],
             [-1e9, math.log(0.4), -1e9, math.log(0.6)],
             [-1e9, math.log(0.01), -1e9, math.log(0.99)]]
    step, _ = markov(table)
    raw = beam_search(step, None, bos=BOS, eos=EOS, beam_width=3, max_len=4, length_penalty=0.0)
    norm = beam_search(step, None, bos=BOS, eos=EOS, beam_width=3, max_len=4, length_penalty=1.0)
    assert raw[0].tokens == (EOS,) and norm[0].tokens == (2, EOS)
    assert norm[0].score == pytest.approx(math.log(0.28) / 2)


def test_eos_ends_a_hypothesis_and_max_len_cuts_the_rest():
    g = torch.Generator().manual_seed(4)
    step, table = markov(torch.randn(5, 5, generator=g, dtype=torch.float64))
    for hyp in beam_search(step, None, bos=BOS, eos=EOS, beam_width=4, max_len=6):
        assert len(hyp.tokens) <= 6
        if hyp.finished:
            assert hyp.tokens[-1] == EOS and EOS not in hyp.tokens[:-1]
        else:
            assert len(hyp.tokens) == 6 and EOS not in hyp.tokens
    never_eos = table.clone()
    never_eos[:, EOS] = -math.inf  # eos can never be emitted: every hypothesis is cut at max_len
    step, _ = markov(never_eos)
    hyps = beam_search(step, None, bos=BOS, eos=EOS, beam_width=3, max_len=3)
    assert len(hyps) == 3 and not any(h.finished for h in hyps)
    assert [h.log_prob for h in hyps] == sorted((h.log_prob for h in hyps), reverse=True)


@pytest.mark.parametrize("width", [1, 3, 5])
def test_seq2seq_hypotheses_rescore_to_their_log_prob(width):
    # wrong state bookkeeping (a hypothesis continued from another's state) would break this equality
    torch.manual_seed(0)
    model = Seq2Seq(7, 6, hidden_size=12, embedding_dim=5, bos=BOS, eos=EOS).double().eval()
    src = torch.tensor([3, 5, 2, 6])
    step, state = seq2seq_step(model, src)
    hyps = beam_search(step, state, bos=BOS, eos=EOS, beam_width=width, max_len=6)
    assert 1 <= len(hyps) <= width
    for hyp in hyps:
        tgt = torch.tensor(hyp.tokens)[:, None]  # (T, 1)
        with torch.no_grad():
            logp = torch.log_softmax(model(src[:, None], tgt), -1)[:, 0]  # (T, V)
        assert hyp.log_prob == pytest.approx(float(logp.gather(1, tgt).sum()), abs=1e-9)
    greedy = model.greedy_decode(src[:, None], max_len=6)[:, 0].tolist()
    if width == 1:
        assert list(hyps[0].tokens) == greedy[: greedy.index(EOS) + 1 if EOS in greedy else None]


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(beam_width=0), ValueError, "expected beam_width >= 1, got 0"),
    (dict(beam_width=2.0), TypeError, "expected beam_width to be an int, got float"),
    (dict(max_len=0), ValueError, "expected max_len >= 1, got 0"),
    (dict(length_penalty=-0.5), ValueError, "expected length_penalty >= 0"),
    (dict(length_penalty="1"), TypeError, "expected length_penalty to be a number, got str"),
    (dict(eos=9), ValueError, "expected eos < the vocabulary size 3, got 9"),
])
def test_bad_arguments_are_named(kwargs, error, message):
    step, _ = markov(torch.zeros(3, 3))
    args = {"bos": BOS, "eos": EOS, **kwargs}
    with pytest.raises(error, match=message):
        beam_search(step, None, **args)


def test_bad_step_output_and_state_are_named():
    with pytest.raises(ValueError, match=r"expected step\(\) to return logits of shape \(1, V\), got \(2, 3\)"):
        beam_search(lambda tokens, state: (torch.zeros(2, 3), state), None, bos=BOS, eos=EOS)
    step, _ = markov(torch.zeros(3, 3))
    with pytest.raises(TypeError, match="expected the state to be a tensor, a tuple of tensors or None, got list"):
        beam_search(step, [torch.zeros(1, 1, 2)], bos=BOS, eos=EOS, beam_width=2, max_len=3)
    with pytest.raises(ValueError, match=r"one source sentence of shape \(S,\), got \(2, 3\)"):
        seq2seq_step(Seq2Seq(4, 4), torch.zeros(2, 3, dtype=torch.long))


def test_hypothesis_is_a_plain_record():
    h = Hypothesis((2, EOS), -1.0, -0.5, True)
    assert h.tokens == (2, EOS) and h.finished
