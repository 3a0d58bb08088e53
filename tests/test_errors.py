"""Every kind of bad input gets one exception type and a message that names what was expected and what was given.

One row per mistake: (id, a function that makes the mistake, the exception type, a regex its message must match).
TypeError is for a wrong Python type, ValueError for a wrong value, shape, dtype or device. Device mismatches are
tested with the "meta" device, so they run without a GPU.
"""

import re

import pytest
import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import rnnkit
from rnnkit import recurrence

F64 = torch.float64


def lstm(**kw):
    return rnnkit.LSTM(10, 4, **kw)


def gru(**kw):
    return rnnkit.GRU(3, 4, **kw)


def x3(T=5, B=2, I=3, **kw):
    return torch.randn(T, B, I, **kw)


def set_backend(module, value):
    module.backend = value


def bad_packed():
    """A hand-built PackedSequence whose batch_sizes grow (pack_padded_sequence never makes one)."""
    return PackedSequence(torch.randn(5, 3), torch.tensor([2, 3]))


CONSTRUCTOR = [
    ("hidden_size=0", lambda: rnnkit.LSTM(10, 0), ValueError,
     r"^LSTM: expected hidden_size >= 1, got 0$"),
    ("hidden_size float", lambda: rnnkit.LSTM(10, 2.5), TypeError,
     r"^LSTM: expected hidden_size to be an int, got float \(2\.5\)$"),
    ("input_size float", lambda: rnnkit.GRU(3.0, 4), TypeError, r"^GRU: expected input_size to be an int, got float"),
    ("input_size negative", lambda: rnnkit.RNN(-1, 4), ValueError, r"^RNN: expected input_size >= 1, got -1$"),
    ("num_layers=0", lambda: gru(num_layers=0), ValueError, r"^GRU: expected num_layers >= 1, got 0$"),
    ("num_layers str", lambda: gru(num_layers="2"), TypeError, r"^GRU: expected num_layers to be an int, got str"),
    ("num_layers bool", lambda: gru(num_layers=True), TypeError, r"^GRU: expected num_layers to be an int, got bool"),
    ("dropout > 1", lambda: rnnkit.RNN(3, 4, num_layers=2, dropout=1.5), ValueError,
     r"^RNN: expected dropout in \[0, 1\] \(the probability of zeroing an element\), got 1\.5$"),
    ("dropout < 0", lambda: rnnkit.RNN(3, 4, num_layers=2, dropout=-0.1), ValueError,
     r"^RNN: expected dropout in \[0, 1\].*got -0\.1$"),
    ("dropout str", lambda: rnnkit.RNN(3, 4, dropout="0.1"), TypeError,
     r"^RNN: expected dropout to be a float, got str"),
    ("nonlinearity", lambda: rnnkit.RNN(3, 4, nonlinearity="sigmoid"), ValueError,
     r"^RNN: unknown nonlinearity 'sigmoid'; expected one of 'tanh', 'relu'$"),
    ("cell nonlinearity", lambda: rnnkit.RNNCell(3, 4, nonlinearity="gelu"), ValueError,
     r"^RNNCell: unknown nonlinearity 'gelu'; expected one of 'tanh', 'relu'$"),
    ("backend unknown", lambda: lstm(backend="cudnn"), ValueError,
     r"^LSTM: unknown backend 'cudnn'; expected one of 'reference', 'fused', 'torch'$"),
    ("backend not str", lambda: gru(backend=1), TypeError, r"^GRU: expected backend to be a str .*got int$"),
    ("backend set later", lambda: set_backend(rnnkit.LSTMCell(3, 4), "fast"), ValueError,
     r"^LSTMCell: unknown backend 'fast'"),
    ("torch GRU reset_after=False", lambda: gru(reset_after=False, backend="torch"), ValueError,
     r"^GRU: backend 'torch' computes only reset_after=True .*got reset_after=False"),
    ("switch to torch with reset_after=False", lambda: set_backend(gru(reset_after=False), "torch"), ValueError,
     r"^GRU: backend 'torch' computes only reset_after=True"),
    ("GRUCell torch reset_after=False", lambda: rnnkit.GRUCell(3, 4, reset_after=False, backend="torch"),
     ValueError, r"^GRUCell: backend 'torch' computes only reset_after=True"),
    ("reset_after not bool", lambda: gru(reset_after="no"), TypeError,
     r"^GRU: expected reset_after to be a bool, got str"),
    ("proj_size", lambda: lstm(proj_size=2), ValueError,
     r"^LSTM: proj_size is not supported by rnnkit \(expected 0, got 2\)"),
    ("bias not bool", lambda: lstm(bias="yes"), TypeError, r"^LSTM: expected bias to be a bool, got str"),
    ("batch_first not bool", lambda: lstm(batch_first=1), TypeError,
     r"^LSTM: expected batch_first to be a bool, got int"),
    ("bidirectional not bool", lambda: gru(bidirectional=None), TypeError,
     r"^GRU: expected bidirectional to be a bool, got NoneType"),
    ("cell hidden_size", lambda: rnnkit.GRUCell(3, -1), ValueError, r"^GRUCell: expected hidden_size >= 1, got -1$"),
]

INPUT = [
    ("input rank 4", lambda: lstm()(torch.randn(2, 3, 4, 10)), ValueError,
     r"^LSTM: expected input with 3 dimensions \(L, N, H_in\) or 2 dimensions \(L, H_in\) \(unbatched\), "
     r"got 4 dimensions with shape \(2, 3, 4, 10\)$"),
    ("input rank 1", lambda: lstm(batch_first=True)(torch.randn(10)), ValueError,
     r"^LSTM: expected input with 3 dimensions \(N, L, H_in\) .*got 1 dimensions"),
    ("cell input rank 3", lambda: rnnkit.LSTMCell(10, 4)(torch.randn(2, 3, 10)), ValueError,
     r"^LSTMCell: expected input with 2 dimensions \(N, H_in\) or 1 dimensions \(H_in,\) \(unbatched\), got 3"),
    ("features", lambda: lstm()(torch.randn(5, 2, 11)), ValueError,
     r"^LSTM: expected input with 10 features \(input_size\), got 11$"),
    ("cell features", lambda: rnnkit.GRUCell(3, 4)(torch.randn(2, 5)), ValueError,
     r"^GRUCell: expected input with 3 features \(input_size\), got 5$"),
    ("input not a tensor", lambda: gru()([[0.0, 1.0, 2.0]]), TypeError,
     r"^GRU: expected input as a torch\.Tensor or a PackedSequence, got list$"),
    ("cell input not a tensor", lambda: rnnkit.RNNCell(3, 4)(None), TypeError,
     r"^RNNCell: expected input to be a torch\.Tensor, got NoneType$"),
    ("input dtype vs parameters", lambda: gru(dtype=F64)(x3()), ValueError,
     r"^GRU: expected input of dtype torch\.float64 \(the parameters' dtype\), got torch\.float32"),
    ("integer input", lambda: gru()(torch.ones(5, 2, 3, dtype=torch.long)), ValueError,
     r"^GRU: expected input of dtype torch\.float32 \(the parameters' dtype\), got torch\.int64"),
    ("input device vs parameters", lambda: gru()(x3(device="meta")), ValueError,
     r"^GRU: expected input on device cpu \(the parameters' device\), got meta$"),
    ("cell input device", lambda: rnnkit.GRUCell(3, 4)(torch.randn(2, 3, device="meta")), ValueError,
     r"^GRUCell: expected input on device cpu \(the parameters' device\), got meta$"),
    ("no time steps", lambda: gru()(torch.randn(0, 2, 3)), ValueError,
     r"^GRU: expected at least one time step, got input of shape \(0, 2, 3\)$"),
]

STATE = [
    ("hx shape", lambda: gru()(x3(), torch.zeros(1, 3, 4)), ValueError,
     r"^GRU: expected hx of shape \(1, 2, 4\) \(num_layers \* num_directions, batch, hidden_size\), got \(1, 3, 4\)$"),
    ("hx shape bidirectional 2 layers", lambda: gru(num_layers=2, bidirectional=True)(x3(), torch.zeros(2, 2, 4)),
     ValueError, r"^GRU: expected hx of shape \(4, 2, 4\) .*got \(2, 2, 4\)$"),
    ("hx batched for unbatched input", lambda: gru()(torch.randn(5, 3), torch.zeros(1, 1, 4)), ValueError,
     r"^GRU: expected hx of shape \(1, 4\) \(num_layers \* num_directions, hidden_size\) for unbatched input, "
     r"got \(1, 1, 4\)$"),
    ("hx dtype vs input", lambda: gru()(x3(), torch.zeros(1, 2, 4, dtype=F64)), ValueError,
     r"^GRU: expected hx of dtype torch\.float32 \(the input's dtype\), got torch\.float64"),
    ("hx device vs input", lambda: gru()(x3(), torch.zeros(1, 2, 4, device="meta")), ValueError,
     r"^GRU: expected hx on device cpu \(the input's device\), got meta$"),
    ("hx not a tensor", lambda: gru()(x3(), [[0.0] * 4] * 2), TypeError,
     r"^GRU: expected hx to be a torch\.Tensor, got list$"),
    ("LSTM hx a tensor", lambda: rnnkit.LSTM(3, 4)(x3(), torch.zeros(1, 2, 4)), TypeError,
     r"^LSTM: expected hx as a tuple \(h_0, c_0\) of two tensors, got Tensor$"),
    ("LSTM hx of 3", lambda: rnnkit.LSTM(3, 4)(x3(), (torch.zeros(1, 2, 4),) * 3), TypeError,
     r"^LSTM: expected hx as a tuple \(h_0, c_0\) of two tensors, got a tuple of length 3$"),
    ("LSTM c_0 shape", lambda: rnnkit.LSTM(3, 4)(x3(), (torch.zeros(1, 2, 4), torch.zeros(1, 2, 5))), ValueError,
     r"^LSTM: expected c_0 of shape \(1, 2, 4\) .*got \(1, 2, 5\)$"),
    ("LSTM h_0 dtype", lambda: rnnkit.LSTM(3, 4)(x3(), (torch.zeros(1, 2, 4, dtype=F64), torch.zeros(1, 2, 4))),
     ValueError, r"^LSTM: expected h_0 of dtype torch\.float32 \(the input's dtype\), got torch\.float64"),
    ("cell hx shape", lambda: rnnkit.RNNCell(3, 4)(torch.randn(2, 3), torch.zeros(3, 4)), ValueError,
     r"^RNNCell: expected hx of shape \(2, 4\) \(batch, hidden_size\), got \(3, 4\)$"),
    ("cell hx unbatched", lambda: rnnkit.GRUCell(3, 4)(torch.randn(3), torch.zeros(1, 4)), ValueError,
     r"^GRUCell: expected hx of shape \(4,\) \(hidden_size,\) for unbatched input, got \(1, 4\)$"),
    ("LSTMCell hx not a pair", lambda: rnnkit.LSTMCell(3, 4)(torch.randn(2, 3), torch.zeros(2, 4)), TypeError,
     r"^LSTMCell: expected hx as a tuple \(h_0, c_0\) of two tensors, got Tensor$"),
    ("packed hx batch", lambda: gru()(pack_padded_sequence(x3(), [5, 2]), torch.zeros(1, 3, 4)), ValueError,
     r"^GRU: expected hx of shape \(1, 2, 4\) .*got \(1, 3, 4\)$"),
]

LENGTHS = [
    ("wrong count", lambda: gru()(x3(), lengths=[5, 4, 3]), ValueError,
     r"^GRU: expected 2 lengths \(one per sequence in the batch\), got 3$"),
    ("float tensor", lambda: gru()(x3(), lengths=torch.tensor([5.0, 4.0])), ValueError,
     r"^GRU: expected lengths of an integer dtype, got torch\.float32$"),
    ("float in a list", lambda: gru()(x3(), lengths=[5, 2.5]), TypeError,
     r"^GRU: expected lengths to be ints, got float \(2\.5\)$"),
    ("bool in a list", lambda: gru()(x3(), lengths=[True, 5]), TypeError,
     r"^GRU: expected lengths to be ints, got bool"),
    ("zero", lambda: gru()(x3(), lengths=[5, 0]), ValueError,
     r"^GRU: expected every length in \[1, 5\] \(the padded sequence length\), got lengths from 0 to 5$"),
    ("longer than T", lambda: gru()(x3(), lengths=torch.tensor([6, 2])), ValueError,
     r"^GRU: expected every length in \[1, 5\] .*got lengths from 2 to 6$"),
    ("batch_first T", lambda: gru(batch_first=True)(x3(T=2, B=5), lengths=[6, 1]), ValueError,
     r"^GRU: expected every length in \[1, 5\] .*got lengths from 1 to 6$"),  # (N=2, L=5, H_in=3)
    ("2-D tensor", lambda: gru()(x3(), lengths=torch.ones(2, 1, dtype=torch.long)), ValueError,
     r"^GRU: expected lengths as a 1-D tensor, got shape \(2, 1\)$"),
    ("wrong type", lambda: gru()(x3(), lengths="5,4"), TypeError,
     r"^GRU: expected lengths as a 1-D integer tensor or a list of ints, got str$"),
    ("lengths with packed", lambda: gru()(pack_padded_sequence(x3(), [5, 2]), lengths=[5, 2]), ValueError,
     r"^GRU: lengths= is for a padded tensor; a PackedSequence carries its own lengths$"),
    ("packed batch_sizes grow", lambda: gru()(bad_packed()), ValueError,
     r"^GRU: expected batch_sizes positive and non-increasing, got \[2, 3\]$"),
    ("packed rows", lambda: gru()(PackedSequence(torch.randn(4, 3), torch.tensor([2, 1]))), ValueError,
     r"^GRU: expected packed data with sum\(batch_sizes\) = 3 rows, got 4$"),
    ("packed features", lambda: gru()(pack_padded_sequence(x3(I=2), [5, 2])), ValueError,
     r"^GRU: expected input with 3 features \(input_size\), got 2$"),
    ("packed data rank", lambda: gru()(PackedSequence(torch.randn(3, 1, 3), torch.tensor([2, 1]))), ValueError,
     r"^GRU: expected packed data with 2 dimensions \(sum of lengths, H_in\), got shape \(3, 1, 3\)$"),
]

FUNCTIONAL = [
    ("run_direction mode", lambda: recurrence.run_direction("LSTMP", x3(), torch.zeros(2, 4), torch.zeros(4, 3),
                                                           torch.zeros(4, 4), None, None), ValueError,
     r"^run_direction: expected mode 'RNN', 'LSTM' or 'GRU', got 'LSTMP'$"),
]

TABLE = CONSTRUCTOR + INPUT + STATE + LENGTHS + FUNCTIONAL


@pytest.mark.parametrize("make_mistake,error,pattern", [row[1:] for row in TABLE], ids=[row[0] for row in TABLE])
def test_clear_error(make_mistake, error, pattern):
    with pytest.raises(error, match=pattern) as info:
        make_mistake()
    assert type(info.value) is error  # exactly this type, not a subclass raised from deep inside


def test_table_ids_are_unique_and_patterns_compile():
    ids = [row[0] for row in TABLE]
    assert len(ids) == len(set(ids))
    for row in TABLE:
        re.compile(row[3])


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_errors_do_not_depend_on_backend(backend):
    with pytest.raises(ValueError, match=r"^LSTM: expected input with 10 features \(input_size\), got 11$"):
        lstm(backend=backend)(torch.randn(5, 2, 11))
    with pytest.raises(ValueError, match=r"^LSTM: expected every length in \[1, 5\]"):
        lstm(backend=backend)(torch.randn(5, 2, 10), lengths=[6, 1])


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_lengths_as_numpy_array_or_numpy_ints(backend):
    # what torch.nn.utils.rnn.pack_padded_sequence accepts, rnnkit accepts too
    import numpy as np  # a dependency of rnnkit
    layer, x = gru(backend=backend), x3()
    expected, _ = layer(x, lengths=[5, 2])
    for lengths in (np.array([5, 2]), np.array([5, 2], dtype=np.int32), [np.int64(5), np.int64(2)]):
        out, _ = layer(x, lengths=lengths)
        torch.testing.assert_close(out, expected)
    with pytest.raises(ValueError, match=r"^GRU: expected lengths of an integer dtype, got torch\.float64$"):
        layer(x, lengths=np.array([5.0, 2.0]))
