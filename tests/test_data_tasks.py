"""rnnkit.data.tasks: the adding, copy and parity tasks, seeded."""

import pytest
import torch

from rnnkit.data import (
    adding_problem,
    copy_task,
    parity_task,
)


def _adding_reference(n, t, seed):
    # The contract's recipe, written out independently of rnnkit.
    g = torch.Generator().manual_seed(seed)
    values = torch.rand(n, t, generator=g)
    i = torch.randint(0, t // 2, (n,), generator=g)
    j = torch.randint(t // 2, t, (n,), generator=g)
    markers = torch.zeros(n, t)
    y = torch.zeros(n)
    for k in range(n):
        markers[k, i[k]] = 1
        markers[k, j[k]] = 1
        y[k] = values[k, i[k]] + values[k, j[k]]
    return torch.stack([values, markers], -1), y


@pytest.mark.parametrize("n,t,seed", [(5, 10, 0), (3, 2, 7), (64, 51, 123)])
def test_adding_problem_matches_spec(n, t, seed):
    x, y = adding_problem(n, t, seed=seed)
    xr, yr = _adding_reference(n, t, seed)
    assert x.shape == (n, t, 2) and y.shape == (n,) and x.dtype == y.dtype == torch.float32
    assert torch.equal(x, xr) and torch.equal(y, yr)
    assert (x[..., 1].sum(1) == 2).all()
    assert (x[:, : t // 2, 1].sum(1) == 1).all()  # one marker in each half
    x64, y64 = adding_problem(n, t, seed=seed, dtype=torch.float64)
    assert x64.dtype == torch.float64 and torch.allclose(y64.float(), y)


def test_adding_problem_baseline():
    _, y = adding_problem(20000, 20, seed=0)
    assert abs(((y - 1.0) ** 2).mean().item() - 1 / 6) < 0.01  # mean predictor's MSE


def _copy_reference(n, length, delay, k, seed):
    g = torch.Generator().manual_seed(seed)
    symbols = torch.randint(1, k + 1, (n, length), generator=g)
    xs, ys = [], []
    for row in symbols.tolist():
        xs.append(row + [0] * (delay - 1) + [k + 1] + [0] * length)
        ys.append([0] * (length + delay) + row)
    return torch.tensor(xs), torch.tensor(ys)


@pytest.mark.parametrize("n,length,delay,k,seed", [(4, 5, 1, 8, 0), (2, 3, 10, 4, 1), (8, 10, 20, 8, 42)])
def test_copy_task_matches_spec(n, length, delay, k, seed):
    x, y = copy_task(n, length, delay, num_symbols=k, seed=seed)
    xr, yr = _copy_reference(n, length, delay, k, seed)
    assert x.dtype == y.dtype == torch.long and x.shape == y.shape == (n, 2 * length + delay)
    assert torch.equal(x, xr) and torch.equal(y, yr)


@pytest.mark.parametrize("n,t,seed", [(6, 1, 0), (10, 17, 3)])
def test_parity_task_matches_spec(n, t, seed):
    x, y = parity_task(n, t, seed=seed)
    bits = torch.randint(0, 2, (n, t), generator=torch.Generator().manual_seed(seed))
    assert x.shape == (n, t, 1) and x.dtype == torch.float32 and y.dtype == torch.long and y.shape == (n,)
    assert torch.equal(x[..., 0], bits.float()) and torch.equal(y, bits.sum(1) % 2)


def test_tasks_seeded_and_generator_streams():
    a = adding_problem(4, 8, seed=1)
    b = adding_problem(4, 8, seed=1)
    c = adding_problem(4, 8, seed=2)
    assert torch.equal(a[0], b[0]) and not torch.equal(a[0], c[0])
    g = torch.Generator().manual_seed(5)
    first, second = copy_task(3, 4, 2, generator=g), copy_task(3, 4, 2, generator=g)
    assert not torch.equal(first[0], second[0])  # a generator is a stream: calls continue it
    assert torch.equal(first[0], copy_task(3, 4, 2, seed=5)[0])
    torch.manual_seed(0)
    p = parity_task(3, 9)
    torch.manual_seed(0)
    assert torch.equal(p[0], parity_task(3, 9)[0])  # without seed, the global seed still rules


@pytest.mark.parametrize("call,exc,match", [
    (lambda: adding_problem(0, 10, seed=0), ValueError, "num_samples >= 1, got 0"),
    (lambda: adding_problem(2, 1, seed=0), ValueError, "seq_len >= 2, got 1"),
    (lambda: adding_problem(2.0, 10, seed=0), TypeError, "num_samples to be an int"),
    (lambda: adding_problem(2, 10, seed=0, dtype=torch.long), TypeError, "floating-point dtype"),
    (lambda: adding_problem(2, 10, seed=0, generator=torch.Generator()), ValueError, "seed or generator"),
    (lambda: copy_task(2, 3, 0, seed=0), ValueError, "delay >= 1, got 0"),
    (lambda: copy_task(2, 0, 1, seed=0), ValueError, "seq_len >= 1"),
    (lambda: copy_task(2, 3, 1, num_symbols=0, seed=0), ValueError, "num_symbols >= 1"),
    (lambda: parity_task(2, 0, seed=0), ValueError, "seq_len >= 1"),
    (lambda: parity_task(2, 3, seed="1"), TypeError, "seed to be an int"),
    (lambda: parity_task(2, 3, generator=1), TypeError, "torch.Generator"),
])
def test_task_argument_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
