"""The encoder-decoder assignment 08 hands out, as the grader builds it for the cases and the judge.

It lives in a module of its own because the runtime guard (:mod:`rnnkit.grading.guard`) treats this file as library
code: the cases pass such a model to the student's ``teacher_forcing_loss``, and what the model computes inside
(``rnnkit.recurrence.run_direction``, ``rnnkit.cells.gru_cell``) is not the student's call.
"""
from __future__ import annotations

import torch

VOCAB = 12  # BOS, EOS and the digits 0-9


def bi_encoder(x, lengths, fwd, bwd):
    """Forward and reversed GRU passes over ``x (T, B, E)`` with lengths, states concatenated."""
    from rnnkit.recurrence import run_direction

    h0 = x.new_zeros(x.shape[1], fwd[1].shape[1])  # (B, H)
    out_f, h_f = run_direction("GRU", x, h0, *fwd, lengths=lengths)
    out_b, h_b = run_direction("GRU", x, h0, *bwd, lengths=lengths, reverse=True)
    return torch.cat([out_f, out_b], dim=-1), torch.cat([h_f, h_b], dim=-1)  # (T, B, 2H), (B, 2H)


class Reference(torch.nn.Module):
    """The notebook's encoder-decoder with the reference cells: embeddings, a bidirectional GRU encoder (H units each
    way), a GRU decoder of 2H units that starts from the encoder's final states and reads [embedding, context] at
    every step (d2l §10.7), and a linear output layer. Its state_dict keys are the notebook's."""

    def __init__(self, embed: int = 16, hidden: int = 32, vocab: int = VOCAB):
        super().__init__()
        self.src_embed = torch.nn.Embedding(vocab, embed)
        self.tgt_embed = torch.nn.Embedding(vocab, embed)
        shapes = ((3 * hidden, embed), (3 * hidden, hidden), (3 * hidden,), (3 * hidden,))
        self.enc_fwd = torch.nn.ParameterList([torch.nn.Parameter(torch.zeros(s)) for s in shapes])
        self.enc_bwd = torch.nn.ParameterList([torch.nn.Parameter(torch.zeros(s)) for s in shapes])
        dec = ((6 * hidden, embed + 2 * hidden), (6 * hidden, 2 * hidden), (6 * hidden,), (6 * hidden,))
        self.dec = torch.nn.ParameterList([torch.nn.Parameter(torch.zeros(s)) for s in dec])
        self.out = torch.nn.Linear(2 * hidden, vocab)
        with torch.no_grad():  # like torch.nn.GRU: uniform in +-1/sqrt(units of the cell)
            for cell, units in ((self.enc_fwd, hidden), (self.enc_bwd, hidden), (self.dec, 2 * hidden)):
                for p in cell:
                    p.uniform_(-units ** -0.5, units ** -0.5)

    def encode(self, src, lengths):
        return bi_encoder(self.src_embed(src), lengths, tuple(self.enc_fwd), tuple(self.enc_bwd))

    def decode_step(self, token, state, context):
        from rnnkit.cells import gru_cell

        x = torch.cat([self.tgt_embed(token), context], dim=-1)  # (B, E + 2H)
        state = gru_cell(x, state, *self.dec)  # (B, 2H)
        return self.out(state), state  # (B, V), (B, 2H)
