r"""Specs of assignment 6 (a character language model, end to end): the vocabulary, encoding and decoding, batches
for truncated BPTT, a training epoch with stateful chunks and global-norm clipping, perplexity, sampling to
end-of-sequence, and the trained model's held-out perplexity.

The functions run on small models built here from ``torch.nn`` alone (never ``rnnkit``), with weights drawn from
seeded generators; the references are the recipes the notebook writes out. The trained model is judged from its
weights only: the student exports ``model.state_dict()`` (plain arrays), and the judge rebuilds an
:class:`rnnkit.models.CharLM` from them and computes the perplexity of the test names itself, so no number the
student's code prints or returns enters the grade. Four checks of 0.5 points each form the curve (perplexity at most
8, 9, 10, 12); a correct solution with the notebook's budget ends near 7.5 (5 seeds: 7.45-7.6), a smoothed trigram
model scores about 8.4, a bigram model 10.6 and the unigram frequencies 16.6 (27 symbols)."""
from __future__ import annotations

import hashlib
import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from . import FIXTURE_DIR, Case, Spec, generator, register
from ._exported import state_dict

EOS = "\n"  # id 0, like the end-of-sequence symbol of assignment 1
EVAL_BATCH, EVAL_STEPS = 32, 50  # how the judge batches the test names (the notebook's perplexity uses the same)
THRESHOLDS = (8.0, 9.0, 10.0, 12.0)  # one 0.5-point check each: perplexity at most this
MAX_HIDDEN, MAX_LAYERS, MAX_EMBEDDING = 256, 3, 256  # bigger exports are refused (the judge must stay fast)


# ------------------------------------------------------------------------------------- vocabulary and encoding
def _build_vocab(names):
    return [EOS] + sorted(set("".join(names)) - {EOS})


def _encode(names, vocab):
    stoi = {c: i for i, c in enumerate(vocab)}
    ids = [0]
    for name in names:
        ids += [stoi[c] for c in name] + [0]
    return torch.tensor(ids, dtype=torch.long)


def _decode(ids, vocab):
    return "".join(vocab[int(i)] for i in ids)


_NAME_LISTS = (("three names", ["anna", "bob", "eve"]),
               ("repeated names and letters", ["zoe", "amy", "zoe", "lily"]),
               ("one name of one letter", ["x"]),
               ("capitals and accents (sorted by code point)", ["José", "ann", "Émile", "bo"]))


def _vocab_cases() -> list[Case]:
    return [Case(label, ([*names],)) for label, names in _NAME_LISTS]


def _encode_cases() -> list[Case]:
    cases = [Case(label, ([*names], _build_vocab(names))) for label, names in _NAME_LISTS]
    cases.append(Case("no names at all (only the leading end-of-sequence)", ([], _build_vocab(["ab"]))))
    return cases


def _decode_cases() -> list[Case]:
    vocab = _build_vocab(["anna", "bob", "eve"])
    return [Case("a tensor holding two names", (torch.tensor([0, 1, 4, 4, 1, 0, 2, 5, 2, 0]), vocab)),
            Case("a list of ints, no end-of-sequence", ([2, 5, 2], vocab)),
            Case("an empty list", ([], vocab)),
            Case("a sampled name ending in end-of-sequence", ([3, 6, 3, 0], vocab))]


# ----------------------------------------------------------------------------------------- truncated BPTT
def _tbptt_batches(stream, batch_size, num_steps):
    rows = (len(stream) - 1) // batch_size  # steps per row: each row needs one extra token as the last target
    x = stream[: rows * batch_size].view(batch_size, rows).T  # (rows, B): column b is a contiguous piece
    y = stream[1 : rows * batch_size + 1].view(batch_size, rows).T  # (rows, B): the next tokens
    return [(x[t : t + num_steps], y[t : t + num_steps]) for t in range(0, rows, num_steps)]


def _tbptt_cases() -> list[Case]:
    g = generator(601)
    stream = lambda n: torch.randint(0, 9, (n,), generator=g)  # noqa: E731
    return [Case("23 tokens, batch 2, 4 steps (last chunk shorter)", (stream(23), 2, 4)),
            Case("25 tokens, batch 3, 4 steps (rows divide evenly)", (stream(25), 3, 4)),
            Case("10 tokens, batch 1, 3 steps", (stream(10), 1, 3)),
            Case("12 tokens, batch 2, 10 steps (one chunk)", (stream(12), 2, 10)),
            Case("40 tokens, batch 4, 2 steps", (stream(40), 4, 2))]


# ------------------------------------------------------------------------------- small models built from torch
class _TinyLM(torch.nn.Module):
    """Embedding -> torch.nn.LSTM or GRU -> Linear, called like rnnkit's CharLM: ``(tokens (T, B), state)`` ->
    ``(logits (T, B, V), state)``. Weights are drawn from a seeded generator."""

    def __init__(self, seed: int, cell: str = "lstm", vocab: int = 7, embed: int = 4, hidden: int = 5,
                 dtype: torch.dtype = torch.float64, eos_bias: float = 0.0):
        super().__init__()
        with torch.random.fork_rng(devices=[]):  # the layers' default initialisation must not move the kernel's RNG
            self.embed = torch.nn.Embedding(vocab, embed)
            self.rnn = (torch.nn.LSTM if cell == "lstm" else torch.nn.GRU)(embed, hidden)
            self.out = torch.nn.Linear(hidden, vocab)
        g = generator(seed)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.7)
            self.out.bias[0] += eos_bias
        self.to(dtype)

    def forward(self, tokens, state=None):
        h, state = self.rnn(self.embed(tokens), state)  # (T, B, H)
        return self.out(h), state  # (T, B, V)


def _chunks(seed: int, lengths: list[int], batch: int, vocab: int = 7) -> list[tuple]:
    g = generator(seed)
    tokens = torch.randint(0, vocab, (sum(lengths) + 1, batch), generator=g)  # (T + 1, B)
    out, t = [], 0
    for n in lengths:
        out.append((tokens[t : t + n], tokens[t + 1 : t + n + 1]))
        t += n
    return out


# --------------------------------------------------------------------------------------------- training epoch
def _detach(state):
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)
    return None if state is None else state.detach()


def _train_epoch(model, optimizer, batches, max_norm):
    state, losses = None, []
    for x, y in batches:
        state = _detach(state)  # keep the values, cut the graph: backprop stops at the chunk's first step
        logits, state = model(x, state)  # (T, B, V)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        params = [p for p in model.parameters() if p.grad is not None]
        total = torch.sqrt(sum((p.grad ** 2).sum() for p in params))  # one norm over every gradient
        scale = min(1.0, max_norm / (float(total) + 1e-6))
        for p in params:
            p.grad = p.grad * scale
        optimizer.step()
        losses.append(loss.item())
    return losses


def _train_cases() -> list[Case]:
    cases = []
    for label, seed, cell, dtype, lengths, batch, max_norm, lr in (
        ("LSTM, 4 chunks of batch 3, max_norm 0.5 (clipping active)", 611, "lstm", torch.float64, [4, 4, 4, 2], 3,
         0.5, 0.5),
        ("GRU (state is one tensor), 3 chunks of batch 2, max_norm 0.5", 612, "gru", torch.float64, [5, 5, 3], 2,
         0.5, 0.5),
        ("LSTM, 3 chunks, max_norm 100 (no clipping)", 613, "lstm", torch.float64, [3, 3, 3], 2, 100.0, 0.3),
        ("LSTM in float32, 3 chunks of batch 2, max_norm 1", 614, "lstm", torch.float32, [4, 4, 4], 2, 1.0, 0.5),
        ("one chunk of batch 1", 615, "gru", torch.float64, [6], 1, 0.5, 0.5),
    ):
        model = _TinyLM(seed, cell, dtype=dtype)
        optimizer = torch.optim.SGD(model.parameters(), lr=lr)
        cases.append(Case(label, (model, optimizer, _chunks(seed, lengths, batch), max_norm)))
    return cases


# -------------------------------------------------------------------------------------------------- perplexity
@torch.no_grad()
def _perplexity(model, batches):
    state, total, count = None, 0.0, 0
    for x, y in batches:
        logits, state = model(x, state)  # (T, B, V): the state runs on from chunk to chunk
        log_probs = torch.log_softmax(logits, dim=-1)
        total -= float(log_probs.gather(-1, y.unsqueeze(-1)).sum())
        count += y.numel()
    return math.exp(total / count)  # e ** (mean negative log-likelihood in nats per predicted token)


def _perplexity_cases() -> list[Case]:
    return [Case("LSTM, chunks of 4, 4, 2 steps (last shorter), batch 3", (_TinyLM(621), _chunks(621, [4, 4, 2], 3))),
            Case("GRU, chunks of 5 and 1 steps, batch 2", (_TinyLM(622, "gru"), _chunks(622, [5, 1], 2))),
            Case("LSTM, one chunk, batch 1", (_TinyLM(623), _chunks(623, [7], 1))),
            Case("LSTM in float32, chunks of 3, 3, 3", (_TinyLM(624, dtype=torch.float32), _chunks(624, [3, 3, 3], 2)))]


# ---------------------------------------------------------------------------------------------------- sampling
@torch.no_grad()
def _sample(model, temperature, generator, max_len=20):
    ids, state, token = [], None, 0
    device = next(model.parameters()).device
    for _ in range(max_len):
        logits, state = model(torch.tensor([[token]], device=device), state)  # (1, 1, V)
        probs = torch.softmax(logits[0, 0] / temperature, dim=-1)  # (V,)
        token = int(torch.multinomial(probs, 1, generator=generator))
        ids.append(token)
        if token == 0:
            break
    return ids


def _sample_cases() -> list[Case]:
    cases = []
    for label, seed, eos_bias, temperature, max_len, draw_seed in (
        ("temperature 1.0, up to 20 characters", 631, 0.0, 1.0, 20, 1),
        ("temperature 0.5, up to 20 characters", 632, 0.0, 0.5, 20, 2),
        ("temperature 2.0, up to 20 characters", 633, 0.5, 2.0, 20, 3),
        ("max_len 4 reached before end-of-sequence", 634, -5.0, 1.0, 4, 4),
        ("end-of-sequence very likely: stops early", 635, 5.0, 1.0, 20, 5),
    ):
        cases.append(Case(label, (_TinyLM(seed, "gru", eos_bias=eos_bias), temperature, generator(draw_seed)),
                          {"max_len": max_len}))
    return cases


# ------------------------------------------------------------------------------------ the trained model, judged
# a trained model that passes every threshold: instructors only, like the other fixtures (a student who could
# read it could hand it in)
REFERENCE_WEIGHTS = FIXTURE_DIR / "a06_char_lm_reference.npz"


@lru_cache(maxsize=1)
def _test_data() -> tuple[int, torch.Tensor]:
    """The vocabulary size of the training names and the token stream of the test names, as the notebook builds
    them (read here, in the trusted process: nothing about them comes from the student's export)."""
    from rnnkit.data.names import load_names

    vocab = _build_vocab(load_names("train"))
    return len(vocab), _encode(load_names("test"), vocab)


def _reference_weights() -> dict:
    """A model trained by the notebook's recipe (a smaller GRU), stored by
    :func:`write_reference`: what a passing export looks like."""
    with np.load(REFERENCE_WEIGHTS, allow_pickle=False) as npz:
        return {key: torch.from_numpy(npz[key].copy()) for key in sorted(npz.files)}


def train_reference(seed: int = 0) -> dict:
    """The notebook's recipe (Adam 0.01, 10 epochs of 32 x 50-step chunks, clipping at 1) for a 48-unit GRU."""
    from rnnkit.data.names import load_names
    from rnnkit.models import CharLM

    names = load_names("train")
    vocab = _build_vocab(names)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CharLM(len(vocab), 48, embedding_dim=16, cell="gru")
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    batches = _tbptt_batches(_encode(names, vocab), EVAL_BATCH, EVAL_STEPS)
    for _ in range(10):
        _train_epoch(model, optimizer, batches, 1.0)
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


def _rebuild(weights: dict[str, np.ndarray], vocab_size: int):
    """An rnnkit CharLM holding ``weights`` (float64), or the reason the weights do not describe one."""
    from rnnkit.models import CharLM

    shapes = {k: v.shape for k, v in weights.items()}
    emb, w_hh = shapes.get("embed.weight"), shapes.get("rnn.weight_hh_l0")
    if emb is None or w_hh is None or len(emb) != 2 or len(w_hh) != 2 or w_hh[1] == 0:
        return None, "the weights are not those of rnnkit.CharLM (no embed.weight or rnn.weight_hh_l0 of 2 dimensions)"
    if emb[0] != vocab_size:
        return None, f"embed.weight has {emb[0]} rows, but the vocabulary of the training names has {vocab_size} " \
                     "symbols: build the model with len(vocab) from your build_vocab(train_names)"
    hidden, embedding = w_hh[1], emb[1]
    cell = {1: "rnn", 3: "gru", 4: "lstm"}.get(w_hh[0] // hidden if w_hh[0] % hidden == 0 else 0)
    layers = sum(1 for k in weights if k.startswith("rnn.weight_ih_l"))
    if cell is None:
        return None, f"rnn.weight_hh_l0 has shape {tuple(w_hh)}: not an RNN, GRU or LSTM layer of CharLM"
    if hidden > MAX_HIDDEN or layers > MAX_LAYERS or embedding > MAX_EMBEDDING or layers < 1:
        return None, f"the model is larger than the grader evaluates (hidden_size <= {MAX_HIDDEN}, " \
                     f"num_layers <= {MAX_LAYERS}, embedding_dim <= {MAX_EMBEDDING})"
    with torch.random.fork_rng(devices=[]):
        model = CharLM(vocab_size, hidden, embedding_dim=embedding, cell=cell, num_layers=layers).double()
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for key in sorted(set(expected) | set(shapes)):
        if key not in shapes:
            return None, f"state_dict entry {key!r} is missing (rnnkit.CharLM with {cell}, hidden_size {hidden})"
        if key not in expected:
            return None, f"state_dict entry {key!r} is not a weight of rnnkit.CharLM"
        if tuple(shapes[key]) != expected[key]:
            return None, f"state_dict entry {key!r} has shape {tuple(shapes[key])}, expected {expected[key]} " \
                         f"for rnnkit.CharLM with {cell}, hidden_size {hidden}, embedding_dim {embedding}"
    model.load_state_dict({k: torch.from_numpy(np.asarray(v, dtype=np.float64)) for k, v in weights.items()})
    return model.eval(), None


def _judge_threshold(threshold: float):
    def judge(got: dict, want: dict, case: int) -> str | None:
        weights, why = state_dict(got, "lower the learning rate, check the clipping")
        if weights is None:
            return why
        value, why = judged_perplexity(weights)
        if value is None:
            return why
        if value > threshold:
            return f"perplexity {value:.3f} of the test names (computed by the grader from your weights) is above " \
                   f"{threshold:g}, needed for this half point"
        return None

    return judge


_CACHE: dict[str, tuple[float | None, str | None]] = {}


def judged_perplexity(weights: dict[str, np.ndarray]) -> tuple[float | None, str | None]:
    """(perplexity of the test names, None) for a CharLM with these weights, or (None, why not); computed once per
    set of weights for the four threshold checks."""
    digest = hashlib.sha256(b"".join(k.encode() + b"\0" + str(v.dtype).encode() + str(v.shape).encode() + v.tobytes()
                                     for k, v in sorted(weights.items()))).hexdigest()
    if digest not in _CACHE:
        vocab_size, stream = _test_data()
        model, why = _rebuild(weights, vocab_size)
        if model is None:
            _CACHE[digest] = (None, why)
        else:
            value = _perplexity(model, _tbptt_batches(stream, EVAL_BATCH, EVAL_STEPS))
            _CACHE[digest] = (value, None) if math.isfinite(value) else (
                None, "the model's perplexity on the test names is not finite")
        if len(_CACHE) > 64:
            _CACHE.pop(next(iter(_CACHE)))
    return _CACHE[digest]


# --------------------------------------------------------------------------------------------------- the rules
register(Spec("build_vocab", _vocab_cases, _build_vocab, leaf_names=(),
              summary="the vocabulary: end-of-sequence '\\n' first (id 0), then the distinct characters sorted"))
register(Spec("encode_names", _encode_cases, _encode, leaf_names=("ids",),
              summary="names -> one int64 stream: end-of-sequence, then each name followed by end-of-sequence"))
register(Spec("decode_ids", _decode_cases, _decode, leaf_names=("text",),
              summary="ids (tensor or list) -> the string of their characters, end-of-sequence as '\\n'"))
register(Spec("tbptt_batches", _tbptt_cases, _tbptt_batches,
              summary="the stream cut into B contiguous rows, then time-major chunks (x, y) of num_steps steps"))
register(Spec("train_epoch", _train_cases, _train_epoch, tolerances={"float": (1e-5, 1e-8)},
              may_change=("model", "optimizer"),  # training updates them: that is the point
              summary="one epoch of truncated BPTT: state carried and detached, mean cross-entropy, global-norm "
                      "clipping, one optimizer step per chunk; the losses"))
register(Spec("perplexity", _perplexity_cases, _perplexity, tolerances={"float": (1e-5, 1e-8)},
              summary="exp of the mean negative log-likelihood per predicted token, state carried across chunks"))
register(Spec("sample_name", _sample_cases, _sample,
              summary="seeded temperature sampling from end-of-sequence until end-of-sequence or max_len"))
for _threshold in THRESHOLDS:
    register(Spec(f"names_perplexity_{_threshold:g}", lambda: [], _reference_weights, kind="value",
                  judge=_judge_threshold(_threshold),
                  summary=f"the trained model's weights: held-out perplexity of the test names at most "
                          f"{_threshold:g}, computed by the judge (0.5 points)"))



def write_reference() -> float | None:
    """Train and store the reference weights; returns their judged test perplexity (None when it
    cannot be judged). Run it with
    ``python -c "from rnnkit.grading.specs import a06_char_lm; a06_char_lm.write_reference()"``, then
    ``make fixtures``."""
    weights = {k: v.numpy() for k, v in train_reference().items()}
    np.savez_compressed(REFERENCE_WEIGHTS, **weights)
    return judged_perplexity(weights)[0]
