"""rnnkit.bench runs end to end on tiny sizes and writes the JSON the book reads. Timings are never asserted."""

import json

import pytest
import torch

from rnnkit import bench


def test_tiny_run_writes_the_documented_json(tmp_path, capsys):
    out = tmp_path / "results" / "bench.json"
    bench.main(["--hidden", "8", "12", "--batch", "2", "--seq-len", "3", "--repeats", "2", "--warmup", "0",
                "--modes", "GRU", "LSTM", "--out", str(out)])
    report = json.loads(out.read_text())
    for key in ("command", "date", "cpu", "torch", "torch_threads", "config", "results", "memory", "memory_method"):
        assert key in report, key
    assert report["torch"] == torch.__version__
    recs = report["results"]
    assert len(recs) == 2 * 2 * 4 * 2  # cells x hidden sizes x backends x passes
    assert {r["backend"] for r in recs} == {"reference", "fused", "torch", "floor"}
    assert {r["pass"] for r in recs} == {"fwd", "fwd+bwd"}
    for r in recs:
        assert len(r["times_ms"]) == 2 and r["median_ms"] > 0
        torch_med = next(q["median_ms"] for q in recs if q["backend"] == "torch" and
                         (q["mode"], q["hidden"], q["pass"]) == (r["mode"], r["hidden"], r["pass"]))
        floor_med = next(q["median_ms"] for q in recs if q["backend"] == "floor" and
                         (q["mode"], q["hidden"], q["pass"]) == (r["mode"], r["hidden"], r["pass"]))
        # medians are stored rounded to 0.001 ms, so a ratio of two tiny medians is only that exact
        for ratio, base in (("ratio_to_torch", torch_med), ("ratio_to_floor", floor_med)):
            slack = 6e-4 / r["median_ms"] + 6e-4 / base
            assert r[ratio] == pytest.approx(r["median_ms"] / base, rel=slack, abs=2e-3), ratio
    assert set(report["memory"]["cpu"]) == {f"{m}/{h}/{b}" for m in ("GRU", "LSTM") for h in (8, 12)
                                            for b in ("reference", "fused", "torch")}
    printed = capsys.readouterr().out
    assert "fused ms (x torch)" in printed and "fused/floor" in printed and "wrote" in printed
    assert "fused GEMM kernels chosen by measurement" in printed and report["gemm_choice"]
    md = bench.markdown_table(report)
    assert md.count("\n") == 2 + 4 - 1 and "| LSTM | 12 |" in md
    lstm12 = {r["backend"]: r for r in recs if (r["mode"], r["hidden"], r["pass"]) == ("LSTM", 12, "fwd+bwd")}
    want = lstm12["fused"]["median_ms"] / lstm12["floor"]["median_ms"]
    row = next(line for line in md.splitlines() if line.startswith("| LSTM | 12 |")).split(" | ")
    assert "fused / floor" in md.splitlines()[0] and float(row[2 + 4]) == pytest.approx(want, abs=0.006)


def test_fwd_only_times_only_the_forward_pass(tmp_path):
    report = bench.main(["--hidden", "4", "--batch", "1", "--seq-len", "2", "--repeats", "1", "--modes", "RNN",
                         "--backends", "fused", "--fwd-only"])
    assert {r["pass"] for r in report["results"]} == {"fwd"}
    assert {r["backend"] for r in report["results"]} == {"fused", "torch"}  # torch always runs: ratios need it
    assert all("ratio_to_floor" not in r for r in report["results"])  # no floor run, no ratio to it
    assert "fused / floor" not in bench.markdown_table(report, "fwd")
    assert "memory" not in report


def test_cuda_request_without_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(SystemExit):
        bench.main(["--device", "cuda"])


def test_memory_is_the_peak_of_tensor_bytes_held_at_once():
    mib = 2**18  # float32 elements in one MiB

    def overlapping():
        a = torch.ones(4 * mib)
        b = torch.ones(2 * mib)
        return a.sum() + b.sum()

    def one_after_the_other():
        torch.ones(4 * mib).sum()
        return torch.ones(2 * mib)  # returned: held until the caller drops it

    assert bench._held_peak_mib(overlapping) == pytest.approx(6.0, abs=0.05)
    assert bench._held_peak_mib(one_after_the_other) == pytest.approx(4.0, abs=0.05)


@pytest.mark.parametrize("path", ["addmm", "loop"])
def test_the_floor_runs_the_products_the_way_the_layer_does(path, monkeypatch):
    """Where the layer runs its steps in the compiled loops, the floor's per-step products go through the same loops
    (gemm_steps, each thread's rows; in forward the input projections too, as the loops make them step by step),
    else through PyTorch once per step: a floor made of slower calls than the layer makes could be beaten by it."""
    from rnnkit import _fused_gemm, _kernels

    x = torch.zeros(1)
    if path == "loop" and not _kernels.loop_available(x):
        pytest.skip("no compiled loops here (no C compiler or no MKL)")
    monkeypatch.setenv("RNNKIT_FUSED_GEMM", path)
    monkeypatch.setattr(_fused_gemm, "_CHOICES", {})
    cfg = bench.BenchConfig(seq_len=4, batch=3, hidden=[6])
    steps = _kernels.steps_for(x)
    calls = []
    if steps is not None:
        real = steps.gemm_steps
        monkeypatch.setattr(steps, "gemm_steps", lambda *a: (calls.append(a[0]), real(*a)))
    _, fwd_bwd = bench._workload("LSTM", "floor", 6, cfg, "cpu")
    fwd_bwd()
    # forward's input and hidden products and backward's, T=4 steps of each in one call
    assert calls == ([4, 4, 4] if path == "loop" else [])


@pytest.mark.parametrize("path", ["addmm", "onednn", "loop"])
@pytest.mark.parametrize("mode", ["RNN", "LSTM", "GRU"])
def test_fused_peak_memory_stays_below_torch_nn(mode, path, monkeypatch):
    """Whichever kernels run the products, one fused forward+backward holds no more tensor memory at its peak than
    torch.nn's (measured as the bench does, the reused backward scratch freed first). The tanh RNN leaves the least
    room: torch.nn keeps little beyond the states, and a temporary as large as one backward chunk's ``dx`` (oneDNN's
    operator has no ``out=``) was enough to go above it."""
    from rnnkit import _fused_gemm, _kernels
    from rnnkit._fused_chunks import release_scratch

    if path == "loop" and not _kernels.loop_available(torch.zeros(1)):
        pytest.skip("no compiled loops here (no C compiler or no MKL)")
    if path == "onednn" and not _fused_gemm._onednn_available():
        pytest.skip("this PyTorch has no usable oneDNN linear operator")
    monkeypatch.setenv("RNNKIT_FUSED_GEMM", path)
    cfg = bench.BenchConfig(seq_len=100, batch=64, hidden=[128])  # the bench's smallest size
    peaks = {}
    for backend in ("torch", "fused"):
        _, fwd_bwd = bench._workload(mode, backend, 128, cfg, "cpu")
        fwd_bwd()
        release_scratch()
        peaks[backend] = bench._held_peak_mib(fwd_bwd)
    if peaks["torch"] is None:
        pytest.skip("this PyTorch's profiler gives no memory events")
    assert peaks["fused"] <= peaks["torch"], peaks
