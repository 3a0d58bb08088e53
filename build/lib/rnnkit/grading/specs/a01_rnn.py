"""Specs of assignment 1 (rnn): the tanh cell, a layer over a padded batch, next-symbol log-probabilities and
per-step NLL, and seeded temperature sampling to end-of-sequence. References: ``rnnkit.cells.rnn_cell`` and
``rnnkit.recurrence.run_direction``; sampling follows the recipe written in the notebook."""
from __future__ import annotations

import torch

from . import Case, Spec, cell_cases, generator, randn, register, sequence_cases


def _rnn_cell(x, h, w_ih, w_hh, b_ih, b_hh):
    from rnnkit.cells import rnn_cell

    return rnn_cell(x, h, w_ih, w_hh, b_ih, b_hh)


def _rnn_forward(x, h0, lengths, w_ih, w_hh, b_ih, b_hh):
    from rnnkit.recurrence import run_direction

    output, h_n = run_direction("RNN", x, h0, w_ih, w_hh, b_ih, b_hh, lengths=lengths)
    return output, h_n


def _logit_cases() -> list[Case]:
    g = generator(103)
    big = torch.tensor([1000.0, 999.0, -1000.0, 0.0])
    return [
        Case("logits (T=3, B=2, V=5), float64", (randn(g, 3, 2, 5, dtype=torch.float64, scale=3.0),)),
        Case("logits (B=4, V=7), float32", (randn(g, 4, 7, dtype=torch.float32, scale=3.0),)),
        Case("one vector of logits (V=6), float64", (randn(g, 6, dtype=torch.float64),)),
        Case("huge logits (+-1000), float32: exp() overflows unless you subtract the max", (big.clone(),)),
        Case("huge logits (+-1000) in a batch, float64", (torch.stack([big, -big]).double(),)),
    ]


def _nll_reference(logits, targets, lengths):
    logp = torch.log_softmax(logits, dim=-1)  # (T, B, V)
    nll = -logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (T, B)
    steps = torch.arange(logits.shape[0]).unsqueeze(1)  # (T, 1)
    return torch.where(steps < lengths.unsqueeze(0), nll, torch.zeros_like(nll))


def _nll_cases() -> list[Case]:
    g = generator(104)
    cases = []
    for label, lengths, vocab, dtype in (
        ("T=5, batch of 3, lengths [5, 2, 3], V=6, float64", [5, 2, 3], 6, torch.float64),
        ("T=5, batch of 3, lengths [5, 2, 3], V=6, float32", [5, 2, 3], 6, torch.float32),
        ("T=1, batch of 1, lengths [1], V=4, float64", [1], 4, torch.float64),
        ("T=4, batch of 2, lengths [4, 4], V=3, float32", [4, 4], 3, torch.float32),
    ):
        steps, batch = max(lengths), len(lengths)
        logits = randn(g, steps, batch, vocab, dtype=dtype, scale=2.0)
        targets = torch.randint(1, vocab, (steps, batch), generator=g)
        for b, n in enumerate(lengths):
            targets[n - 1, b] = 0  # the end-of-sequence symbol (id 0) closes every sequence ...
            targets[n:, b] = 0  # ... and padding also holds id 0, so only the mask tells them apart
        cases.append(Case(label, (logits, targets, torch.tensor(lengths, dtype=torch.long))))
    return cases


def _toy_language_model(seed: int, vocab: int = 6, hidden: int = 8, eos_bias: float = 0.0):
    """A fixed tiny RNN language model: ``step_fn(symbol, h) -> (logits (V,), h)``."""
    g = generator(seed)
    embed = randn(g, vocab, hidden)  # (V, H)
    w_hh = randn(g, hidden, hidden, scale=0.4)  # (H, H)
    w_out = randn(g, vocab, hidden, scale=1.5)  # (V, H)
    b_out = torch.zeros(vocab, dtype=torch.float64)
    b_out[0] = eos_bias

    def step_fn(symbol: int, h: torch.Tensor):
        h = torch.tanh(embed[int(symbol)] + w_hh @ h)  # (H,)
        return w_out @ h + b_out, h  # (V,), (H,)

    return step_fn, torch.zeros(hidden, dtype=torch.float64)


def _sample_reference(step_fn, h0, start, eos, max_len, temperature, generator):
    symbols, h, symbol = [], h0, start
    for _ in range(max_len):
        logits, h = step_fn(symbol, h)
        probs = torch.softmax(logits / temperature, dim=-1)
        symbol = int(torch.multinomial(probs, 1, generator=generator))
        symbols.append(symbol)
        if symbol == eos:
            break
    return symbols


def _sample_cases() -> list[Case]:
    cases = []
    for label, seed, eos_bias, max_len, temperature, draw_seed in (
        ("temperature 1.0, up to 30 symbols", 105, 0.0, 30, 1.0, 1),
        ("temperature 0.5, up to 30 symbols", 106, 0.0, 30, 0.5, 2),
        ("temperature 2.0, up to 30 symbols", 107, 1.0, 30, 2.0, 3),
        ("max_len 3 reached before end-of-sequence", 108, -4.0, 3, 1.0, 4),
        ("end-of-sequence very likely: stops early", 109, 4.0, 30, 1.0, 5),
    ):
        step_fn, h0 = _toy_language_model(seed, eos_bias=eos_bias)
        cases.append(Case(label, (step_fn, h0), dict(start=1, eos=0, max_len=max_len, temperature=temperature,
                                                      generator=generator(draw_seed))))
    return cases


register(Spec("rnn_cell_forward", lambda: cell_cases(101, 1), _rnn_cell, leaf_names=("h_new",),
              summary="tanh RNN cell h' = tanh(W_ih x + b_ih + W_hh h + b_hh): batched, B=1, unbatched, float32/64"))
register(Spec("rnn_forward", lambda: sequence_cases(102, 1), _rnn_forward, leaf_names=("output", "h_n"),
              summary="RNN layer over a padded batch with lengths: zero output and frozen state after each end"))
register(Spec("next_symbol_log_probs", _logit_cases, lambda logits: torch.log_softmax(logits, dim=-1),
              leaf_names=("log_probs",), summary="numerically stable log-softmax over the vocabulary"))
register(Spec("sequence_nll", _nll_cases, _nll_reference, leaf_names=("nll",),
              summary="per-step negative log-likelihood, counting the end-of-sequence step, zero on padding"))
register(Spec("sample_until_eos", _sample_cases, _sample_reference, leaf_names=(),
              summary="seeded temperature sampling with torch.multinomial that stops at end-of-sequence"))
