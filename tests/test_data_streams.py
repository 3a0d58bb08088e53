"""rnnkit.data.streams: stateful minibatches for truncated BPTT."""

from __future__ import annotations

import pytest
import torch

import rnnkit
from rnnkit.data import detach_state, stream_windows


def test_windows_continue_each_row_and_targets_are_shifted():
    tokens = torch.arange(23)                                   # N = (23 - 1) // 3 = 7 steps per row
    wins = list(stream_windows(tokens, batch_size=3, window=3))
    assert [x.shape for x, _ in wins] == [(3, 3), (3, 3), (1, 3)]
    x = torch.cat([w[0] for w in wins])                        # (7, 3)
    y = torch.cat([w[1] for w in wins])
    assert torch.equal(x.T, torch.arange(21).view(3, 7))      # row b is one contiguous stretch of the stream
    assert torch.equal(y, x + 1)


def test_stateful_windows_reproduce_the_full_forward_pass():
    torch.manual_seed(0)
    model = rnnkit.models.CharLM(11, hidden_size=8, cell="lstm")
    tokens = torch.randint(0, 11, (41,))
    full_x = torch.cat([x for x, _ in stream_windows(tokens, 4, 100)])          # one window: (10, 4)
    full, _ = model(full_x)
    state, parts = None, []
    for x, _ in stream_windows(tokens, 4, 3):
        logits, state = model(x, state)
        parts.append(logits)
        state = detach_state(state)
        assert all(not s.requires_grad for s in state)
    torch.testing.assert_close(torch.cat(parts), full)


def test_truncation_stops_the_gradient_at_the_window_start():
    torch.manual_seed(0)
    rnn = rnnkit.RNN(3, 5)
    x = torch.randn(8, 1, 3, requires_grad=True)
    _, h = rnn(x[:4])
    out, _ = rnn(x[4:], detach_state(h))
    out[-1].sum().backward()
    assert x.grad[:4].abs().max() == 0 and x.grad[4:].abs().max() > 0


@pytest.mark.parametrize("args, err, match", [
    (([1, 2, 3], 1, 1), TypeError, "expected tokens to be a torch.Tensor, got list"),
    ((torch.zeros(5, 2, dtype=torch.long), 1, 1), ValueError, r"1-D int64 token stream, got shape \(5, 2\)"),
    ((torch.zeros(5), 1, 1), ValueError, "torch.float32"),
    ((torch.zeros(5, dtype=torch.long), 0, 1), ValueError, "batch_size >= 1, got 0"),
    ((torch.zeros(5, dtype=torch.long), 2, 1.5), TypeError, "window to be an int, got float"),
    ((torch.zeros(3, dtype=torch.long), 4, 1), ValueError, "at least batch_size \\+ 1 = 5 tokens, got 3"),
])
def test_stream_windows_errors(args, err, match):
    with pytest.raises(err, match=match):
        next(stream_windows(*args))


def test_detach_state_errors_and_none():
    assert detach_state(None) is None
    with pytest.raises(TypeError, match="got list"):
        detach_state([torch.zeros(1)])
