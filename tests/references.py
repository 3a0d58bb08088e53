"""Independent references the tests compare rnnkit with, written from the papers (never from rnnkit), shared by
several test modules -- test modules do not import each other."""

import torch


def chung2014_gru_step(x, h, w_ih, w_hh, b_ih=None, b_hh=None):
    r"""Chung et al. 2014, eqs. (5)-(8), written from the paper (plus biases, which the paper omits):

        r = sigmoid(W_r x + U_r h),  z = sigmoid(W_z x + U_z h),  h~ = tanh(W x + U (r * h)),
        h' = (1 - z) h + z h~.

    The paper's z keeps the *new* candidate; PyTorch's z keeps the old state, so W_z = -W_iz (etc.) in PyTorch's layout.
    """
    H = h.shape[-1]
    W_r, W_z, W = w_ih[:H], -w_ih[H : 2 * H], w_ih[2 * H :]
    U_r, U_z, U = w_hh[:H], -w_hh[H : 2 * H], w_hh[2 * H :]
    zeros = torch.zeros(3 * H, dtype=x.dtype)
    b_ih = zeros if b_ih is None else b_ih
    b_hh = zeros if b_hh is None else b_hh
    a_r, a_z, a = b_ih[:H] + b_hh[:H], -(b_ih[H : 2 * H] + b_hh[H : 2 * H]), b_ih[2 * H :]
    c = b_hh[2 * H :]
    r = torch.sigmoid(x @ W_r.T + h @ U_r.T + a_r)
    z = torch.sigmoid(x @ W_z.T + h @ U_z.T + a_z)
    h_tilde = torch.tanh(x @ W.T + a + (r * h) @ U.T + c)
    return (1 - z) * h + z * h_tilde
