"""rnnkit.data.batching: padding, packing and iterating over batches of sequences."""

import numpy as np
import pytest
import torch

from rnnkit.data import (
    iterate_batches,
    pack_batch,
    pad_batch,
)


def _seqs(lengths, features=3, dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(t, features, generator=g, dtype=dtype) for t in lengths]


def test_pad_batch_time_major():
    seqs = _seqs([3, 5, 1])
    padded, lengths = pad_batch(seqs)
    assert padded.shape == (5, 3, 3) and padded.dtype == torch.float64
    assert lengths.tolist() == [3, 5, 1] and lengths.dtype == torch.long and lengths.device.type == "cpu"
    for b, s in enumerate(seqs):
        assert torch.equal(padded[: len(s), b], s) and (padded[len(s):, b] == 0).all()
    tokens, _ = pad_batch([torch.tensor([1, 2]), torch.tensor([3])], padding_value=0)
    assert tokens.tolist() == [[1, 3], [2, 0]] and tokens.dtype == torch.long


def test_pack_batch_matches_torch():
    seqs = _seqs([2, 4, 3])
    packed = pack_batch(seqs)
    ref = torch.nn.utils.rnn.pack_sequence(seqs, enforce_sorted=False)
    assert torch.equal(packed.data, ref.data) and torch.equal(packed.batch_sizes, ref.batch_sizes)
    unpacked, lengths = torch.nn.utils.rnn.pad_packed_sequence(packed)
    assert torch.equal(unpacked, pad_batch(seqs)[0]) and lengths.tolist() == [2, 4, 3]


@pytest.mark.parametrize("bad,exc,match", [
    ([], ValueError, "at least one sequence"),
    (torch.zeros(3, 2), TypeError, "list of tensors"),
    ([torch.zeros(3, 2), torch.zeros(3, 4)], ValueError, r"feature shape \(2,\).*got \(4,\) for sequence 1"),
    ([torch.zeros(3, 2), torch.zeros(0, 2)], ValueError, "sequence 1 to have at least one time step"),
    ([torch.zeros(3), torch.zeros(3, dtype=torch.long)], ValueError, "dtype torch.float32"),
    ([torch.zeros(3), [1, 2]], TypeError, "sequence 1 to be a torch.Tensor"),
])
def test_batching_errors(bad, exc, match):
    with pytest.raises(exc, match=match):
        pad_batch(bad)


def test_iterate_batches_seeded_covers_everything():
    seqs = _seqs([5, 1, 7, 3, 2, 6, 4])
    labels = torch.arange(7)

    def order(**kw):
        out = []
        for padded, lengths, y in iterate_batches(seqs, 3, targets=labels, **kw):
            assert padded.shape[:2] == (int(lengths.max()), len(y))
            for b, k in enumerate(y.tolist()):
                assert lengths[b] == len(seqs[k]) and torch.equal(padded[: lengths[b], b], seqs[k])
            out.append(y.tolist())
        return out

    a, b, c = order(seed=0), order(seed=0), order(seed=1)
    assert a == b and a != c
    assert sorted(sum(a, [])) == list(range(7)) and [len(x) for x in a] == [3, 3, 1]
    assert order(shuffle=False) == [[0, 1, 2], [3, 4, 5], [6]]
    assert [len(x) for x in order(seed=0, drop_last=True)] == [3, 3]
    bucketed = order(seed=0, bucket=True)
    assert sorted(sum(bucketed, [])) == list(range(7))
    for batch in bucketed:  # sorted by length inside each batch
        assert [len(seqs[k]) for k in batch] == sorted(len(seqs[k]) for k in batch)
    seq_targets = [s[:, 0] for s in seqs]
    for padded, _lengths, y in iterate_batches(seqs, 4, targets=seq_targets, seed=0):
        assert torch.equal(y, padded[..., 0])
    with pytest.raises(ValueError, match="expected 7 targets"):
        next(iterate_batches(seqs, 2, targets=labels[:3]))
    with pytest.raises(ValueError, match="batch_size >= 1"):
        next(iterate_batches(seqs, 0))


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_batching_on_device(device):
    seqs = _seqs([2, 3])
    padded, lengths = pad_batch(seqs, device=device)
    assert padded.device.type == device and lengths.device.type == "cpu"
    assert pack_batch(seqs, device=device).data.device.type == device
    (p, l_, y), = iterate_batches(seqs, 2, targets=torch.tensor([0, 1]), device=device, seed=0)
    assert p.device.type == device and y.device.type == device
    moved, _ = pad_batch([s.to(device) for s in seqs])  # default: the sequences' own device
    assert moved.device.type == device


def test_padded_and_packed_batches_give_the_same_layer_output():
    from rnnkit import GRU

    torch.manual_seed(0)
    gru = GRU(3, 4, dtype=torch.float64)
    seqs = _seqs([4, 2, 5])
    padded, lengths = pad_batch(seqs)
    out_pad, h_pad = gru(padded, lengths=lengths)  # (T, B, H), (1, B, H)
    out_packed, h_packed = gru(pack_batch(seqs))
    unpacked, _ = torch.nn.utils.rnn.pad_packed_sequence(out_packed)
    torch.testing.assert_close(unpacked, out_pad)
    torch.testing.assert_close(h_packed, h_pad)
    for b, s in enumerate(seqs):  # each sequence alone gives its own column
        alone, _ = gru(s[:, None])
        torch.testing.assert_close(out_pad[: len(s), b], alone[:, 0])


def test_pad_batch_refuses_a_padding_value_the_dtype_cannot_hold():
    tokens = [torch.arange(3), torch.arange(1)]
    with pytest.raises(ValueError, match=r"integer padding_value for torch.int64 sequences, got 0.5"):
        pad_batch(tokens, padding_value=0.5)  # torch.full wrote 0 silently
    with pytest.raises(ValueError, match="padding_value 0/1"):
        pad_batch([torch.ones(2, dtype=torch.bool)], padding_value=2)
    assert pad_batch(tokens, padding_value=-1.0)[0][:, 1].tolist() == [0, -1, -1]  # an integral float is fine


def test_iterate_batches_accepts_numpy_batch_size_and_a_list_of_labels():
    seqs = [torch.randn(n, 2) for n in (3, 5, 1)]
    batches = list(iterate_batches(seqs, np.int64(2), targets=[7, 8, 9], shuffle=False))
    assert [b[2].tolist() for b in batches] == [[7, 8], [9]]  # the list was read as sequences ('got int')
