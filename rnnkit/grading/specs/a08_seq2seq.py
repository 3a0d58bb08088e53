r"""Specs of assignment 8 (sequence to sequence with beam search, d2l ch. 10): a bidirectional GRU encoder over a
padded batch with lengths, the teacher-forcing loss of an encoder-decoder, greedy search and beam search (width k,
length normalisation with exponent alpha, finished hypotheses leave the beam) on fixed next-token scoring functions,
and the exact-match accuracy of the student's trained model on held-out digit strings to reverse.

The searches are graded on hand-made next-token tables (greedy and beam disagree, length normalisation changes the
winner) and on seeded random "language models" whose log-probabilities depend on the whole prefix. The trained
model is judged from its weights only: the student exports ``model.state_dict()`` (plain arrays), and the judge
rebuilds the encoder-decoder here with ``rnnkit.recurrence.run_direction`` and ``rnnkit.cells.gru_cell``, decodes
the held-out strings greedily itself and counts exact matches, so no number the student's code prints or returns
enters the grade. Four checks of 0.5 points form the curve (accuracy at least 0.4, 0.55, 0.7, 0.75 on 1000
strings); the notebook's recipe reached 0.90-0.94 after its 300 steps and 0.83-0.85 after 150 (model seeds 0, 1,
2), so a training cell that its 45 s guard stops early on a loaded grader still earns full points.

The beam search, greedy search and the held-out decoding live here (trusted side), not in a shared rnnkit module."""
from __future__ import annotations

import hashlib
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from . import FIXTURE_DIR, Case, Spec, generator, randn, register
from ._exported import state_dict
from ._handout import VOCAB, Reference

BOS, EOS = 0, 1  # tokens 2..11 (VOCAB = 12) are the digits 0..9
MIN_LEN, MAX_LEN = 3, 7  # digits per string
THRESHOLDS = (0.4, 0.55, 0.7, 0.75)  # one 0.5-point check each: held-out exact-match accuracy at least this
HELD_OUT, HELD_OUT_SEED = 1000, 8080  # the judge's strings: a seed the notebook never uses
TRAIN_STEPS, TRAIN_BATCH, TRAIN_SEED = 300, 256, 1  # the notebook's training: batches drawn from this seed
MAX_HIDDEN, MAX_EMBEDDING = 256, 128  # bigger exports are refused (the judge must stay fast)


# ------------------------------------------------------------------------------------------------------ data
def make_data(num: int, g: torch.Generator, min_len: int = MIN_LEN, max_len: int = MAX_LEN):
    """``num`` digit strings and their reversals, time-major: ``src (max_len, N)``, ``src_lengths (N,)``,
    ``tgt (max_len + 1, N)`` (the reversed digits, then EOS), ``tgt_lengths = src_lengths + 1``; padding is EOS."""
    lengths = torch.randint(min_len, max_len + 1, (num,), generator=g)  # (N,)
    digits = torch.randint(2, VOCAB, (max_len, num), generator=g)  # (max_len, N)
    steps = torch.arange(max_len).unsqueeze(1)  # (max_len, 1)
    src = torch.where(steps < lengths, digits, EOS)  # (max_len, N)
    reverse = (lengths - 1 - steps).clamp(min=0)  # (max_len, N): position read by step t of the reversal
    tgt = torch.full((max_len + 1, num), EOS, dtype=torch.long)
    tgt[:max_len] = torch.where(steps < lengths, digits.gather(0, reverse), EOS)
    return src, lengths, tgt, lengths + 1


# ---------------------------------------------------------------------------------- the bidirectional encoder
def _bi_encoder(x, lengths, fwd, bwd):
    from rnnkit.recurrence import run_direction

    h0 = x.new_zeros(x.shape[1], fwd[1].shape[1])  # (B, H)
    out_f, h_f = run_direction("GRU", x, h0, *fwd, lengths=lengths)
    out_b, h_b = run_direction("GRU", x, h0, *bwd, lengths=lengths, reverse=True)
    return torch.cat([out_f, out_b], dim=-1), torch.cat([h_f, h_b], dim=-1)  # (T, B, 2H), (B, 2H)


def _encoder_cases() -> list[Case]:
    g = generator(801)
    cases = []
    for label, lengths, dtype in (("T=5, batch of 3, lengths [5, 2, 4], float64", [5, 2, 4], torch.float64),
                                  ("T=5, batch of 3, lengths [5, 2, 4], float32", [5, 2, 4], torch.float32),
                                  ("T=1, batch of 2, lengths [1, 1], float64", [1, 1], torch.float64),
                                  ("T=4, batch of 1, lengths [4], float64", [4], torch.float64),
                                  ("T=6, batch of 2, lengths [3, 6], float32", [3, 6], torch.float32)):
        n_in, n_h, steps = 3, 4, max(lengths)
        x = randn(g, steps, len(lengths), n_in, dtype=dtype)
        for b, n in enumerate(lengths):
            x[n:, b] = 0.0
        weights = [tuple(randn(g, *shape, dtype=dtype, scale=0.5) for shape in
                         ((3 * n_h, n_in), (3 * n_h, n_h), (3 * n_h,), (3 * n_h,))) for _ in range(2)]
        cases.append(Case(label, (x, torch.tensor(lengths, dtype=torch.long), *weights)))
    return cases


def _tiny(seed: int, dtype=torch.float64, embed: int = 3, hidden: int = 4) -> Reference:
    with torch.random.fork_rng(devices=[]):  # the default initialisation must not move the kernel's RNG
        model = Reference(embed, hidden)
    g = generator(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(randn(g, *p.shape, scale=0.7))
    return model.to(dtype)


def _teacher_forcing_loss(model, src, src_lengths, tgt, tgt_lengths):
    _, h_n = model.encode(src, src_lengths)  # (B, 2H): the decoder's first state and its context
    state, token, losses = h_n, torch.full_like(tgt[0], BOS), []
    for t in range(tgt.shape[0]):
        logits, state = model.decode_step(token, state, h_n)  # (B, V)
        losses.append(F.cross_entropy(logits, tgt[t], reduction="none"))  # (B,)
        token = tgt[t]  # teacher forcing: the next input is the true token, whatever the model predicted
    mask = torch.arange(tgt.shape[0]).unsqueeze(1) < tgt_lengths  # (T', B): EOS counts, padding does not
    return (torch.stack(losses) * mask).sum() / mask.sum()


def _loss_cases() -> list[Case]:
    cases = []
    for label, seed, num, dtype in (("batch of 4, float64", 811, 4, torch.float64),
                                    ("batch of 1, float64", 812, 1, torch.float64),
                                    ("batch of 6, float32", 813, 6, torch.float32),
                                    ("batch of 3, lengths 1 to 2, float64", 814, 3, torch.float64)):
        short = seed == 814
        data = make_data(num, generator(seed), 1 if short else MIN_LEN, 2 if short else MAX_LEN)
        cases.append(Case(label, (_tiny(seed, dtype), *data)))
    return cases


# ----------------------------------------------------------------------------------------- greedy and beam
def _greedy(step_fn, state, bos, eos, max_len):
    tokens, total, token = [], 0.0, bos
    for _ in range(max_len):
        log_probs, state = step_fn(token, state)  # (V,)
        token = int(torch.argmax(log_probs))
        total += float(log_probs[token])
        tokens.append(token)
        if token == eos:
            break
    return tokens, total


def _beam(step_fn, state, bos, eos, beam_width, max_len, alpha):
    beam, finished = [(0.0, [], state)], []  # (sum of log-probabilities, tokens, decoder state)
    for _ in range(max_len):
        candidates = []
        for total, tokens, st in beam:
            log_probs, new_state = step_fn(tokens[-1] if tokens else bos, st)  # (V,)
            candidates += [(total + float(lp), tokens + [v], new_state) for v, lp in enumerate(log_probs.tolist())]
        candidates.sort(key=lambda c: -c[0])  # stable: ties keep the beam's order, then the token's
        beam = []
        for cand in candidates[:beam_width]:
            (finished if cand[1][-1] == eos else beam).append(cand)  # finished hypotheses leave the beam
        if not beam:
            break
    finished += beam  # hypotheses that reached max_len without EOS compete too
    best = max(finished, key=lambda c: c[0] / len(c[1]) ** alpha)  # length-normalised score
    return best[1], best[0] / len(best[1]) ** alpha


class TableLM:
    """A next-token scorer from a table ``{prefix tuple: probabilities}`` (unlisted prefixes: EOS certain); the
    state is the prefix. Called like a decoder step: ``(token, state) -> (log-probabilities (V,), state)``."""

    def __init__(self, table: dict, vocab: int, dtype=torch.float64):
        self.table, self.vocab, self.dtype = table, vocab, dtype

    def __call__(self, token, prefix):
        prefix = () if prefix is None else prefix + (int(token),)
        probs = self.table.get(prefix)
        if probs is None:
            probs = [1e-9] * self.vocab
            probs[EOS] = 1.0
        p = torch.tensor(probs, dtype=torch.float64)
        return torch.log(p / p.sum()).to(self.dtype), prefix


class RandomLM:
    """A seeded random next-token scorer whose log-probabilities depend on the whole prefix (the state); EOS
    grows more likely with length."""

    def __init__(self, seed: int, vocab: int = 6, sharpness: float = 2.0, dtype=torch.float64):
        self.seed, self.vocab, self.sharpness, self.dtype = seed, vocab, sharpness, dtype

    def __call__(self, token, prefix):
        prefix = () if prefix is None else prefix + (int(token),)
        code = self.seed
        for p in prefix:
            code = code * 31 + p + 1
        logits = self.sharpness * torch.randn(self.vocab, generator=generator(code % (2**62)), dtype=torch.float64)
        logits[BOS] = -1e9  # never predicted
        logits[EOS] += 0.5 * len(prefix) - 1.0
        return torch.log_softmax(logits, dim=-1).to(self.dtype), prefix


# greedy takes "a" (0.5), then the best after it is EOS (0.4): P = 0.2; "b" then EOS has P = 0.4 * 0.9 = 0.36
GREEDY_TRAP = {(): [0, 0.1, 0.5, 0.4], (2,): [0, 0.4, 0.3, 0.3], (3,): [0, 0.9, 0.05, 0.05]}
# the short answer "a EOS" (0.54) beats every longer one in total log-probability, but "b b b EOS"
# (0.45 * 0.95 * 0.95 * 0.9 = 0.37) wins per token: alpha = 1 picks it, alpha = 0 does not
LENGTH_TRAP = {(): [0, 0.0, 0.55, 0.45], (2,): [0, 0.98, 0.01, 0.01], (3,): [0, 0.02, 0.03, 0.95],
               (3, 3): [0, 0.02, 0.03, 0.95], (3, 3, 3): [0, 0.9, 0.05, 0.05]}
# k = 2: at step 1 "a" (0.5) and the finished "EOS" (0.3) fill the top 2; "EOS" must then leave the beam, so that
# step 2 keeps both "a a" and "a b", and "a b EOS" (0.21) wins with alpha = 1. A beam that keeps "EOS" in a slot
# drops "a b" at step 2.
CARRY_TRAP = {(): [0, 0.3, 0.5, 0.2], (2,): [0, 0.05, 0.5, 0.45], (2, 3): [0, 0.95, 0.03, 0.02],
              (2, 2): [0, 0.1, 0.45, 0.45], (2, 2, 2): [0, 0.5, 0.25, 0.25], (2, 2, 3): [0, 0.5, 0.25, 0.25]}


def _search_cases(beam: bool) -> list[Case]:
    """Greedy: one case per scorer. Beam: the same scorers with widths and exponents chosen so that a beam which
    keeps finished hypotheses, or forgets the length normalisation, or equals greedy, picks another sequence."""
    scorers = (("hand-made table where greedy and beam disagree", TableLM(GREEDY_TRAP, 4), 5, ((2, 0.0),)),
               ("hand-made table, length normalisation matters", TableLM(LENGTH_TRAP, 4), 6, ((3, 1.0), (3, 0.0))),
               ("hand-made table, a finished hypothesis must leave the beam", TableLM(CARRY_TRAP, 4), 5, ((2, 1.0),)),
               ("random scorer, 6 tokens", RandomLM(821), 6, ((3, 0.7), (1, 0.0))),
               ("random scorer, 8 tokens, max_len 3 (cut off)", RandomLM(823, 8, 1.0), 3, ((4, 1.0),)),
               ("random scorer in float32, 7 tokens", RandomLM(824, 7, dtype=torch.float32), 7, ((5, 0.6),)))
    if not beam:
        return [Case(label, (lm, None, BOS, EOS, max_len)) for label, lm, max_len, _ in scorers]
    return [Case(f"{label}, k={k}, alpha={alpha:g}", (lm, None, BOS, EOS, k, max_len, alpha))
            for label, lm, max_len, settings in scorers for k, alpha in settings]


# ---------------------------------------------------------------------------- the trained model, judged
@lru_cache(maxsize=1)
def held_out():
    """The judge's strings (a seed the notebook never uses)."""
    return make_data(HELD_OUT, generator(HELD_OUT_SEED))


@torch.no_grad()
def greedy_accuracy(model, src, src_lengths, tgt, tgt_lengths) -> float:
    """Exact-match accuracy of batched greedy decoding: every target token up to and including EOS predicted."""
    _, h_n = model.encode(src, src_lengths)
    state, token, correct = h_n, torch.full_like(tgt[0], BOS), torch.ones(tgt.shape[1], dtype=torch.bool)
    for t in range(tgt.shape[0]):
        logits, state = model.decode_step(token, state, h_n)
        token = logits.argmax(dim=-1)  # (B,): the model's own prediction is the next input
        correct &= (token == tgt[t]) | (t >= tgt_lengths)
    return float(correct.double().mean())


def rebuild(weights: dict):
    """A :class:`Reference` holding ``weights`` (float64), or the reason the weights do not describe one."""
    emb, w_hh = weights.get("src_embed.weight"), weights.get("enc_fwd.1")
    if emb is None or w_hh is None or emb.ndim != 2 or w_hh.ndim != 2 or w_hh.shape[1] == 0:
        return None, "the weights are not those of the notebook's Seq2Seq (no src_embed.weight or enc_fwd.1 matrix)"
    embed, hidden = emb.shape[1], w_hh.shape[1]
    if hidden > MAX_HIDDEN or embed > MAX_EMBEDDING:
        return None, f"the model is larger than the grader evaluates (hidden <= {MAX_HIDDEN}, embed <= {MAX_EMBEDDING})"
    with torch.random.fork_rng(devices=[]):
        model = Reference(embed, hidden).double()
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for key in sorted(set(expected) | set(weights)):
        if key not in weights:
            return None, f"state_dict entry {key!r} is missing (Seq2Seq with embed {embed}, hidden {hidden})"
        if key not in expected:
            return None, f"state_dict entry {key!r} is not a weight of the notebook's Seq2Seq"
        if tuple(weights[key].shape) != expected[key]:
            return None, f"state_dict entry {key!r} has shape {tuple(weights[key].shape)}, expected {expected[key]} " \
                         f"for Seq2Seq with embed {embed}, hidden {hidden}"
    model.load_state_dict({k: torch.from_numpy(np.asarray(v, dtype=np.float64)) for k, v in weights.items()})
    return model.eval(), None


_CACHE: dict[str, tuple[float | None, str | None]] = {}


def judged_accuracy(weights: dict) -> tuple[float | None, str | None]:
    """(held-out exact-match accuracy, None) of the model with these weights, or (None, why not); computed once per
    set of weights for the four threshold checks."""
    digest = hashlib.sha256(b"".join(k.encode() + b"\0" + str(v.dtype).encode() + str(v.shape).encode() + v.tobytes()
                                     for k, v in sorted(weights.items()))).hexdigest()
    if digest not in _CACHE:
        model, why = rebuild(weights)
        _CACHE[digest] = (None, why) if model is None else (greedy_accuracy(model, *held_out()), None)
        if len(_CACHE) > 64:
            _CACHE.pop(next(iter(_CACHE)))
    return _CACHE[digest]


def _judge_threshold(threshold: float):
    def judge(got: dict, want: dict, case: int) -> str | None:
        weights, why = state_dict(got, "lower the learning rate")
        if weights is None:
            return why
        value, why = judged_accuracy(weights)
        if value is None:
            return why
        if value < threshold:
            return f"exact-match accuracy {value:.3f} on {HELD_OUT} held-out strings (decoded greedily by the grader " \
                   f"from your weights) is below {threshold:g}, needed for this half point"
        return None

    return judge


# a trained model that passes every threshold: instructors only, like the other fixtures (a student who could
# read it could hand it in)
REFERENCE_WEIGHTS = FIXTURE_DIR / "a08_seq2seq_reference.npz"


def train_reference(seed: int = 0, steps: int = TRAIN_STEPS) -> dict:
    """The notebook's recipe (Adam 0.01, ``steps`` batches of 256 fresh strings, clipping at 1) with the reference
    cells."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Reference()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    g = generator(TRAIN_SEED)
    for _ in range(steps):
        loss = _teacher_forcing_loss(model, *make_data(TRAIN_BATCH, g))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _reference_weights() -> dict:
    """Weights trained by :func:`train_reference`, stored by :func:`write_reference`: what a passing export looks
    like."""
    with np.load(REFERENCE_WEIGHTS, allow_pickle=False) as npz:
        return {key: torch.from_numpy(npz[key].copy()) for key in sorted(npz.files)}


def write_reference() -> float | None:
    """Train and store the reference weights; returns their judged accuracy (None when it cannot be judged). Run
    it with ``python -c "from rnnkit.grading.specs import a08_seq2seq; print(a08_seq2seq.write_reference())"``,
    then ``make fixtures``."""
    weights = {k: v.numpy() for k, v in train_reference().items()}
    np.savez_compressed(REFERENCE_WEIGHTS, **weights)
    return judged_accuracy(weights)[0]


# --------------------------------------------------------------------------------------------------- the rules
register(Spec("bi_encoder", _encoder_cases, _bi_encoder, leaf_names=("outputs", "h_n"),
              summary="bidirectional GRU encoder over a padded batch with lengths: both passes, states concatenated"))
register(Spec("teacher_forcing_loss", _loss_cases, _teacher_forcing_loss, leaf_names=("loss",),
              tolerances={"torch.float32": (1e-4, 1e-6)},
              summary="mean cross-entropy of the decoder fed the true previous tokens, EOS counted, padding not"))
register(Spec("greedy_search", lambda: _search_cases(False), _greedy, leaf_names=("tokens", "log_prob"),
              tolerances={"float": (1e-5, 1e-8)},
              summary="greedy decoding from BOS to EOS or max_len on fixed next-token scorers"))
register(Spec("beam_search", lambda: _search_cases(True), _beam, leaf_names=("tokens", "score"),
              tolerances={"float": (1e-5, 1e-8)},
              summary="beam search: width k, finished hypotheses leave the beam, score / len ** alpha"))
for _threshold in THRESHOLDS:
    register(Spec(f"reverse_accuracy_{round(_threshold * 100)}", lambda: [], _reference_weights, kind="value",
                  judge=_judge_threshold(_threshold),
                  summary=f"the trained model's weights: held-out exact-match accuracy at least {_threshold:g}, "
                          "decoded by the judge (0.5 points)"))
