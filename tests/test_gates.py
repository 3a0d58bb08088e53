"""rnnkit.gates: gate traces, saturation statistics and heatmap rows.

The reference is independent of the code under test: torch.nn's own outputs and final states, which the traced
``h`` and ``c`` must reproduce exactly.
"""

import pytest
import torch
from torch import nn

import rnnkit
from rnnkit import gates

DT = torch.float64


def _seeded(module_cls, *args, **kwargs):
    torch.manual_seed(0)
    return module_cls(*args, **kwargs).to(DT)


@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_gate_traces_reproduce_torch_outputs(cls, bidirectional):
    module = _seeded(cls, 3, 4, num_layers=2, bidirectional=bidirectional, batch_first=True)
    x = torch.randn(2, 6, 3, dtype=DT)  # (B, T, I)
    with torch.no_grad():
        out, _ = module(x)  # (B, T, dirs*H)
    for d in range(2 if bidirectional else 1):
        tr = gates.gate_traces(module, x, layer=1, direction=d)
        assert tr.kind == cls.__name__
        assert set(tr.gates) == ({"i", "f", "g", "o", "c", "h"} if cls is nn.LSTM else {"r", "z", "n", "h"})
        torch.testing.assert_close(tr.gates["h"], out[..., d * 4 : (d + 1) * 4].transpose(0, 1))
    rows = gates.stack_gates(tr, ["i", "f"] if cls is nn.LSTM else ["r", "z"], batch=1)
    assert rows.shape == (2, 6, 4)


def test_gate_traces_with_initial_state_and_unbatched_input():
    lstm = _seeded(nn.LSTM, 3, 4)
    x = torch.randn(5, 3, dtype=DT)  # unbatched (T, I)
    hx = (torch.randn(1, 4, dtype=DT), torch.randn(1, 4, dtype=DT))
    with torch.no_grad():
        out, (h_n, c_n) = lstm(x, hx)
    tr = gates.gate_traces(lstm, x, hx)
    torch.testing.assert_close(tr.gates["h"], out)
    torch.testing.assert_close(tr.gates["c"][-1], c_n[0])


def test_gate_traces_errors():
    with pytest.raises(ValueError, match="no gates"):
        gates.gate_traces(nn.RNN(3, 4), torch.randn(5, 2, 3))
    with pytest.raises(ValueError, match="3 features"):
        gates.gate_traces(nn.GRU(3, 4), torch.randn(5, 2, 2))
    with pytest.raises(ValueError, match="layer"):
        gates.gate_traces(nn.GRU(3, 4), torch.randn(5, 2, 3), layer=1)
    lstm, x = nn.LSTM(3, 4, num_layers=2), torch.randn(5, 2, 3)
    with pytest.raises(ValueError, match=r"expected input of dtype torch.float32.*got torch.float64"):
        gates.gate_traces(lstm, x.double())
    with pytest.raises(TypeError, match=r"expected hx as a tuple \(h_0, c_0\)"):
        gates.gate_traces(lstm, x, torch.zeros(4, 2, 4))  # a lone tensor was read as h = hx[0], c = hx[1]
    with pytest.raises(ValueError, match=r"expected h_0 of shape \(2, 2, 4\).*got \(2, 3, 4\)"):
        gates.gate_traces(lstm, x, (torch.zeros(2, 3, 4), torch.zeros(2, 3, 4)))
    with pytest.raises(ValueError, match=r"expected hx of shape \(1, 4\).*got \(1, 2, 4\)"):
        gates.gate_traces(nn.GRU(3, 4), x[:, 0], torch.zeros(1, 2, 4))  # unbatched input, batched state


def test_gate_saturation_counts_thresholds_and_mask():
    i = torch.tensor([[[0.05, 0.5]], [[0.95, 0.99]]])  # (T=2, B=1, H=2)
    g = torch.tensor([[[-0.9, 0.0]], [[0.0, 0.85]]])
    tr = gates.GateTraces("LSTM", {"i": i, "g": g, "c": torch.zeros_like(i), "h": torch.zeros_like(i)})
    stats = gates.gate_saturation(tr)
    assert set(stats) == {"i", "g"}
    assert stats["i"] == pytest.approx((0.25, 0.5, 0.25))
    assert stats["g"] == pytest.approx((0.25, 0.25, 0.5))
    masked = gates.gate_saturation(tr, mask=torch.tensor([[True], [False]]))
    assert masked["i"] == pytest.approx((0.5, 0.0, 0.5))
    with pytest.raises(ValueError, match="mask of shape"):
        gates.gate_saturation(tr, mask=torch.ones(3, 1, dtype=torch.bool))


def test_follows_input_dtype():
    gru = nn.GRU(3, 4)  # float32
    assert gates.gate_traces(gru, torch.randn(4, 2, 3)).gates["z"].dtype == torch.float32


@pytest.mark.parametrize("reset_after", [True, False])
def test_works_on_rnnkit_layers_including_cho_gru(reset_after):
    gru = _seeded(rnnkit.GRU, 3, 4, num_layers=2, reset_after=reset_after)
    x = torch.randn(6, 2, 3, dtype=DT)
    with torch.no_grad():
        out, _ = gru(x)
    torch.testing.assert_close(gates.gate_traces(gru, x, layer=1).gates["h"], out)
    with pytest.raises(TypeError, match="layer"):
        gates.gate_traces(rnnkit.GRUCell(3, 4), x)


@pytest.mark.cuda
@pytest.mark.parametrize("cls", [nn.LSTM, rnnkit.GRU])
def test_cuda_matches_cpu(cls):
    module = _seeded(cls, 3, 4)
    x = torch.randn(5, 2, 3, dtype=DT)
    cpu_gates = gates.gate_traces(module, x).gates
    for name, value in gates.gate_traces(module.to("cuda"), x.to("cuda")).gates.items():
        assert value.device.type == "cuda"
        torch.testing.assert_close(value.cpu(), cpu_gates[name])
