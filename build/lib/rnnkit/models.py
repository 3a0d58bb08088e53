r"""Small sequence models built from rnnkit's layers, and the parameter arithmetic behind "same budget".

* :class:`PianoRollModel` — Chung et al. (2014)'s music model (chapter 5): one recurrent layer, 88 sigmoid outputs.
* :class:`CharLM` — character language model with ``initial_state`` / ``step`` for :mod:`rnnkit.sampling` (chapter 6).
* :class:`Tagger` — (bi)directional per-step classifier (chapter 6, and the copy task of chapter 5).
* :class:`Seq2Seq` — GRU encoder-decoder with teacher forcing and greedy decoding (chapter 6).

Every model is time-major inside, like the layers: tokens ``(T, B)``, features ``(T, B, F)``. Models that train with
:class:`rnnkit.train.Trainer` have a ``collate(examples) -> SeqBatch`` static method and a ``loss(batch)`` method that
returns ``(mean_loss, count)``, so epoch averages are weighted by time steps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import _checks
from .data.batching import pad_batch
from .layers import GRU, LSTM, RNN

__all__ = [
    "CELLS", "SeqBatch", "make_recurrent", "recurrent_parameter_count", "piano_roll_parameter_count",
    "units_for_budget", "count_parameters", "PianoRollModel", "CharLM", "Tagger", "Seq2Seq",
]

# cell name -> (gates per unit, layer class, extra kwargs). "tanh" and "rnn" are the same Elman network.
CELLS: dict[str, tuple[int, type[RNN | LSTM | GRU], dict[str, str]]] = {
    "tanh": (1, RNN, {"nonlinearity": "tanh"}), "rnn": (1, RNN, {"nonlinearity": "tanh"}),
    "gru": (3, GRU, {}), "lstm": (4, LSTM, {})}


def _cell(cell: str) -> tuple[int, type, dict]:
    if cell not in CELLS:
        raise ValueError(f"expected cell to be one of {sorted(CELLS)}, got {cell!r}")
    return CELLS[cell]


def make_recurrent(cell: str, input_size: int, hidden_size: int, **kwargs) -> nn.Module:
    """An rnnkit ``RNN`` (tanh) / ``GRU`` / ``LSTM`` layer by name; ``kwargs`` go to the layer (``backend=``, ...)."""
    _, layer, extra = _cell(cell)
    return layer(input_size, hidden_size, **extra, **kwargs)


def _time_major_kwargs(model: str, kwargs: dict, *, causal: bool) -> dict:
    """Layer options a model can pass on: never ``batch_first`` (the models are time-major, so it would silently read
    ``(T, B)`` as ``(B, T)``), and no ``bidirectional`` for a ``causal`` (left-to-right) model."""
    if kwargs.get("batch_first", False):
        raise ValueError(f"{model}: expected time-major inputs (T, B, ...), so batch_first must stay False, got True; "
                         "transpose batch-first data with .transpose(0, 1)")
    if causal and kwargs.get("bidirectional", False):
        raise ValueError(f"{model}: expected a left-to-right model (it predicts each step from the steps before it), "
                         "got bidirectional=True, which would read the future")
    return kwargs


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def recurrent_parameter_count(cell: str, input_size: int, hidden_size: int) -> int:
    r"""Parameters of one unidirectional layer in ``torch.nn`` layout: :math:`G \cdot H (I + H + 2)` for
    :math:`G` = 1 (tanh), 3 (GRU), 4 (LSTM) gates — ``weight_ih`` :math:`GH \times I`, ``weight_hh``
    :math:`GH \times H`, and the two bias vectors ``bias_ih``, ``bias_hh`` of :math:`GH` each."""
    gates = _cell(cell)[0]
    return gates * hidden_size * (input_size + hidden_size + 2)


def piano_roll_parameter_count(cell: str, n_in: int, n_out: int, hidden_size: int) -> int:
    """Parameters of :class:`PianoRollModel`: the recurrent layer plus the ``H -> n_out`` output layer with bias."""
    return recurrent_parameter_count(cell, n_in, hidden_size) + hidden_size * n_out + n_out


def units_for_budget(cell: str, n_in: int, n_out: int, budget: int) -> int:
    r"""The largest hidden size whose :class:`PianoRollModel` has at most ``budget`` parameters (counted exactly).

    Chung et al. (2014, Table 1) report 100 tanh / 46 GRU / 36 LSTM units as "about 20k" parameters each. With 88
    input and 88 output keys the exact counts of those sizes are 27,888 / 22,904 / 21,400 (the tanh net's 100x100
    recurrent matrix plus two 88x100 matrices alone exceed 20k), so the paper's figures must count differently; this
    function gives the sizes an exact equal budget implies (20,000 -> 77 tanh, 41 GRU, 34 LSTM).
    """
    return largest_fit(lambda hidden: piano_roll_parameter_count(cell, n_in, n_out, hidden), budget,
                       f"units_for_budget: a {cell} model")


def largest_fit(count: Callable[[int], int], budget: int, what: str) -> int:
    """The largest hidden size ``h >= 1`` with ``count(h) <= budget`` (``count`` increases with ``h``); a
    ``ValueError`` naming ``what`` when even one unit does not fit."""
    if count(1) > budget:
        raise ValueError(f"{what} with one unit already has {count(1)} parameters, more than the budget {budget}")
    hidden = 1
    while count(hidden + 1) <= budget:
        hidden += 1
    return hidden


@dataclass
class SeqBatch:
    """A padded, time-major batch: ``inputs`` ``(T, B, ...)``, ``targets`` ``(T, B, ...)``, ``lengths`` ``(B,)``.
    ``.to(device)`` moves inputs and targets and keeps ``lengths`` on the CPU (the layers index with it there)."""

    inputs: Tensor
    targets: Tensor
    lengths: Tensor

    def __post_init__(self) -> None:
        if not isinstance(self.lengths, Tensor):  # a list [3, 2] from hand-built batches: the losses call .to/.sum
            self.lengths = torch.as_tensor(self.lengths, dtype=torch.long)

    def to(self, device) -> SeqBatch:
        return SeqBatch(self.inputs.to(device), self.targets.to(device), self.lengths)


def _masked_step_mean(per_step: Tensor, lengths: Tensor) -> tuple[Tensor, int]:
    """Mean of ``per_step`` ``(T, B)`` over valid steps; returns ``(mean, number of valid steps)``."""
    steps = torch.arange(per_step.shape[0], device=per_step.device)
    mask = steps[:, None] < lengths.to(per_step.device)[None, :]  # (T, B)
    count = int(lengths.sum())
    return (per_step * mask).sum() / count, count


class PianoRollModel(nn.Module):
    r"""Predict piano-roll frame :math:`x_{t+1}` from frames :math:`x_{\le t}` (Chung et al. 2014, Section 4.1).

    .. math::
        h_t = \mathrm{cell}(x_{t-1}, h_{t-1}), \qquad
        p(x_{t,k} = 1 \mid x_{<t}) = \sigma(W_o h_t + b_o)_k

    with :math:`x_{-1} = 0` (a silent start frame), so every frame of a sequence is predicted, including the first.
    The loss is the paper's *average negative log-probability per time step*: the Bernoulli NLL summed over the 88
    keys, averaged over the valid frames of the batch (natural log).
    """

    def __init__(self, cell: str = "gru", hidden_size: int = 46, n_keys: int = 88, **layer_kwargs):
        super().__init__()
        self.cell, self.n_keys = cell, n_keys
        self.rnn = make_recurrent(cell, n_keys, hidden_size,
                                  **_time_major_kwargs("PianoRollModel", layer_kwargs, causal=True))
        self.out = nn.Linear(hidden_size, n_keys)

    def forward(self, x: Tensor, lengths: Tensor | None = None, hx=None) -> Tensor:
        """``x`` ``(T, B, K)`` (already shifted: row ``t`` is the frame before target ``t``) -> logits ``(T, B, K)``."""
        h, _ = self.rnn(x, hx, lengths=lengths)  # (T, B, H)
        return self.out(h)  # (T, B, K)

    def initial_state(self, batch_size: int, device=None):
        """``None``: the layer starts from zeros (what :func:`rnnkit.sampling.sample_piano_roll` passes back)."""
        return None

    def step(self, frame: Tensor, state=None):
        """One step for sampling: ``frame`` ``(B, K)`` -> logits ``(B, K)`` for the next frame, and the new state."""
        h, state = self.rnn(frame[None], state)  # (1, B, H)
        return self.out(h[0]), state

    @staticmethod
    def collate(rolls: list[Tensor]) -> SeqBatch:
        """Rolls ``(T_i, K)`` -> inputs = rolls shifted one step right behind a zero frame, targets = rolls."""
        targets, lengths = pad_batch(rolls)  # (T, B, K), (B,)
        inputs = torch.cat([torch.zeros_like(targets[:1]), targets[:-1]], dim=0)  # (T, B, K)
        return SeqBatch(inputs, targets, lengths)

    def loss(self, batch: SeqBatch) -> tuple[Tensor, int]:
        logits = self(batch.inputs, batch.lengths)  # (T, B, K)
        nll = F.binary_cross_entropy_with_logits(logits, batch.targets, reduction="none").sum(-1)  # (T, B)
        return _masked_step_mean(nll, batch.lengths)


class CharLM(nn.Module):
    """Character language model: embedding -> recurrent layer(s) -> linear over the vocabulary.

    ``forward(tokens (T, B), state)`` returns logits ``(T, B, V)`` and the final state; ``initial_state(B)`` and
    ``step(tokens_t (B,), state) -> (logits (B, V), state)`` are what :func:`rnnkit.sampling.sample_sequence` calls.
    """

    def __init__(self, vocab_size: int, hidden_size: int = 128, *, embedding_dim: int = 32, cell: str = "lstm",
                 num_layers: int = 1, dropout: float = 0.0, **layer_kwargs):
        super().__init__()
        self.cell, self.vocab_size, self.hidden_size, self.num_layers = cell, vocab_size, hidden_size, num_layers
        self.embed = nn.Embedding(vocab_size, embedding_dim)
        self.rnn = make_recurrent(cell, embedding_dim, hidden_size, num_layers=num_layers, dropout=dropout,
                                  **_time_major_kwargs("CharLM", layer_kwargs, causal=True))
        self.out = nn.Linear(hidden_size, vocab_size)

    def initial_state(self, batch_size: int, device=None):
        """Zero state ``(num_layers, B, H)`` (a pair for LSTM) on ``device`` (default: the model's)."""
        w = self.out.weight
        h = torch.zeros(self.num_layers, batch_size, self.hidden_size, device=device or w.device, dtype=w.dtype)
        return (h, h.clone()) if self.cell == "lstm" else h

    def forward(self, tokens: Tensor, state=None, lengths: Tensor | None = None):
        """``tokens`` ``(T, B)`` int64 -> logits ``(T, B, V)`` and the final state (``lengths`` for a padded batch)."""
        if tokens.dim() != 2 or tokens.dtype != torch.long:
            raise ValueError(f"CharLM: expected tokens of shape (T, B) and dtype torch.int64, "
                             f"got {tuple(tokens.shape)} {tokens.dtype}")
        if tokens.numel():  # the embedding's own error is a bare "index out of range in self"
            lo, hi = torch.stack(torch.aminmax(tokens)).tolist()  # one reduction, one device sync per call
            if not 0 <= lo <= hi < self.vocab_size:
                raise ValueError(f"CharLM: expected token ids in 0..{self.vocab_size - 1} (vocab_size "
                                 f"{self.vocab_size}), got ids from {lo} to {hi}")
        h, state = self.rnn(self.embed(tokens), state, lengths=lengths)  # (T, B, H)
        return self.out(h), state  # (T, B, V)

    def step(self, tokens_t: Tensor, state=None):
        """One step: ``tokens_t`` ``(B,)`` -> logits ``(B, V)`` and the new state."""
        logits, state = self(tokens_t[None, :], state)  # (1, B, V)
        return logits[0], state

    @staticmethod
    def collate(seqs: list[Tensor]) -> SeqBatch:
        """Token sequences ``(T_i + 1,)`` -> inputs ``x[:-1]`` and next-token targets ``x[1:]``, padded ``(T, B)``."""
        short = [i for i, s in enumerate(seqs) if s.shape[0] < 2]
        if short:  # one token has no next token to predict; pad_batch would blame an empty "sequence 0"
            raise ValueError(f"CharLM.collate: expected sequences of at least 2 tokens (input + next-token target), "
                             f"got {seqs[short[0]].shape[0]} for sequence {short[0]}")
        inputs, lengths = pad_batch([s[:-1] for s in seqs])
        targets, _ = pad_batch([s[1:] for s in seqs])
        return SeqBatch(inputs, targets, lengths)

    def loss(self, batch: SeqBatch) -> tuple[Tensor, int]:
        logits, _ = self(batch.inputs, lengths=batch.lengths)  # (T, B, V)
        nll = F.cross_entropy(logits.flatten(0, 1), batch.targets.flatten(), reduction="none")  # (T*B,)
        return _masked_step_mean(nll.view_as(batch.targets), batch.lengths)


class Tagger(nn.Module):
    """Per-step labels from a (by default bidirectional) recurrent layer: logits ``(T, B, num_tags)``.

    Inputs are token ids ``(T, B)`` when ``vocab_size`` is given (an embedding comes first), else features
    ``(T, B, input_size)``.
    """

    def __init__(self, input_size: int, hidden_size: int, num_tags: int, *, cell: str = "lstm",
                 bidirectional: bool = True, vocab_size: int | None = None, **layer_kwargs):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, input_size) if vocab_size is not None else None
        self.rnn = make_recurrent(cell, input_size, hidden_size, bidirectional=bidirectional,
                                  **_time_major_kwargs("Tagger", layer_kwargs, causal=False))
        self.out = nn.Linear(hidden_size * (2 if bidirectional else 1), num_tags)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Tokens ``(T, B)`` or features ``(T, B, input_size)`` -> logits ``(T, B, num_tags)``."""
        if self.embed is not None:
            x = self.embed(x)  # (T, B, E)
        h, _ = self.rnn(x, lengths=lengths)  # (T, B, D*H)
        return self.out(h)  # (T, B, num_tags)

    @staticmethod
    def collate(examples: list[tuple[Tensor, Tensor]]) -> SeqBatch:
        """``(inputs (T_i, ...), tags (T_i,))`` pairs -> a padded batch."""
        inputs, lengths = pad_batch([x for x, _ in examples])
        targets, _ = pad_batch([y for _, y in examples])
        return SeqBatch(inputs, targets, lengths)

    def loss(self, batch: SeqBatch) -> tuple[Tensor, int]:
        logits = self(batch.inputs, batch.lengths)  # (T, B, C)
        nll = F.cross_entropy(logits.flatten(0, 1), batch.targets.flatten(), reduction="none")
        return _masked_step_mean(nll.view_as(batch.targets), batch.lengths)


class Seq2Seq(nn.Module):
    r"""GRU encoder-decoder (Cho et al. 2014; Sutskever et al. 2014), without attention.

    The encoder's final state :math:`h_S` starts the decoder. Training uses teacher forcing: the decoder reads
    ``[bos, y_0, ..., y_{T-2}]`` and predicts ``[y_0, ..., y_{T-1}]`` (whose last token is ``eos``);
    :meth:`greedy_decode` feeds back its own argmax instead.
    """

    def __init__(self, src_vocab: int, tgt_vocab: int, hidden_size: int = 64, *, embedding_dim: int = 32,
                 bos: int = 1, eos: int = 2, **layer_kwargs):
        super().__init__()
        self.bos, self.eos = bos, eos
        layer_kwargs = _time_major_kwargs("Seq2Seq", layer_kwargs, causal=True)
        self.src_embed = nn.Embedding(src_vocab, embedding_dim)
        self.tgt_embed = nn.Embedding(tgt_vocab, embedding_dim)
        self.encoder = GRU(embedding_dim, hidden_size, **layer_kwargs)
        self.decoder = GRU(embedding_dim, hidden_size, **layer_kwargs)
        self.out = nn.Linear(hidden_size, tgt_vocab)

    def encode(self, src: Tensor, src_lengths: Tensor | None = None) -> Tensor:
        _, h = self.encoder(self.src_embed(src), lengths=src_lengths)  # h: (1, B, H)
        return h

    def forward(self, src: Tensor, tgt: Tensor, src_lengths: Tensor | None = None) -> Tensor:
        """Teacher forcing: ``src`` ``(S, B)``, ``tgt`` ``(T, B)`` -> logits ``(T, B, V)`` predicting ``tgt``."""
        h = self.encode(src, src_lengths)
        shifted = torch.cat([torch.full_like(tgt[:1], self.bos), tgt[:-1]], dim=0)  # (T, B)
        out, _ = self.decoder(self.tgt_embed(shifted), h)  # (T, B, H)
        return self.out(out)

    @torch.no_grad()
    def greedy_decode(self, src: Tensor, max_len: int, src_lengths: Tensor | None = None) -> Tensor:
        """``(T', B)`` argmax tokens, ``T' <= max_len``; stops early once every row has emitted ``eos``."""
        max_len = _checks.positive_int("Seq2Seq.greedy_decode", "max_len", max_len)
        h = self.encode(src, src_lengths)
        token = torch.full((src.shape[1],), self.bos, dtype=torch.long, device=src.device)  # (B,)
        done = torch.zeros_like(token, dtype=torch.bool)
        result = []
        for _ in range(max_len):
            out, h = self.decoder(self.tgt_embed(token)[None], h)  # (1, B, H)
            token = self.out(out[0]).argmax(-1)  # (B,)
            result.append(token)
            done |= token == self.eos
            if bool(done.all()):
                break
        return torch.stack(result)

    @staticmethod
    def collate(pairs: list[tuple[Tensor, Tensor]]) -> SeqBatch:
        """``(src (S_i,), tgt (T_i,))`` pairs -> ``SeqBatch``: ``inputs`` = padded ``src`` ``(S, B)``, ``targets`` =
        padded ``tgt`` ``(T, B)``, ``lengths`` = source and target lengths stacked ``(2, B)``."""
        src, src_lengths = pad_batch([s for s, _ in pairs])
        tgt, tgt_lengths = pad_batch([t for _, t in pairs])
        return SeqBatch(src, tgt, torch.stack([src_lengths, tgt_lengths]))

    def loss(self, batch: SeqBatch) -> tuple[Tensor, int]:
        src_lengths, tgt_lengths = batch.lengths
        logits = self(batch.inputs, batch.targets, src_lengths)  # (T, B, V)
        nll = F.cross_entropy(logits.flatten(0, 1), batch.targets.flatten(), reduction="none")
        return _masked_step_mean(nll.view_as(batch.targets), tgt_lengths)
